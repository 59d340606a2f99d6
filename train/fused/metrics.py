"""Torch-free grading statistics used by training/validation: weighted accuracy (seed eq. 3) and ICC.

(Kept in the fused package so it does not collide with the teacher's ``train/metrics.py``; both
implement the same equation 3.)

``weighted_accuracy`` follows the seed paper's equation 3: for every class ``c`` the one-vs-rest
accuracy ``(TP_c + TN_c) / (TP_c + TN_c + FP_c + FN_c)``, averaged with weights ``N_c`` (the number of
true instances of class ``c``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def weighted_accuracy(y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray) -> float:
    """Class-frequency-weighted mean of one-vs-rest accuracies (seed eq. 3).

    Args:
        y_true: ``(n,)`` true labels.
        y_pred: ``(n,)`` predicted labels.

    Returns:
        The weighted accuracy in ``[0, 1]``; NaN for empty input.

    Raises:
        ValueError: If the lengths differ.
    """
    t = np.asarray(y_true).ravel()
    p = np.asarray(y_pred).ravel()
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} labels but y_pred has {p.size}")
    if t.size == 0:
        return float("nan")
    classes, counts = np.unique(t, return_counts=True)
    accs = np.array([np.mean((t == c) == (p == c)) for c in classes])
    return float(np.sum(accs * counts) / counts.sum())


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
