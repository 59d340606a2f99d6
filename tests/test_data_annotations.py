"""Annotation-tool importers (CVAT 1.1 XML, CVAT COCO 1.0, Label Studio JSON, VIA 2 JSON) on files
written by hand in each tool's documented export format, with planted errors, and unit-name safety."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from edge.cli import app
from edge.scales import RGS
from train.data.annotations import (
    SubjectRule,
    import_annotations,
    parse_grade,
    read_cvat_xml,
    safe_file_name,
)
from train.data.check import check_dataset
from train.data.format import LabelError, load_dataset, read_labels, read_subjects
from train.data.importers import DatasetImportError, crops_from_dataset, load_crop_records


def _img(path: Path, w: int, h: int, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), arr)


def _frames(root: Path) -> Path:
    """rat1/f1.png 100x50, rat1/f2.png 100x50, rat2/f1.png 80x80 (same base name), bg.png 40x40."""
    _img(root / "rat1" / "f1.png", 100, 50, 1)
    _img(root / "rat1" / "f2.png", 100, 50, 2)
    _img(root / "rat2" / "f1.png", 80, 80, 3)
    _img(root / "bg.png", 40, 40, 4)
    return root


def _errors(root: Path) -> list[str]:
    return [str(p) for p in check_dataset(root) if p.severity == "error"]


def _boxes(root: Path) -> dict[str, list[tuple[int, int | None, tuple[float, ...]]]]:
    info = load_dataset(root)
    out = {}
    for split in info.splits:
        for img in info.images(split):
            lbl = root / "labels" / split / (img.stem + ".txt")
            out[img.name] = [(b.unit, b.grade, (b.cx, b.cy, b.w, b.h)) for b in read_labels(lbl, info.spec)]
    return out


# ------------------------------------------------------------------------------------------ CVAT XML
CVAT_XML = """<?xml version="1.0" encoding="utf-8"?>
<annotations>
  <version>1.1</version>
  <meta>
    <task>
      <id>7</id>
      <name>rat faces</name>
      <size>5</size>
      <mode>annotation</mode>
      <labels>
        <label><name>eye</name><type>rectangle</type>
          <attributes><attribute><name>grade</name><mutable>False</mutable><input_type>select</input_type>
            <default_value>0</default_value><values>0
1
2</values></attribute></attributes>
        </label>
        <label><name>ear</name><type>rectangle</type></label>
        <label><name>tail</name><type>rectangle</type></label>
      </labels>
    </task>
    <dumped>2026-11-30 10:00:00.000000+00:00</dumped>
  </meta>
  <image id="0" name="rat1/f1.png" width="100" height="50">
    <box label="eye" source="manual" occluded="0" xtl="10.00" ytl="5.00" xbr="30.00" ybr="15.00" z_order="0">
      <attribute name="grade">2</attribute>
    </box>
    <box label="ear" source="manual" occluded="0" xtl="90.00" ytl="0.00" xbr="101.00" ybr="10.00" z_order="0">
      <attribute name="grade">obvious</attribute>
    </box>
    <box label="tail" source="manual" occluded="0" xtl="0" ytl="0" xbr="5" ybr="5" z_order="0">
    </box>
    <box label="eye" source="manual" occluded="0" xtl="40" ytl="5" xbr="50" ybr="15" z_order="0">
      <attribute name="grade">3</attribute>
    </box>
  </image>
  <image id="1" name="rat1/f2.png" width="100" height="50">
    <box label="nose" source="manual" occluded="0" xtl="60" ytl="30" xbr="130" ybr="45" z_order="0">
    </box>
    <polygon label="eye" source="manual" occluded="0" points="1,1;5,1;5,5" z_order="0">
    </polygon>
    <box label="nose" source="manual" occluded="0" xtl="40" ytl="20" xbr="60" ybr="40" rotation="30"
         z_order="0">
    </box>
    <box label="nose" source="manual" occluded="0" xtl="40" ytl="20" xbr="60" ybr="40" z_order="0">
      <attribute name="grade">1</attribute>
    </box>
  </image>
  <image id="2" name="rat2/f1.png" width="80" height="80">
    <box label="Eye" source="manual" occluded="1" xtl="8" ytl="8" xbr="24" ybr="24" z_order="0">
      <attribute name="grade">0</attribute>
    </box>
  </image>
  <image id="3" name="missing.png" width="10" height="10">
  </image>
  <image id="4" name="bg.png" width="60" height="60">
  </image>
