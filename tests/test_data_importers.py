"""Importers (COCO JSON, seed crop folders), crop export, crop index, and `grimace data stats`."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from edge.cli import app
from edge.scales import GOAT, RGS, RGS_SEED
from train.data.annotations import import_coco
from train.data.check import check_dataset
from train.data.format import LabelError, load_dataset, read_labels, read_subjects
from train.data.importers import (
    CropItem,
    DatasetImportError,
    crops_from_dataset,
    import_crops,
    load_crop_index,
    load_crop_records,
    load_crop_scale,
)
from train.data.stats import compute_stats, format_stats


def _img(path: Path, w: int, h: int, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), arr)


def make_coco(tmp_path: Path) -> tuple[Path, Path]:
    """Hand-made COCO: 4 images (one background, one missing, one with wrong size), 7 annotations."""
    imgs = tmp_path / "coco_imgs"
    _img(imgs / "a.png", 100, 50, 1)
    _img(imgs / "sub" / "b.jpg", 80, 80, 2)
    _img(imgs / "bg.png", 40, 40, 3)
    _img(imgs / "wrongsize.png", 30, 30, 4)
    coco = {
        "images": [
            {"id": 1, "file_name": "a.png", "width": 100, "height": 50},
            {"id": 2, "file_name": "sub/b.jpg", "width": 80, "height": 80},
            {"id": 3, "file_name": "bg.png", "width": 40, "height": 40},
            {"id": 4, "file_name": "missing.png", "width": 10, "height": 10},
            {"id": 5, "file_name": "wrongsize.png", "width": 60, "height": 60},
        ],
        "categories": [
            {"id": 10, "name": "Eye"},
            {"id": 11, "name": "ear"},
            {"id": 12, "name": "Nose tip"},
            {"id": 13, "name": "tail"},
        ],
        "annotations": [
            # eye, grade in attributes (string as CVAT writes it)
            {"id": 100, "image_id": 1, "category_id": 10, "bbox": [10, 5, 20, 10],
             "attributes": {"grade": "2"}},
            # ear, top-level grade; box 1 px past the right border -> clipped to x 90..100
            {"id": 101, "image_id": 1, "category_id": 11, "bbox": [90, 0, 11, 10], "grade": 1},
            # bad: 10 px (10 %) past the border is a box outside the image, not clipped
            {"id": 108, "image_id": 1, "category_id": 11, "bbox": [90, 0, 20, 10], "grade": 1},
            # nose (mapped), ungraded
            {"id": 102, "image_id": 2, "category_id": 12, "bbox": [20, 20, 40, 20]},
            # tail dropped on purpose via the map
            {"id": 103, "image_id": 2, "category_id": 13, "bbox": [0, 0, 5, 5], "grade": 0},
            # bad: grade out of range, non-integer grade, empty box
            {"id": 104, "image_id": 2, "category_id": 10, "bbox": [1, 1, 5, 5], "grade": 3},
            {"id": 105, "image_id": 2, "category_id": 10, "bbox": [1, 1, 5, 5], "grade": 1.5},
            {"id": 106, "image_id": 1, "category_id": 11, "bbox": [5, 5, 0, 8], "grade": 0},
            # ungraded by -1
            {"id": 107, "image_id": 1, "category_id": 11, "bbox": [60, 0, 20, 10],
             "attributes": {"grade": -1}},
        ],
    }  # fmt: skip
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(coco, indent=1))
    return path, imgs


MAP = {"Nose tip": "nose", "tail": None}


def test_import_coco(tmp_path: Path) -> None:
    js, imgs = make_coco(tmp_path)
    out = tmp_path / "ds"
    rep = import_coco(js, imgs, "rgs", out, val_frac=0.0, category_map=MAP)
    assert rep.images == 3 and rep.boxes == 4 and rep.per_split == {"train": 3}
    skipped = "\n".join(rep.skipped)
    for needle in ("image missing: 'missing.png'", "the tool says 60x60 but wrongsize.png is 30x30",
                   "(id 104): grade 3 is outside the levels of unit 'eye'",
                   "(id 105): grade 1.5 is not an integer", "(id 106): empty or invalid box",
                   f"{js}:annotations[2] (id 108): box outside the image"):  # fmt: skip
        assert needle in skipped, skipped
    assert len(rep.skipped) == 6
    info = load_dataset(out, expect_scale=RGS)
    a = read_labels(out / "labels/train/a.txt", RGS)
    assert [(b.unit, b.grade) for b in a] == [(0, 2), (1, 1), (1, None)]
    eye, ear = a[0], a[1]
    assert eye.cx == pytest.approx(0.2) and eye.cy == pytest.approx(0.2)
    assert eye.w == pytest.approx(0.2) and eye.h == pytest.approx(0.2)
    assert ear.cx == pytest.approx(0.95) and ear.w == pytest.approx(0.1)  # clipped at the border
    b = read_labels(out / "labels/train/b.txt", RGS)
    assert [(x.unit, x.grade) for x in b] == [(2, None)]
    assert (b[0].cx, b[0].cy, b[0].w, b[0].h) == pytest.approx((0.5, 0.375, 0.5, 0.25))
    assert read_labels(out / "labels/train/bg.txt") == []  # background image kept
    assert sorted(p.name for p in info.images("train")) == ["a.png", "b.jpg", "bg.png"]
    assert [p for p in check_dataset(out) if p.severity == "error"] == []


def test_import_coco_unknown_labels_are_reported_and_the_rest_imported(tmp_path: Path) -> None:
    js, imgs = make_coco(tmp_path)
    rep = import_coco(js, imgs, "rgs", tmp_path / "ds", val_frac=0.0)
    skipped = "\n".join(rep.skipped)
    assert f"{js}:annotations[3] (id 102): unknown label 'Nose tip'" in skipped
    assert f"{js}:annotations[4] (id 103): unknown label 'tail'" in skipped
    assert any("'Nose tip' x1" in n and "--map" in n for n in rep.notes)
    assert rep.boxes == 3
    assert [p for p in check_dataset(tmp_path / "ds") if p.severity == "error"] == []


def test_import_coco_subject_wise_split(tmp_path: Path) -> None:
    js, imgs = make_coco(tmp_path)
    subj = tmp_path / "subjects.csv"
    subj.write_text(
        "image,subject,group,timepoint\na.png,rat1,control,d1\nb.jpg,rat1,control,d2\nbg.png,rat2,injured,d1\n"
    )
    out = tmp_path / "ds"
    rep = import_coco(js, imgs, RGS, out, val_frac=0.5, seed=1, category_map=MAP, subjects_csv=subj)
    assert rep.per_split == {"train": 2, "val": 1} or rep.per_split == {"train": 1, "val": 2}
    info = load_dataset(out)
    split_of = {p.name: s for s in info.splits for p in info.images(s)}
    assert split_of["a.png"] == split_of["b.jpg"] != split_of["bg.png"]  # rat1 never split apart
    assert set(read_subjects(out / "subjects.csv")) == {"a.png", "b.jpg", "bg.png"}
    assert [p for p in check_dataset(out) if p.severity == "error"] == []


def test_import_coco_refuses_non_empty_out(tmp_path: Path) -> None:
    js, imgs = make_coco(tmp_path)
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "keep.txt").write_text("x")
    with pytest.raises(DatasetImportError, match="not empty"):
        import_coco(js, imgs, "rgs", tmp_path / "ds", category_map=MAP)


def test_import_coco_bad_json(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [\n  1,\n')
    with pytest.raises(DatasetImportError, match=f"{bad}:3: invalid JSON"):
        import_coco(bad, tmp_path, "rgs", tmp_path / "o")
    bad.write_text('{"images": []}')
    with pytest.raises(DatasetImportError, match="missing or invalid 'annotations'"):
        import_coco(bad, tmp_path, "rgs", tmp_path / "o")


def make_seed_crops(root: Path) -> Path:
    """Seed-style crop folders: ear/0, ear/2, eye/1, nose/0 (+ an unreadable file)."""
    rels = ["ear/0/c1.png", "ear/0/c2.png", "ear/2/c3.png", "Eye/1/c4.jpg", "nose/0/c5.png"]
    for i, rel in enumerate(rels):
        _img(root / rel, 24, 20, i)
    (root / "nose" / "0" / "broken.png").write_bytes(b"nope")
    (root / "README.txt").write_text("seed crops")
    return root


def test_import_crops_and_index(tmp_path: Path) -> None:
    src = make_seed_crops(tmp_path / "seed")
    out = tmp_path / "crops"
    rep = import_crops(src, "rgs-seed", out)
    assert rep.images == 5 and len(rep.skipped) == 1 and "broken.png" in rep.skipped[0]
    assert rep.per_unit_grade == {("ear", 0): 2, ("ear", 2): 1, ("eye", 1): 1, ("nose", 0): 1}
    items = load_crop_index(out)
    assert all(isinstance(i, CropItem) and i.path.is_file() for i in items)
    assert sorted((i.path.name, i.unit, i.grade) for i in items) == [
        ("c1.png", "ear", 0), ("c2.png", "ear", 0), ("c3.png", "ear", 2), ("c4.jpg", "eye", 1),
        ("c5.png", "nose", 0),
    ]  # fmt: skip
    path, unit, grade = items[0]  # plain 3-tuples
    assert path.parent == out / unit / str(grade)
    assert [i.grade for i in load_crop_index(out, unit="ear")] == [0, 0, 2]
    assert load_crop_scale(out) == RGS_SEED
    with pytest.raises(LabelError, match="unknown unit 'whiskers'"):
        load_crop_index(out, unit="whiskers")


@pytest.mark.parametrize(
    "rel, message",
    [
        ("tail/0/x.png", "folder 'tail' is not a unit of scale 'rgs'"),
        ("eye/3/x.png", "grade 3 out of range for unit 'eye'"),
        ("eye/mild/x.png", "grade folder must be an integer"),
    ],
)
def test_import_crops_structural_errors(tmp_path: Path, rel: str, message: str) -> None:
    src = tmp_path / "seed"
    _img(src / "eye/0/ok.png", 10, 10)
    _img(src / rel, 10, 10)
    with pytest.raises(DatasetImportError, match=message):
        import_crops(src, "rgs", tmp_path / "out")
    with pytest.raises(DatasetImportError, match="no crops found"):
        import_crops(tmp_path / "seed" / "eye" / "0", GOAT, tmp_path / "out2")


def test_crop_index_validation(tmp_path: Path) -> None:
    out = tmp_path / "crops"
    import_crops(make_seed_crops(tmp_path / "seed"), "rgs-seed", out)
    index = out / "index.csv"
    rows = index.read_text().splitlines()
    index.write_text("\n".join([*rows, "eye/5/c4.jpg,eye,5,,,,"]) + "\n")
    with pytest.raises(LabelError, match=f"{index}:{len(rows) + 1}: grade 5 out of range"):
        load_crop_index(out)
    index.write_text("\n".join([*rows, "eye/1/gone.png,eye,1,,,,"]) + "\n")
    with pytest.raises(LabelError, match="does not exist"):
        load_crop_index(out)
    (out / "crops.yaml").unlink()
    with pytest.raises(LabelError, match=r"no crops\.yaml"):
        load_crop_index(out)


def _dataset(tmp_path: Path) -> Path:
    from tests.test_data_check import make_valid_dataset

    return make_valid_dataset(tmp_path / "ds")


def test_crops_from_dataset(tmp_path: Path) -> None:
    root = _dataset(tmp_path)
    out = tmp_path / "crops"
    rep = crops_from_dataset(root, out, margin=0.1, min_size=2)
    # 5 images x 5 graded boxes (one ear is ungraded)
    assert rep.images == 25 and rep.skipped == [] and rep.per_split == {"train": 15, "val": 10}
    recs = load_crop_records(out)
    assert len(recs) == 25 and {r.split for r in recs} == {"train", "val"}
    first = next(r for r in recs if r.source.endswith("r1_a.png:1"))
    assert (first.unit, first.grade, first.subject, first.group) == ("eye", 1, "rat1", "control")
    assert first.path.name == "r1_a_L1.png"
    # eye box 0.10 x 0.08 of a 64 x 48 image = 6.4 x 3.84 px, +10% per side, outward-rounded
    crop = cv2.imread(str(first.path))
    assert crop.shape[:2] == (6, 9)
    img = cv2.imread(str(root / "images/train/r1_a.png"))
    x1, y1 = int(np.floor((0.30 - 0.05 - 0.01) * 64)), int(np.floor((0.35 - 0.04 - 0.008) * 48))
    np.testing.assert_array_equal(crop, img[y1 : y1 + 6, x1 : x1 + 9])
    assert sum(1 for _ in load_crop_index(out, unit="whiskers")) == 5
    with pytest.raises(DatasetImportError, match="no split 'test'"):
        crops_from_dataset(root, tmp_path / "c2", splits=["test"])


def test_stats(tmp_path: Path) -> None:
    root = _dataset(tmp_path)
    st = compute_stats(root)
    assert st.images_per_split == {"train": 3, "val": 2} and st.boxes_per_split == {"train": 18, "val": 12}
    assert dict(st.unit_grade["eye"]) == {1: 5, 2: 5}
    assert dict(st.unit_grade["ear"]) == {0: 5, "ungraded": 5}
    assert set(st.subjects) == {"rat1", "rat2", "rat3"} and st.subjects["rat1"].images == 2
    assert st.groups["injured"].subjects == {"rat2", "rat3"}
    assert st.groups["control"].mean_grade("eye") == pytest.approx(1.5)
    assert st.timepoints[("injured", "d1")].images == 2
    text = format_stats(st)
    assert "Boxes per unit and grade" in text and "Per group and timepoint" in text
    # a bad label line is counted, not fatal
    (root / "labels/train/r1_a.txt").write_text("9 0.5 0.5 0.1 0.1 0\n0 0.5 0.5 0.1 0.1 1\n")
    assert compute_stats(root).bad_lines == 1


def test_cli_import_export_stats(tmp_path: Path) -> None:
    runner = CliRunner()
    js, imgs = make_coco(tmp_path)
    out = tmp_path / "ds"
    res = runner.invoke(
        app,
        ["data", "import-coco", str(js), "--images", str(imgs), "--scale", "rgs", "--out", str(out),
         "--val-frac", "0.34", "--map", "Nose tip=nose", "--map", "tail="],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "3 images" in res.output and "skipped: " in res.output and "check: " in res.output
    res = runner.invoke(app, ["data", "import-coco", str(js), "--images", str(imgs), "--scale", "rgs",
                              "--out", str(tmp_path / "ds2")])  # fmt: skip
    assert res.exit_code == 0 and "unknown label 'Nose tip'" in res.output, res.output
    res = runner.invoke(app, ["data", "stats", str(out)])
    assert res.exit_code == 0 and "grade 2" in res.output, res.output
    res = runner.invoke(app, ["data", "stats", str(out), "--json"])
    assert json.loads(res.output)["unit_grade"]["eye"] == {"2": 1}
    res = runner.invoke(app, ["data", "export-crops", str(out), "--out", str(tmp_path / "crops")])
    assert res.exit_code == 0 and "eye/2 1" in res.output, res.output
    res = runner.invoke(app, ["data", "import-crops", str(make_seed_crops(tmp_path / "seed")),
                              "--scale", "rgs", "--out", str(tmp_path / "c2")])  # fmt: skip
    assert res.exit_code == 0 and "5 images" in res.output, res.output
    with (tmp_path / "c2" / "index.csv").open() as f:
        assert next(csv.reader(f)) == ["path", "unit", "grade", "subject", "group", "split", "source"]
    res = runner.invoke(app, ["data", "stats", str(tmp_path / "nothing")])
    assert res.exit_code == 2 and "no data.yaml" in res.output
