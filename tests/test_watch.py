"""`grimace watch` with a video file standing in for a camera: interval selection, SQLite rows,
kill -9 mid-run followed by a restart that loses no committed row and continues the session, and
image saving paused by the disk guard while rows are still committed."""

from __future__ import annotations

import io
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from edge.diskguard import DiskGuard, GuardConfig, Usage
from edge.scales import RGS
from tests.tiny_onnx import build_tiny_onnx, cage_video

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

FPS_VIDEO, SECONDS = 10, 20
INTERVAL, SAMPLE_FPS = 2.0, 5.0


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("watch")
    model = build_tiny_onnx(root / "model.onnx", RGS, imgsz=160, cell=8, box=24)
    return model, cage_video(root / "cage.mp4", RGS, SECONDS, FPS_VIDEO)


def _cmd(model: Path, video: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "edge.cli", *_watch_args(model, video, out, SECONDS, *extra)]


def _watch_args(model: Path, video: Path, out: Path, seconds: float, *extra: str) -> list[str]:
    """``grimace watch`` arguments: the video as the camera, the test's interval and sampling rate."""
    return [
        "watch",
        "--camera",
        str(video),
        "--model",
        str(model),
        "--out",
        str(out),
        "--interval",
        str(INTERVAL),
        "--session",
        str(seconds),
        "--fps",
        str(SAMPLE_FPS),
        "--threads",
        "1",
        *extra,
    ]


def _rows(db: Path, sql: str) -> list[tuple]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _count_frames(db: Path) -> int:
    """Committed frames, 0 while the database is still being created."""
    if not db.exists():
        return 0
    try:
        return _rows(db, "SELECT COUNT(*) FROM frames")[0][0]
    except sqlite3.OperationalError:
        return 0