</annotations>
"""


def _line_of(text: str, needle: str) -> int:
    return next(i for i, ln in enumerate(text.splitlines(), start=1) if needle in ln)


def test_cvat_xml_import_with_planted_errors(tmp_path: Path) -> None:
    imgs = _frames(tmp_path / "frames")
    xml = tmp_path / "annotations.xml"
    xml.write_text(CVAT_XML)
    out = tmp_path / "ds"
    rep = import_annotations("cvat", xml, imgs, "rgs", out, val_frac=0.0, label_map={"tail": None},
                             subjects=SubjectRule(folder=1))  # fmt: skip
    text = "\n".join(rep.skipped)
    # each planted error, at its file:line
    planted = [
        ('ytl="5" xbr="50"', "grade 3 is outside the levels of unit 'eye'"),
        ('xbr="130"', "box outside the image"),
        ("<polygon", "<polygon> is not a box"),
        ('rotation="30"', "rotated box"),
        ("missing.png", "image missing"),
        ("bg.png", "the tool says 60x60 but bg.png is 40x40"),
    ]
    for needle, what in planted:
        assert f"{xml}:{_line_of(CVAT_XML, needle)}: {what}" in text, (needle, text)
    assert len(rep.skipped) == 6, text
    assert rep.images == 3 and rep.boxes == 4
    boxes = _boxes(out)
    # rat1/f1: eye grade 2, ear (grade by name, 1 px past the border -> clipped); tail dropped by the map
    assert [(u, g) for u, g, _ in boxes["f1.png"]] == [(0, 2), (1, 2)]
    assert boxes["f1.png"][0][2] == pytest.approx((0.2, 0.2, 0.2, 0.2))
    assert boxes["f1.png"][1][2] == pytest.approx((0.95, 0.1, 0.1, 0.2))
    assert [(u, g) for u, g, _ in boxes["f2.png"]] == [(2, 1)]
    # rat2/f1.png has the same base name: written under a unique safe name
    assert [(u, g) for u, g, _ in boxes["rat2_f1.png"]] == [(0, 0)]
    subj = read_subjects(out / "subjects.csv")
    expect = {"f1.png": "rat1", "f2.png": "rat1", "rat2_f1.png": "rat2"}
    assert {k: v.subject for k, v in subj.items()} == expect
    assert _errors(out) == []


def test_cvat_xml_structural_errors(tmp_path: Path) -> None:
    bad = tmp_path / "a.xml"
    bad.write_text("<annotations>\n  <image id='0' name='x.png'>\n</annotations>\n")
    with pytest.raises(DatasetImportError, match=rf"{bad}:3: invalid XML: mismatched tag"):
        read_cvat_xml(bad)
    bad.write_text('<annotations><version>1.1</version><track id="0" label="eye"></track></annotations>')
    with pytest.raises(DatasetImportError, match="CVAT for video"):
        read_cvat_xml(bad)
    bad.write_text("<root/>")
    with pytest.raises(DatasetImportError, match="not CVAT's <annotations>"):
        read_cvat_xml(bad)


# ------------------------------------------------------------------------------------ CVAT COCO 1.0
def test_cvat_coco_with_attributes(tmp_path: Path) -> None:
    """CVAT's COCO 1.0 export: attributes (occluded, rotation, grade) in each annotation."""
    imgs = _frames(tmp_path / "frames")
    coco = {
        "licenses": [{"name": "", "id": 0, "url": ""}],
        "info": {"contributor": "", "date_created": "", "description": "", "url": "", "version": "",
                 "year": ""},
        "categories": [{"id": 1, "name": "eye", "supercategory": ""},
                       {"id": 2, "name": "ear", "supercategory": ""}],
        "images": [
            {"id": 1, "width": 100, "height": 50, "file_name": "rat1/f1.png", "license": 0,
             "flickr_url": "", "coco_url": "", "date_captured": 0},
            {"id": 2, "width": 80, "height": 80, "file_name": "rat2/f1.png", "license": 0,
             "flickr_url": "", "coco_url": "", "date_captured": 0},
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "segmentation": [], "area": 200.0,
             "bbox": [10.0, 5.0, 20.0, 10.0], "iscrowd": 0,
             "attributes": {"occluded": False, "rotation": 0.0, "grade": "1"}},
            {"id": 2, "image_id": 1, "category_id": 2, "segmentation": [], "area": 100.0,
             "bbox": [50.0, 5.0, 10.0, 10.0], "iscrowd": 0,
             "attributes": {"occluded": False, "rotation": 0.0, "grade": "7"}},
            {"id": 3, "image_id": 2, "category_id": 9, "segmentation": [], "area": 1.0,
             "bbox": [1, 1, 2, 2], "iscrowd": 0, "attributes": {}},
            {"id": 4, "image_id": 2, "category_id": 2, "segmentation": [], "area": 64.0,
             "bbox": [8, 8, 8, 8], "iscrowd": 0, "attributes": {"occluded": True, "grade": ""}},
        ],
    }  # fmt: skip
    js = tmp_path / "instances_default.json"
    js.write_text(json.dumps(coco, indent=2))
    out = tmp_path / "ds"
    rep = import_annotations("coco", js, imgs, RGS, out, val_frac=0.0)
    text = "\n".join(rep.skipped)
    assert f"{js}:annotations[1] (id 2): grade 7 is outside the levels of unit 'ear' (0..2)" in text
    assert f"{js}:annotations[2] (id 3): unknown category_id 9" in text
    assert len(rep.skipped) == 2
    boxes = _boxes(out)
    assert [(u, g) for u, g, _ in boxes["f1.png"]] == [(0, 1)]
    assert [(u, g) for u, g, _ in boxes["rat2_f1.png"]] == [(1, None)]  # empty grade = ungraded
    assert _errors(out) == []


