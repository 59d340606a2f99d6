"""Agreement statistics of the station's validation page, in numpy (no SciPy, pandas or pingouin on
the device).

:func:`icc21` is the project's one ICC(2,1) (``train.evaluation.stats`` uses it for the cluster
bootstrap and checks it against pingouin's ``ICC2`` row on Shrout & Fleiss's example);
:func:`kappa_quadratic` is Cohen's quadratic-weighted kappa (the same number as scikit-learn's
``cohen_kappa_score(weights="quadratic")``; a test checks it). The full report with confidence
intervals is ``grimace eval grades`` (extra ``eval``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def icc21(ratings: np.ndarray) -> float:
    """ICC(2,1) (two-way random effects, absolute agreement, single rater) in numpy.

    Args:
        ratings: float ``(n_targets, k_raters)``; rows with any NaN are dropped.

    Returns:
        The ICC, or NaN with fewer than 2 complete rows, fewer than 2 raters, or no variance.
    """
    x = np.asarray(ratings, dtype=float)
    x = x[np.isfinite(x).all(axis=1)]
    n, k = x.shape if x.ndim == 2 else (0, 0)
    if n < 2 or k < 2:
        return math.nan
    grand = x.mean()
    ss_rows = k * ((x.mean(axis=1) - grand) ** 2).sum()
    ss_cols = n * ((x.mean(axis=0) - grand) ** 2).sum()
    ss_err = ((x - grand) ** 2).sum() - ss_rows - ss_cols
    msr = ss_rows / (n - 1)
    msc = ss_cols / (k - 1)
    mse = ss_err / ((n - 1) * (k - 1))
    den = msr + (k - 1) * mse + k * (msc - mse) / n
    if not den > 0:
        return math.nan
    return float((msr - mse) / den)


def kappa_quadratic(a: Sequence[int], b: Sequence[int], labels: Sequence[int]) -> float | None:
    """Cohen's kappa with quadratic weights between two raters' integer grades.

    Args:
        a: Grades of rater A.
        b: Grades of rater B (same items, same order).
        labels: The grade levels (e.g. ``[0, 1, 2]``).

    Returns:
        Kappa, or ``None`` when undefined (no items, or both raters constant and equal).
    """
    a, b = np.asarray(a, int), np.asarray(b, int)
    if len(a) == 0 or len(a) != len(b):
        return None
    idx = {v: i for i, v in enumerate(labels)}
    k = len(labels)
    obs = np.zeros((k, k))
    for x, y in zip(a, b, strict=True):
        obs[idx[int(x)], idx[int(y)]] += 1
    i, j = np.meshgrid(np.arange(k), np.arange(k), indexing="ij")
    w = (i - j) ** 2 / max((k - 1) ** 2, 1)
    expected = np.outer(obs.sum(1), obs.sum(0)) / obs.sum()
    den = (w * expected).sum()
    if den == 0:
        return None
    return float(1.0 - (w * obs).sum() / den)
