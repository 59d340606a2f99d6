"""`grimace score` end to end on a folder mixing good and bad inputs (the issue's acceptance test)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.scales import RGS
from tests.tiny_onnx import build_tiny_onnx, face_image

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


def _write_video(path: Path, n: int, fps: float = 10.0) -> Path:
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (320, 240))
    for i in range(n):
        vw.write(face_image(RGS, 240, 320, size=24, shift=(int(10 * np.sin(i / 3)), 0), seed=i))
    vw.release()
    return path


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("mixed")
    model = build_tiny_onnx(root / "model.onnx", RGS, imgsz=320)
    d = root / "inputs"
    d.mkdir()
    face = face_image(RGS)
    cv2.imwrite(str(d / "rat1_a.jpg"), face)
    cv2.imwrite(str(d / "rat1_b.png"), face_image(RGS, shift=(20, 10), seed=3))
    cv2.imwrite(str(d / "rat2_gray.png"), cv2.cvtColor(face, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(d / "rat2_16bit.png"), face.astype(np.uint16) * 257)
    _ok, buf = cv2.imencode(".jpg", face)
    (d / "corrupt.jpg").write_bytes(buf.tobytes()[: len(buf) // 3])
    (d / "empty.jpg").write_bytes(b"")
    (d / "notes.png").write_text("this is a text file with an image extension\n")
    _write_video(d / "rat3_session.mp4", 30)
    full = _write_video(root / "cut_source.mp4", 30).read_bytes()
    (d / "truncated.mp4").write_bytes(full[: len(full) // 2])
    smap = root / "subjects.csv"
    smap.write_text(
        "file,subject,group\nrat1_a.jpg,R1,saline\nrat1_b.png,R1,saline\nrat2_gray.png,R2,drug\n"
        "rat2_16bit.png,R2,drug\nrat3_session.mp4,R3,drug\n"
    )
    return model, d


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "edge.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_score_folder_with_bad_inputs(mixed: tuple[Path, Path], tmp_path: Path) -> None:
    model, d = mixed
    out = tmp_path / "out"
    r = _run(
        "score",
        str(d),
        "--model",
        str(model),
        "--out",
        str(out),
        "--fps",
        "5",
        "--scale",
        "rgs",
        "--subject-map",
        str(d.parent / "subjects.csv"),
        "--annotate-video",
        "--no-progress",
        "--threads",
        "1",
    )
    assert r.returncode == 1, r.stdout + r.stderr  # some inputs failed, the rest is done
    bad = {"corrupt.jpg", "empty.jpg", "notes.png", "truncated.mp4"}
    for name in bad:
        assert name in r.stderr, f"{name} not reported:\n{r.stderr}"
    with (out / "errors.csv").open() as f:
        errors = list(csv.DictReader(f))
    assert {Path(e["source"]).name for e in errors} == bad
    with (out / "frames.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[:6] == [
        "Filename",
        "RGS",
        "Orbital Tightening",
        "Ear Changes",
        "Nose Flattening",
        "Whisker Change",
    ]
    names = {row["Filename"] for row in rows}
    assert {"rat1_a.jpg", "rat1_b.png", "rat2_gray.png", "rat2_16bit.png"} <= names
    video_rows = [row for row in rows if row["Filename"].startswith("rat3_session.mp4@")]
    assert len(video_rows) == 15  # 3 s of video at 5 fps
    colour = [row for row in rows if row["Filename"] in ("rat1_a.jpg", "rat1_b.png", "rat2_16bit.png")]
    assert all(row["RGS"] != "" and row["abstained"] == "" for row in colour)
    assert all(row["RGS"] != "" for row in video_rows)
    # a grayscale face has no colour for the colour-blob test model: it is read, then abstains with a reason
    gray = next(row for row in rows if row["Filename"] == "rat2_gray.png")
    assert gray["RGS"] == "" and "missing required unit" in gray["abstained"]
    assert {row["animal"] for row in rows} == {"R1", "R2", "R3"}
    assert {row["group"] for row in rows if row["animal"] == "R1"} == {"saline"}
    with (out / "summary_by_animal.csv").open() as f:
        summary = {row["animal"]: row for row in csv.DictReader(f)}
    assert summary["R1"]["n_frames"] == "2" and summary["R1"]["n_scored"] == "2"
    assert summary["R2"]["n_abstained"] == "1" and summary["R3"]["n_frames"] == "15"
    r3 = np.array([float(row["RGS"]) for row in video_rows])
    assert float(summary["R3"]["RGS mean"]) == pytest.approx(r3.mean(), abs=1e-3)
    assert float(summary["R3"]["RGS sem"]) == pytest.approx(r3.std(ddof=1) / np.sqrt(r3.size), abs=1e-3)
    lines = [json.loads(x) for x in (out / "frames.jsonl").read_text().splitlines()]
    assert sum("error" in x for x in lines) == 4
    assert all(len(x["detections"]) == x["n_boxes"] for x in lines if "error" not in x)
    assert (out / "frames.xlsx").stat().st_size > 0
    from openpyxl import load_workbook

    wb = load_workbook(out / "frames.xlsx", read_only=True)
    assert wb.sheetnames == ["frames", "by animal", "by session", "errors"]
    ann = sorted(p.name for p in (out / "annotated").iterdir())
    assert "rat1_a.jpg" in ann and "rat3_session_annotated.mp4" in ann
    cap = cv2.VideoCapture(str(out / "annotated" / "rat3_session_annotated.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 15
    cap.release()
    run = json.loads((out / "run.json").read_text())
    assert run["frames_scored"] == len(rows) and set(run["stage_ms_per_frame"]) == {
        "decode",
        "pre",
        "infer",
        "post",
    }
    assert "frames/s" in r.stdout


def test_score_refuses_model_of_another_scale(mixed: tuple[Path, Path], tmp_path: Path) -> None:
    model, d = mixed
    r = _run(
        "score", str(d / "rat1_a.jpg"), "--model", str(model), "--out", str(tmp_path / "o"), "--scale", "goat"
    )
    assert r.returncode == 2 and "made for scale 'rgs'" in r.stderr


def test_score_all_good_exits_zero(mixed: tuple[Path, Path], tmp_path: Path) -> None:
    model, d = mixed
    r = _run(
        "score", str(d / "rat1_a.jpg"), "--model", str(model), "--out", str(tmp_path / "o"), "--no-progress"
    )
    assert r.returncode == 0, r.stderr
    assert "scored 1 of 1 frame(s)" in r.stdout