# -------------------------------------------------------------------------------------- Label Studio
def _ls_region(rid: str, label: str, x: float, y: float, w: float, h: float, ow: int, oh: int,
               rotation: float = 0.0) -> dict:  # fmt: skip
    return {
        "id": rid, "type": "rectanglelabels", "from_name": "unit", "to_name": "image",
        "original_width": ow, "original_height": oh, "image_rotation": 0, "origin": "manual",
        "value": {"x": x, "y": y, "width": w, "height": h, "rotation": rotation, "rectanglelabels": [label]},
    }  # fmt: skip


def _ls_grade(rid: str, grade: str, ow: int, oh: int) -> dict:
    # a per-region <Choices perRegion="true">: same id as its rectangle, the region's geometry in value
    return {
        "id": rid, "type": "choices", "from_name": "grade", "to_name": "image",
        "original_width": ow, "original_height": oh, "image_rotation": 0, "origin": "manual",
        "value": {"x": 0, "y": 0, "width": 1, "height": 1, "rotation": 0, "choices": [grade]},
    }  # fmt: skip


def _ls_tasks() -> list[dict]:
    return [
        {"id": 11, "data": {"image": "/data/local-files/?d=rat1/f1.png", "animal": "R1"},
         "annotations": [{"id": 1, "completed_by": 1, "was_cancelled": False, "ground_truth": False,
                          "lead_time": 12.5, "result": [
             _ls_region("a1", "eye", 10, 10, 20, 20, 100, 50), _ls_grade("a1", "2", 100, 50),
             _ls_region("a2", "ear", 50, 10, 10, 20, 100, 50), _ls_grade("a2", "5", 100, 50),
             _ls_region("a3", "nose", 40, 50, 20, 20, 100, 50),  # no grade chosen: ungraded
             _ls_region("a4", "whisker pad", 10, 60, 20, 20, 100, 50),
         ]}], "predictions": []},
        {"id": 12, "data": {"image": "/data/upload/3/1a2b3c4d-f2.png", "animal": "R1"},
         "annotations": [{"id": 2, "was_cancelled": False, "result": [
             _ls_region("b1", "eye", 10, 10, 20, 20, 100, 50, rotation=15.0),
             _ls_region("b2", "eye", 60, 10, 20, 20, 100, 50), _ls_grade("b2", "1", 100, 50),
         ]}]},
        {"id": 13, "data": {"image": "/data/local-files/?d=rat2/f1.png", "animal": "R2"},
         "annotations": [{"id": 3, "was_cancelled": True, "result": [
             _ls_region("c0", "eye", 10, 10, 20, 20, 80, 80), _ls_grade("c0", "2", 80, 80)]},
                         {"id": 4, "was_cancelled": False, "result": [
             _ls_region("c1", "eye", 10, 10, 20, 20, 80, 80), _ls_grade("c1", "0", 80, 80),
             _ls_region("c2", "ear", 95, 10, 20, 20, 80, 80)]}]},
        {"id": 14, "data": {"image": "/data/local-files/?d=gone/x.png", "animal": "R3"}, "annotations": []},
    ]  # fmt: skip


