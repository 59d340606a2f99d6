"""Frame scoring by a scale spec: the one implementation used by the teacher, the PyTorch predict
path and the edge runtime.

Rule (the seed aRGS rule, generalised by the scale spec): for each unit keep the ``per_frame``
most confident boxes (RGS: 2 eyes, 2 ears, 1 nose, 1 whisker region); the unit score is the mean of
their grades; the frame score is the mean of the unit scores present. Unlike the seed, a missing
unit never turns the frame into NaN: a missing *required* unit, or fewer than ``min_units`` units,
gives an explicit abstention with its reason, and optional units are simply left out of the mean.

For a binary scale the frame score is the pain probability of the best box of its single unit.
"""

from __future__ import annotations

import numpy as np

from edge.results import Detections, FrameResult
from edge.scales import ScaleSpec


def select_boxes(dets: Detections, spec: ScaleSpec) -> np.ndarray:
    """Indices of the boxes that count for scoring: top ``per_frame`` by confidence per unit.

    Args:
        dets: Boxes of one frame.
        spec: The scale.

    Returns:
        int64 ``(K,)`` indices into ``dets``, grouped by unit in scale order, each group sorted by
        descending confidence.
    """
    keep: list[np.ndarray] = []
    for i, unit in enumerate(spec.units):
        idx = np.flatnonzero(dets.unit == i)
        if idx.size:
            order = np.argsort(-dets.confidence[idx], kind="stable")
            keep.append(idx[order[: unit.per_frame]])
    if not keep:
        return np.zeros((0,), np.int64)
    return np.concatenate(keep).astype(np.int64)


def score_frame(
    dets: Detections,
    spec: ScaleSpec,
    *,
    min_units: int = 1,
    source: str = "",
    quality: float | None = None,
    min_quality: float | None = None,
) -> FrameResult:
    """Score one frame by the scale's rule.

    Args:
        dets: Kept boxes of the frame (after NMS), grade columns ``(N, spec.ng)``.
        spec: The scale.
        min_units: Fewest units that must be present for a score.
        source: Where the frame came from (kept in the result).
        quality: Frame quality in ``[0, 1]`` if known.
        min_quality: Abstain when ``quality`` is below this.

    Returns:
        The frame result with both frame scores (expected and argmax grades, computed here and only
        here); ``score`` is ``None`` exactly when ``abstained`` gives a reason.

    Raises:
        ValueError: If the grade columns do not match the scale.
    """
    if len(dets) and dets.grade_probs.shape[1] != spec.ng:
        raise ValueError(
            f"detections have {dets.grade_probs.shape[1]} grade columns but scale {spec.name!r} "
            f"needs {spec.ng}"
        )
    if len(dets) and (dets.unit.min() < 0 or dets.unit.max() >= spec.nc):
        raise ValueError(f"detections name unit indices outside 0..{spec.nc - 1} of {spec.name!r}")
    sel = select_boxes(dets, spec)
    expected = dets.expected_grade
    argmax = dets.argmax_grade.astype(np.float32)
    unit_scores: dict[str, float | None] = {}
    unit_argmax: dict[str, float | None] = {}
    counts: dict[str, int] = {}
    for i, unit in enumerate(spec.units):
        mine = sel[dets.unit[sel] == i]
        counts[unit.name] = int(mine.size)
        if mine.size:
            unit_scores[unit.name] = float(expected[mine].mean())
            unit_argmax[unit.name] = float(argmax[mine].mean())
        else:
            unit_scores[unit.name] = None
            unit_argmax[unit.name] = None

    reason = None
    missing = [u.name for u in spec.units if u.required and counts[u.name] == 0]
    present = [n for n, c in counts.items() if c]
    if missing:
        reason = f"missing required unit(s): {', '.join(missing)}"
    elif len(present) < min_units:
        reason = f"only {len(present)} unit(s) found, need {min_units}"
    elif min_quality is not None and quality is not None and quality < min_quality:
        reason = f"quality {quality:.2f} below {min_quality:.2f}"

    score: float | None = None
    score_argmax: float | None = None
    if reason is None:
        if spec.aggregation == "binary":
            best = sel[0]
            top = spec.units[0].grades - 1
            score = float(dets.grade_probs[best, top])
            score_argmax = float(argmax[best] == top)
        else:
            score = float(np.mean([unit_scores[n] for n in present]))
            score_argmax = float(np.mean([unit_argmax[n] for n in present]))
    return FrameResult(
        detections=dets,
        selected=sel,
        unit_scores=unit_scores,
        unit_argmax=unit_argmax,
        unit_counts=counts,
        score=score,
        score_argmax=score_argmax,
        abstained=reason,
        quality=quality,
        source=source,
    )
