"""The one --device resolver (train/device.py): vocabulary, refusals, manifest record."""

from __future__ import annotations

import pytest
import torch

from train.device import DeviceError, amp_enabled, describe_device, resolve_device, ultralytics_device


def test_auto_is_cuda_when_available_else_cpu_or_mps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr("train.device._mps_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device(None) == torch.device("cpu")
    monkeypatch.setattr("train.device._mps_available", lambda: True)
    assert resolve_device("auto") == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda:0")


def test_explicit_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_device("CPU") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda") == torch.device("cuda:0")
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    assert resolve_device("1") == torch.device("cuda:1")
    with pytest.raises(DeviceError, match=r"only 2 CUDA device\(s\)"):
        resolve_device("cuda:2")


def test_refusals_name_the_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr("train.device._mps_available", lambda: False)
    with pytest.raises(DeviceError, match=r"torch sees no CUDA GPU.*--device cpu"):
        resolve_device("cuda:0")
    with pytest.raises(DeviceError, match="no MPS"):
        resolve_device("mps")
    with pytest.raises(DeviceError, match="expected auto, cpu"):
        resolve_device("gpu")
    with pytest.raises(DeviceError, match="expected auto, cpu"):
        resolve_device("cuda:x")


def test_amp_and_ultralytics_spelling() -> None:
    assert amp_enabled(torch.device("cuda:0")) and not amp_enabled(torch.device("cpu"))
    assert ultralytics_device(torch.device("cuda:1")) == "1"
    assert ultralytics_device(torch.device("cuda")) == "0"
    assert ultralytics_device(torch.device("cpu")) == "cpu"


def test_describe_device_on_cpu() -> None:
    info = describe_device("cpu")
    assert info["device"] == "cpu" and info["type"] == "cpu" and info["amp"] is False
    assert info["torch"] == torch.__version__ and info["name"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_describe_device_on_cuda() -> None:
    info = describe_device("auto")
    assert info["type"] == "cuda" and info["amp"] is True and info["memory_gib"] > 0
