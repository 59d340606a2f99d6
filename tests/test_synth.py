"""Synthetic grimace generator: determinism, label correctness, study design, graders, videos, CLI."""

from __future__ import annotations

import csv
import itertools
import json
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from edge.scales import GOAT, MGS, RGS, RGS_SEED, ScaleError, load_scale
from train.data.format import list_images, load_dataset, read_labels, read_subjects
from train.synth import generate, generate_dataset, generate_video
from train.synth.faces import SPECIES_UNITS, sample_morphology
from train.synth.render import render_frontal, species_for
from train.synth.study import grade_of

SMALL = dict(n=12, imgsz=128, subjects=4)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_different_seed_differs(tmp_path: Path) -> None:
    a = generate_dataset(tmp_path / "a", "rgs", seed=3, graders=2, **SMALL)
    b = generate_dataset(tmp_path / "b", "rgs", seed=3, graders=2, **SMALL)
    c = generate_dataset(tmp_path / "c", "rgs", seed=4, graders=2, **SMALL)
    fa, fb, fc = _files(a), _files(b), _files(c)
    fa.pop("data.yaml"), fb.pop("data.yaml"), fc.pop("data.yaml")  # holds the absolute root path
    assert fa == fb
    assert any(k.endswith(".jpg") for k in fa)
    labels_a = {k: v for k, v in fa.items() if k.startswith("labels/")}
    labels_c = {k: v for k, v in fc.items() if k.startswith("labels/")}
    assert labels_a != labels_c
    pa = generate_dataset(tmp_path / "pa", "goat", seed=3, image_format="png", **SMALL)
    pb = generate_dataset(tmp_path / "pb", "goat", seed=3, image_format="png", **SMALL)
    for p in list_images(pa):
        q = pb / p.relative_to(pa)
        assert p.suffix == ".png" and np.array_equal(cv2.imread(str(p)), cv2.imread(str(q)))
    img_a = [v for k, v in fa.items() if k.endswith(".jpg")]
    img_c = [v for k, v in fc.items() if k.endswith(".jpg")]
    assert img_a != img_c


@pytest.mark.parametrize("scale", [RGS, MGS, GOAT])
def test_drawn_unit_pixels_lie_inside_their_box(scale) -> None:
    """Render, then render again without one unit instance: every changed pixel is inside its box."""
    species = species_for(scale)
    for trial in range(3):
        morph = sample_morphology(species, np.random.default_rng([11, trial]))
        srng = np.random.default_rng([12, trial])
        sev = {u: list(srng.uniform(0, 1, k)) for u, k in SPECIES_UNITS[species].items()}
        full = render_frontal(
            scale, morph, sev, np.random.default_rng([13, trial]), (160, 160), augment=False
        )
        assert len(full.instances) == sum(u.per_frame for u in scale.units)
        for ins in full.instances:
            assert ins.box is not None, f"{ins.unit}#{ins.k} not visible"
            hidden = render_frontal(
                scale,
                morph,
                sev,
                np.random.default_rng([13, trial]),
                (160, 160),
                augment=False,
                hide={(ins.unit, ins.k)},
            )
            changed = np.any(full.image != hidden.image, axis=2)
            ys, xs = np.nonzero(changed)
            assert len(xs) > 0, f"{ins.unit}#{ins.k} drew nothing"
            x1, y1, x2, y2 = ins.box
            assert xs.min() >= x1 and xs.max() < x2 and ys.min() >= y1 and ys.max() < y2, (
                f"{scale.name} {ins.unit}#{ins.k}: drawn pixels x[{xs.min()},{xs.max()}] "
                f"y[{ys.min()},{ys.max()}] outside box {ins.box}"
            )
            # tight: the box is at most a few pixels larger than what was drawn
            assert xs.min() - x1 <= 3 and x2 - 1 - xs.max() <= 3
            assert ys.min() - y1 <= 3 and y2 - 1 - ys.max() <= 3


