"""Classification metrics used by training and evaluation (numpy only, no torch).

The rat seed paper reports a *weighted accuracy* (its equation 3): for every class ``c`` the
one-vs-rest accuracy ``(TP_c + TN_c) / (TP_c + TN_c + FP_c + FN_c)`` is computed, and these are
averaged with weights ``N_c``, the number of true instances of class ``c``::

    WA = sum_c N_c * acc_c / sum_c N_c

Precision and recall are given per class and averaged two ways: ``macro`` (plain mean over classes
that occur) and ``weighted`` (weighted by the true class counts, like the weighted accuracy).

``icc`` is a numpy ICC(1,1)/ICC(3,1) for training-time agreement figures (student vs teacher) that must
not need the ``eval`` extra; validation reports use pingouin (``train/evaluation``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def _prepare(
    y_true: Sequence[Any] | np.ndarray, y_pred: Sequence[Any] | np.ndarray, labels: Sequence[Any] | None
) -> tuple[np.ndarray, np.ndarray, list[Any]]:
    t = np.asarray(y_true)
    p = np.asarray(y_pred)
    if t.ndim != 1 or p.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-D, got shapes {t.shape} and {p.shape}")
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.shape[0]} items but y_pred has {p.shape[0]}")
    if t.size == 0:
        raise ValueError("no items to score (y_true is empty)")
    if labels is None:
        labels = sorted(set(t.tolist()) | set(p.tolist()))
    else:
        labels = list(labels)
        unknown = (set(t.tolist()) | set(p.tolist())) - set(labels)
        if unknown:
            raise ValueError(f"values {sorted(unknown)} are not among labels {labels}")
    return t, p, labels


def confusion_matrix(
    y_true: Sequence[Any] | np.ndarray,
    y_pred: Sequence[Any] | np.ndarray,
    labels: Sequence[Any] | None = None,
) -> np.ndarray:
    """Confusion matrix, rows = true class, columns = predicted class.

    Args:
        y_true: True classes, shape ``(N,)``.
        y_pred: Predicted classes, shape ``(N,)``.
        labels: Class order; default the sorted union of both.

    Returns:
        int64 ``(C, C)`` counts.
    """
    t, p, labels = _prepare(y_true, y_pred, labels)
    index = {lab: i for i, lab in enumerate(labels)}
    cm = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for a, b in zip(t.tolist(), p.tolist(), strict=True):
        cm[index[a], index[b]] += 1
    return cm


def weighted_accuracy(
    y_true: Sequence[Any] | np.ndarray,
    y_pred: Sequence[Any] | np.ndarray,
    labels: Sequence[Any] | None = None,
) -> float:
    """The rat seed's weighted accuracy (equation 3).

    Args:
        y_true: True classes, shape ``(N,)``.
        y_pred: Predicted classes, shape ``(N,)``.
        labels: Classes to average over; default the sorted union of both. Classes with no true
            instance get weight 0.

    Returns:
        ``sum_c N_c * (TP_c+TN_c)/N / sum_c N_c`` in ``[0, 1]``.

    Raises:
        ValueError: Empty input, length mismatch, or values outside ``labels``.
    """
    cm = confusion_matrix(y_true, y_pred, labels)
    n = cm.sum()
    support = cm.sum(axis=1)
    if support.sum() == 0:
        raise ValueError("no true instance of any of the given labels")
    tp = np.diag(cm)
    fp = cm.sum(axis=0) - tp
    fn = support - tp
    tn = n - tp - fp - fn
    acc = (tp + tn) / n
    return float((support * acc).sum() / support.sum())


def precision_recall(
    y_true: Sequence[Any] | np.ndarray,
    y_pred: Sequence[Any] | np.ndarray,
    labels: Sequence[Any] | None = None,
) -> dict[str, Any]:
    """Per-class precision, recall and F1 with macro and support-weighted averages.

    A class never predicted has precision 0 (and is flagged in ``undefined_precision``); a class
    with no true instance is left out of the macro averages.

    Returns:
        ``{"labels", "per_class": {label: {precision, recall, f1, support}}, "precision_macro",
        "recall_macro", "f1_macro", "precision_weighted", "recall_weighted", "f1_weighted",
        "accuracy", "undefined_precision"}``.
    """
    t, p, labels = _prepare(y_true, y_pred, labels)
    cm = confusion_matrix(t, p, labels)
    tp = np.diag(cm).astype(float)
    pred_n = cm.sum(axis=0).astype(float)
    support = cm.sum(axis=1).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        prec = np.where(pred_n > 0, tp / np.maximum(pred_n, 1), 0.0)
        rec = np.where(support > 0, tp / np.maximum(support, 1), 0.0)
        f1 = np.where(prec + rec > 0, 2 * prec * rec / np.maximum(prec + rec, 1e-12), 0.0)
    present = support > 0
    w = support / support.sum()
    per_class = {
        str(lab): {
            "precision": float(prec[i]),
            "recall": float(rec[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, lab in enumerate(labels)
    }
    return {
        "labels": [str(lab) for lab in labels],
        "per_class": per_class,
        "precision_macro": float(prec[present].mean()),
        "recall_macro": float(rec[present].mean()),
        "f1_macro": float(f1[present].mean()),
        "precision_weighted": float((w * prec).sum()),
        "recall_weighted": float((w * rec).sum()),
        "f1_weighted": float((w * f1).sum()),
        "accuracy": float(tp.sum() / cm.sum()),
        "undefined_precision": [str(lab) for i, lab in enumerate(labels) if pred_n[i] == 0],
    }


@dataclass
class ClassificationReport:
    """Metrics of one classifier on one set (the seed's Table 1 row plus the confusion matrix).

    Attributes:
        n: Number of samples.
        weighted_accuracy: Seed equation 3.
        accuracy: Plain accuracy (fraction correct).
        precision: Support-weighted mean of per-class precision.
        recall: Support-weighted mean of per-class recall.
        per_class_precision: ``(C,)``.
        per_class_recall: ``(C,)``.
        support: True instances per class ``(C,)``.
        confusion: ``(C, C)`` rows true, columns predicted.
        baseline_class: The majority class of the reference labels.
        baseline_weighted_accuracy: Weighted accuracy of always predicting ``baseline_class``.
        extra: More JSON-safe fields to report.
    """

    n: int
    weighted_accuracy: float
    accuracy: float
    precision: float
    recall: float
    per_class_precision: np.ndarray
    per_class_recall: np.ndarray
    support: np.ndarray
    confusion: np.ndarray
    baseline_class: int
    baseline_weighted_accuracy: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def beats_baseline(self) -> bool:
        """Whether the weighted accuracy is above the majority-class baseline."""
        return self.weighted_accuracy > self.baseline_weighted_accuracy

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {
            "n": self.n,
            "weighted_accuracy": self.weighted_accuracy,
            "accuracy": self.accuracy,
            "precision": self.precision,
            "recall": self.recall,
            "per_class_precision": self.per_class_precision.tolist(),
            "per_class_recall": self.per_class_recall.tolist(),
            "support": self.support.tolist(),
            "confusion": self.confusion.tolist(),
            "baseline_class": self.baseline_class,
            "baseline_weighted_accuracy": self.baseline_weighted_accuracy,
            **self.extra,
        }

    def format(self, title: str = "") -> str:
        """Human-readable block with the confusion matrix."""
        rows = "  ".join(f"[{' '.join(f'{v:4d}' for v in row)}]" for row in self.confusion)
        return (
            f"{title}  n={self.n}  weighted acc={self.weighted_accuracy:.3f} "
            f"(majority baseline {self.baseline_weighted_accuracy:.3f}, class {self.baseline_class})  "
            f"acc={self.accuracy:.3f}  precision={self.precision:.3f}  recall={self.recall:.3f}\n"
            f"  confusion (rows true, cols predicted): {rows}"
        )


def majority_class(y: Sequence[Any] | np.ndarray, n_classes: int | None = None) -> int:
    """Most frequent class index (lowest index on ties); 0 for empty input."""
    t = np.asarray(y, dtype=np.int64).reshape(-1)
    if t.size == 0:
        return 0
    return int(np.bincount(t, minlength=n_classes or 0).argmax())


def classification_report(
    y_true: Sequence[Any] | np.ndarray,
    y_pred: Sequence[Any] | np.ndarray,
    n_classes: int | None = None,
    majority_of: Sequence[Any] | np.ndarray | None = None,
) -> ClassificationReport:
    """Weighted accuracy, precision, recall, confusion and the majority-class baseline.

    Args:
        y_true: True class indices ``(N,)``.
        y_pred: Predicted class indices ``(N,)``.
        n_classes: Number of classes (indices ``0..n_classes-1``); default 1 + largest index seen.
        majority_of: Labels whose majority class is the baseline (e.g. the training labels);
            default ``y_true``.

    Returns:
        The report; with no samples every rate is NaN and the matrices are zero.
    """
    t = np.asarray(y_true, dtype=np.int64).reshape(-1)
    p = np.asarray(y_pred, dtype=np.int64).reshape(-1)
    if n_classes is None:
        n_classes = int(max(t.max(initial=-1), p.max(initial=-1))) + 1
    labels = list(range(max(n_classes, 1)))
    base = majority_class(t if majority_of is None else majority_of, n_classes)
    if t.size == 0:
        z = np.zeros(len(labels))
        nan = float("nan")
        return ClassificationReport(
            0, nan, nan, nan, nan, z, z, z.astype(np.int64),
            np.zeros((len(labels),) * 2, np.int64), base, nan,
        )  # fmt: skip
    cm = confusion_matrix(t, p, labels)
    pr = precision_recall(t, p, labels)
    support = cm.sum(axis=1)
    return ClassificationReport(
        n=int(cm.sum()),
        weighted_accuracy=weighted_accuracy(t, p, labels),
        accuracy=float(np.trace(cm) / cm.sum()),
        precision=pr["precision_weighted"],
        recall=pr["recall_weighted"],
        per_class_precision=np.array([pr["per_class"][str(c)]["precision"] for c in labels]),
        per_class_recall=np.array([pr["per_class"][str(c)]["recall"] for c in labels]),
        support=support,
        confusion=cm,
        baseline_class=base,
        baseline_weighted_accuracy=weighted_accuracy(t, np.full_like(t, base), labels),
    )


def icc(ratings: np.ndarray, kind: str = "3,1") -> float:
    """Intraclass correlation of ``n`` targets rated by ``k`` raters (Shrout & Fleiss).

    Args:
        ratings: ``(n, k)`` array, no missing values.
        kind: ``"3,1"`` (two-way mixed, consistency, single rater) or ``"1,1"`` (one-way random).

    Returns:
        The ICC; NaN when ``n < 2`` or the ratings have no variance.
    """
    x = np.asarray(ratings, dtype=float)
    if x.ndim != 2 or x.shape[1] < 2:
        raise ValueError(f"ratings must have shape (n, k>=2), got {x.shape}")
    if np.isnan(x).any():
        raise ValueError("ratings contain NaN; drop incomplete rows first")
    n, k = x.shape
    if n < 2:
        return float("nan")
    grand = x.mean()
    ss_total = ((x - grand) ** 2).sum()
    ss_rows = k * ((x.mean(1) - grand) ** 2).sum()
    ss_cols = n * ((x.mean(0) - grand) ** 2).sum()
    ms_rows = ss_rows / (n - 1)
    if kind == "3,1":
        ms_err = (ss_total - ss_rows - ss_cols) / ((n - 1) * (k - 1))
        den = ms_rows + (k - 1) * ms_err
        return float((ms_rows - ms_err) / den) if den > 0 else float("nan")
    if kind == "1,1":
        ms_within = (ss_total - ss_rows) / (n * (k - 1))
        den = ms_rows + (k - 1) * ms_within
        return float((ms_rows - ms_within) / den) if den > 0 else float("nan")
    raise ValueError(f"unknown ICC kind {kind!r}; expected '3,1' or '1,1'")
