"""The box toolkit: IoU and greedy one-to-one matching of xyxy boxes (numpy only).

Every comparison of two box sets uses these: detection precision/recall against labels
(``grimace eval detect``), grade agreement of a student with labels or a teacher
(``train evaluate``), ONNX/engine parity with PyTorch (``convert``), the INT8 agreement report.
"""

from __future__ import annotations

import numpy as np


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of xyxy boxes.

    Args:
        a: ``(N, 4)`` boxes.
        b: ``(M, 4)`` boxes.

    Returns:
        float64 ``(N, M)``; 0 where the union is empty (degenerate boxes).
    """
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(axis=1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def greedy_match(
    a_xyxy: np.ndarray,
    a_conf: np.ndarray,
    b_xyxy: np.ndarray,
    *,
    a_unit: np.ndarray | None = None,
    b_unit: np.ndarray | None = None,
    iou_thr: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """Match boxes of ``a`` to boxes of ``b`` one to one, greedily by ``a``'s confidence.

    Each box of ``a``, in descending confidence (ties in input order), takes the still unmatched box of
    ``b`` with the highest IoU (of the same unit when units are given); the pair counts when that IoU is
    at least ``iou_thr``. This is the matching of COCO-style precision/recall (``a`` = predictions,
    ``b`` = ground truth), so the matches at any confidence threshold are those of the boxes above it.

    Args:
        a_xyxy: ``(N, 4)`` boxes that are matched in order (predictions, or the reference side).
        a_conf: ``(N,)`` their confidences.
        b_xyxy: ``(M, 4)`` boxes matched against.
        a_unit: ``(N,)`` units of ``a`` (with ``b_unit``: only same-unit pairs match).
        b_unit: ``(M,)`` units of ``b``.
        iou_thr: Least IoU of a match.

    Returns:
        ``(match, iou)``: int64 ``(N,)`` index into ``b`` of each ``a`` box's match (-1 when none) and
        float64 ``(N,)`` IoU of that match (0 when none).
    """
    a_conf = np.asarray(a_conf, np.float64).reshape(-1)
    n = len(a_conf)
    match = np.full(n, -1, np.int64)
    miou = np.zeros(n, np.float64)
    ious = box_iou(a_xyxy, b_xyxy)
    if ious.shape[0] != n:
        raise ValueError(f"greedy_match: {ious.shape[0]} boxes but {n} confidences")
    if n == 0 or ious.shape[1] == 0:
        return match, miou
    if (a_unit is None) != (b_unit is None):
        raise ValueError("greedy_match: give units for both sides or for neither")
    if a_unit is not None and b_unit is not None:
        same = np.asarray(a_unit).reshape(-1)[:, None] == np.asarray(b_unit).reshape(-1)[None, :]
        ious = np.where(same, ious, -1.0)
    used = np.zeros(ious.shape[1], bool)
    for i in np.argsort(-a_conf, kind="stable"):
        cand = np.where(used, -1.0, ious[i])
        j = int(cand.argmax())
        if cand[j] >= iou_thr and cand[j] >= 0:
            match[i], miou[i] = j, cand[j]
            used[j] = True
    return match, miou
