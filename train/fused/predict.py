"""PyTorch prediction with the fused model, through the same pre/post-processing as the edge runtime.

``predict_images(model, images, spec, ...)`` letterboxes (``edge.postprocess.preprocess``), runs the
model once, decodes each image's raw tensor with :func:`postprocess_raw` (the single call site of
``edge.postprocess.postprocess``) and scores the frame with ``edge.scoring.score_frame``.

Until the edge post-processing core (``edge/postprocess.py``) is present in this checkout, a local
implementation with the same rules is used (letterbox to a square with pad 114, keep candidates whose
best unit score is ``> conf``, per-unit NMS, boxes mapped back to original pixels and clipped).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.results import Detections, FrameResult
from edge.scales import ScaleSpec
from edge.scoring import score_frame

try:  # the edge runtime's post-processing core (edgert branch)
    from edge import postprocess as _edge_pp
except ImportError:  # pragma: no cover - depends on merge state
    _edge_pp = None


@dataclass
class _Letterbox:
    """Fallback letterbox record (same fields as ``edge.postprocess.LetterboxInfo``)."""

    ratio: tuple[float, float]
    pad: tuple[int, int]
    orig_shape: tuple[int, int]
    new_shape: tuple[int, int]


def _letterbox(img: np.ndarray, size: int) -> tuple[np.ndarray, _Letterbox]:
    h0, w0 = img.shape[:2]
    r = min(size / h0, size / w0)
    nw, nh = round(w0 * r), round(h0 * r)
    dw, dh = (size - nw) / 2, (size - nh) / 2
    if (nw, nh) != (w0, h0):
        img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    img = cv2.copyMakeBorder(img, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(114, 114, 114))
    return img, _Letterbox((nw / w0, nh / h0), (left, top), (h0, w0), img.shape[:2])


def preprocess_images(images_bgr: list[np.ndarray], imgsz: int) -> tuple[np.ndarray, list[Any]]:
    """Letterbox + BGR→RGB + ``[0, 1]``: ``(B, 3, imgsz, imgsz)`` float32 and per-image letterbox info."""
    if _edge_pp is not None:
        return _edge_pp.preprocess(images_bgr, imgsz, return_info=True)
    boxed, infos = zip(*(_letterbox(im, imgsz) for im in images_bgr), strict=False)
    x = np.stack(boxed)[..., ::-1].transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x, np.float32) / 255.0, list(infos)


def postprocess_raw(
    raw: np.ndarray, spec: ScaleSpec, conf: float, iou: float, max_det: int, info: Any
) -> Detections:
    """One image's raw output ``(N, 4 + nc + nc*ng)`` -> :class:`Detections` in original pixels.

    This is the only place the PyTorch path decodes model output; it is ``edge.postprocess.postprocess``.
    """
    if _edge_pp is not None:
        return _edge_pp.postprocess(raw, spec, conf=conf, iou=iou, max_det=max_det, letterbox_info=info)
    nc, ng = spec.nc, spec.ng
    if raw.ndim != 2 or raw.shape[1] != 4 + nc + nc * ng:
        raise ValueError(
            f"expected raw output (N, {4 + nc + nc * ng}) for scale {spec.name!r}, got {raw.shape}"
        )
    scores = raw[:, 4 : 4 + nc]
    best = scores.max(1)
    cand = np.flatnonzero(best > conf)
    unit = scores[cand].argmax(1)
    score = best[cand].astype(np.float32)
    boxes = raw[cand, :4].astype(np.float32)
    if len(cand):
        rects = [[float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])] for b in boxes]
        keep = np.asarray(cv2.dnn.NMSBoxesBatched(rects, score.tolist(), unit.tolist(), 0.0, iou), np.int64)
        keep = keep.reshape(-1)[np.argsort(-score[keep.reshape(-1)], kind="stable")][:max_det]
    else:
        keep = np.zeros(0, np.int64)
    rows, unit, score, boxes = cand[keep], unit[keep].astype(np.int64), score[keep], boxes[keep]
    grades = raw[rows[:, None], 4 + nc + unit[:, None] * ng + np.arange(ng)[None, :]].astype(np.float32)
    (gx, gy), (px, py) = info.ratio, info.pad
    boxes = (boxes - np.array([px, py, px, py], np.float32)) / np.array([gx, gy, gx, gy], np.float32)
    h, w = info.orig_shape
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
    return Detections(boxes, unit, score, grades.reshape(-1, ng))


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
