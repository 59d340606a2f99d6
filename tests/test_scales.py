"""Scale specs: built-ins, user YAML scales, validation, serialisation and compatibility."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from edge.scales import (
    BUILTIN_SCALES,
    GOAT,
    MGS,
    RGS,
    RGS_SEED,
    ScaleError,
    ScaleMismatchError,
    ScaleSpec,
    Unit,
    load_scale,
)


def test_rgs_units_order_and_counts() -> None:
    assert RGS.unit_names == ["eye", "ear", "nose", "whiskers"]
    assert [u.per_frame for u in RGS.units] == [2, 2, 1, 1]
    assert [u.grades for u in RGS.units] == [3, 3, 3, 3]
    assert (RGS.nc, RGS.ng) == (4, 3)
    assert RGS.aggregation == "mean_of_unit_means"
    assert RGS.unit("eye").label == "Orbital Tightening"
    assert RGS.unit_index("nose") == 2 and RGS.unit(3).name == "whiskers"
    assert RGS.grade_mask.shape == (4, 3) and RGS.grade_mask.all()
    np.testing.assert_array_equal(RGS.max_grade, [2, 2, 2, 2])


def test_rgs_seed_order_is_ear_eye_nose() -> None:
    assert RGS_SEED.name == "rgs-seed"
    assert RGS_SEED.unit_names == ["ear", "eye", "nose"]
    assert [u.per_frame for u in RGS_SEED.units] == [2, 2, 1]
    assert RGS_SEED.fingerprint != RGS.fingerprint  # another class order is another model contract
    assert load_scale("rgs-seed") is RGS_SEED and load_scale("RGS") is RGS


def test_mgs_and_goat() -> None:
    assert MGS.unit_names == ["eye", "nose", "cheek", "ear", "whiskers"]
    assert MGS.species == "mouse" and MGS.ng == 3
    assert GOAT.unit_names == ["face"] and GOAT.aggregation == "binary"
    assert GOAT.units[0].grades == 2 and GOAT.units[0].grade_names == ("no pain", "pain")
    assert (GOAT.nc, GOAT.ng) == (1, 2)
    assert set(BUILTIN_SCALES) == {"rgs", "rgs-seed", "mgs", "goat"}


def test_grade_mask_with_mixed_grade_counts() -> None:
    spec = ScaleSpec("mix", "rat", (Unit("a", "A", grades=3), Unit("b", "B", grades=2)))
    np.testing.assert_array_equal(spec.grade_mask, [[True, True, True], [True, True, False]])
    np.testing.assert_array_equal(spec.max_grade, [2, 1])


USER_YAML = """
name: lab-rgs
species: rat
version: "2"
description: three-unit lab variant
units:
  - {name: eye, label: Orbital Tightening, grades: [0, 1, 2], per_frame: 2}
  - {name: ear, label: Ear Changes, grades: 3, per_frame: 2}
  - {name: nose, grades: [0, 1]}
