"""`grimace watch` and its store under faults (issue 16): a missing / FIFO / cut-off camera file, bad
numeric options, an unsafe --session-id, a full disk, a corrupt / locked database, a database path
that is a folder, the disk guard and the database's journal, selected frames 0644. Before, these
marked sessions complete, crashed with tracebacks or wrote outside --out."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.diskguard import DiskGuard, GuardConfig, Usage
from edge.records import frame_record
from edge.results import Detections
from edge.scales import RGS
from edge.scoring import score_frame
from edge.storage import Store, StoreError
from tests.tiny_onnx import build_tiny_onnx, cage_video, face_image

pytest.importorskip("onnxruntime")

FPS_VIDEO, SECONDS = 10, 8


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("watchfaults")
    model = build_tiny_onnx(root / "model.onnx", RGS, imgsz=160, cell=8, box=24)
    return model, cage_video(root / "cage.mp4", RGS, SECONDS, FPS_VIDEO, blur=False)


def _watch(model: Path, camera: str | Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "edge.cli", "watch", "--camera", str(camera), "--model", str(model)]
    cmd += ["--out", str(out), "--interval", "2", "--session", str(SECONDS), "--fps", "5", "--threads", "1"]
    return subprocess.run([*cmd, "--quiet", *extra], capture_output=True, text=True, timeout=120)


def _no_traceback(r: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in r.stdout + r.stderr, r.stderr


def _status(db: Path) -> list[tuple]:
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT id, status FROM sessions").fetchall()
    finally:
        con.close()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--session", "inf"], "--session must be a finite number"),
        (["--session", "nan"], "--session must be a finite number"),
        (["--interval", "0"], "--interval must be > 0"),
        (["--fps", "0"], "--fps must be > 0"),
        (["--fps", "-1"], "--fps must be > 0"),
        (["--fps", "nan"], "--fps must be a finite number"),
        (["--fps", "1e9"], "<= 1000"),
        (["--session-id", "../../x"], "--session-id '../../x' cannot be used as a file or folder name"),
        (["--session-id", ".hidden"], "cannot be used as a file or folder name"),
    ],
)
def test_bad_watch_options_are_refused(
    setup: tuple[Path, Path], tmp_path: Path, args: list[str], message: str
) -> None:
    # before: --session inf crashed, --fps 0/-1/nan meant "every frame", ../../x wrote outside --out
    model, video = setup
    out = tmp_path / "a" / "b" / "out"
    r = _watch(model, video, out, *args)
    assert r.returncode == 2 and message in r.stderr, r.stderr
    _no_traceback(r)
    assert not (tmp_path / "x").exists() and not (tmp_path / "a" / "x").exists()
    assert not (out / "grimace.sqlite").exists()


def test_missing_or_fifo_camera_file_is_an_error_not_a_complete_session(
    setup: tuple[Path, Path], tmp_path: Path
) -> None:
    # before: the session was created, marked complete and exit 0
    model, _ = setup
    fifo = tmp_path / "cam.mp4"
    os.mkfifo(fifo)
    for cam, message in ((tmp_path / "nope.mp4", "no such file"), (fifo, "not a regular file")):
        r = _watch(model, cam, tmp_path / "out")
        assert r.returncode == 2 and message in r.stderr, r.stderr
        _no_traceback(r)
    db = tmp_path / "out" / "grimace.sqlite"
    assert not db.exists() or all(s != "complete" for _, s in _status(db))


def test_camera_file_cut_mid_run_leaves_the_session_resumable(
    setup: tuple[Path, Path], tmp_path: Path
) -> None:
    model, _ = setup
    full = tmp_path / "full.avi"  # AVI/MJPG: readable up to the cut (an MP4 cut in half has no index)
    vw = cv2.VideoWriter(str(full), cv2.VideoWriter_fourcc(*"MJPG"), FPS_VIDEO, (320, 240))
    for i in range(FPS_VIDEO * SECONDS):
        vw.write(face_image(RGS, 240, 320, size=24, shift=(int(30 * np.sin(i / 7)), 0), seed=i))
    vw.release()
    data = full.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    r = _watch(model, cut, out)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "not complete (camera lost)" in r.stderr and "resume" in r.stderr
    _no_traceback(r)
    db = out / "grimace.sqlite"
    [(sid, status)] = _status(db)
    assert status == "running"
    con = sqlite3.connect(db)
    kinds = [k for (k,) in con.execute("SELECT kind FROM events WHERE session_id=? ORDER BY id", (sid,))]
    n1 = con.execute("SELECT COUNT(*) FROM frames").fetchone()[0]
    con.close()
    assert "stopped" in kinds and "complete" not in kinds and n1 > 0
    # selected frames are written 0644 (less the umask), like every other output
    imgs = sorted((out / "selected" / sid).glob("*.jpg"))
    assert imgs and all(stat.S_IMODE(p.stat().st_mode) == 0o644 & ~_umask() for p in imgs)
    cut.write_bytes(data)  # the full file comes back: the session resumes and completes
    r = _watch(model, cut, out)
    assert r.returncode == 0, r.stderr
    assert "(resumed)" in r.stdout
    assert _status(db) == [(sid, "complete")]


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def _result() -> object:
    gp = np.zeros((5, 3), np.float32)
    gp[:, 1] = 1
    d = Detections(np.tile([[0, 0, 10, 10]], (5, 1)), [0, 0, 1, 1, 2], np.full(5, 0.9), gp)
    return score_frame(d, RGS, quality=0.5)


KW = dict(source="cam0", model="m.onnx", scale="rgs", interval_s=10.0, duration_s=60.0)


def _add(s: Store, i: int) -> int:
    r = _result()
    rec = frame_record(r, RGS, name=f"s1@{i:06d}", source="cam0", index=i)
    return s.add_frame(
        "s1", frame_index=i, t_s=float(i), interval_index=0, result=r, record=rec, store_detections=True
    )


def test_full_database_is_named_not_hidden_behind_cannot_rollback(tmp_path: Path) -> None:
    """A real SQLITE_FULL (``PRAGMA max_page_count`` caps the file the way a full disk does). Before:
    "cannot rollback - no transaction is active" replaced the real error."""
    with Store(tmp_path / "g.sqlite") as s:
        s.open_session("s1", **KW)
        pages = s.db.execute("PRAGMA page_count").fetchone()[0]
        s.db.execute(f"PRAGMA max_page_count={pages + 2}")
        with pytest.raises(StoreError, match=r"g\.sqlite: storing frame \d+ failed: the disk is full") as e:
            for i in range(10000):
                _add(s, i)
        assert "cannot rollback" not in str(e.value)
        n = s.db.execute("SELECT COUNT(*) FROM frames").fetchone()[0]
        assert n == i  # every committed frame is kept; the failed one is not half there
        assert not s.db.in_transaction


def test_database_path_that_is_a_folder(tmp_path: Path, setup: tuple[Path, Path]) -> None:
    (tmp_path / "g.sqlite").mkdir()
    with pytest.raises(StoreError, match="is a folder, not a database file"):
        Store(tmp_path / "g.sqlite")
    model, video = setup
    out = tmp_path / "out"
    (out / "grimace.sqlite").mkdir(parents=True)
    r = _watch(model, video, out)
    assert r.returncode == 2 and "is a folder, not a database file" in r.stderr, r.stderr
    _no_traceback(r)


def test_corrupt_database_is_moved_aside_and_a_new_one_started(
    tmp_path: Path, setup: tuple[Path, Path]
) -> None:
    db = tmp_path / "g.sqlite"
    db.write_bytes(b"this is not an sqlite file" * 100)
    notes: list[str] = []
    with Store(db, notify=notes.append) as s:
        assert s.moved_aside is not None and s.moved_aside.read_bytes().startswith(b"this is not")
        assert "moved aside" in notes[0] and str(s.moved_aside) in notes[0]
        s.open_session("s1", **KW)
        _add(s, 0)
    # a real database whose pages were overwritten (malformed), through the CLI
    model, video = setup
    out = tmp_path / "out"
    assert _watch(model, video, out).returncode == 0
    raw = bytearray((out / "grimace.sqlite").read_bytes())
    raw[4096:8192] = os.urandom(4096)  # page 2 onwards: table b-tree pages
    (out / "grimace.sqlite").write_bytes(bytes(raw))
    r = _watch(model, video, out)
    _no_traceback(r)
    assert "moved aside" in r.stderr, r.stderr
    assert r.returncode == 0, r.stderr
    aside = sorted(out.glob("grimace.corrupt-*.sqlite"))
    assert len(aside) == 1 and aside[0].read_bytes()[4096:8192] == bytes(raw[4096:8192])


def test_locked_database_is_retried_with_a_message_then_refused(tmp_path: Path) -> None:
    db = tmp_path / "g.sqlite"
    Store(db).close()
    other = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN EXCLUSIVE")
    notes: list[str] = []
    t0 = time.monotonic()
    with pytest.raises(StoreError, match=r"locked by another process.*still locked after 1\.5s"):
        Store(db, lock_timeout_s=1.5, notify=notes.append)
    assert 1.4 < time.monotonic() - t0 < 10
    assert notes and all("locked by another process; retrying" in n for n in notes)
    # released while retrying: opens
    threading.Timer(0.5, lambda: other.execute("COMMIT")).start()
    with Store(db, lock_timeout_s=5, notify=notes.append) as s:
        s.open_session("s1", **KW)
    other.close()


def test_locked_mid_session_write_is_retried_then_a_clear_error(tmp_path: Path) -> None:
    db = tmp_path / "g.sqlite"
    notes: list[str] = []
    with Store(db, lock_timeout_s=1.0, notify=notes.append) as s:
        s.open_session("s1", **KW)
        other = sqlite3.connect(db, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreError, match="storing frame 0 failed: the database is locked"):
            _add(s, 0)
        assert any("retrying" in n for n in notes)
        other.execute("ROLLBACK")
        other.close()
        _add(s, 0)


def test_disk_guard_counts_the_database_journal(tmp_path: Path) -> None:
    db = tmp_path / "g.sqlite"
    db.write_bytes(b"x" * 1000)
    wal = Path(f"{db}-wal")
    wal.write_bytes(b"w" * 300 * 1024)
    fake = lambda _p: Usage(total=10 * 1024**2, used=0, free=1024**2)  # noqa: E731
    cfg = GuardConfig(min_free_start="800K", min_free_images="900K", target_free="900K", min_age_s=0)
    without = DiskGuard(tmp_path / "selected", cfg, usage_fn=fake)
    assert without.usage().free == 1024**2 and without.images_allowed()
    guard = DiskGuard(tmp_path / "selected", cfg, usage_fn=fake, databases=[db])
    assert guard.database_bytes() == (1000, 300 * 1024)
    assert guard.usage().free == 1024**2 - 300 * 1024
    assert not guard.images_allowed()  # 724 KiB is below the 900 KiB image floor once the WAL counts
    from edge.diskguard import DiskSpaceError

    with pytest.raises(DiskSpaceError, match=r"counting as used the 300\.00 KiB of database journal"):
        guard.check_start()


def test_watch_on_a_full_tmpfs_names_the_full_disk(setup: tuple[Path, Path], tmp_path: Path) -> None:
    """A real full disk (a 160 KiB tmpfs; needs root): before, "cannot rollback - no transaction is
    active" and a traceback."""
    from tests.test_score_faults import _mount_tmpfs

    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if not _mount_tmpfs(mnt, "size=160k"):
        pytest.skip("needs root and permission to mount a tmpfs")
    try:
        model, video = setup
        env = {"GRIMACE_MIN_FREE_START": "0", "GRIMACE_MIN_FREE_IMAGES": "0", "GRIMACE_TARGET_FREE": "0"}
        cmd = [sys.executable, "-m", "edge.cli", "watch", "--camera", str(video), "--model", str(model)]
        cmd += ["--out", str(mnt / "w"), "--interval", "2", "--session", str(SECONDS), "--fps", "5"]
        r = subprocess.run(
            [*cmd, "--quiet", "--continuous", "--threads", "1"],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, **env},
        )
        assert r.returncode == 2, r.stderr
        assert "the disk is full (SQLITE_FULL" in r.stderr and "resumable" in r.stderr
        assert "cannot rollback" not in r.stderr
        _no_traceback(r)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
