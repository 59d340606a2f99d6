"""The one pre/post-processing entry point used by the conversion checks.

Parity checks, the engine check and the INT8 calibrator must process images exactly as the edge
runtime does, so they call :func:`preprocess` and :func:`postprocess` here, which are the runtime's own
``edge.postprocess.preprocess`` / ``edge.postprocess.postprocess`` (letterbox, best unit per candidate,
score threshold, per-unit NMS, ``max_det``, the chosen unit's grade probabilities kept with each box).
Boxes are left in letterboxed input pixels: both sides of every comparison use the same frame.
"""

from __future__ import annotations

import numpy as np

from edge import postprocess as _ep
from edge.artifact import ModelMetadata
from edge.results import Detections
from edge.scales import ScaleSpec


def backend_name() -> str:
    """Which implementation is in use (printed with parity figures)."""
    return "edge.postprocess (the runtime's own)"


def preprocess(img_bgr: np.ndarray, meta: ModelMetadata) -> np.ndarray:
    """BGR uint8 image → network input ``(1, 3, H, W)`` float32 (letterboxed, RGB, normalised)."""
    return _ep.preprocess(img_bgr, meta, dtype=np.float32)


def postprocess(
    raw: np.ndarray, spec: ScaleSpec, conf: float = 0.25, iou: float = 0.45, max_det: int = 300
) -> Detections:
    """Raw candidates of one image ``(N, 4 + nc + nc*ng)`` → kept :class:`Detections` (input pixels)."""
    return _ep.postprocess(raw, spec, conf=conf, iou=iou, max_det=max_det, layout="raw")


def nms_rows_to_detections(rows: np.ndarray, spec: ScaleSpec) -> Detections:
    """Rows of an in-graph NMS output ``(max_det, 6 + ng)`` → :class:`Detections` (padding dropped)."""
    return _ep.postprocess(rows, spec, conf=0.0, max_det=len(rows), layout="nms")
