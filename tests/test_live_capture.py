"""Live capture never builds a backlog: the grabber thread keeps the newest frame, dropped frames are
counted (CameraSource, `watch` result and events), camera events reach the caller's thread, and the
capture-to-commit latency of every committed frame is recorded."""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.sources import CameraEvent, CameraSource


def _video(path: Path, n: int, fps: float = 10.0, size: tuple[int, int] = (64, 48)) -> Path:
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    for i in range(n):
        vw.write(np.full((size[1], size[0], 3), (i * 9) % 256, np.uint8))
    vw.release()
    return path


def test_file_camera_at_real_speed_drops_late_frames_and_counts_them(tmp_path: Path) -> None:
    vid = _video(tmp_path / "cage.mp4", 20)
    threads: set[str] = set()
    cam = CameraSource(
        str(vid),
        realtime=2.0,
        drop_late=True,
        on_event=lambda e: threads.add(threading.current_thread().name),
    )
    got = []
    with cam:
        for f in cam:
            got.append(f.index)
            assert f.meta["captured"] <= time.monotonic()
            time.sleep(0.15)  # a model slower than the camera (20 frames/s)
    assert got == sorted(set(got)) and got[-1] == 19  # in order, and the newest frame wins
    assert cam.frames_read == 20 and len(got) + cam.frames_dropped == 20 and cam.frames_dropped >= 5
    assert cam.events[-1].kind == "ended"
    assert threads == {threading.current_thread().name}  # events reached the caller's thread


def test_a_file_without_drop_late_keeps_every_frame(tmp_path: Path) -> None:
    vid = _video(tmp_path / "cage.mp4", 12)
    cam = CameraSource(str(vid), realtime=4.0)
    got = []
    for f in cam:
        got.append(f.index)
        time.sleep(0.05)
    assert got == list(range(12)) and cam.frames_dropped == 0


def test_closing_from_a_signal_handler_stops_the_grabber() -> None:
    class Endless:
        def isOpened(self) -> bool:
            return True

        def read(self) -> tuple[bool, np.ndarray]:
            time.sleep(0.002)
            return True, np.zeros((8, 8, 3), np.uint8)

        def release(self) -> None:
            self.released = threading.current_thread().name

    cap = Endless()
    events: list[CameraEvent] = []
    cam = CameraSource("0", opener=lambda a, b: cap, on_event=events.append)
    for n, _f in enumerate(cam):
        if n == 3:
            cam.closed = True  # what `watch`'s SIGINT/SIGTERM handler does
    cam.close()
    assert cam._grabber is not None and not cam._grabber.alive
    assert getattr(cap, "released", None) is not None
    assert [e.kind for e in events] == ["opened"]


def _model_and_cage(tmp_path: Path) -> tuple[Path, Path]:
    """A tiny RGS model and a 6 s cage video (10 frames/s, a face moving across)."""
    from edge.scales import RGS
    from tests.tiny_onnx import build_tiny_onnx, face_image

    model = build_tiny_onnx(tmp_path / "m.onnx", RGS, imgsz=160, cell=8, box=24)
    vid = tmp_path / "cage.mp4"
    vw = cv2.VideoWriter(str(vid), cv2.VideoWriter_fourcc(*"mp4v"), 10, (320, 240))
    for i in range(60):
        vw.write(face_image(RGS, 240, 320, size=24, shift=(i % 20, 0), seed=i))
    vw.release()
    return model, vid


def test_watch_reports_dropped_frames_and_latency(tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from edge.live import watch
    model, vid = _model_and_cage(tmp_path)
    # 10 frames/s of video played 100x faster: 1,000 frames/s due, more than the model scores
    res = watch(
        str(vid),
        model,
        tmp_path / "out",
        interval_s=2.0,
        session_s=60.0,
        fps=10.0,
        realtime=100.0,
        drop_late=True,
        status=False,
    )
    assert res.complete and res.frames_dropped > 0
    assert res.frames + res.frames_dropped == 60
    assert len(res.latency_s) == res.frames and all(0 <= x < 5.0 for x in res.latency_s)
    db = sqlite3.connect(tmp_path / "out" / "grimace.sqlite")
    (msg,) = db.execute("SELECT message FROM events WHERE kind='frames_dropped'").fetchone()
    assert msg.startswith(f"{res.frames_dropped} frame(s)")
    assert db.execute("SELECT COUNT(*) FROM frames").fetchone()[0] == res.frames


def test_watch_cli_drop_late_on_a_video_file(tmp_path: Path) -> None:
    """`grimace watch --drop-late` makes a video file behave as a live camera (newest frame wins, the
    dropped frames reported); `--every-frame`, a file's default, scores every due frame."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from typer.testing import CliRunner

    from edge.cli import app
    model, vid = _model_and_cage(tmp_path)
    base = ["watch", "-c", str(vid), "-m", str(model), "--interval", "2", "--session", "60", "--fps", "10"]
    base += ["--realtime", "100", "--quiet"]  # 1,000 frames/s due: more than any model scores
    late = CliRunner().invoke(app, [*base, "-o", str(tmp_path / "late"), "--drop-late"])
    assert late.exit_code == 0, late.output
    dropped = int(re.search(r"(\d+) frame\(s\) dropped", late.output).group(1))
    scored = int(re.search(r"(\d+) frame\(s\) this run", late.output).group(1))
    assert dropped > 0 and dropped + scored == 60
    every = CliRunner().invoke(app, [*base, "-o", str(tmp_path / "every"), "--every-frame"])
    assert every.exit_code == 0, every.output
    assert "dropped" not in every.output and "60 frame(s) this run" in every.output
