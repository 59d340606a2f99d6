"""Starting weights: nothing in a weights file runs without --trust-pickle; ultralytics .pt files load."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from edge.scales import RGS
from tests.fused_tiny import make_tiny_dataset
from train.fused.checkpoint import CheckpointError
from train.fused.model import build_fused_model, build_plain_detector
from train.fused.weights import UnsafeWeightsError, load_pretrained, read_state_dict


class _Payload:
    """Unpickling this runs a shell command that creates ``marker`` (what a crafted .pt does)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return os.system, (f"touch '{self.marker}'",)


def _crafted(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "PWNED"
    path = tmp_path / "crafted.pt"
    torch.save({"model": _Payload(marker)}, path)
    assert not marker.exists()
    return path, marker


def test_crafted_pickle_is_refused_and_never_runs(tmp_path: Path) -> None:
    path, marker = _crafted(tmp_path)
    with pytest.raises(UnsafeWeightsError, match="--trust-pickle") as e:
        read_state_dict(path)
    assert not marker.exists()
    msg = str(e.value)
    assert str(path) in msg and "could run any code" in msg and "posix.system" in msg
    model = build_fused_model(RGS, "n")
    with pytest.raises(UnsafeWeightsError):
        load_pretrained(model, path)
    assert not marker.exists()
    # the flag is what allows it: with it the file is unpickled (and its command runs)
    with pytest.raises(CheckpointError, match="not a state dict"):
        read_state_dict(path, trust_pickle=True)
    assert marker.exists()


def test_train_student_refuses_a_crafted_weights_file(tmp_path: Path) -> None:
    """``grimace train student --weights crafted.pt`` used to run the file's shell command."""
    from edge.cli import app

    path, marker = _crafted(tmp_path)
    src = make_tiny_dataset(tmp_path / "src", n_train=2, n_val=1)
    args = ["train", "student", "--data", str(src), "--out", str(tmp_path / "run"), "--imgsz", "64"]
    res = CliRunner().invoke(app, [*args, "--epochs", "1", "--device", "cpu", "--weights", str(path)])
    assert not marker.exists(), "the crafted file's command ran"
    assert res.exit_code == 2, res.output
    assert "refused to load" in res.output and "--trust-pickle" in res.output
    assert "Traceback" not in res.output


def test_resume_needs_trust_pickle(tmp_path: Path) -> None:
    from edge.cli import app

    run = tmp_path / "run"
    (run / "train" / "weights").mkdir(parents=True)
    (run / "train" / "weights" / "last.pt").write_bytes(b"not used")
    src = make_tiny_dataset(tmp_path / "src", n_train=2, n_val=1)
    args = ["train", "student", "--data", str(src), "--out", str(run), "--device", "cpu", "--resume"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2 and "--trust-pickle" in res.output and "pickle" in res.output


def _ultralytics_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """A .pt in the layout ultralytics' trainer writes (the model object pickled, EMA in half precision)."""
    from copy import deepcopy

    torch.manual_seed(3)
    model = build_plain_detector(80, "n")
    torch.save(
        {
            "epoch": -1,
            "model": None,
            "ema": deepcopy(model).half(),
            "updates": 0,
            "optimizer": None,
            "train_args": {"imgsz": 640, "model": "yolov5nu.yaml"},
            "date": "2026-01-01T00:00:00",
            "version": "8.4.0",
        },
        path,
    )
    return {k: v.half().float() for k, v in model.state_dict().items()}


def test_ultralytics_checkpoint_loads_without_trust(tmp_path: Path) -> None:
    """COCO ``yolov5nu.pt`` is such a file: ultralytics' restricted loader rebuilds its model classes."""
    path = tmp_path / "yolov5nu.pt"
    ref = _ultralytics_checkpoint(path)
    state = read_state_dict(path)
    assert set(state) == set(ref)
    for k, v in ref.items():
        assert torch.equal(state[k], v), k
    fused = build_fused_model(RGS, "n")
    msg = load_pretrained(fused, path)
    assert "loaded" in msg and str(path) in msg
    key = "model.0.conv.weight"  # the backbone stem came from the file
    assert torch.equal(fused.state_dict()[key], ref[key])


def test_plain_state_dict_and_damaged_files(tmp_path: Path) -> None:
    model = build_plain_detector(RGS.nc, "n")
    sd = tmp_path / "sd.pt"
    torch.save(model.state_dict(), sd)
    state = read_state_dict(sd)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"PK\x03\x04 this is not a torch archive")
    with pytest.raises(CheckpointError, match=r"bad\.pt"):
        read_state_dict(bad)
    bad_st = tmp_path / "bad.safetensors"
    bad_st.write_bytes(b"\x00" * 16)
    with pytest.raises(CheckpointError, match=r"bad\.safetensors"):
        read_state_dict(bad_st)
