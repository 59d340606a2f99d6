"""The seed's fourth ViT: whole-face binary pain classifier, with attention-rollout heatmaps.

Frames are labelled from their RGS (mean of unit means of the labelled grades): ``<= 0.33`` no pain,
``>= 1`` pain, anything in between left out of training. The classifier sees the *face*: the square
around all of the frame's unit boxes (labelled boxes in training, detected boxes at inference) with a
margin of context (:func:`face_square`); the seed's photographs were face close-ups, whereas a frame
from a cage camera is mostly cage, and shrinking it to the ViT input leaves the face a few pixels
wide. Classifiers saved with ``region`` ``image`` (before the face crop) still see the whole frame.
The heatmap is attention rollout
(Abnar & Zuidema 2020): per layer the head-averaged attention plus the identity (residual),
row-normalised, multiplied through the layers; the CLS row over the patch tokens is the map.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from train.teacher.vit import ImageClassifier

FACE_MARGIN = 0.15
"""Context around the union of the unit boxes, as a fraction of its longer side, on each side."""


def face_square(boxes_xyxy: np.ndarray, margin: float = FACE_MARGIN) -> np.ndarray | None:
    """The square face region around a frame's unit boxes.

    Args:
        boxes_xyxy: ``(N, 4)`` unit boxes in pixels.
        margin: Context on each side as a fraction of the union's longer side.

    Returns:
        float ``(4,)`` square ``x1, y1, x2, y2`` centred on the union of the boxes (it may extend
        past the image; :func:`crop_square` pads), or ``None`` when there are no boxes.
    """
    b = np.asarray(boxes_xyxy, np.float64).reshape(-1, 4)
    if not len(b):
        return None
    x1, y1 = b[:, 0].min(), b[:, 1].min()
    x2, y2 = b[:, 2].max(), b[:, 3].max()
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    half = max(x2 - x1, y2 - y1, 1.0) * (1 + 2 * margin) / 2
    return np.array([cx - half, cy - half, cx + half, cy + half])


def crop_square(image: np.ndarray, square: np.ndarray) -> np.ndarray:
    """Cut a region that may extend past the image; the outside is filled by edge replication.

    Args:
        image: ``(H, W, C)``.
        square: ``(4,)`` ``x1, y1, x2, y2`` in pixels.

    Returns:
        ``(y2 - y1, x2 - x1, C)`` rounded to whole pixels (at least 1x1).
    """
    h, w = image.shape[:2]
    x1, y1, x2, y2 = (round(float(v)) for v in square)
    x2, y2 = max(x2, x1 + 1), max(y2, y1 + 1)
    pads = (max(0, -y1), max(0, y2 - h), max(0, -x1), max(0, x2 - w))
    if any(pads):
        image = cv2.copyMakeBorder(image, *pads, cv2.BORDER_REPLICATE)
        x1, x2, y1, y2 = x1 + pads[2], x2 + pads[2], y1 + pads[0], y2 + pads[0]
    return image[y1:y2, x1:x2]


def pain_region(clf: ImageClassifier, bgr: np.ndarray, boxes_xyxy: np.ndarray | None) -> np.ndarray | None:
    """What the pain classifier looks at: the face square (``region`` ``face``) or the whole frame.

    Args:
        clf: The pain classifier (its ``prep.region`` and ``prep.margin`` decide).
        bgr: BGR frame ``(H, W, 3)``.
        boxes_xyxy: ``(N, 4)`` unit boxes of the frame (needed for ``face``).

    Returns:
        ``(4,)`` region ``x1, y1, x2, y2`` in frame pixels, or ``None`` for a face classifier when
        no unit was found (nothing to classify).
    """
    h, w = bgr.shape[:2]
    if clf.prep.region != "face":
        return np.array([0.0, 0.0, float(w), float(h)])
    if boxes_xyxy is None:
        raise ValueError("this pain classifier grades the face region: pass the frame's unit boxes")
    return face_square(boxes_xyxy, clf.prep.margin)


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
        x = clf.prep.to_tensor(clf.prep.resize(bgr)[None]).to(clf.device)
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
        a = a[0].float().mean(0).cpu()
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


def write_heatmap(
    clf: ImageClassifier,
    bgr: np.ndarray,
    out_png: str | Path,
    boxes_xyxy: np.ndarray | None = None,
    p_pain: float | None = None,
) -> tuple[Path, float]:
    """Write the rollout overlay of one frame with its pain probability printed on it.

    For a face classifier the map covers the face square (outlined) and the rest of the frame is
    left as it is; a frame without unit boxes is written without a map, marked ``no face``.

    Args:
        clf: The pain classifier.
        bgr: BGR frame ``(H, W, 3)``.
        out_png: Output file.
        boxes_xyxy: ``(N, 4)`` unit boxes of the frame (needed by a face classifier).
        p_pain: The frame's pain probability when already computed (e.g. by
            ``Teacher.pain_probability`` on the same boxes); computed here when ``None``.

    Returns:
        ``(png path, pain probability)``; the probability is NaN when no face was found.
    """
    region = pain_region(clf, bgr, boxes_xyxy)
    over = bgr.copy()
    if region is None:
        p_pain, text = float("nan"), "no face found"
    else:
        crop = crop_square(bgr, region)
        if p_pain is None:
            p_pain = float(clf.probs([crop])[0, 1])
        text = f"pain p={p_pain:.2f}"
        big = heatmap_overlay(crop, attention_rollout(clf, crop))
        # paste the overlay back where the region lies inside the frame
        h, w = bgr.shape[:2]
        x1, y1 = (round(float(v)) for v in region[:2])
        a, b = max(0, x1), max(0, y1)
        c, d = min(w, x1 + big.shape[1]), min(h, y1 + big.shape[0])
        if c > a and d > b:
            over[b:d, a:c] = big[b - y1 : d - y1, a - x1 : c - x1]
            if clf.prep.region == "face":
                cv2.rectangle(over, (a, b), (c - 1, d - 1), (255, 255, 255), 1)
    scale = max(0.4, min(bgr.shape[:2]) / 600)
    cv2.putText(
        over,
        text,
        (5, int(25 * scale) + 5),
        cv2.FONT_HERSHEY_SIMPLEX,
        scale,
        (255, 255, 255),
        max(1, int(2 * scale)),
        cv2.LINE_AA,
    )
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out_png), over):
        raise OSError(f"{out_png}: cannot write PNG")
    return out_png, p_pain
