"""Classification metrics used by the teacher and by evaluation (numpy only, no torch).

The seed paper reports for each action-unit grader the *weighted accuracy* of its equation 3: for
every class ``c`` the one-vs-rest accuracy ``(TP_c + TN_c) / (TP_c + TN_c + FP_c + FN_c)``, averaged
with weights ``N_c`` = number of true instances of class ``c``. Precision and recall are reported
the same way (class-frequency weighted means of the per-class one-vs-rest values).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


def _as_labels(y: Any, name: str) -> np.ndarray:
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array of class indices, got shape {arr.shape}")
    if arr.size and (arr.dtype.kind not in "iu" and not np.all(arr == np.round(arr))):
        raise ValueError(f"{name}: class indices must be integers")
    return arr.astype(np.int64)


def confusion_matrix(y_true: Any, y_pred: Any, n_classes: int | None = None) -> np.ndarray:
    """Confusion matrix, rows = true class, columns = predicted class.

    Args:
        y_true: True class indices, shape ``(N,)``.
        y_pred: Predicted class indices, shape ``(N,)``.
        n_classes: Number of classes (default: 1 + largest index seen).

    Returns:
        int64 ``(C, C)``.
    """
    t = _as_labels(y_true, "y_true")
    p = _as_labels(y_pred, "y_pred")
    if t.shape != p.shape:
        raise ValueError(f"y_true has shape {t.shape} but y_pred has shape {p.shape}")
    if n_classes is None:
        n_classes = int(max(t.max(initial=-1), p.max(initial=-1))) + 1
    if t.size and (min(t.min(), p.min()) < 0 or max(t.max(), p.max()) >= n_classes):
        raise ValueError(f"class indices must lie in 0..{n_classes - 1}")
    cm = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(cm, (t, p), 1)
    return cm


def per_class_counts(cm: np.ndarray) -> dict[str, np.ndarray]:
    """One-vs-rest TP, FP, FN, TN per class from a confusion matrix ``(C, C)``."""
    cm = np.asarray(cm, dtype=np.int64)
    total = cm.sum()
    tp = np.diag(cm)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    tn = total - tp - fp - fn
    return {"tp": tp, "fp": fp, "fn": fn, "tn": tn}


def _weighted_mean(values: np.ndarray, support: np.ndarray) -> float:
    if support.sum() == 0:
        return float("nan")
    return float((values * support).sum() / support.sum())


def weighted_accuracy(y_true: Any, y_pred: Any, n_classes: int | None = None) -> float:
    """The seed's equation 3: class-frequency-weighted mean of one-vs-rest accuracies.

    ``sum_c N_c * (TP_c + TN_c) / (TP_c + TN_c + FP_c + FN_c) / sum_c N_c``.

    Returns:
        A value in ``[0, 1]`` (NaN for empty input).
    """
    cm = confusion_matrix(y_true, y_pred, n_classes)
    c = per_class_counts(cm)
    total = cm.sum()
    if total == 0:
        return float("nan")
    acc = (c["tp"] + c["tn"]) / total
    return _weighted_mean(acc, cm.sum(axis=1))


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.zeros(a.shape, dtype=np.float64)
    np.divide(a, b, out=out, where=b > 0)
    return out


@dataclass
class ClassificationReport:
    """Metrics of one classifier on one set.

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
        c = self.confusion.shape[0]
        lines = [
            f"{title}  n={self.n}  weighted acc={self.weighted_accuracy:.3f} "
            f"(majority baseline {self.baseline_weighted_accuracy:.3f}, class {self.baseline_class})  "
            f"acc={self.accuracy:.3f}  precision={self.precision:.3f}  recall={self.recall:.3f}",
            "  confusion (rows true, cols predicted): "
            + "  ".join(f"[{' '.join(f'{v:4d}' for v in self.confusion[i])}]" for i in range(c)),
        ]
        return "\n".join(lines)


def majority_class(y: Any, n_classes: int | None = None) -> int:
    """Most frequent class (lowest index on ties)."""
    t = _as_labels(y, "y")
    if t.size == 0:
        return 0
    return int(np.bincount(t, minlength=n_classes or 0).argmax())


def classification_report(
    y_true: Any, y_pred: Any, n_classes: int | None = None, majority_of: Any | None = None
) -> ClassificationReport:
    """Weighted accuracy, precision, recall, confusion and the majority-class baseline.

    Args:
        y_true: True classes ``(N,)``.
        y_pred: Predicted classes ``(N,)``.
        n_classes: Number of classes.
        majority_of: Labels whose majority class is the baseline (e.g. the training labels);
            default ``y_true``.
    """
    cm = confusion_matrix(y_true, y_pred, n_classes)
    n_classes = cm.shape[0]
    c = per_class_counts(cm)
    support = cm.sum(axis=1)
    prec = _safe_div(c["tp"], c["tp"] + c["fp"])
    rec = _safe_div(c["tp"], c["tp"] + c["fn"])
    base = majority_class(y_true if majority_of is None else majority_of, n_classes)
    t = _as_labels(y_true, "y_true")
    base_wa = weighted_accuracy(t, np.full_like(t, base), n_classes) if t.size else float("nan")
    total = int(cm.sum())
    return ClassificationReport(
        n=total,
        weighted_accuracy=weighted_accuracy(y_true, y_pred, n_classes),
        accuracy=float(np.trace(cm) / total) if total else float("nan"),
        precision=_weighted_mean(prec, support),
        recall=_weighted_mean(rec, support),
        per_class_precision=prec,
        per_class_recall=rec,
        support=support,
        confusion=cm,
        baseline_class=base,
        baseline_weighted_accuracy=base_wa,
    )
