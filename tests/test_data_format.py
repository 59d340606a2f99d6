"""Dataset format: label line round trip (hypothesis), errors carrying file:line, data.yaml, subjects."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.scales import GOAT, RGS, ScaleMismatchError
from train.data.format import (
    LabelBox,
    LabelError,
    Subject,
    format_label_line,
    image_to_label_path,
    load_dataset,
    parse_label_line,
    read_labels,
    read_subjects,
    write_data_yaml,
    write_labels,
    write_subjects,
)

coord = st.floats(0.0, 1.0, allow_nan=False, allow_infinity=False)


@st.composite
def boxes(draw: st.DrawFn) -> LabelBox:
    unit = draw(st.integers(0, RGS.nc - 1))
    grade = draw(st.none() | st.integers(0, RGS.units[unit].grades - 1))
    return LabelBox(unit, draw(coord), draw(coord), draw(coord), draw(coord), grade)


@settings(max_examples=200, deadline=None)
@given(boxes())
def test_label_line_round_trip(box: LabelBox) -> None:
    line = format_label_line(box)
    back = parse_label_line(line, "x.txt:1", RGS)
    assert back.unit == box.unit and back.grade == box.grade
    for a, b in zip((back.cx, back.cy, back.w, back.h), (box.cx, box.cy, box.w, box.h), strict=True):
        assert abs(a - b) <= 5e-7
    # formatting is stable: a parsed line formats to the same text
    assert format_label_line(back) == line


@settings(max_examples=50, deadline=None)
@given(st.lists(boxes(), max_size=8))
def test_label_file_round_trip(tmp_path_factory: pytest.TempPathFactory, bs: list[LabelBox]) -> None:
    path = tmp_path_factory.mktemp("lbl") / "labels" / "train" / "a.txt"
    write_labels(path, bs)
    back = read_labels(path, RGS)
    assert [(b.unit, b.grade) for b in back] == [(b.unit, b.grade) for b in bs]


def test_ungraded_forms() -> None:
    assert parse_label_line("1 0.5 0.5 0.2 0.2").grade is None
    assert parse_label_line("1 0.5 0.5 0.2 0.2 -1").grade is None
    assert parse_label_line("1 0.5 0.5 0.2 0.2 -1.0").grade is None
    assert format_label_line(LabelBox(1, 0.5, 0.5, 0.2, 0.2, None)).endswith(" -1")
    assert parse_label_line("  2 0.5 0.5 0.2 0.2 2.0 \n", spec=RGS).grade == 2


@pytest.mark.parametrize(
    "line, message",
    [
        ("0 0.5 0.5 0.1", "5 or 6 fields"),
        ("0 0.5 0.5 0.1 0.1 1 9", "5 or 6 fields"),
        ("0 0.5 x 0.1 0.1", "non-numeric"),
        ("0 nan 0.5 0.1 0.1", "non-finite"),
        ("inf 0.5 0.5 0.1 0.1", "non-finite"),
        ("0.5 0.5 0.5 0.1 0.1", "unit index must be a non-negative integer"),
        ("-1 0.5 0.5 0.1 0.1", "unit index must be a non-negative integer"),
        ("4 0.5 0.5 0.1 0.1", "unknown unit index 4"),
        ("0 0.5 0.5 0.1 0.1 1.5", "grade must be an integer"),
        ("0 0.5 0.5 0.1 0.1 3", "grade 3 out of range for unit 'eye'"),
        ("0 0.5 0.5 0.1 0.1 -2", "grade -2 out of range"),
    ],
)
def test_parse_errors_carry_file_and_line(line: str, message: str) -> None:
    with pytest.raises(LabelError) as e:
        parse_label_line(line, "labels/train/a.txt:7", RGS)
    assert str(e.value).startswith("labels/train/a.txt:7: ")
    assert message in str(e.value)


def test_grade_range_follows_the_unit() -> None:
    parse_label_line("0 0.5 0.5 0.1 0.1 1", spec=GOAT)
    with pytest.raises(LabelError, match=re.escape("out of range for unit 'face' (0..1)")):
        parse_label_line("0 0.5 0.5 0.1 0.1 2", spec=GOAT)
    # without a scale only the -1 floor is checked
    assert parse_label_line("9 0.5 0.5 0.1 0.1 7").grade == 7
    with pytest.raises(LabelError, match=">= 0 or -1"):
        parse_label_line("0 0.5 0.5 0.1 0.1 -3")


def test_read_labels_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_text("0 0.5 0.5 0.1 0.1 1\n\n1 0.5 0.5 0.1 0.1 1\n2 0.5 0.5 0.1\n")
    with pytest.raises(LabelError, match=f"^{path}:4: "):
        read_labels(path, RGS)


def test_image_to_label_path() -> None:
    assert image_to_label_path("/d/images/train/x.png") == Path("/d/labels/train/x.txt")
    # the last 'images' part is the one replaced
    assert image_to_label_path("/images/d/images/val/y.jpg") == Path("/images/d/labels/val/y.txt")
    with pytest.raises(LabelError, match="not under an 'images/' folder"):
        image_to_label_path("/d/pics/x.png")


def test_data_yaml_embeds_scale(tmp_path: Path) -> None:
    write_data_yaml(tmp_path, RGS, {"train": "images/train", "val": "images/val"}, extra={"seed": 3})
    raw = yaml.safe_load((tmp_path / "data.yaml").read_text())
    assert raw["names"] == {0: "eye", 1: "ear", 2: "nose", 3: "whiskers"} and raw["nc"] == 4
    assert raw["seed"] == 3 and raw["scale"]["name"] == "rgs"
    info = load_dataset(tmp_path, expect_scale=RGS)
    assert info.spec == RGS and info.splits["train"] == tmp_path / "images/train"
    assert load_dataset(tmp_path / "data.yaml").root == tmp_path
    with pytest.raises(ScaleMismatchError):
        load_dataset(tmp_path, expect_scale=GOAT)


@pytest.mark.parametrize(
    "text, message",
    [
        (None, "no data.yaml"),
        ("train: [x\n", "invalid YAML"),
        ("just a string\n", "must be a mapping"),
        ("train: images/train\n", "no 'scale' key"),
        ("scale: nosuch\n", "unknown scale 'nosuch'"),
    ],
)
def test_load_dataset_errors_name_the_file(tmp_path: Path, text: str | None, message: str) -> None:
    if text is not None:
        (tmp_path / "data.yaml").write_text(text)
    with pytest.raises(LabelError, match=message) as e:
        load_dataset(tmp_path)
    assert str(tmp_path / "data.yaml") in str(e.value)


def test_subjects_round_trip_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "subjects.csv"
    rows = [Subject("a.png", "rat1", "control", "d1"), Subject("b.png", "rat2", "injured", "")]
    write_subjects(path, rows)
    assert list(read_subjects(path).values()) == rows
    path.write_text("image,subject\nimages/train/a.png,rat1\na.png,rat2\n")
    with pytest.raises(LabelError, match=f"{path}:3: image 'a.png' listed twice"):
        read_subjects(path)
    path.write_text("image,animal\na.png,rat1\n")
    with pytest.raises(LabelError, match=f"{path}:1: missing column 'subject'"):
        read_subjects(path)
    path.write_text("image,subject\na.png,\n")
    with pytest.raises(LabelError, match=f"{path}:2: empty"):
        read_subjects(path)