def test_label_studio_import_with_planted_errors(tmp_path: Path) -> None:
    imgs = _frames(tmp_path / "frames")
    js = tmp_path / "project-1-at-2026-11-30.json"
    js.write_text(json.dumps(_ls_tasks(), indent=2))
    out = tmp_path / "ds"
    rep = import_annotations("label-studio", js, imgs, "rgs", out, val_frac=0.5, seed=3,
                             subjects=SubjectRule(column="animal"))  # fmt: skip
    text = "\n".join(rep.skipped)
    assert f"{js}:[0].annotations[0].result[2]: grade 5 is outside the levels of unit 'ear'" in text
    assert f"{js}:[0].annotations[0].result[5]: unknown label 'whisker pad'" in text
    assert f"{js}:[1].annotations[0].result[0]: rotated box (15 degrees)" in text
    assert f"{js}:[2].annotations[1].result[2]: box outside the image" in text
    assert f"{js}:[3] (task 14): image missing: 'gone/x.png'" in text
    assert len(rep.skipped) == 5, text
    boxes = _boxes(out)
    assert [(u, g) for u, g, _ in boxes["f1.png"]] == [(0, 2), (2, None)]
    assert boxes["f1.png"][0][2] == pytest.approx((0.2, 0.2, 0.2, 0.2))
    assert [(u, g) for u, g, _ in boxes["f2.png"]] == [(0, 1)]  # the upload's hash prefix is stripped
    assert [(u, g) for u, g, _ in boxes["rat2_f1.png"]] == [(0, 0)]  # the cancelled annotation is ignored
    subj = {k: v.subject for k, v in read_subjects(out / "subjects.csv").items()}
    assert subj == {"f1.png": "R1", "f2.png": "R1", "rat2_f1.png": "R2"}
    info = load_dataset(out)
    split_of = {p.name: s for s in info.splits for p in info.images(s)}
    assert split_of["f1.png"] == split_of["f2.png"] != split_of["rat2_f1.png"]  # subject-wise
    assert _errors(out) == []


