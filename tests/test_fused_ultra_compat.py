"""The ultralytics workarounds in train/fused/ultra_compat.py, each checked against ultralytics itself.

If an ultralytics upgrade changes one of the internals these rely on, a test here fails and names it.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest
import torch

from edge.scales import RGS
from train.fused import ultra_compat

FUSED = Path(__file__).resolve().parent.parent / "train" / "fused"


class _Recorder:
    """Stands in for a dataset class and records how it was constructed."""

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs


@pytest.mark.parametrize("mode", ["train", "val"])
def test_build_grade_dataset_passes_what_build_yolo_dataset_passes(
    mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ultralytics.data.build as build
    from ultralytics.cfg import get_cfg

    args = get_cfg(
        overrides={"imgsz": 96, "fraction": 0.5, "rect": False, "single_cls": True, "classes": [1]}
    )
    data = {"names": dict(enumerate(RGS.unit_names)), "nc": RGS.nc, "channels": 3}
    monkeypatch.setattr(build, "YOLODataset", _Recorder)
    ref = build.build_yolo_dataset(args, "imgs", 4, data, mode=mode, rect=mode == "val", stride=32).kwargs
    ours = ultra_compat.build_grade_dataset(_Recorder, args, "imgs", mode, 4, data, 32, spec=RGS).kwargs
    assert ours.pop("spec") is RGS
    # what the grade task fixes on purpose: all units, detection layout
    assert (ours.pop("single_cls"), ours.pop("classes"), ours.pop("task")) == (False, None, "detect")
    for k in ("single_cls", "classes", "task"):
        ref.pop(k)
    assert ours == ref


def test_grade_yaml_is_built_from_ultralytics_own_yolov5() -> None:
    plain = ultra_compat.plain_model_yaml("n")
    grade = ultra_compat.grade_model_yaml("n", RGS.nc, RGS.ng, RGS.grade_mask)
    assert ultra_compat.is_grade_yaml(grade) and not ultra_compat.is_grade_yaml(plain)
    assert not ultra_compat.is_grade_yaml(None) and not ultra_compat.is_grade_yaml({"head": []})
    assert grade["backbone"] == plain["backbone"] and grade["head"][:-1] == plain["head"][:-1]
    assert ultra_compat.parse_yaml_for_ultralytics(grade)["head"][-1] == [*plain["head"][-1][:3], ["nc"]]
    plain["backbone"].clear()  # a copy: ultralytics' cached yaml is untouched
    assert ultra_compat.plain_model_yaml("n")["backbone"]


def test_trainer_overrides_and_trainer_state_readers() -> None:
    over = ultra_compat.trainer_overrides({"epochs": 3, "pretrained": "yolov5nu.pt"}, "s")
    assert over == {"epochs": 3, "pretrained": False, "model": "yolov5s-grade.yaml", "plots": False}
    assert ultra_compat.trainer_overrides({"plots": True}, "n")["plots"] is True

    class T:
        ema = None
        model = torch.nn.Linear(1, 1)
        best_fitness, fitness = 0.5, 0.5

    assert ultra_compat.model_to_save(T()) is T.model and ultra_compat.is_best_epoch(T())
    T.fitness = 0.4
    assert not ultra_compat.is_best_epoch(T())
    T.best_fitness = None
    assert not ultra_compat.is_best_epoch(T())


def test_restricted_load_is_available_here() -> None:
    """Without it, every .pt would need --trust-pickle; this torch build must support it."""
    assert ultra_compat.restricted_load_supported()


def test_ultralytics_state_dict_prefers_ema() -> None:
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    sd = ultra_compat.ultralytics_state_dict({"ema": a.half(), "model": b})
    assert sd["weight"].dtype == torch.float32 and torch.equal(sd["weight"], a.float().weight)
    assert ultra_compat.ultralytics_state_dict({"model": b})["bias"] is not None
    plain = {"w": torch.zeros(1)}
    assert ultra_compat.ultralytics_state_dict(plain) is plain


def _private_ultralytics_uses(path: Path) -> list[str]:
    """``ultralytics`` imports of private names (``_x``) in a source file."""
    tree = ast.parse(path.read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ultralytics"):
            out += [f"{node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
    return out


def test_ultralytics_internals_are_used_only_in_ultra_compat() -> None:
    """Private ultralytics names and the internals the workarounds cover appear only in ultra_compat."""
    internals = (
        "torch_safe_load",
        "attempt_download_asset",
        "yaml_model_load",
        "_SafeLoad",
        "get_split_fraction",
    )
    for path in sorted(FUSED.glob("*.py")):
        if path.name == "ultra_compat.py":
            assert "_SafeLoad" in path.read_text()
            continue
        text = path.read_text()
        assert not _private_ultralytics_uses(path), path.name
        assert [n for n in internals if n in text] == [], path.name
        assert "criterion = None" not in text and ".ema.ema" not in text, path.name
