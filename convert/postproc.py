"""The one pre/post-processing entry point used by the conversion checks.

Parity checks, the engine check and the INT8 calibrator must process images exactly as the edge
runtime does, so they call :func:`preprocess` and :func:`postprocess` here and nothing else. These
delegate to ``edge.postprocess`` (the runtime's own letterbox / NMS) when that module is present; until
it is merged the numpy reference below is used, which follows the same rule: best unit per candidate,
score threshold, per-unit (class-aware) greedy NMS, the ``max_det`` most confident boxes, the chosen
unit's grade probabilities carried with each box. Boxes stay in letterboxed input pixels (both sides
of every comparison use the same frame, so the mapping back to the original image is not needed).
"""

from __future__ import annotations

import importlib
from typing import Any

import cv2
import numpy as np

from edge.artifact import ModelMetadata
from edge.results import Detections
from edge.scales import ScaleSpec


def _edge_postprocess() -> Any | None:
    try:
        return importlib.import_module("edge.postprocess")
    except ImportError:
        return None


def backend_name() -> str:
    """Which implementation is in use (printed with parity figures)."""
    return "edge.postprocess" if _edge_postprocess() is not None else "convert.postproc (numpy reference)"


def letterbox(img: np.ndarray, shape: tuple[int, int], pad_value: int = 114) -> np.ndarray:
    """Resize keeping aspect ratio and pad to ``shape`` (centred), as the runtime does.

    Args:
        img: ``(h, w, 3)`` uint8 BGR image.
        shape: Target ``(H, W)``.
        pad_value: Border value.

    Returns:
        ``(H, W, 3)`` uint8 BGR image.
    """
    h0, w0 = img.shape[:2]
    th, tw = shape
    r = min(th / h0, tw / w0)
    nh, nw = round(h0 * r), round(w0 * r)
    if (nh, nw) != (h0, w0):
        img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
    top, left = (th - nh) // 2, (tw - nw) // 2
    return cv2.copyMakeBorder(img, top, th - nh - top, left, tw - nw - left, cv2.BORDER_CONSTANT,
                              value=(pad_value,) * 3)


def preprocess(img_bgr: np.ndarray, meta: ModelMetadata) -> np.ndarray:
    """BGR uint8 image → network input ``(1, 3, H, W)`` float32 RGB in [0, 1] (normalised per ``meta``)."""
    ep = _edge_postprocess()
    if ep is not None and hasattr(ep, "preprocess"):
        out = ep.preprocess(img_bgr, meta)
        arr = out[0] if isinstance(out, tuple) else out
        arr = np.asarray(arr, dtype=np.float32)
        return arr if arr.ndim == 4 else arr[None]
    if img_bgr.ndim != 3 or img_bgr.shape[2] != 3:
        raise ValueError(f"preprocess: expected an (h, w, 3) BGR image, got shape {img_bgr.shape}")
    lb = letterbox(img_bgr, meta.imgsz, meta.pad_value)
    x = lb[:, :, ::-1].astype(np.float32) / 255.0
    x = (x - np.asarray(meta.mean, np.float32)) / np.asarray(meta.std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def _nms_numpy(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    order = np.argsort(-scores, kind="stable")
    keep = []
    area = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        xx1 = np.maximum(boxes[i, 0], boxes[rest, 0])
        yy1 = np.maximum(boxes[i, 1], boxes[rest, 1])
        xx2 = np.minimum(boxes[i, 2], boxes[rest, 2])
        yy2 = np.minimum(boxes[i, 3], boxes[rest, 3])
        inter = np.clip(xx2 - xx1, 0, None) * np.clip(yy2 - yy1, 0, None)
        ov = inter / np.maximum(area[i] + area[rest] - inter, 1e-9)
        order = rest[ov <= iou]
    return np.asarray(keep, dtype=np.int64)


def postprocess(
    raw: np.ndarray, spec: ScaleSpec, conf: float = 0.25, iou: float = 0.45, max_det: int = 300
) -> Detections:
    """Raw candidates of one image ``(N, 4 + nc + nc*ng)`` → kept :class:`Detections`."""
    ep = _edge_postprocess()
    if ep is not None and hasattr(ep, "postprocess"):
        return ep.postprocess(raw, spec, conf=conf, iou=iou, max_det=max_det)
    raw = np.asarray(raw, dtype=np.float32)
    nc, ng = spec.nc, spec.ng
    if raw.ndim != 2 or raw.shape[1] != 4 + nc + nc * ng:
        raise ValueError(f"postprocess: expected raw shape (N, {4 + nc + nc * ng}), got {raw.shape}")
    scores = raw[:, 4 : 4 + nc]
    unit = scores.argmax(1)
    confidence = scores[np.arange(len(raw)), unit]
    idx = np.nonzero(confidence > conf)[0]
    keep_all = []
    for u in np.unique(unit[idx]):
        cand = idx[unit[idx] == u]
        keep_all.append(cand[_nms_numpy(raw[cand, :4], confidence[cand], iou)])
    if not keep_all:
        return Detections.empty(ng)
    keep = np.concatenate(keep_all)
    keep = keep[np.argsort(-confidence[keep], kind="stable")][:max_det]
    grades = raw[:, 4 + nc :].reshape(len(raw), nc, ng)
    return Detections(raw[keep, :4], unit[keep], confidence[keep], grades[keep, unit[keep]])


def nms_rows_to_detections(rows: np.ndarray, ng: int) -> Detections:
    """Rows of an in-graph NMS output ``(max_det, 6 + ng)`` → :class:`Detections` (padding dropped)."""
    rows = np.asarray(rows, dtype=np.float32)
    if rows.ndim != 2 or rows.shape[1] != 6 + ng:
        raise ValueError(f"NMS output rows must have shape (max_det, {6 + ng}), got {rows.shape}")
    rows = rows[rows[:, 4] > 0]
    return Detections(rows[:, :4], np.rint(rows[:, 5]).astype(np.int64), rows[:, 4], rows[:, 6:])
