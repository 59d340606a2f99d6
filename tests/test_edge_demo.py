"""`python -m edge.demo` (run by `make demo`): the real pipeline end to end on a small model and video."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from edge.scales import RGS
from tests.tiny_onnx import build_tiny_onnx, face_image

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


def _demo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "edge.demo", *args], capture_output=True, text=True, timeout=300
    )


def test_demo_runs_score_and_watch(tmp_path: Path) -> None:
    model = build_tiny_onnx(tmp_path / "m.onnx", RGS, imgsz=160, cell=8, box=24)
    video = tmp_path / "v.mp4"
    vw = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (320, 240))
    for i in range(50):
        vw.write(face_image(RGS, 240, 320, size=24, seed=i))
    vw.release()
    r = _demo("--model", str(model), "--video", str(video), "--out", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    assert (
        "frames/s" in r.stdout and "10 interval frame(s) selected" in r.stdout and "demo run time" in r.stdout
    )
    assert (tmp_path / "out" / "score" / "frames.csv").is_file()
    assert (tmp_path / "out" / "watch" / "grimace.sqlite").is_file()
    assert len(list((tmp_path / "out" / "watch" / "selected").rglob("interval_*_annotated.jpg"))) == 10


@pytest.mark.parametrize("entry", [["-m", "edge.demo"], ["-m", "edge.cli", "demo"]])
def test_demo_without_model_prints_the_recipe(tmp_path: Path, entry: list[str]) -> None:
    """``python -m edge.demo`` (make demo) and ``grimace demo`` are one job with one parser."""
    r = subprocess.run(
        [sys.executable, *entry, "--model", str(tmp_path / "none.onnx"), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 2
    assert "demo model not found" in r.stderr and "grimace convert onnx" in r.stderr


def test_help_shows_boolean_flags_without_a_type() -> None:
    """``--annotate/--no-annotate`` takes no value, so no ``<bool>`` type is shown next to it."""
    from typer.testing import CliRunner

    from edge.cli import app

    for cmd in (["score"], ["watch"], ["convert", "onnx"], ["train", "student"], ["data", "check"]):
        r = CliRunner().invoke(app, [*cmd, "--help"], env={"COLUMNS": "200"})
        assert r.exit_code == 0, r.output
        assert "<bool>" not in r.output, cmd
    r = CliRunner().invoke(app, ["score", "--help"], env={"COLUMNS": "200"})
    assert "--no-annotate" in r.output and "<float>" in r.output  # value options keep their type


@pytest.mark.slow
def test_demo_renders_a_synthetic_video_when_none_is_shipped(tmp_path: Path) -> None:
    pytest.importorskip("train.synth")
    model = build_tiny_onnx(tmp_path / "m.onnx", RGS, imgsz=320)
    r = _demo("--model", str(model), "--out", str(tmp_path / "out"), "--seconds", "3")
    assert r.returncode == 0, r.stderr
    assert "rendering a 3 s synthetic session video" in r.stdout
    assert list((tmp_path / "out" / "synth" / "videos").glob("*.mp4"))