# --------------------------------------------------------------------------------------------- VIA
def test_via_project_import_with_planted_errors(tmp_path: Path) -> None:
    via = {
        "_via_settings": {"ui": {"annotation_editor_height": 25, "annotation_editor_fontsize": 0.8,
                                 "leftsidebar_width": 18, "image_grid": {"img_height": 80},
                                 "image": {"region_label": "unit", "region_color": "unit"}},
                          "core": {"buffer_size": 18, "filepath": {}, "default_filepath": ""},
                          "project": {"name": "rats"}},
        "_via_img_metadata": {
            "rat1_2026-01-01_f1.png6543": {"filename": "rat1_2026-01-01_f1.png", "size": 6543, "regions": [
                {"shape_attributes": {"name": "rect", "x": 10, "y": 5, "width": 20, "height": 10},
                 "region_attributes": {"unit": "eye", "grade": "1"}},
                {"shape_attributes": {"name": "rect", "x": 60, "y": 5, "width": 20, "height": 10},
                 "region_attributes": {"unit": {"ear": True}, "grade": {"2": True}}},
                {"shape_attributes": {"name": "circle", "cx": 5, "cy": 5, "r": 3},
                 "region_attributes": {"unit": "nose", "grade": "0"}},
                {"shape_attributes": {"name": "rect", "x": 40, "y": 20, "width": 10, "height": 10},
                 "region_attributes": {"unit": "nose", "grade": "1.5"}},
            ], "file_attributes": {}},
            "rat2_2026-01-02_f1.png777": {"filename": "rat2_2026-01-02_f1.png", "size": 777, "regions": [
                {"shape_attributes": {"name": "rect", "x": -30, "y": 5, "width": 20, "height": 10},
                 "region_attributes": {"unit": "eye", "grade": "0"}},
                {"shape_attributes": {"name": "rect", "x": 8, "y": 8, "width": 16, "height": 16},
                 "region_attributes": {"unit": "nose", "grade": "absent"}},
            ], "file_attributes": {}},
            "nothere.png1": {"filename": "nothere.png", "size": 1, "regions": [], "file_attributes": {}},
        },
        "_via_attributes": {"region": {"unit": {"type": "dropdown", "description": "", "options": {
            "eye": "", "ear": "", "nose": ""}, "default_options": {}},
            "grade": {"type": "radio", "description": "", "options": {"0": "", "1": "", "2": ""},
                      "default_options": {}}}, "file": {}},
        "_via_data_format_version": "2.0.10",
        "_via_image_id_list": ["rat1_2026-01-01_f1.png6543", "rat2_2026-01-02_f1.png777", "nothere.png1"],
    }  # fmt: skip
    flat = tmp_path / "flat"
    _img(flat / "rat1_2026-01-01_f1.png", 100, 50, 5)
    _img(flat / "rat2_2026-01-02_f1.png", 80, 80, 6)
    js = tmp_path / "via_project.json"
    js.write_text(json.dumps(via))
    out = tmp_path / "ds"
    rule = SubjectRule(pattern=r"^(?P<subject>rat\d+)_(?P<timepoint>[\d-]+)_")
    rep = import_annotations("via", js, flat, "rgs", out, val_frac=0.0, subjects=rule)
    text = "\n".join(rep.skipped)
    key = '_via_img_metadata["rat1_2026-01-01_f1.png6543"]'
    assert f"{js}:{key}.regions[2]: region shape 'circle' is not a rectangle" in text
    assert f"{js}:{key}.regions[3]: grade '1.5' is not an integer" in text
    assert f'{js}:_via_img_metadata["rat2_2026-01-02_f1.png777"].regions[0]: box outside the image' in text
    assert f'{js}:_via_img_metadata["nothere.png1"]: image missing' in text
    assert len(rep.skipped) == 4, text
    boxes = _boxes(out)
    assert [(u, g) for u, g, _ in boxes["rat1_2026-01-01_f1.png"]] == [(0, 1), (1, 2)]
    assert [(u, g) for u, g, _ in boxes["rat2_2026-01-02_f1.png"]] == [(2, 0)]  # grade by name
    subj = read_subjects(out / "subjects.csv")
    assert subj["rat1_2026-01-01_f1.png"].subject == "rat1"
    assert subj["rat2_2026-01-02_f1.png"].timepoint == "2026-01-02"
    assert _errors(out) == []
    # VIA's "export annotations as json" (the mapping alone) reads the same
    (tmp_path / "export.json").write_text(json.dumps(via["_via_img_metadata"]))
    rep2 = import_annotations("via", tmp_path / "export.json", flat, "rgs", tmp_path / "ds2", val_frac=0.0)
    assert rep2.boxes == rep.boxes


# --------------------------------------------------------------------------- shared rules and the CLI
def test_grade_parsing_and_safe_names() -> None:
    assert parse_grade("2", RGS, 0) == 2 and parse_grade(["1"], RGS, 0) == 1
    assert parse_grade("Moderate", RGS, 0) == 1 and parse_grade(None, RGS, 0) is None
    assert parse_grade("-1", RGS, 0) is None and parse_grade("", RGS, 0) is None
    for bad in ("3", "1.5", "x", True, ["1", "2"]):
        with pytest.raises(ValueError):
            parse_grade(bad, RGS, 0)
    assert safe_file_name("../../etc/passwd") == "passwd"
    assert safe_file_name("a b?.PNG") == "a_b.PNG" and safe_file_name("..") == "image"


