"""Grade loss on hand-built cases."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from train.fused.loss import grade_loss, pad_per_image

NC, NG, N = 2, 3, 5
MASK = torch.tensor([[True, True, True], [True, True, False]])  # unit 1 has only 2 grades


def _case(
    logits_unit0: torch.Tensor, grade: int = 2, soft: list[float] | None = None, temperature: float = 2.0
):
    """One image, one GT box of unit 0 matched by anchor 1 only."""
    logits = torch.zeros(1, NC * NG, N)
    logits[0, 0:NG, 1] = logits_unit0
    fg = torch.zeros(1, N, dtype=torch.bool)
    fg[0, 1] = True
    tgi = torch.zeros(1, N, dtype=torch.long)
    gt_unit = torch.tensor([[0.0]])
    gt_grade = torch.tensor([[float(grade)]])
    gt_soft = torch.tensor([[soft if soft is not None else [-1.0] * NG]])
    return grade_loss(logits, fg, tgi, gt_unit, gt_grade, gt_soft, MASK, temperature)


def test_kl_zero_when_student_equals_teacher() -> None:
    p = torch.tensor([0.2, 0.5, 0.3])
    for t in (1.0, 2.0, 4.0):
        _, kd = _case(p.log() + 3.0, soft=p.tolist(), temperature=t)  # same distribution, shifted logits
        assert abs(float(kd)) < 1e-6
    _, kd = _case(torch.tensor([2.0, 0.0, -2.0]), soft=p.tolist())
    assert float(kd) > 1e-3


def test_ce_falls_as_true_logit_rises() -> None:
    vals = [float(_case(torch.tensor([0.0, 0.0, z]), grade=2)[0]) for z in (-1.0, 0.0, 1.0, 3.0)]
    assert all(a > b for a, b in itertools.pairwise(vals))
    assert vals[1] == pytest.approx(math.log(3), rel=1e-5)  # uniform over 3 levels


def test_temperature_as_documented() -> None:
    """kd = T² · KL(softmax(log p / T) || softmax(z / T))."""
    p = torch.tensor([0.7, 0.2, 0.1])
    z = torch.tensor([0.3, 1.0, -0.5])
    for t in (1.0, 3.0):
        _, kd = _case(z, soft=p.tolist(), temperature=t)
        pt = (p.log() / t).softmax(0)
        ps = (z / t).log_softmax(0)
        ref = t**2 * float((pt * (pt.log() - ps)).sum())
        assert float(kd) == pytest.approx(ref, rel=1e-5)
    with pytest.raises(ValueError):
        _case(z, soft=p.tolist(), temperature=0.0)


def test_unmatched_anchors_contribute_nothing() -> None:
    base_ce, base_kd = _case(torch.tensor([0.5, 0.1, 0.2]), soft=[0.1, 0.1, 0.8])
    logits = torch.zeros(1, NC * NG, N, requires_grad=True)
    with torch.no_grad():
        logits[0, 0:NG, 1] = torch.tensor([0.5, 0.1, 0.2])
        logits[0, :, [0, 2, 3, 4]] = torch.randn(NC * NG, 4) * 5  # wild values on unmatched anchors
    fg = torch.zeros(1, N, dtype=torch.bool)
    fg[0, 1] = True
    ce, kd = grade_loss(
        logits,
        fg,
        torch.zeros(1, N, dtype=torch.long),
        torch.tensor([[0.0]]),
        torch.tensor([[2.0]]),
        torch.tensor([[[0.1, 0.1, 0.8]]]),
        MASK,
        2.0,
    )
    assert ce.item() == pytest.approx(base_ce.item(), rel=1e-6)
    assert kd.item() == pytest.approx(base_kd.item(), rel=1e-6)
    (ce + kd).backward()
    g = logits.grad[0]
    assert torch.all(g[:, [0, 2, 3, 4]] == 0)
    assert torch.all(g[NG:, 1] == 0)  # other unit's logits of the matched anchor get no gradient
    assert torch.any(g[:NG, 1] != 0)


def test_no_foreground_and_masked_levels() -> None:
    logits = torch.randn(1, NC * NG, N, requires_grad=True)
    fg = torch.zeros(1, N, dtype=torch.bool)
    ce, kd = grade_loss(
        logits,
        fg,
        torch.zeros(1, N, dtype=torch.long),
        torch.tensor([[1.0]]),
        torch.tensor([[1.0]]),
        torch.tensor([[[0.5, 0.5, 0.0]]]),
        MASK,
        2.0,
    )
    assert ce.item() == 0 and kd.item() == 0 and ce.requires_grad
    # unit 1 has 2 levels: a huge logit on its masked level 2 must not change the loss
    fg[0, 3] = True
    lo = torch.zeros(1, NC * NG, N)
    a = grade_loss(
        lo,
        fg,
        torch.zeros(1, N, dtype=torch.long),
        torch.tensor([[1.0]]),
        torch.tensor([[1.0]]),
        torch.tensor([[[0.5, 0.5, 0.0]]]),
        MASK,
        2.0,
    )
    lo[0, NG + 2, 3] = 50.0
    b = grade_loss(
        lo,
        fg,
        torch.zeros(1, N, dtype=torch.long),
        torch.tensor([[1.0]]),
        torch.tensor([[1.0]]),
        torch.tensor([[[0.5, 0.5, 0.0]]]),
        MASK,
        2.0,
    )
    assert float(a[0]) == pytest.approx(math.log(2), rel=1e-5)
    assert float(a[0]) == pytest.approx(float(b[0])) and float(a[1]) == pytest.approx(float(b[1]))


def test_class_weights_and_missing_targets() -> None:
    w = torch.ones(NC, NG)
    w[0, 2] = 3.0
    logits = torch.zeros(1, NC * NG, N)
    fg = torch.zeros(1, N, dtype=torch.bool)
    fg[0, 1] = True
    args = (logits, fg, torch.zeros(1, N, dtype=torch.long), torch.tensor([[0.0]]))
    ce1, _ = grade_loss(*args, torch.tensor([[2.0]]), torch.full((1, 1, NG), -1.0), MASK, 2.0)
    ce3, kd = grade_loss(*args, torch.tensor([[2.0]]), torch.full((1, 1, NG), -1.0), MASK, 2.0, w)
    assert float(ce3) == pytest.approx(3 * float(ce1)) and float(kd) == 0  # no soft target -> no KL
    ce0, _ = grade_loss(*args, torch.tensor([[-1.0]]), torch.full((1, 1, NG), -1.0), MASK, 2.0)
    assert float(ce0) == 0  # ungraded box -> no CE


def test_pad_per_image_matches_ultralytics_order() -> None:
    bidx = torch.tensor([0, 0, 2, 2, 2])
    vals = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    out = pad_per_image(bidx, vals, 3)
    assert out.tolist() == [[1, 2, -1], [-1, -1, -1], [3, 4, 5]]
    assert pad_per_image(bidx[:0], vals[:0], 2).shape == (2, 0)
