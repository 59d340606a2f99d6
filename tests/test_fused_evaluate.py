"""Grade statistics on a hand-built case: matching, weighted accuracy, agreement, ICC inputs."""

from __future__ import annotations

import numpy as np
import pytest

from edge.boxes import box_iou
from edge.results import Detections
from edge.scales import RGS
from train.fused.evaluate import GradeStats, match_boxes


def _det(xyxy, unit, conf, probs) -> Detections:
    return Detections(
        np.array(xyxy, np.float32), np.array(unit), np.array(conf, np.float32), np.array(probs, np.float32)
    )


def test_box_iou_and_matching() -> None:
    assert box_iou([[0, 0, 10, 10]], [[5, 0, 15, 10]])[0, 0] == pytest.approx(50 / 150)
    gt = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], float)
    det = _det(
        [[1, 0, 10, 10], [0, 0, 10, 9], [20, 20, 30, 30]], [0, 0, 1], [0.5, 0.9, 0.8], np.full((3, 3), 1 / 3)
    )
    m = match_boxes(gt, np.array([0, 1]), det)
    assert m.tolist() == [1, 2]  # most confident same-unit box wins
    assert match_boxes(gt, np.array([2, 2]), det).tolist() == [-1, -1]  # unit must agree


def test_grade_stats_hand_case() -> None:
    st = GradeStats(RGS)
    gt = np.array([[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10], [60, 0, 70, 10]], float)
    units = np.array([0, 0, 1, 2])
    grades = np.array([2, 0, 1, -1])
    soft = np.array([[0.1, 0.2, 0.7], [0.6, 0.3, 0.1], [0.2, 0.3, 0.5], [0.5, 0.5, 0.0]])
    student = _det(
        [[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10]],
        [0, 0, 1],
        [0.9, 0.9, 0.9],
        [[0.0, 0.1, 0.9], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1]],
    )
    st.add_image(gt, units, grades, soft, student)
    g = st.summary()
    eye, ear = g["per_unit"]["eye"], g["per_unit"]["ear"]
    assert eye["matched"] == 2 and g["per_unit"]["nose"]["matched"] == 0
    # eye: true [2, 0], student argmax [2, 1] -> class 0: 1/2 acc (N=1), class 2: 2/2 (N=1) -> 0.75
    assert eye["student_wacc"] == pytest.approx(0.75)
    assert eye["teacher_wacc"] == pytest.approx(1.0) and ear["teacher_wacc"] == pytest.approx(0.0)
    assert eye["agree"] == pytest.approx(0.5) and ear["agree"] == pytest.approx(0.0)
    assert eye["exp_diff"] == pytest.approx((abs(1.9 - 1.6) + abs(0.9 - 0.5)) / 2)
    assert g["agree"] == pytest.approx(1 / 3) and g["recall"] == pytest.approx(3 / 4)
    # the student found no nose (a required unit): its frame abstains, so no frame pair and no ICC
    assert g["frames_compared"] == 0 and np.isnan(g["icc"])
    # teacher detections replace soft targets when given
    st2 = GradeStats(RGS)
    st2.add_image(gt, units, grades, None, student, teacher=student)
    assert st2.summary()["agree"] == 1.0
