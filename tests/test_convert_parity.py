"""Detection comparison used by the parity and engine checks (pure numpy)."""

from __future__ import annotations

import numpy as np

from convert.parity import ParityReport, compare_detections, raw_deltas
from edge.boxes import box_iou
from edge.results import Detections


def _det(boxes, units, conf, grades) -> Detections:
    g = np.zeros((len(grades), 3), np.float32)
    g[np.arange(len(grades)), grades] = 1.0
    return Detections(np.asarray(boxes, np.float32), units, conf, g)


REF = _det([[0, 0, 10, 10], [20, 20, 40, 40], [50, 0, 60, 30]], [0, 1, 2], [0.9, 0.8, 0.7], [0, 2, 1])


def test_identical_sets_agree():
    ag = compare_detections(REF, REF[[2, 0, 1]])  # order does not matter
    assert ag.identical and ag.matched == 3 and ag.min_iou == 1.0


def test_grade_or_unit_change_is_disagreement():
    other = _det(REF.xyxy, [0, 1, 2], [0.9, 0.8, 0.7], [0, 1, 1])
    ag = compare_detections(REF, other)
    assert not ag.identical and ag.matched == 3 and ag.grade_same == 2
    other = _det(REF.xyxy, [0, 3, 2], [0.9, 0.8, 0.7], [0, 2, 1])
    assert compare_detections(REF, other).unit_same == 2


def test_shifted_box_below_iou_is_disagreement():
    other = _det([[0, 0, 10, 10], [21, 20, 41, 40], [50, 0, 60, 30]], [0, 1, 2], [0.9, 0.79, 0.7], [0, 2, 1])
    ag = compare_detections(REF, other)
    assert ag.matched == 2 and not ag.identical
    assert box_iou(REF.xyxy[1:2], other.xyxy[1:2])[0, 0] < 0.99


def test_equal_score_swap_is_counted_apart():
    # NMS kept the neighbour of an equal-score pair (same unit, same confidence, same grade)
    other = _det([[0, 0, 10, 10], [28, 20, 48, 40], [50, 0, 60, 30]], [0, 1, 2], [0.9, 0.8, 0.7], [0, 2, 1])
    ag = compare_detections(REF, other)
    assert ag.matched == 2 and ag.tie_swaps == 1 and ag.identical
    assert "1 equal-score swap" in ag.summary()
    # a different confidence is not a tie
    other = _det(other.xyxy, [0, 1, 2], [0.9, 0.75, 0.7], [0, 2, 1])
    assert not compare_detections(REF, other).identical


def test_count_mismatch_and_empty():
    assert not compare_detections(REF, REF[[0, 1]]).identical
    empty = Detections.empty(3)
    assert compare_detections(empty, empty).identical
    assert not compare_detections(REF, empty).identical


def test_raw_deltas_split_columns():
    a = np.zeros((1, 5, 4 + 2 + 2 * 3), np.float32)
    b = a.copy()
    b[0, 1, 2] = 0.5  # box
    b[0, 2, 5] = 1e-3  # unit score
    b[0, 3, 9] = 2e-3  # grade
    d = raw_deltas(a, b, nc=2)
    f32 = lambda v: np.float32(v).item()  # noqa: E731
    assert d == {"all": 0.5, "boxes": 0.5, "scores": f32(1e-3), "grades": f32(2e-3)}


def test_report_lines_say_ok_or_failed():
    rep = ParityReport(what="x", n_images=1)
    assert rep.ok and rep.lines()[-1].strip() == "OK"
    rep.failures.append("bad")
    assert not rep.ok and any("FAILED: bad" in line for line in rep.lines())