def test_no_label_of_the_scale_is_a_clear_error(tmp_path: Path) -> None:
    imgs = _frames(tmp_path / "frames")
    xml = tmp_path / "a.xml"
    xml.write_text('<annotations><image id="0" name="bg.png" width="40" height="40">'
                   '<box label="Auge" xtl="1" ytl="1" xbr="9" ybr="9"/></image></annotations>')  # fmt: skip
    with pytest.raises(DatasetImportError, match=r"none of the labels \['Auge'\].*--map"):
        import_annotations("cvat", xml, imgs, "rgs", tmp_path / "ds")
    assert not (tmp_path / "ds").exists()
    rep = import_annotations("cvat", xml, imgs, "rgs", tmp_path / "ds", label_map={"Auge": "eye"})
    assert rep.boxes == 1


def test_subject_rule_refuses_two_sources() -> None:
    with pytest.raises(DatasetImportError, match="one subject source"):
        SubjectRule(folder=1, pattern="x")
    with pytest.raises(DatasetImportError, match="subject pattern"):
        SubjectRule(pattern="(")


def test_cli_import_cvat_and_label_studio(tmp_path: Path) -> None:
    imgs = _frames(tmp_path / "frames")
    xml = tmp_path / "annotations.xml"
    xml.write_text(CVAT_XML)
    runner = CliRunner()
    args = ["--images", str(imgs), "--scale", "rgs"]
    res = runner.invoke(app, ["data", "import-cvat", str(xml), *args, "--out", str(tmp_path / "ds"),
                              "--map", "tail=", "--subject-folder", "1"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "skipped: " in res.output and "grade 3 is outside" in res.output
    assert "check: " in res.output and ": 0 errors" in res.output
    js = tmp_path / "ls.json"
    js.write_text(json.dumps(_ls_tasks()))
    res = runner.invoke(app, ["data", "import-label-studio", str(js), *args, "--out", str(tmp_path / "ds2"),
                              "--subject-column", "animal"])  # fmt: skip
    assert res.exit_code == 0 and ": 0 errors" in res.output, res.output
    res = runner.invoke(app, ["data", "import-via", str(js), "--images", str(imgs), "--scale", "rgs",
                              "--out", str(tmp_path / "ds3")])  # fmt: skip
    assert res.exit_code == 2 and "not a VIA 2 project" in res.output


# ----------------------------------------------------------------------------- unsafe unit names
def _dataset_with_unit(root: Path, unit: str) -> Path:
    spec = {"name": "evil", "units": [{"name": unit, "grades": 3}]}
    _img(root / "images/train/a.png", 32, 32)
    (root / "labels/train").mkdir(parents=True)
    (root / "labels/train/a.txt").write_text("0 0.5 0.5 0.5 0.5 1\n")
    data = {"train": "images/train", "nc": 1, "names": {0: unit}, "scale": spec}
    (root / "data.yaml").write_text(yaml.safe_dump(data))
    return root


def test_unit_names_that_would_become_paths_are_refused(tmp_path: Path) -> None:
    root = _dataset_with_unit(tmp_path / "ds", "../../x")
    with pytest.raises(LabelError, match=r"unit name\(s\) \['../../x'\].*not safe as folder names"):
        load_dataset(root)
    probs = [p for p in check_dataset(root) if p.kind == "unit-name"]
    assert len(probs) == 1 and probs[0].severity == "error" and "'../../x'" in probs[0].message
    out = tmp_path / "crops" / "out"
    with pytest.raises(LabelError):
        crops_from_dataset(root, out)
    assert not (tmp_path / "x").exists() and not (tmp_path / "crops" / "x").exists()
    res = CliRunner().invoke(app, ["data", "export-crops", str(root), "--out", str(out)])
    assert res.exit_code == 2 and "not safe as folder names" in res.output
    assert not any(p.is_file() for p in tmp_path.rglob("*") if "ds" not in p.parts)
    res = CliRunner().invoke(app, ["data", "check", str(root)])
    assert res.exit_code == 1 and "[unit-name]" in res.output


def test_crop_index_path_outside_the_folder_is_refused(tmp_path: Path) -> None:
    root = _dataset_with_unit(tmp_path / "ds", "eye")
    out = tmp_path / "crops"
    crops_from_dataset(root, out)
    (tmp_path / "secret.png").write_bytes(b"x")
    (out / "index.csv").write_text("path,unit,grade\n../secret.png,eye,1\n")
    with pytest.raises(LabelError, match=r"index.csv:2: crop path '../secret.png' points outside"):
        load_crop_records(out)
