"""Fused model: ultralytics compat build from yaml, head shapes, raw contract, FLOPs, weight transfer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edge.scales import GOAT, RGS, ScaleSpec, Unit
from train.fused import ultra_compat
from train.fused.head import GradeDetect, default_grade_channels
from train.fused.model import GradeModel, build_fused_model, build_plain_detector, flops_comparison
from train.fused.weights import transfer_weights

MIXED = ScaleSpec("mixed", "test", (Unit("a", "A", 3), Unit("b", "B", 2), Unit("c", "C", 5)))


def test_ultra_compat_builds_from_yaml_with_random_weights() -> None:
    cfg = ultra_compat.grade_model_yaml("n", 3, 5, MIXED.grade_mask)
    assert cfg["head"][-1][2] == "GradeDetect"
    model = GradeModel(cfg, verbose=False)
    head = model.model[-1]
    assert isinstance(head, GradeDetect) and head.i == len(model.model) - 1
    assert head.f == [17, 20, 23] and torch.equal(head.stride, torch.tensor([8.0, 16.0, 32.0]))
    assert torch.equal(head.grade_mask, torch.as_tensor(MIXED.grade_mask))
    with pytest.raises(ValueError):
        ultra_compat.parse_yaml_for_ultralytics(ultra_compat.parse_yaml_for_ultralytics(cfg))
    with pytest.raises(ValueError):
        ultra_compat.grade_model_yaml("q", 3, 3)


@pytest.mark.parametrize("spec", [RGS, GOAT, MIXED], ids=lambda s: s.name)
def test_head_shapes_and_raw_contract(spec: ScaleSpec) -> None:
    model = build_fused_model(spec, "n")
    nc, ng = spec.nc, spec.ng
    x = torch.rand(2, 3, 64, 96)
    model.train()
    preds = model(x)
    n_anchors = (64 // 8) * (96 // 8) + (64 // 16) * (96 // 16) + (64 // 32) * (96 // 32)
    assert preds["grades"].shape == (2, nc * ng, n_anchors)
    assert preds["scores"].shape == (2, nc, n_anchors)
    model.eval()
    raw, _d = model(x)
    assert raw.shape == (2, n_anchors, 4 + nc + nc * ng) and raw.dtype == torch.float32
    model.head.export = True
    raw2 = model(x)
    assert torch.allclose(raw, raw2)
    assert torch.all(raw[..., 2] >= raw[..., 0]) and torch.all(raw[..., 3] >= raw[..., 1])
    s = raw[..., 4 : 4 + nc]
    assert torch.all((s > 0) & (s < 1))
    g = raw[..., 4 + nc :].reshape(2, n_anchors, nc, ng)
    mask = torch.as_tensor(spec.grade_mask)
    assert torch.all(g[..., ~mask] == 0)
    assert torch.allclose(g.sum(-1), torch.ones(2, n_anchors, nc), atol=1e-5)
    # boxes in input pixels: anchor centres span the image
    cx = (raw[0, :, 0] + raw[0, :, 2]) / 2
    cx = cx.detach()
    assert 0 < float(cx.min()) < 16 and 80 < float(cx.max()) < 96


def test_flops_within_ten_percent() -> None:
    """Every layer is convolutional, so the ratio does not depend on the input size (640 is the slow test)."""
    r = flops_comparison(RGS, "n", 320)
    print(
        f"yolov5n@320 plain {r['plain'] / 1e9:.3f} GFLOPs, fused {r['fused'] / 1e9:.3f}, "
        f"ratio {r['ratio']:.4f}"
    )
    assert r["plain"] > 1e9 / 4 and 1.0 < r["ratio"] <= 1.10


@pytest.mark.slow
@pytest.mark.parametrize("size", ["n", "s", "m"])
def test_flops_within_ten_percent_640(size: str) -> None:
    r = flops_comparison(RGS, size, 640)
    print(
        f"yolov5{size} plain {r['plain'] / 1e9:.3f} GFLOPs, fused {r['fused'] / 1e9:.3f}, "
        f"ratio {r['ratio']:.4f}"
    )
    assert r["plain"] > 1e9 and 1.0 < r["ratio"] <= 1.10


def test_transfer_weights_from_plain_detector() -> None:
    plain = build_plain_detector(RGS.nc, "n")
    fused = build_fused_model(RGS, "n")
    copied, total = transfer_weights(fused, plain.state_dict())
    assert copied == len(plain.state_dict())  # every detector tensor fits
    assert total - copied == sum(1 for k in fused.state_dict() if ".cv4." in k or "grade_mask" in k)
    for k, v in plain.state_dict().items():
        assert torch.equal(fused.state_dict()[k], v)
    coco_like = build_plain_detector(80, "n").state_dict()  # COCO head: class conv shapes differ
    copied, _ = transfer_weights(fused, coco_like)
    assert 0 < copied < len(coco_like)


def test_grade_probs_mask_numpy_agrees() -> None:
    head = build_fused_model(MIXED, "n").head
    z = torch.randn(1, MIXED.nc * MIXED.ng, 7)
    p = head.grade_probs(z).view(1, MIXED.nc, MIXED.ng, 7).numpy()
    for u, unit in enumerate(MIXED.units):
        zz = z.view(1, MIXED.nc, MIXED.ng, 7)[0, u, : unit.grades].numpy()
        ref = np.exp(zz - zz.max(0)) / np.exp(zz - zz.max(0)).sum(0)
        assert np.allclose(p[0, u, : unit.grades], ref, atol=1e-6)


def test_grade_channels_setting() -> None:
    legacy = build_fused_model(RGS, "n").head
    assert legacy.grade_channels == default_grade_channels([64, 128, 256], RGS.nc, RGS.ng) == 16
    wide = build_fused_model(RGS, "n", grade_channels=32)
    assert wide.yaml["grade_channels"] == 32 and wide.head.grade_channels == 32
    for branch in wide.head.cv4:
        assert branch[0].conv.out_channels == 32 and branch[1].conv.out_channels == 32
        assert branch[2].out_channels == RGS.nc * RGS.ng
    x = torch.rand(1, 3, 64, 64)
    assert wide.eval()(x)[0].shape == build_fused_model(RGS, "n").eval()(x)[0].shape
    with pytest.raises(ValueError, match="grade_channels"):
        build_fused_model(RGS, "n", grade_channels=0)
    r = flops_comparison(RGS, "n", 320, grade_channels=32)
    assert r["ratio"] > flops_comparison(RGS, "n", 320)["ratio"]