def test_grade_changes_geometry_eye_closes() -> None:
    """Orbital tightening: the eye box gets flatter as the severity rises."""
    morph = sample_morphology("rat", np.random.default_rng(5), coat="albino")
    pose = {"cx": 160.0, "cy": 160.0, "scale": 60.0, "roll": 0.0, "yaw": 0.0}
    ratios = []
    for v in (0.0, 0.5, 1.0):
        sev = {u: [v] * k for u, k in SPECIES_UNITS["rat"].items()}
        r = render_frontal(RGS, morph, sev, np.random.default_rng(0), (320, 320), augment=False, pose=pose)
        eye = next(i for i in r.instances if i.unit == "eye")
        x1, y1, x2, y2 = eye.box
        ratios.append((y2 - y1) / (x2 - x1))
        assert eye.grade == grade_of(v, RGS.unit("eye"))
    assert ratios[0] > ratios[1] > ratios[2]


def test_dataset_labels_subjects_and_splits(tmp_path: Path) -> None:
    root = generate_dataset(tmp_path / "d", "rgs", n=16, imgsz=128, subjects=6, seed=1)
    info = load_dataset(root, expect_scale=RGS)
    subjects = read_subjects(info.subjects_csv)
    images = list_images(root / "images")
    assert len(images) == 16
    assert {p.name for p in images} == set(subjects)
    split_of: dict[str, set[str]] = defaultdict(set)
    for p in images:
        split = p.parent.name
        split_of[subjects[p.name].subject].add(split)
        boxes = read_labels(root / "labels" / split / f"{p.stem}.txt", spec=info.spec)  # checks ranges
        counts = defaultdict(int)
        for b in boxes:
            assert b.grade is not None and 0 <= b.grade < info.spec.units[b.unit].grades
            assert b.cx - b.w / 2 >= 0 and b.cx + b.w / 2 <= 1
            assert b.cy - b.h / 2 >= 0 and b.cy + b.h / 2 <= 1
            counts[b.unit] += 1
        for i, u in enumerate(info.spec.units):
            assert counts[i] <= u.per_frame
        assert counts[0] >= 1  # at least one eye visible
    assert all(len(s) == 1 for s in split_of.values()), "a subject appears in two splits"
    assert {s.group for s in subjects.values()} == {"control", "injured"}
    assert {s.timepoint for s in subjects.values()} == {"day1", "day30"}
    assert {"train", "val", "test"} <= {p.parent.name for p in images}


def test_scale_class_order_and_unknown_units(tmp_path: Path) -> None:
    root = generate_dataset(tmp_path / "seed", RGS_SEED, n=3, imgsz=128, subjects=2, val_frac=0, test_frac=0)
    info = load_dataset(root, expect_scale=RGS_SEED)
    boxes = [
        b
        for p in list_images(root / "images")
        for b in read_labels(root / "labels" / p.parent.name / f"{p.stem}.txt", spec=info.spec)
    ]
    assert {b.unit for b in boxes} <= {0, 1, 2}
    # ears (class 0 in rgs-seed) sit above eyes (class 1)
    ear_y = np.mean([b.cy for b in boxes if b.unit == 0])
    eye_y = np.mean([b.cy for b in boxes if b.unit == 1])
    assert ear_y < eye_y
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: tails\nspecies: rat\nunits:\n  - {name: tail, label: Tail}\n")
    with pytest.raises(ScaleError, match="cannot draw units"):
        generate_dataset(tmp_path / "bad", bad, n=1, imgsz=96)


def test_group_effect_like_a_study(tmp_path: Path) -> None:
    r = generate(tmp_path / "g", "rgs", n=64, imgsz=96, subjects=8, seed=2)
    assert r.scores["injured/day1"] > r.scores["control/day1"] + 0.5
    assert r.scores["injured/day1"] > r.scores["injured/day30"] > r.scores["control/day30"]
    # the same effect recomputed from the files
    subjects = read_subjects(r.out / "subjects.csv")
    per_cell: dict[str, list[float]] = defaultdict(list)
    for p in list_images(r.out / "images"):
        boxes = read_labels(r.out / "labels" / p.parent.name / f"{p.stem}.txt")
        by_unit: dict[int, list[int]] = defaultdict(list)
        for b in boxes:
            by_unit[b.unit].append(b.grade)
        s = subjects[p.name]
        per_cell[f"{s.group}/{s.timepoint}"].append(np.mean([np.mean(v) for v in by_unit.values()]))
    assert np.mean(per_cell["injured/day1"]) > np.mean(per_cell["control/day1"]) + 0.5


