"""Validated numpy result types shared by every scoring path (edge runtime, PyTorch predict, teacher).

:class:`Detections` holds the boxes of one frame with their unit, confidence and grade distribution;
:class:`FrameResult` adds the scale scoring of that frame (or an explicit abstention and its reason).
Shapes are checked on construction and errors say what was expected and what was given.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


def _check(name: str, arr: np.ndarray, ndim: int, n: int | None, width: int | None) -> None:
    if arr.ndim != ndim:
        raise ValueError(f"Detections.{name}: expected {ndim}-D array, got shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"Detections.{name}: expected {n} rows (one per box), got shape {arr.shape}")
    if width is not None and arr.shape[1] != width:
        raise ValueError(f"Detections.{name}: expected shape (N, {width}), got {arr.shape}")


@dataclass
class Detections:
    """Boxes of one frame.

    Attributes:
        xyxy: Boxes in original-image pixels, float32 ``(N, 4)``.
        unit: Unit (detector class) index per box, int64 ``(N,)``.
        confidence: Detector confidence per box, float32 ``(N,)``.
        grade_probs: Grade distribution per box, float32 ``(N, ng)``; rows sum to 1 over the
            unit's valid levels (levels beyond a unit's grade count are 0).
    """

    xyxy: np.ndarray
    unit: np.ndarray
    confidence: np.ndarray
    grade_probs: np.ndarray

    def __post_init__(self) -> None:
        self.xyxy = np.asarray(self.xyxy, dtype=np.float32)
        if self.xyxy.size == 0:
            self.xyxy = self.xyxy.reshape(0, 4)
        _check("xyxy", self.xyxy, 2, None, 4)
        n = self.xyxy.shape[0]
        self.unit = np.asarray(self.unit, dtype=np.int64).reshape(-1)
        self.confidence = np.asarray(self.confidence, dtype=np.float32).reshape(-1)
        self.grade_probs = np.asarray(self.grade_probs, dtype=np.float32)
        if self.grade_probs.ndim == 1 and self.grade_probs.size == 0:
            self.grade_probs = self.grade_probs.reshape(0, 1)
        _check("unit", self.unit, 1, n, None)
        _check("confidence", self.confidence, 1, n, None)
        _check("grade_probs", self.grade_probs, 2, n, None)

    def __len__(self) -> int:
        return int(self.xyxy.shape[0])

    @classmethod
    def empty(cls, ng: int) -> Detections:
        """No boxes, with ``ng`` grade columns."""
        return cls(
            np.zeros((0, 4), np.float32),
            np.zeros((0,), np.int64),
            np.zeros((0,), np.float32),
            np.zeros((0, ng), np.float32),
        )

    def __getitem__(self, idx: Any) -> Detections:
        idx = np.atleast_1d(np.arange(len(self))[idx])
        return Detections(self.xyxy[idx], self.unit[idx], self.confidence[idx], self.grade_probs[idx])

    @property
    def expected_grade(self) -> np.ndarray:
        """Probability-weighted grade per box, float32 ``(N,)``."""
        levels = np.arange(self.grade_probs.shape[1], dtype=np.float32)
        return (self.grade_probs * levels).sum(axis=1).astype(np.float32)

    @property
    def argmax_grade(self) -> np.ndarray:
        """Most probable grade per box, int64 ``(N,)``."""
        if len(self) == 0:
            return np.zeros((0,), np.int64)
        return self.grade_probs.argmax(axis=1).astype(np.int64)


@dataclass
class FrameResult:
    """Scale scoring of one frame.

    Attributes:
        detections: All kept boxes of the frame.
        selected: Indices into ``detections`` of the boxes used for scoring (top-k per unit).
        unit_scores: Per-unit score (mean expected grade of the selected boxes); ``None`` when the
            unit was not found. Keyed by unit name, in scale order.
        unit_argmax: Per-unit score from argmax grades (same keys).
        unit_counts: Number of selected boxes per unit.
        score: Frame score from expected grades by the scale's aggregation rule, or ``None`` when
            abstained.
        score_argmax: The same rule applied to argmax grades (binary scales: 1.0 when the best box's
            most likely grade is the top one, else 0.0); ``None`` exactly when ``score`` is.
        abstained: Reason the frame was not scored (``None`` when scored).
        quality: Optional frame quality in ``[0, 1]``.
        source: Where the frame came from (file path, video path + frame index, camera).
        meta: Free-form extra fields (frame index, timestamp, subject id...).
    """

    detections: Detections
    selected: np.ndarray
    unit_scores: dict[str, float | None]
    unit_argmax: dict[str, float | None]
    unit_counts: dict[str, int]
    score: float | None
    score_argmax: float | None = None
    abstained: str | None = None
    quality: float | None = None
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.score is None and not self.abstained:
            raise ValueError("FrameResult: a frame without a score must give an abstention reason")
        if self.score is not None and not np.isfinite(self.score):
            raise ValueError(f"FrameResult: score must be finite, got {self.score}")
        if (self.score is None) != (self.score_argmax is None):
            raise ValueError(
                f"FrameResult: score ({self.score}) and score_argmax ({self.score_argmax}) must both be "
                "set or both be None"
            )

    @property
    def scored(self) -> bool:
        """Whether the frame has a score."""
        return self.score is not None
