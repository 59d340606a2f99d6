"""Weights-only checkpoint round trip and PyTorch predict == edge post-processing on the same raw tensor."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from edge.scales import GOAT, RGS, ScaleMismatchError
from train.fused.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from train.fused.model import build_fused_model


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    model = build_fused_model(RGS, "n", imgsz=96)
    with torch.no_grad():  # make scores non-trivial so some boxes pass the threshold
        for c in model.head.cv3:
            c[-1].bias.add_(6.0)
    path = tmp_path_factory.mktemp("ck") / "best"
    save_checkpoint(model, path, {"metrics": {"metrics/grade_wacc": 0.5, "x": float("nan")}, "imgsz": 96})
    return path, model


def test_weights_only_round_trip(ckpt: tuple[Path, torch.nn.Module]) -> None:
    path, model = ckpt
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors"]
    meta = json.loads((path / "config.json").read_text())  # strict JSON (NaN written as null)
    assert meta["metrics"]["x"] is None and meta["size"] == "n" and meta["nc"] == 4 and meta["ng"] == 3
    loaded, meta = load_checkpoint(path, expect_scale="rgs")
    assert meta["imgsz"] == 96 and meta["stride"] == [8.0, 16.0, 32.0]
    x = torch.rand(1, 3, 96, 96)
    model.eval()
    ref = model(x)[0]
    out = loaded(x)  # export mode: the raw tensor alone
    assert isinstance(out, torch.Tensor) and torch.allclose(out, ref, atol=1e-5)
    with pytest.raises(ScaleMismatchError):
        load_checkpoint(path, expect_scale=GOAT)


def test_bad_checkpoints(tmp_path: Path, ckpt: tuple[Path, torch.nn.Module]) -> None:
    with pytest.raises(CheckpointError, match=r"no config\.json"):
        load_checkpoint(tmp_path)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text(
        (ckpt[0] / "config.json").read_text().replace('"size": "n"', '"size": "s"')
    )
    (bad / "model.safetensors").write_bytes((ckpt[0] / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(bad)


def test_torch_backend_runs_the_one_predictor(ckpt: tuple[Path, torch.nn.Module]) -> None:
    from edge.predictor import Predictor
    from train.fused.backend import load_torch_model

    path, _ = ckpt
    m = load_torch_model(path)
    assert m.spec.name == "rgs" and m.backend.input_shape == (None, 3, 96, 96)
    rng = np.random.default_rng(0)
    images = [
        rng.integers(0, 255, (80, 120, 3), dtype=np.uint8),
        rng.integers(0, 255, (100, 60, 3), dtype=np.uint8),
    ]
    pred = Predictor(m, conf=0.3, iou=0.5)
    results = pred(images, ["a", "b"])
    x, infos = pred.prepare(images)
    raw = pred.infer(x)
    assert raw.shape == (2, 189, 4 + 4 + 12)
    model, _meta = load_checkpoint(path)  # the backend's output is the module's own forward pass
    with torch.no_grad():
        direct = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(raw, direct, atol=1e-5)
    n_boxes = 0
    for img, r, d in zip(images, results, pred.decode(raw, infos), strict=True):
        assert np.array_equal(r.detections.xyxy, d.xyxy) and np.array_equal(r.detections.unit, d.unit)
        h, w = img.shape[:2]
        assert np.all(d.xyxy[:, [0, 2]] <= w) and np.all(d.xyxy[:, [1, 3]] <= h)  # original pixels
        assert np.allclose(d.grade_probs.sum(1), 1, atol=1e-5)
        assert (r.score is None) == bool(r.abstained)
        n_boxes += len(d)
    assert n_boxes > 0
    assert pred.times.frames == 2 and pred.times.seconds["infer"] > 0


def test_run_directory_resolves_to_its_best_checkpoint(tmp_path) -> None:
    from train.fused.checkpoint import checkpoint_dir, read_config

    run = tmp_path / "run"
    (run / "best").mkdir(parents=True)
    (run / "best" / "config.json").write_text('{"format": "grimace-fused/1"}')
    assert checkpoint_dir(run) == run / "best"
    assert checkpoint_dir(run / "best") == run / "best"
    assert read_config(run)["format"] == "grimace-fused/1"


def test_pretrained_weights_from_a_training_run_folder(
    tmp_path: Path, ckpt: tuple[Path, torch.nn.Module]
) -> None:
    from train.fused.weights import load_pretrained

    path, trained = ckpt
    fresh = build_fused_model(RGS, "n", imgsz=96)
    msg = load_pretrained(fresh, path.parent)  # the run folder -> its best/ checkpoint
    assert str(path / "model.safetensors") in msg
    n = len(trained.state_dict())
    assert f"{n}/{n}" in msg
    for k, v in trained.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k
    with pytest.raises(FileNotFoundError, match="without weights"):
        load_pretrained(fresh, tmp_path)


def test_grade_channels_round_trip_and_legacy_config(tmp_path: Path) -> None:
    from train.fused.trainer import resolve_grade_channels
    from train.fused.weights import fused_checkpoint_config

    torch.manual_seed(1)
    wide = build_fused_model(RGS, "n", imgsz=64, grade_channels=24)
    path = save_checkpoint(wide, tmp_path / "wide", {"imgsz": 64})
    loaded, meta = load_checkpoint(path)
    assert meta["grade_channels"] == 24 and loaded.head.grade_channels == 24
    x = torch.rand(1, 3, 64, 64)
    assert torch.allclose(loaded(x), wide.eval()(x)[0], atol=1e-5)
    # fine-tuning from a student keeps its width; an explicit width wins; other weights get the default
    assert fused_checkpoint_config(path)["grade_channels"] == 24
    assert resolve_grade_channels(None, path) == 24
    assert resolve_grade_channels(None, path / "model.safetensors") == 24
    assert resolve_grade_channels(40, path) == 40
    assert fused_checkpoint_config("none") is None and fused_checkpoint_config(tmp_path / "absent") is None

    # a checkpoint written before the setting existed has no "grade_channels": the legacy width
    old = tmp_path / "old"
    legacy = build_fused_model(RGS, "n", imgsz=64)
    save_checkpoint(legacy, old, {"imgsz": 64})
    cfg = json.loads((old / "config.json").read_text())
    del cfg["grade_channels"]
    (old / "config.json").write_text(json.dumps(cfg))
    loaded, _ = load_checkpoint(old)
    assert loaded.head.grade_channels == legacy.head.grade_channels == 16
    assert resolve_grade_channels(None, old) is None  # the default width, so it loads


def test_grade_loss_config_is_stored_and_old_checkpoints_load(tmp_path: Path) -> None:
    from train.fused.config import GradeLossConfig
    from train.fused.loss import GradeLoss
    from train.fused.trainer import resumed_grade_config

    model = build_fused_model(RGS, "n", imgsz=64)
    model.grade_config = GradeLossConfig(ce=0.3, kd=0.7, temperature=3.0, cls_pw=0.0)
    path = save_checkpoint(model, tmp_path / "ck", {"imgsz": 64})
    meta = json.loads((path / "config.json").read_text())
    assert meta["grade_hyp"] == {"grade_ce": 0.3, "grade_kd": 0.7, "grade_T": 3.0, "grade_cls_pw": 0.0}
    loaded, _ = load_checkpoint(path)
    assert loaded.grade_config == model.grade_config
    from ultralytics.cfg import get_cfg

    loaded.args = get_cfg()  # what the trainer sets before the loss is built
    loss = GradeLoss(loaded)  # the loss reads the typed settings
    assert (loss.w_ce, loss.w_kd, loss.temperature) == (0.3, 0.7, 3.0)

    meta.pop("grade_hyp")  # a checkpoint saved without the settings: the defaults
    (path / "config.json").write_text(json.dumps(meta))
    assert load_checkpoint(path)[0].grade_config == GradeLossConfig()
    meta["grade_hyp"] = {"grade_T": 4.0, "grade_ce": 2}  # the old dict, partial
    (path / "config.json").write_text(json.dumps(meta))
    assert load_checkpoint(path)[0].grade_config == GradeLossConfig(ce=2.0, temperature=4.0)
    meta["grade_hyp"] = {"grade_temp": 4.0}
    (path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"unknown keys \['grade_temp'\]"):
        load_checkpoint(path)

    class OldPickledModel:  # what ultralytics' last.pt of an earlier version holds
        grade_hyp = {"grade_ce": 1.0, "grade_kd": 0.5, "grade_T": 2.0, "grade_cls_pw": 0.5}

    assert resumed_grade_config(OldPickledModel(), GradeLossConfig()) == GradeLossConfig(kd=0.5)
    assert resumed_grade_config(object(), GradeLossConfig(ce=9.0)) == GradeLossConfig(ce=9.0)


@pytest.mark.parametrize(
    ("kwargs", "option"),
    [
        ({"ce": -1}, "--grade-ce"),
        ({"kd": float("nan")}, "--grade-kd"),
        ({"temperature": 0}, "--temperature"),
        ({"cls_pw": float("inf")}, "--grade-cls-pw"),
        ({"ce": "1"}, "--grade-ce"),
    ],
)
def test_grade_loss_config_refuses_bad_values(kwargs: dict, option: str) -> None:
    from train.fused.config import GradeLossConfig

    with pytest.raises(ValueError, match=option):
        GradeLossConfig(**kwargs)
