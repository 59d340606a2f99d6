"""The validation page's statistics: quadratic kappa equals scikit-learn's, ICC(2,1) is the one copy
the evaluation code uses."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edge.station.agreement import icc21, kappa_quadratic


def test_kappa_quadratic_matches_sklearn() -> None:
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(3)
    for _ in range(20):
        a = rng.integers(0, 3, 30)
        b = np.clip(a + rng.integers(-1, 2, 30), 0, 2)
        assert kappa_quadratic(a, b, [0, 1, 2]) == pytest.approx(
            sk.cohen_kappa_score(a, b, labels=[0, 1, 2], weights="quadratic")
        )
    assert kappa_quadratic([1, 1], [1, 1], [0, 1, 2]) is None
    assert kappa_quadratic([], [], [0, 1, 2]) is None


def test_icc21_perfect_none_and_shared_with_train() -> None:
    x = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]])
    assert icc21(x) == pytest.approx(1.0)
    assert math.isnan(icc21(np.ones((4, 2))))
    stats = pytest.importorskip("train.evaluation.stats")
    assert stats.icc21 is icc21
