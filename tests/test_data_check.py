"""`grimace data check`: a valid dataset passes; every planted problem is named with file and line."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from edge.cli import app
from edge.scales import RGS
from train.data.check import ERROR, INFO, KINDS, WARNING, Problem, check_dataset, run_check
from train.data.format import LabelBox, Subject, write_data_yaml, write_labels, write_subjects

REPO = Path(__file__).resolve().parents[1]

# (image name, split, subject, group, boxes); RGS units: 0 eye, 1 ear, 2 nose, 3 whiskers
GOOD_BOXES = [
    LabelBox(0, 0.30, 0.35, 0.10, 0.08, 1),
    LabelBox(0, 0.70, 0.35, 0.10, 0.08, 2),
    LabelBox(1, 0.20, 0.10, 0.15, 0.12, 0),
    LabelBox(1, 0.80, 0.10, 0.15, 0.12, None),
    LabelBox(2, 0.50, 0.60, 0.12, 0.10, 1),
    LabelBox(3, 0.50, 0.75, 0.40, 0.20, 0),
]
FRAMES = [
    ("r1_a.png", "train", "rat1", "control", "d1"),
    ("r1_b.png", "train", "rat1", "control", "d2"),
    ("r2_a.png", "train", "rat2", "injured", "d1"),
    ("r3_a.png", "val", "rat3", "injured", "d1"),
    ("r3_b.png", "val", "rat3", "injured", "d2"),
]


def _write_image(path: Path, seed: int, size: tuple[int, int] = (48, 64)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), img)


def make_valid_dataset(root: Path) -> Path:
    """A small valid RGS dataset: 5 images in train/val, labels, subjects.csv."""
    for i, (name, split, *_rest) in enumerate(FRAMES):
        _write_image(root / "images" / split / name, i)
        write_labels(root / "labels" / split / name.replace(".png", ".txt"), GOOD_BOXES)
    write_data_yaml(root, RGS, {"train": "images/train", "val": "images/val"})
    write_subjects(root / "subjects.csv", [Subject(n, s, g, t) for n, _, s, g, t in FRAMES])
    return root


def _yaml_line(path: Path, key: str) -> int:
    for i, line in enumerate(path.read_text().splitlines(), start=1):
        if line.startswith(f"{key}:"):
            return i
    raise AssertionError(f"{key} not in {path}")


def make_broken_dataset(root: Path) -> list[tuple[str, int | None, str]]:
    """A copy of the valid dataset with planted problems; returns ``(file, line, kind)`` for each."""
    make_valid_dataset(root)
    planted: list[tuple[str, int | None, str]] = []
    lt = root / "labels" / "train"

    # data.yaml: class names in the wrong order, and an extra split that is not under images/
    yml = root / "data.yaml"
    data = yaml.safe_load(yml.read_text())
    data["names"] = {0: "ear", 1: "eye", 2: "nose", 3: "whiskers"}
    data["test"] = "pics"
    yml.write_text(yaml.safe_dump(data, sort_keys=False))
    planted.append((str(yml), _yaml_line(yml, "names"), "names-mismatch"))
    _write_image(root / "pics" / "p1.png", 50)
    planted.append((str(root / "pics" / "p1.png"), None, "image-path"))

    # one label file with one bad line of every line-level kind
    bad_lines = [
        "0 0.3 0.35 0.1 0.08 1",  # 1 fine
        "0 0.3 0.35 0.1",  # 2 fields
        "1 0.2 abc 0.15 0.12 0",  # 3 non-numeric
        "7 0.5 0.5 0.1 0.1 0",  # 4 unknown unit
        "2 0.5 0.6 0.12 0.10 3",  # 5 grade out of range
        "1 0.95 0.1 0.2 0.12 0",  # 6 box outside (x2 = 1.05)
        "2 0.5 0.6 0.0 0.10 1",  # 7 zero width
        "0 0.3 0.35 0.1 0.08 1",  # 8 duplicate of line 1
        "0 0.7 0.35 0.1 0.08 0",  # 9 second eye
        "0 0.5 0.35 0.1 0.08 0",  # 10 third eye > per_frame 2
        "1 0.2 0.1 0.15 0.12 nan",  # 11 non-finite grade
    ]
    lbl = lt / "r1_a.txt"
    lbl.write_text("\n".join(bad_lines) + "\n")
    for line, kind in [
        (2, "label-fields"),
        (3, "label-nonnumeric"),
        (4, "label-unit"),
        (5, "label-grade"),
        (6, "box-outside"),
        (7, "box-size"),
        (8, "box-duplicate"),
        (10, "unit-count"),
        (11, "label-nonnumeric"),
    ]:
        planted.append((str(lbl), line, kind))

    # unreadable images: zero bytes, and text pretending to be a png
    (root / "images" / "train" / "r1_b.png").write_bytes(b"")
    planted.append((str(root / "images" / "train" / "r1_b.png"), None, "image-unreadable"))
    (root / "images" / "val" / "r3_b.png").write_text("not an image at all")
    planted.append((str(root / "images" / "val" / "r3_b.png"), None, "image-unreadable"))

    # label file that is not text
    (lt / "r2_a.txt").write_bytes(b"\xff\xfe\x00\x81garbage")
    planted.append((str(lt / "r2_a.txt"), None, "label-unreadable"))

    # label without image
    (lt / "ghost.txt").write_text("0 0.5 0.5 0.1 0.1 0\n")
    planted.append((str(lt / "ghost.txt"), None, "label-orphan"))

    # duplicate file name across splits (val gets a train name) and two images sharing one stem
    _write_image(root / "images" / "val" / "r1_a.png", 60)
    write_labels(root / "labels" / "val" / "r1_a.txt", GOOD_BOXES[:1])
    planted.append((str(root / "images" / "val" / "r1_a.png"), None, "duplicate-name"))
    _write_image(root / "images" / "val" / "r3_a.jpg", 61)
    planted.append((str(root / "images" / "val" / "r3_a.png"), None, "duplicate-name"))

    # image in no split; image without label (a note, not a problem)
    _write_image(root / "images" / "extra" / "lost.png", 62)
    planted.append((str(root / "images" / "extra" / "lost.png"), None, "image-unlisted"))
    _write_image(root / "images" / "train" / "bg.png", 63)
    planted.append((str(root / "images" / "train" / "bg.png"), None, "no-label"))

    # subjects.csv: a duplicated row, an empty subject, a row for a missing image; bg.png, p1.png,
    # r3_a.jpg and the val copy of r1_a.png have no row of their own (r1_a.png's row is by name)
    subj = root / "subjects.csv"
    rows = subj.read_text().splitlines()
    rows += ["r2_a.png,rat2,injured,d1", "r3_b.png,,injured,d2", "nothere.png,rat9,control,d1"]
    subj.write_text("\n".join(rows) + "\n")
    n = len(rows)
    planted.append((str(subj), n - 2, "subjects-row"))
    planted.append((str(subj), n - 1, "subjects-row"))
    planted.append((str(subj), n, "subject-unknown-image"))
    planted.append((str(root / "images" / "train" / "bg.png"), None, "subject-missing"))
    return planted


def _loc(file: str, line: int | None) -> str:
    return f"{file}:{line}" if line is not None else file


def _assert_named(output: str, planted: list[tuple[str, int | None, str]]) -> None:
    lines = output.splitlines()
    for file, line, kind in planted:
        if KINDS[kind][0] == INFO:
            continue
        prefix = f"{_loc(file, line)}: "
        hits = [ln for ln in lines if ln.startswith(prefix) and ln.endswith(f"[{kind}]")]
        assert hits, f"planted {kind} at {_loc(file, line)} not reported; output:\n{output}"


# ------------------------------------------------------------------------------------------ tests
def test_valid_dataset_has_no_problems(tmp_path: Path) -> None:
    root = make_valid_dataset(tmp_path / "ds")
    rep = run_check(root)
    assert rep.problems == [], [p.format() for p in rep.problems]
    assert (rep.n_images, rep.n_label_files, rep.n_boxes) == (5, 5, 30)
    result = CliRunner().invoke(app, ["data", "check", str(root)])
    assert result.exit_code == 0, result.output
    assert "0 errors" in result.output and result.output.strip().endswith("OK")


def test_broken_dataset_reports_every_planted_problem(tmp_path: Path) -> None:
    root = tmp_path / "bad"
    planted = make_broken_dataset(root)
    problems = check_dataset(root)
    found = {(p.file, p.line, p.kind) for p in problems}
    missing = [p for p in planted if p not in found]
    assert not missing, f"not found: {missing}\nall: {[p.format() for p in problems]}"
    # the clean lines of the broken file are not reported
    lbl = str(root / "labels" / "train" / "r1_a.txt")
    assert {p.line for p in problems if p.file == lbl} == {2, 3, 4, 5, 6, 7, 8, 10, 11}
    # each problem's str() is `file:line: message`
    p = next(p for p in problems if p.kind == "label-unit")
    assert str(p).startswith(f"{lbl}:4: ") and "unknown unit index 7" in str(p)


def test_cli_check_names_each_planted_error(tmp_path: Path) -> None:
    root = tmp_path / "bad"
    planted = make_broken_dataset(root)
    result = CliRunner().invoke(app, ["data", "check", str(root)])
    assert result.exit_code == 1, result.output
    _assert_named(result.output, planted)
    assert result.output.strip().endswith("FAILED")
    assert "no-label x1" in result.output  # notes are counted, listed only with --info
    info = CliRunner().invoke(app, ["data", "check", str(root), "--info"])
    _assert_named(info.output, planted)
    assert f"{root / 'images' / 'train' / 'bg.png'}: info: " in info.output


def test_cli_check_subprocess(tmp_path: Path) -> None:
    good = make_valid_dataset(tmp_path / "good")
    bad = tmp_path / "bad"
    planted = make_broken_dataset(bad)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = [sys.executable, "-m", "edge.cli", "data", "check"]
    ok = subprocess.run([*run, str(good)], capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    res = subprocess.run([*run, str(bad)], capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert res.returncode == 1, res.stdout + res.stderr
    _assert_named(res.stdout, planted)


def _mutate(tmp_path: Path, how: str) -> tuple[Path, str, int | None]:
    """A valid dataset with one dataset-level problem; returns (root, file, line)."""
    root = make_valid_dataset(tmp_path / how)
    yml = root / "data.yaml"
    data = yaml.safe_load(yml.read_text())
    if how == "no-dataset":
        shutil.rmtree(root)
        return root, str(root), None
    if how == "yaml-missing":
        yml.unlink()
        return root, str(yml), None
    if how == "yaml-invalid":
        yml.write_text("path: .\ntrain: images/train\nval: [images/val\n")
        return root, str(yml), 4
    if how == "no-scale":
        del data["scale"]
        yml.write_text(yaml.safe_dump(data, sort_keys=False))
        return root, str(yml), None
    if how == "bad-scale":
        data["scale"] = "nosuchscale"
        yml.write_text(yaml.safe_dump(data, sort_keys=False))
        return root, str(yml), _yaml_line(yml, "scale")
    if how == "unit-name":
        spec = data["scale"] if isinstance(data["scale"], dict) else None
        assert spec is not None
        spec["units"][0]["name"] = "../../x"
        data["names"][0] = "../../x"
        yml.write_text(yaml.safe_dump(data, sort_keys=False))
        return root, str(yml), _yaml_line(yml, "scale")
    if how == "split-missing":
        data["val"] = "images/nothere"
        yml.write_text(yaml.safe_dump(data, sort_keys=False))
        return root, str(yml), _yaml_line(yml, "val")
    if how == "split-overlap":
        data["test"] = "images/val"
        yml.write_text(yaml.safe_dump(data, sort_keys=False))
        return root, str(yml), _yaml_line(yml, "test")
    if how == "labels-missing":
        shutil.rmtree(root / "labels" / "val")
        return root, str(root / "labels" / "val"), None
    if how == "no-images":
        for p in (root / "images").rglob("*.png"):
            p.unlink()
        return root, str(root), None
    if how == "subjects-columns":
        (root / "subjects.csv").write_text("img,animal\nr1_a.png,rat1\n")
        return root, str(root / "subjects.csv"), 1
    raise AssertionError(how)


DATASET_LEVEL = [
    "no-dataset",
    "yaml-missing",
    "yaml-invalid",
    "no-scale",
    "bad-scale",
    "unit-name",
    "split-missing",
    "split-overlap",
    "labels-missing",
    "no-images",
    "subjects-columns",
]


@pytest.mark.parametrize("kind", DATASET_LEVEL)
def test_dataset_level_problem(tmp_path: Path, kind: str) -> None:
    root, file, line = _mutate(tmp_path, kind)
    problems = check_dataset(root)
    assert (file, line, kind) in {(p.file, p.line, p.kind) for p in problems}, [p.format() for p in problems]
    result = CliRunner().invoke(app, ["data", "check", str(root)])
    expect_fail = KINDS[kind][0] == ERROR
    assert result.exit_code == (1 if expect_fail else 0), result.output
    assert f"{_loc(file, line)}: {KINDS[kind][0]}: " in result.output


def test_every_kind_is_exercised(tmp_path: Path) -> None:
    planted = {k for _, _, k in make_broken_dataset(tmp_path / "bad")}
    assert planted | set(DATASET_LEVEL) == set(KINDS)


def test_yaml_errors_still_check_files(tmp_path: Path) -> None:
    """A broken data.yaml does not stop the image/label checks."""
    root = make_valid_dataset(tmp_path / "ds")
    (root / "data.yaml").unlink()
    (root / "images" / "train" / "r1_a.png").write_bytes(b"")
    (root / "labels" / "train" / "r1_b.txt").write_text("0 0.5 0.5 -0.1 0.1 1\n")
    kinds = {p.kind for p in check_dataset(root)}
    assert {"yaml-missing", "image-unreadable", "box-size"} <= kinds


def test_strict_fails_on_warnings_and_tolerance(tmp_path: Path) -> None:
    root = make_valid_dataset(tmp_path / "ds")
    # slightly outside (x2 = 1.003): within the default tolerance, an error with tolerance 0
    write_labels(root / "labels" / "train" / "r1_a.txt", [LabelBox(2, 0.95, 0.5, 0.106, 0.1, 1)])
    assert check_dataset(root) == []
    assert [p.kind for p in check_dataset(root, tolerance=0.0)] == ["box-outside"]
    # a warning only: exit 0, with --strict exit 1
    write_labels(root / "labels" / "train" / "r1_a.txt", [GOOD_BOXES[4], GOOD_BOXES[4]])
    runner = CliRunner()
    res = runner.invoke(app, ["data", "check", str(root)])
    assert res.exit_code == 0 and "warning: same box as line 1 [box-duplicate]" in res.output
    assert runner.invoke(app, ["data", "check", str(root), "--strict"]).exit_code == 1


def test_problem_format_and_validation() -> None:
    p = Problem("a/b.txt", 3, "grade 5 out of range", "label-grade")
    assert str(p) == "a/b.txt:3: grade 5 out of range"
    assert p.format() == "a/b.txt:3: error: grade 5 out of range [label-grade]"
    assert str(Problem("x.png", None, "empty", "image-unreadable")) == "x.png: empty"
    assert Problem("x", None, "m", "unit-count").severity == WARNING
    with pytest.raises(ValueError, match="unknown problem kind"):
        Problem("x", None, "m", "no-such-kind")