def test_watch_selects_one_frame_per_interval(setup: tuple[Path, Path], tmp_path: Path) -> None:
    model, video = setup
    out = tmp_path / "run"
    r = subprocess.run(_cmd(model, video, out, "--continuous"), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    db = out / "grimace.sqlite"
    n_frames = _rows(db, "SELECT COUNT(*) FROM frames")[0][0]
    assert n_frames == SECONDS * SAMPLE_FPS
    intervals = _rows(
        db, "SELECT interval_index, quality, final, image_path, frame_id FROM intervals ORDER BY 1"
    )
    assert [i[0] for i in intervals] == list(range(int(SECONDS / INTERVAL)))
    assert all(i[2] == 1 for i in intervals)
    for k, q, _, path, fid in intervals:
        # the selected frame is the best-quality frame of its interval
        best_q = _rows(db, f"SELECT MAX(quality) FROM frames WHERE interval_index={k}")[0][0]
        assert q == pytest.approx(best_q)
        assert _rows(db, f"SELECT quality, interval_index FROM frames WHERE id={fid}")[0] == (q, k)
        assert cv2.imread(path) is not None and Path(path).parent.name in path
    assert _rows(db, "SELECT COUNT(DISTINCT frame_id) FROM detections")[0][0] == n_frames  # --continuous
    assert _rows(db, "SELECT status FROM sessions")[0][0] == "complete"
    assert "session score" in r.stdout and "complete" in r.stdout


def test_watch_survives_kill9_and_resumes(setup: tuple[Path, Path], tmp_path: Path) -> None:
    model, video = setup
    out = tmp_path / "killed"
    db = out / "grimace.sqlite"
    # play the file at 4x real time so the run is long enough to be killed mid-session
    proc = subprocess.Popen(
        _cmd(model, video, out, "--realtime", "4", "--quiet"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        committed = 0
        while time.monotonic() < deadline:
            committed = _count_frames(db)
            if committed >= 25:
                break
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.05)
        assert committed >= 25, "watch did not commit frames in time"
        before = _rows(db, "SELECT id, frame_index, t_s, score, quality FROM frames ORDER BY id")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    after_kill = _rows(db, "SELECT id, frame_index, t_s, score, quality FROM frames ORDER BY id")
    assert after_kill[: len(before)] == before  # nothing committed was lost
    assert len(after_kill) < SECONDS * SAMPLE_FPS  # it really was killed mid-session
    assert _rows(db, "SELECT status FROM sessions")[0][0] == "running"

    r = subprocess.run(_cmd(model, video, out), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "(resumed)" in r.stdout
    final = _rows(db, "SELECT id, frame_index, t_s, score, quality FROM frames ORDER BY id")
    assert final[: len(after_kill)] == after_kill
    idx = [f[1] for f in final]
    assert idx == sorted(set(idx))  # continued after the last committed frame, no duplicates
    assert len(final) == SECONDS * SAMPLE_FPS  # the whole session, across both runs
    sessions = _rows(db, "SELECT id, status, resumes FROM sessions")
    assert len(sessions) == 1 and sessions[0][1:] == ("complete", 1)
    intervals = _rows(db, "SELECT interval_index, final, image_path FROM intervals ORDER BY 1")
    assert [i[0] for i in intervals] == list(range(int(SECONDS / INTERVAL))) and all(i[1] for i in intervals)
    assert all(cv2.imread(i[2]) is not None for i in intervals)
    kinds = [k for (k,) in _rows(db, "SELECT kind FROM events ORDER BY id")]
    assert kinds[0] == "start" and "resume" in kinds and kinds[-1] == "complete"
    leftovers = [p for p in (out / "selected").rglob("*.tmp")]
    assert not leftovers or all(p.name.startswith(".") for p in leftovers)


def test_watch_stops_cleanly_on_sigterm_and_stays_resumable(setup: tuple[Path, Path], tmp_path: Path) -> None:
    model, video = setup
    out = tmp_path / "term"
    db = out / "grimace.sqlite"
    proc = subprocess.Popen(
        _cmd(model, video, out, "--realtime", "4", "--quiet"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if _count_frames(db) >= 5:
                break
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    assert "signal SIGTERM" in stdout
    assert _rows(db, "SELECT status FROM sessions")[0][0] == "running"
    n = _rows(db, "SELECT COUNT(*) FROM frames")[0][0]
    assert 5 <= n < SECONDS * SAMPLE_FPS


MiB = 1024**2


class _ScriptedDisk:
    """A 1000 MiB disk with 5 MiB free on the reads whose number is in ``low``, else 500 MiB.

    Read 0 is the guard's own set-up (it resolves the thresholds against the total), read 1 the start
    check that ``watch`` makes before opening anything; image writes start at read 2.
    """

    def __init__(self, low: range) -> None:
        self.low, self.reads = low, 0

    def __call__(self, path: str) -> Usage:
        free = 5 * MiB if self.reads in self.low else 500 * MiB
        self.reads += 1
        return Usage(1000 * MiB, 1000 * MiB - free, free)


def _image_files(out: Path) -> set[str]:
    return {p.name for p in (out / "selected").rglob("*.jpg")}


def test_watch_pauses_images_on_low_disk_keeps_rows_and_resumes(
    setup: tuple[Path, Path], tmp_path: Path
) -> None:
    from edge.live import watch

    model, video = setup
    out = tmp_path / "lowdisk"
    low = range(3, 7)  # the 2nd..5th image writes of the run find the disk nearly full
    disk = _ScriptedDisk(low)
    cfg = GuardConfig(min_free_start="1M", min_free_images="10M", target_free="10M", min_age_s=0)
    guard = DiskGuard(out, cfg, check_interval_s=0.0, rotate_when_low=False, usage_fn=disk)
    log = io.StringIO()
    session = 4 * INTERVAL
    res = watch(
        str(video),
        model,
        out,
        interval_s=INTERVAL,
        session_s=session,
        fps=SAMPLE_FPS,
        threads=1,
        status=False,
        stream=log,
        guard=guard,
    )
    assert res.complete and res.frames == session * SAMPLE_FPS
    assert disk.reads > low.stop, "the run should outlast the low-disk spell"
    assert res.images_skipped == len(low)
    db = out / "grimace.sqlite"
    # every frame is committed whatever the disk says
    assert _rows(db, "SELECT COUNT(*) FROM frames")[0][0] == session * SAMPLE_FPS
    intervals = _rows(db, "SELECT interval_index, final, image_path, quality FROM intervals ORDER BY 1")
    assert [i[0] for i in intervals] == list(range(4)) and all(i[1] == 1 for i in intervals)
    for k, _, _path, q in intervals:  # selection is unchanged by the guard: still the best frame
        assert q == pytest.approx(
            _rows(db, f"SELECT MAX(quality) FROM frames WHERE interval_index={k}")[0][0]
        )
    saved = {k for k, _, path, _ in intervals if path}
    unsaved = {k for k, _, path, _ in intervals if not path}
    assert unsaved and saved and max(saved) == 3, "saving must pause, then resume for later intervals"
    # a row without an image has no file (not even an earlier, replaced frame's); a row with one has it
    expected = {f"interval_{k:03d}{sfx}.jpg" for k in saved for sfx in ("", "_annotated")}
    assert _image_files(out) == expected
    assert all(cv2.imread(path) is not None for _, _, path, _ in intervals if path)
    kinds = [k for (k,) in _rows(db, "SELECT kind FROM events ORDER BY id") if k.startswith("images_")]
    assert kinds == ["images_paused", "images_resumed"]
    text = log.getvalue()
    assert text.count("NOT saved") == 1 and text.count("resumed") == 1 and "5.00 MiB free" in text
    csv_text = (out / f"session_{res.session_id}.csv").read_text()
    assert csv_text.count("interval_0") == len(saved)  # the report shows which intervals have images


def test_watch_cli_builds_its_guard_from_the_environment(setup: tuple[Path, Path], tmp_path: Path) -> None:
    """No guard passed in: `grimace watch` reads GRIMACE_* thresholds; here the floor for images is
    the whole disk, so nothing may be saved, yet every row is."""
    from edge.cli import app

    model, video = setup
    out = tmp_path / "fulldisk"
    env = {
        "GRIMACE_MIN_FREE_START": "0",
        "GRIMACE_MIN_FREE_IMAGES": "100%",
        "GRIMACE_TARGET_FREE": "100%",
        "GRIMACE_IMAGE_MIN_AGE_S": "1e9",  # the rotation it triggers may delete nothing
    }
    args = _watch_args(model, video, out, 2 * INTERVAL, "--quiet")
    r = CliRunner().invoke(app, args, env=env)
    assert r.exit_code == 0, r.output
    db = out / "grimace.sqlite"
    assert _rows(db, "SELECT COUNT(*) FROM frames")[0][0] == 2 * INTERVAL * SAMPLE_FPS
    assert _rows(db, "SELECT interval_index, image_path FROM intervals ORDER BY 1") == [(0, None), (1, None)]
    assert _image_files(out) == set()
    assert "NOT saved" in r.output and "image(s) not saved" in r.output
    assert [k for (k,) in _rows(db, "SELECT kind FROM events") if k.startswith("images_")] == [
        "images_paused"
    ]


def test_watch_refuses_to_start_below_the_floor(setup: tuple[Path, Path], tmp_path: Path) -> None:
    """Run by hand (no systemd preflight), `grimace watch` makes the same start check: below
    GRIMACE_MIN_FREE_START it exits 1 naming the folder and the floor, and opens no database."""
    from edge.cli import app

    model, video = setup
    out = tmp_path / "nospace"
    env = {
        "GRIMACE_MIN_FREE_START": "100%",  # more than can ever be free
        "GRIMACE_MIN_FREE_IMAGES": "100%",
        "GRIMACE_TARGET_FREE": "100%",
        "GRIMACE_IMAGE_MIN_AGE_S": "1e9",  # the rotation it triggers may delete nothing
    }
    r = CliRunner().invoke(app, _watch_args(model, video, out, 2 * INTERVAL, "--quiet"), env=env)
    assert r.exit_code == 1, r.output
    assert str(out) in r.output and "free on the file system" in r.output and "need at least" in r.output
    assert not (out / "grimace.sqlite").exists()


def test_watch_rotates_only_its_own_selected_images(setup: tuple[Path, Path], tmp_path: Path) -> None:
    """Low on space at start, `grimace watch` rotates old selected-frame images of its output folder,
    never other images a user keeps there."""
    from edge.cli import app

    model, video = setup
    out = tmp_path / "shared"
    (out / "selected" / "old").mkdir(parents=True)
    old_selected = out / "selected" / "old" / "interval_000.jpg"
    users_photo = out / "photo.jpg"
    for f in (old_selected, users_photo):
        cv2.imwrite(str(f), np.zeros((8, 8, 3), np.uint8))
        os.utime(f, (1e9, 1e9))  # 2001: old enough for any age limit
    env = {
        "GRIMACE_MIN_FREE_START": "0",
        "GRIMACE_MIN_FREE_IMAGES": "0",
        "GRIMACE_TARGET_FREE": "100%",  # never reached: rotation deletes every candidate
        "GRIMACE_IMAGE_MIN_AGE_S": "0",
    }
    r = CliRunner().invoke(app, _watch_args(model, video, out, INTERVAL, "--quiet"), env=env)
    assert r.exit_code == 0, r.output
    assert not old_selected.exists()
    assert users_photo.exists()