class_order: [ear, eye, nose]
required: [eye, ear]
pain_threshold: 0.5
"""


def test_user_scale_from_yaml(tmp_path: Path) -> None:
    path = tmp_path / "lab.yaml"
    path.write_text(USER_YAML)
    spec = load_scale(path)
    assert spec.name == "lab-rgs" and spec.version == "2"
    assert spec.unit_names == ["ear", "eye", "nose"]  # class_order applied
    assert [u.grades for u in spec.units] == [3, 3, 2]
    assert [u.required for u in spec.units] == [True, True, False]  # required applied
    assert spec.unit("nose").label == "nose"
    assert spec.pain_threshold == 0.5 and spec.ng == 3
    assert load_scale(str(path)) == spec


@pytest.mark.parametrize(
    "change, message",
    [
        ({"class_order": ["ear", "eye", "tail"]}, "unknown unit 'tail'"),
        ({"required": ["eye", "tail"]}, "'required' names unknown unit 'tail'"),
        ({"units": [{"name": "eye", "grades": []}]}, "empty grade list"),
        ({"units": [{"name": "eye", "grades": 0}]}, "empty grade list"),
        ({"units": [{"name": "eye"}, {"name": "eye"}]}, "duplicate unit name 'eye'"),
        ({"units": []}, "no units"),
        ({"units": [{"name": "eye", "grades": [0, 2]}]}, "grades must be 0..k-1"),
        ({"units": [{"label": "no name"}]}, "must be a mapping with a 'name'"),
        ({"units": [{"name": "eye", "per_frame": 0}]}, "per_frame must be >= 1"),
        ({"aggregation": "median"}, "unknown aggregation"),
        ({"units": [{"name": "eye", "required": False}]}, "at least one unit must be required"),
        ({"required": []}, "at least one unit must be required"),
    ],
)
def test_invalid_user_scales(tmp_path: Path, change: dict, message: str) -> None:
    data = yaml.safe_load(USER_YAML)
    if "units" in change:
        data.pop("class_order")
        data.pop("required")
    data.update(change)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ScaleError, match=re.escape(message)):
        load_scale(path)


def test_scale_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ScaleError, match="not a built-in"):
        load_scale(tmp_path / "missing.yaml")
    bad = tmp_path / "broken.yaml"
    bad.write_text("name: x\nunits: [\n")
    with pytest.raises(ScaleError, match=re.escape("broken.yaml")):
        load_scale(bad)
    nomap = tmp_path / "list.yaml"
    nomap.write_text("- a\n- b\n")
    with pytest.raises(ScaleError, match=re.escape("list.yaml: a scale must be a mapping")):
        load_scale(nomap)
    nounits = tmp_path / "nounits.yaml"
    nounits.write_text("name: x\n")
    with pytest.raises(ScaleError, match=re.escape("nounits.yaml: missing required field 'units'")):
        load_scale(nounits)


def test_binary_scale_validation() -> None:
    with pytest.raises(ScaleError, match="binary scale needs exactly one unit with 2 grades"):
        ScaleSpec("b", "goat", (Unit("face", "Face", grades=3),), aggregation="binary")
    with pytest.raises(ScaleError, match="grade_names"):
        face = Unit("face", "Face", grades=2, grade_names=("only one",))
        ScaleSpec("b", "goat", (face,), aggregation="binary")


@pytest.mark.parametrize("spec", list(BUILTIN_SCALES.values()), ids=list(BUILTIN_SCALES))
def test_to_dict_from_dict_round_trip(spec: ScaleSpec) -> None:
    data = spec.to_dict()
    back = ScaleSpec.from_dict(data)
    assert back == spec
    assert back.fingerprint == spec.fingerprint
    assert back.to_json() == spec.to_json()
    # through YAML too (as embedded in data.yaml)
    assert ScaleSpec.from_dict(yaml.safe_load(yaml.safe_dump(data))) == spec


def test_check_compatible() -> None:
    RGS.check_compatible(ScaleSpec.from_dict(RGS.to_dict()))
    RGS.check_compatible(RGS.to_dict(), what="x.onnx")
    with pytest.raises(ScaleMismatchError, match=re.escape("x.onnx was made for scale 'rgs-seed'")):
        RGS.check_compatible(RGS_SEED, what="x.onnx")
    with pytest.raises(ScaleMismatchError):
        RGS.check_compatible(MGS)
    # a grade-count change is a mismatch even with the same unit names
    fewer = RGS.to_dict()
    fewer["units"][0]["grades"] = [0, 1]
    fewer["units"][0]["grade_names"] = []
    with pytest.raises(ScaleMismatchError, match="'eye', 2"):
        RGS.check_compatible(fewer, what="ckpt.pt")
    # text-only changes (labels, description) do not change the model contract
    relabelled = RGS.to_dict()
    relabelled["description"] = "same units, other words"
    relabelled["units"][0]["label"] = "Eyes"
    RGS.check_compatible(relabelled)


def test_unknown_unit_lookup() -> None:
    with pytest.raises(ScaleError, match="unknown unit 'tail'"):
        RGS.unit_index("tail")
    with pytest.raises(ScaleError, match="out of range"):
        RGS.unit(4)
