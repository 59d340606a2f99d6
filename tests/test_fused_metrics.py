"""Torch-free grading statistics: weighted accuracy (seed eq. 3) and ICC."""

from __future__ import annotations

import numpy as np
import pytest

from train.metrics import icc, weighted_accuracy


def test_weighted_accuracy_hand_example() -> None:
    # classes 0 (N=2), 1 (N=1), 2 (N=1); one 0 predicted as 1
    t, p = [0, 0, 1, 2], [0, 1, 1, 2]
    # one-vs-rest accuracies: class 0: 3/4, class 1: 3/4, class 2: 4/4; weights 2, 1, 1
    assert weighted_accuracy(t, p) == pytest.approx((2 * 0.75 + 0.75 + 1.0) / 4)
    assert weighted_accuracy([1, 1], [1, 1]) == 1.0
    with pytest.raises(ValueError, match="empty"):
        weighted_accuracy([], [])
    with pytest.raises(ValueError, match="3 items but y_pred has 1"):
        weighted_accuracy([0, 1, 2], [0])


def test_icc_known_values() -> None:
    # Shrout & Fleiss (1979) table: 6 targets x 4 judges; ICC(1,1)=0.17, ICC(3,1)=0.71
    x = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]], float)
    assert icc(x, "1,1") == pytest.approx(0.17, abs=0.005)
    assert icc(x, "3,1") == pytest.approx(0.71, abs=0.005)
    y = np.c_[np.arange(5.0), np.arange(5.0) + 1]  # constant offset: perfect consistency
    assert icc(y, "3,1") == pytest.approx(1.0)
    assert icc(y, "1,1") < 1.0
    with pytest.raises(ValueError):
        icc(np.zeros(3))
    with pytest.raises(ValueError, match="unknown ICC"):
        icc(y, "2,k")
