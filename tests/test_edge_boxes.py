"""edge.boxes: the one IoU and greedy matcher, checked on hand-built cases."""

from __future__ import annotations

import numpy as np
import pytest

from edge.boxes import box_iou, greedy_match


def test_box_iou_hand_values_and_degenerate_boxes() -> None:
    a = np.array([[0, 0, 10, 10]], float)
    b = np.array([[5, 0, 15, 10], [0, 0, 10, 10], [20, 20, 30, 30], [3, 3, 3, 3]], float)
    assert box_iou(a, b)[0].tolist() == pytest.approx([1 / 3, 1.0, 0.0, 0.0])
    assert box_iou(np.zeros((0, 4)), b).shape == (0, 4)
    zero = np.array([[1, 1, 1, 1]], float)
    assert box_iou(zero, zero)[0, 0] == 0.0  # empty union: 0, not NaN


def test_greedy_match_order_units_and_threshold() -> None:
    gt = np.array([[0, 0, 10, 10], [20, 0, 30, 10]], float)
    # pred 0 (conf 0.3) and pred 1 (conf 0.9) both sit on gt 0: the confident one takes it
    pred = np.array([[0, 0, 10, 10], [0, 0, 10, 9], [20, 0, 30, 10], [40, 40, 50, 50]], float)
    conf = np.array([0.3, 0.9, 0.5, 0.8])
    m, iou = greedy_match(pred, conf, gt)
    assert m.tolist() == [-1, 0, 1, -1] and iou[1] == pytest.approx(0.9)
    # with units: pred 2 is another unit than gt 1 and stays unmatched; pred 0 cannot take gt 0 either
    m, _ = greedy_match(pred, conf, gt, a_unit=np.array([0, 0, 1, 0]), b_unit=np.array([0, 0]))
    assert m.tolist() == [-1, 0, -1, -1]
    # a threshold above the best IoU leaves every box unmatched
    m, _ = greedy_match(pred[:1], conf[:1], np.array([[0, 0, 20, 20]], float), iou_thr=0.6)  # IoU 0.25
    assert m.tolist() == [-1]
    with pytest.raises(ValueError, match="units for both sides"):
        greedy_match(pred, conf, gt, a_unit=np.zeros(4))
    with pytest.raises(ValueError, match="4 boxes but 3 confidences"):
        greedy_match(pred, conf[:3], gt)