def test_graders_csv_shape_and_disagreement(tmp_path: Path) -> None:
    r = generate(tmp_path / "k", "rgs", n=60, imgsz=96, subjects=6, seed=5, graders=4)
    names = [p.name for p in r.grader_files]
    assert names == ["ground_truth.csv", "grader_1.csv", "grader_2.csv", "grader_3.csv", "grader_4.csv"]
    header = ["Filename", "Orbital Tightening", "Ear Changes", "Nose Flattening", "Whisker Change", "RGS"]
    tables = []
    images = {p.name for p in list_images(r.out / "images")}
    for p in r.grader_files[1:]:
        with p.open(newline="") as f:
            rows = list(csv.reader(f))
        assert rows[0] == header
        assert len(rows) == 61 and {row[0] for row in rows[1:]} == images
        grades = np.array([[int(x) for x in row[1:5]] for row in rows[1:]])
        assert grades.min() >= 0 and grades.max() <= 2
        total = np.array([float(row[5]) for row in rows[1:]])
        np.testing.assert_allclose(total, grades.mean(1), atol=1e-3)
        tables.append(grades)
    dis = np.mean([np.abs(a - b).mean(0) for a, b in itertools.combinations(tables, 2)], axis=0)
    eye, ear, nose = dis[0], dis[1], dis[2]
    assert ear > eye and nose > eye, f"disagreement eye {eye:.3f} ear {ear:.3f} nose {nose:.3f}"


def test_video_and_sidecar_frames(tmp_path: Path) -> None:
    r = generate(tmp_path / "v", "rgs", n=2, imgsz=128, subjects=2, video=1, video_seconds=1.5, fps=8)
    (video,) = r.videos
    lines = [json.loads(x) for x in video.with_suffix(".jsonl").read_text().splitlines()]
    info = json.loads(video.with_suffix(".json").read_text())
    cap = cv2.VideoCapture(str(video))
    frames = 0
    while cap.read()[0]:
        frames += 1
    cap.release()
    assert frames == len(lines) == info["frames"] == 12
    assert [x["frame"] for x in lines] == list(range(12))
    assert any(x["facing"] for x in lines)
    for x in lines:
        assert x["view"] in ("front", "side", "back")
        assert x["facing"] == (x["view"] == "front")
        if x["view"] == "back":
            assert x["units"] == [] and x["score"] is None
        for u in x["units"]:
            x1, y1, x2, y2 = u["box"]
            assert 0 <= x1 < x2 <= info["width"] and 0 <= y1 < y2 <= info["height"]
            assert u["grade"] == info["grades"][u["unit"]][u["instance"]]


def test_generate_video_goat_api(tmp_path: Path) -> None:
    p = generate_video(tmp_path / "goat.mp4", "goat", seconds=1.0, fps=6, imgsz=96, seed=1)
    lines = p.with_suffix(".jsonl").read_text().splitlines()
    assert len(lines) == 6
    front = [json.loads(x) for x in lines if json.loads(x)["facing"]]
    assert front and all(u["unit"] == "face" for f in front for u in f["units"])


def test_cli_synth(tmp_path: Path) -> None:
    from edge.cli import app

    runner = CliRunner()
    out = tmp_path / "cli"
    res = runner.invoke(
        app,
        [
            "synth",
            "--scale",
            "mgs",
            "--n",
            "5",
            "--out",
            str(out),
            "--imgsz",
            "96",
            "--subjects",
            "3",
            "--graders",
            "2",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "wrote 5 images" in res.output and "not evidence" in res.output
    assert load_dataset(out).spec.fingerprint == MGS.fingerprint
    assert (out / "graders" / "grader_2.csv").exists()
    again = runner.invoke(app, ["synth", "--scale", "mgs", "--n", "2", "--out", str(out), "--imgsz", "96"])
    assert again.exit_code == 2 and "not empty" in again.output
    bad = runner.invoke(app, ["synth", "--scale", "nosuch", "--n", "2", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "unknown scale" in bad.output
    assert load_scale("goat").name == "goat"


def test_generator_is_torch_free() -> None:
    import subprocess
    import sys

    code = (
        "import sys; import train.synth, train.synth.video, train.cli_synth; "
        "bad = [m for m in ('torch', 'ultralytics', 'transformers') if m in sys.modules]; "
        "assert not bad, bad"
    )
    root = Path(__file__).parents[1]
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root)
    assert res.returncode == 0, res.stderr
