"""The goat clinic's question: is this animal in pain? One verdict per animal from its scored frames.

Rule (:class:`VerdictRule`, stated in every report that uses it): an animal is **painful** when the mean
per-frame pain value over its scored frames is at least ``threshold``, **not painful** when it is below,
and **insufficient frames** when fewer than ``min_frames`` of its frames were scored. The per-frame pain
value is the model's pain probability (the fused model's ``pain`` grade probability) or, for the linear
SVM, which gives no probability, its vote (1 when it calls the frame painful, else 0) — the mean is
then the share of frames called painful. Frames the model abstained on do not count as scored.

Pure numpy, in the edge runtime: ``grimace score`` (per-animal summaries of binary scales, through
:func:`edge.aggregate.aggregate`), ``grimace eval cv`` and ``grimace baseline score`` apply this one rule.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

PAINFUL = "painful"
NOT_PAINFUL = "not painful"
INSUFFICIENT = "insufficient frames"
VERDICTS = (PAINFUL, NOT_PAINFUL, INSUFFICIENT)
DEFAULT_MIN_FRAMES = 10


@dataclass(frozen=True)
class VerdictRule:
    """How frames become an animal's verdict.

    Attributes:
        min_frames: Fewest scored frames for a verdict (N).
        threshold: Mean pain value at or above which the animal is painful.
    """

    min_frames: int = DEFAULT_MIN_FRAMES
    threshold: float = 0.5

    def __post_init__(self) -> None:
        if self.min_frames < 1:
            raise ValueError(f"min_frames must be at least 1, got {self.min_frames}")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold}")

    def describe(self) -> str:
        """The rule in one sentence, for reports."""
        return (
            f"painful when the mean per-frame pain value (probability, or the SVM's 0/1 vote) over at "
            f"least {self.min_frames} scored frames is >= {self.threshold:g}; not painful when below; "
            f"fewer than {self.min_frames} scored frames: insufficient frames"
        )

    def verdict(self, n_scored: int, mean_pain: float | None) -> str:
        """The verdict for an animal with ``n_scored`` scored frames and mean pain value ``mean_pain``."""
        if n_scored < self.min_frames or mean_pain is None or not math.isfinite(mean_pain):
            return INSUFFICIENT
        return PAINFUL if mean_pain >= self.threshold else NOT_PAINFUL

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (with the sentence)."""
        return {**asdict(self), "rule": self.describe()}


def animal_verdicts(
    animals: Sequence[str],
    pain_values: Sequence[float] | np.ndarray,
    rule: VerdictRule,
    truth: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """One verdict per animal.

    Args:
        animals: Animal id per frame ``(F,)``.
        pain_values: Pain value per frame in ``[0, 1]`` ``(F,)``; NaN = not scored (abstained).
        rule: The rule.
        truth: Animal -> true verdict (``painful``/``not painful``) for the ``correct`` column.

    Returns:
        Rows ``{"animal", "n_frames", "n_scored", "mean_pain", "verdict"[, "truth", "correct"]}`` in
        order of first appearance; ``correct`` is ``None`` for insufficient frames.
    """
    v = np.asarray(pain_values, dtype=float)
    a = [str(x) for x in animals]
    if len(a) != v.size:
        raise ValueError(f"{len(a)} animal ids for {v.size} pain values")
    rows = []
    for animal in dict.fromkeys(a):
        sel = np.array([x == animal for x in a])
        vals = v[sel]
        scored = vals[np.isfinite(vals)]
        mean = float(scored.mean()) if scored.size else math.nan
        verdict = rule.verdict(int(scored.size), mean)
        row: dict[str, Any] = {
            "animal": animal,
            "n_frames": int(sel.sum()),
            "n_scored": int(scored.size),
            "mean_pain": mean if scored.size else None,
            "verdict": verdict,
        }
        if truth is not None:
            t = truth.get(animal)
            row["truth"] = t
            row["correct"] = None if verdict == INSUFFICIENT or t is None else verdict == t
        rows.append(row)
    return rows


def verdict_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts and, with truth, accuracy over the animals that got a verdict (per animal, not frame)."""
    decided = [r for r in rows if r["verdict"] != INSUFFICIENT]
    out: dict[str, Any] = {
        "n_animals": len(rows),
        "n_painful": sum(r["verdict"] == PAINFUL for r in rows),
        "n_not_painful": sum(r["verdict"] == NOT_PAINFUL for r in rows),
        "n_insufficient": len(rows) - len(decided),
    }
    judged = [r for r in decided if r.get("correct") is not None]
    if judged:
        out["animal_accuracy"] = sum(r["correct"] for r in judged) / len(judged)
        out["n_judged"] = len(judged)
        cm = {t: {p: 0 for p in (PAINFUL, NOT_PAINFUL)} for t in (PAINFUL, NOT_PAINFUL)}
        for r in judged:
            cm[r["truth"]][r["verdict"]] += 1
        out["confusion"] = cm
    return out
