"""The seed's fourth ViT: whole-face binary pain classifier, with attention-rollout heatmaps.

Frames are labelled from their RGS (mean of unit means of the labelled grades): ``<= 0.33`` no pain,
``>= 1`` pain, anything in between left out of training. The heatmap is attention rollout
(Abnar & Zuidema 2020): per layer the head-averaged attention plus the identity (residual),
row-normalised, multiplied through the layers; the CLS row over the patch tokens is the map.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from train.teacher.vit import ImageClassifier


def attention_rollout(clf: ImageClassifier, bgr: np.ndarray, residual: float = 0.5) -> np.ndarray:
    """Attention-rollout map of one image.

    Args:
        clf: The pain classifier.
        bgr: BGR image ``(H, W, 3)`` of any size.
        residual: Weight of the identity added to every layer's attention.

    Returns:
        float32 ``(gh, gw)`` map in ``[0, 1]`` over the patch grid.
    """
    import torch

    model = clf.model
    prev = getattr(model.config, "_attn_implementation", None)
    if prev != "eager":
        model.set_attn_implementation("eager")
    try:
        x = clf.prep.to_tensor(clf.prep.resize(bgr)[None])
        with torch.inference_mode():
            out = model(pixel_values=x, output_attentions=True)
    finally:
        if prev not in (None, "eager"):
            model.set_attn_implementation(prev)
    atts = out.attentions
    if not atts:
        raise RuntimeError("the model returned no attentions; cannot compute a rollout")
    t = atts[0].shape[-1]
    roll = torch.eye(t)
    for a in atts:
        a = a[0].float().mean(0)
        a = residual * torch.eye(t) + (1 - residual) * a
        a = a / a.sum(-1, keepdim=True)
        roll = a @ roll
    cls_row = roll[0, 1:].numpy()
    g = round(float(np.sqrt(cls_row.size)))
    if g * g != cls_row.size:
        raise RuntimeError(f"cannot arrange {cls_row.size} patch tokens into a square grid")
    m = cls_row.reshape(g, g)
    m = (m - m.min()) / max(float(m.max() - m.min()), 1e-12)
    return m.astype(np.float32)


def heatmap_overlay(bgr: np.ndarray, amap: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Blend a ``[0, 1]`` map (any grid size) over a BGR image as a JET colour map; ``(H, W, 3)`` uint8."""
    h, w = bgr.shape[:2]
    big = cv2.resize(amap, (w, h), interpolation=cv2.INTER_CUBIC).clip(0, 1)
    color = cv2.applyColorMap((big * 255).astype(np.uint8), cv2.COLORMAP_JET)
    return cv2.addWeighted(bgr, 1 - alpha, color, alpha, 0)


def write_heatmap(clf: ImageClassifier, bgr: np.ndarray, out_png: str | Path) -> tuple[Path, float]:
    """Write the rollout overlay of one image with its pain probability printed on it.

    Returns:
        ``(png path, pain probability)``.
    """
    p_pain = float(clf.probs([bgr])[0, 1])
    over = heatmap_overlay(bgr, attention_rollout(clf, bgr))
    scale = max(0.4, min(bgr.shape[:2]) / 600)
    cv2.putText(
        over, f"pain p={p_pain:.2f}", (5, int(25 * scale) + 5), cv2.FONT_HERSHEY_SIMPLEX, scale,
        (255, 255, 255), max(1, int(2 * scale)), cv2.LINE_AA,
    )
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out_png), over):
        raise OSError(f"{out_png}: cannot write PNG")
    return out_png, p_pain
