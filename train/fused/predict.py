"""PyTorch prediction with the fused model, through the same pre/post-processing as the edge runtime.

``predict_images(model, images, spec, ...)`` letterboxes (``edge.postprocess.preprocess``), runs the
model once, decodes each image's raw tensor with :func:`postprocess_raw` (the single call site of
``edge.postprocess.postprocess``) and scores the frame with ``edge.scoring.score_frame``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.postprocess import LetterboxInfo, postprocess, preprocess
from edge.results import Detections, FrameResult
from edge.scales import ScaleSpec
from edge.scoring import score_frame


def preprocess_images(images_bgr: list[np.ndarray], imgsz: int) -> tuple[np.ndarray, list[LetterboxInfo]]:
    """Letterbox + BGR→RGB + ``[0, 1]`` (``edge.postprocess.preprocess``).

    Returns:
        ``(B, 3, imgsz, imgsz)`` float32 and the per-image letterbox info.
    """
    return preprocess(images_bgr, imgsz, return_info=True)


def postprocess_raw(
    raw: np.ndarray, spec: ScaleSpec, conf: float, iou: float, max_det: int, info: LetterboxInfo
) -> Detections:
    """One image's raw output ``(N, 4 + nc + nc*ng)`` -> :class:`Detections` in original pixels.

    The only place the PyTorch path decodes model output: ``edge.postprocess.postprocess``.
    """
    return postprocess(raw, spec, conf=conf, iou=iou, max_det=max_det, letterbox_info=info)


def raw_outputs(model: Any, batch: np.ndarray) -> np.ndarray:
    """Model forward in eval mode: ``(B, 3, H, W)`` float32 -> raw ``(B, N, 4 + nc + nc*ng)`` numpy."""
    import torch

    p = next(model.parameters())
    model.eval()
    with torch.no_grad():
        out = model(torch.from_numpy(batch).to(p.device, p.dtype))
    out = out[0] if isinstance(out, (tuple, list)) else out
    return out.float().cpu().numpy()


def predict_images(
    model: Any,
    images_bgr: list[np.ndarray],
    spec: ScaleSpec,
    imgsz: int = 640,
    conf: float = 0.25,
    iou: float = 0.45,
    max_det: int = 300,
    sources: list[str] | None = None,
) -> list[FrameResult]:
    """Detect, grade and score images with the fused model (one forward pass per batch).

    Args:
        model: Fused model (e.g. from ``load_checkpoint``).
        images_bgr: uint8 ``(H, W, 3)`` BGR images.
        spec: The model's scale.
        imgsz: Letterbox size.
        conf: Unit-score threshold.
        iou: NMS IoU.
        max_det: Most boxes per image.
        sources: Names recorded in each result.

    Returns:
        One :class:`FrameResult` per image (boxes in original pixels, scale score or abstention).
    """
    batch, infos = preprocess_images(images_bgr, imgsz)
    raw = raw_outputs(model, batch)
    srcs = sources or [""] * len(images_bgr)
    return [
        score_frame(postprocess_raw(raw[i], spec, conf, iou, max_det, infos[i]), spec, source=srcs[i])
        for i in range(len(images_bgr))
    ]


def predict_paths(
    ckpt: str | Path,
    paths: list[Path],
    imgsz: int | None = None,
    conf: float = 0.25,
    iou: float = 0.45,
    batch: int = 8,
) -> tuple[list[FrameResult], list[str]]:
    """Load a checkpoint and predict image files; unreadable files are reported and skipped.

    Returns:
        ``(results, errors)``.
    """
    from edge.scales import load_scale
    from train.fused.checkpoint import load_checkpoint

    model, meta = load_checkpoint(ckpt)
    spec = load_scale(meta["scale"])
    size = int(imgsz or meta.get("imgsz", 640))
    results: list[FrameResult] = []
    errors: list[str] = []
    for i in range(0, len(paths), batch):
        imgs, names = [], []
        for p in paths[i : i + batch]:
            im = cv2.imread(str(p))
            if im is None:
                errors.append(f"{p}: not a readable image; skipped")
                continue
            imgs.append(im)
            names.append(str(p))
        if imgs:
            results += predict_images(model, imgs, spec, size, conf, iou, sources=names)
    return results, errors
