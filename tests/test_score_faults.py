"""`grimace score` under faults (issue 16): bad numeric options, unusable --out, a non-empty --out
(--overwrite / --resume), SIGINT/SIGTERM mid-run, a full disk, per-frame failures. Each case ended in a
traceback, a hang, lost tables or mixed old and new files before."""

from __future__ import annotations

import csv
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.scales import RGS
from tests.tiny_onnx import build_tiny_onnx, face_image

pytest.importorskip("onnxruntime")

TABLES = (
    "frames.csv",
    "frames.xlsx",
    "summary_by_animal.csv",
    "summary_by_session.csv",
    "errors.csv",
    "run.json",
)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("faults")
    model = build_tiny_onnx(root / "model.onnx", RGS, imgsz=320)
    d = root / "imgs"
    d.mkdir()
    for i in range(6):
        cv2.imwrite(str(d / f"r{i}.jpg"), face_image(RGS, shift=(i * 3, 0), seed=i))
    return model, d


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "edge.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def _no_traceback(r: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in r.stderr + r.stdout, r.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--fps", "nan"], "--fps must be a finite number"),
        (["--fps", "inf"], "--fps must be a finite number"),
        (["--fps", "0"], "--fps must be > 0"),
        (["--fps", "-1"], "--fps must be > 0"),
        (["--fps", "1e9"], "--fps must be <= 1000"),
        (["--threads", "100000"], "--threads must be <="),
        (["--conf", "nan"], "--conf"),
        (["--min-quality", "nan"], "--min-quality"),
        (["--overwrite", "--resume"], "exclude each other"),
    ],
)
def test_numeric_options_are_validated(
    setup: tuple[Path, Path], tmp_path: Path, args: list[str], message: str
) -> None:
    # before: nan/inf meant "every frame", 1e9 crashed the annotated-video writer, 100000 threads hung
    model, d = setup
    r = _run("score", str(d), "--model", str(model), "--out", str(tmp_path / "o"), "--annotate-video", *args)
    assert r.returncode == 2 and message in r.stderr, r.stderr
    _no_traceback(r)
    assert not (tmp_path / "o").exists()


def test_unusable_out_is_a_plain_error(setup: tuple[Path, Path], tmp_path: Path) -> None:
    model, d = setup
    a_file = tmp_path / "afile"
    a_file.write_text("x")
    cases = {
        str(a_file): "is a file, not a folder",
        str(a_file / "sub"): "a part of the path is a file",
        str(tmp_path / ("n" * 300)): "longer than the system allows",
    }
    for out, message in cases.items():
        r = _run("score", str(d), "--model", str(model), "--out", out, "--no-progress")
        assert r.returncode == 2 and message in r.stderr, (out, r.stderr)
        _no_traceback(r)


def test_non_empty_out_refuses_overwrite_replaces_resume_continues(
    setup: tuple[Path, Path], tmp_path: Path
) -> None:
    # before: a second run into the same --out mixed its files with the first run's
    model, d = setup
    out = tmp_path / "o"
    r = _run("score", str(d / "r0.jpg"), str(d / "r1.jpg"), "-m", str(model), "-o", str(out), "--no-progress")
    assert r.returncode == 0, r.stderr
    r = _run("score", str(d / "r2.jpg"), "-m", str(model), "-o", str(out), "--no-progress")
    assert r.returncode == 2 and "is not empty" in r.stderr and "--overwrite" in r.stderr
    _no_traceback(r)
    r = _run("score", str(d / "r2.jpg"), "-m", str(model), "-o", str(out), "--no-progress", "--overwrite")
    assert r.returncode == 0, r.stderr
    names = [row["Filename"] for row in csv.DictReader((out / "frames.csv").open())]
    assert names == ["r2.jpg"]
    assert sorted(p.name for p in (out / "annotated").iterdir()) == ["r2.jpg"]
    r = _run("score", str(d), "-m", str(model), "-o", str(out), "--no-progress", "--resume")
    assert r.returncode == 0, r.stderr
    assert "1 input(s) already done are skipped" in r.stderr
    names = [row["Filename"] for row in csv.DictReader((out / "frames.csv").open())]
    assert sorted(names) == [f"r{i}.jpg" for i in range(6)]  # r2 once, not twice
    lines = (out / "frames.jsonl").read_text().splitlines()
    assert len(lines) == 6


def _long_video(path: Path, n: int) -> Path:
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (320, 240))
    for i in range(n):
        vw.write(face_image(RGS, 240, 320, size=24, shift=(int(10 * np.sin(i / 3)), 0), seed=i))
    vw.release()
    return path


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_mid_run_writes_every_table_and_resume_finishes(
    setup: tuple[Path, Path], tmp_path: Path, sig: signal.Signals
) -> None:
    # before: after Ctrl-C only frames.jsonl existed (no CSV, XLSX, summaries, errors.csv, run.json)
    model, d = setup
    video = _long_video(tmp_path / "long.mp4", 400)
    out = tmp_path / "o"
    cmd = [sys.executable, "-m", "edge.cli", "score", str(d / "r0.jpg"), str(video), "-m", str(model)]
    cmd += ["-o", str(out), "--no-progress", "--threads", "1"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    jsonl = out / "frames.jsonl"
    t0 = time.time()
    while time.time() - t0 < 60 and (not jsonl.exists() or len(jsonl.read_bytes().splitlines()) < 5):
        time.sleep(0.05)
    p.send_signal(sig)
    _stdout, stderr = p.communicate(timeout=60)
    assert p.returncode == (130 if sig == signal.SIGINT else 143), stderr
    assert "Traceback" not in stderr and "--resume" in stderr
    for name in TABLES:
        assert (out / name).is_file(), name
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == f"interrupted ({sig.name})"
    rows = list(csv.DictReader((out / "frames.csv").open()))
    assert len(rows) == info["frames_scored"] == len(jsonl.read_text().splitlines())
    assert 5 <= len(rows) < 401
    r = _run(
        "score", str(d / "r0.jpg"), str(video), "-m", str(model), "-o", str(out), "--no-progress", "--resume"
    )
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader((out / "frames.csv").open()))
    assert len(rows) == 401  # the image once, the cut-off video again from its start: 400 frames
    assert len({(row["source"], row["frame_index"]) for row in rows}) == 401


def test_disk_full_stops_cleanly_simulated(
    setup: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIMULATED full disk: every file opened for writing (``Path.open`` of frames.jsonl, ``os.fdopen``
    of the atomic writes) fails with ENOSPC once a byte budget is used up. The real thing, on a tiny
    tmpfs, is the next test (it needs root)."""
    import pathlib

    from edge import runner

    model, d = setup
    budget = {"left": 6000}

    class Full:
        def __init__(self, f):
            self._f = f

        def write(self, data):
            n = len(data)
            if budget["left"] < n:
                raise OSError(errno.ENOSPC, "No space left on device")
            budget["left"] -= n
            return self._f.write(data)

        def __getattr__(self, name):
            return getattr(self._f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._f.close()

    real_open, real_fdopen = pathlib.Path.open, os.fdopen

    def path_open(self, mode="r", *a, **k):
        f = real_open(self, mode, *a, **k)
        return Full(f) if any(c in mode for c in "wa") else f

    monkeypatch.setattr(pathlib.Path, "open", path_open)
    monkeypatch.setattr(os, "fdopen", lambda fd, mode="r", *a, **k: Full(real_fdopen(fd, mode, *a, **k)))
    out = tmp_path / "o"
    with pytest.raises(runner.OutputError, match="disk full") as e:
        runner.score_inputs([d], model, out, progress=False, annotate_images=False, log=lambda s: None)
    assert "--resume" in str(e.value)
    monkeypatch.undo()
    lines = (out / "frames.jsonl").read_bytes()
    assert lines.endswith(b"\n") or lines == b""
    for line in lines.splitlines():
        json.loads(line)  # whole lines only
    for p in out.iterdir():
        assert not p.name.startswith("."), f"temporary file left: {p.name}"


def _mount_tmpfs(mnt: Path, opts: str) -> bool:
    """Mount a tmpfs (needs root and CAP_SYS_ADMIN; False where that is not allowed)."""
    if sys.platform != "linux" or os.geteuid() != 0:
        return False
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(mnt)], capture_output=True)
    except OSError:
        return False
    return r.returncode == 0


@pytest.fixture
def tiny_fs(tmp_path: Path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if not _mount_tmpfs(mnt, "size=96k"):
        pytest.skip("needs root and permission to mount a tmpfs")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_on_a_real_tiny_tmpfs(setup: tuple[Path, Path], tiny_fs: Path) -> None:
    model, d = setup
    out = tiny_fs / "o"
    r = _run("score", str(d), "-m", str(model), "-o", str(out), "--no-progress")
    assert r.returncode == 3, r.stderr
    assert "disk full" in r.stderr and "--resume" in r.stderr
    _no_traceback(r)
    for line in (out / "frames.jsonl").read_bytes().splitlines():
        json.loads(line)
    for p in out.rglob("*"):
        assert not p.name.startswith(".")


def test_read_only_out(setup: tuple[Path, Path], tmp_path: Path) -> None:
    model, d = setup
    mnt = tmp_path / "ro"
    mnt.mkdir()
    if not _mount_tmpfs(mnt, "ro,size=64k"):
        pytest.skip("needs root and permission to mount a tmpfs")
    try:
        for out in (mnt, mnt / "sub"):
            r = _run("score", str(d), "-m", str(model), "-o", str(out), "--no-progress")
            assert r.returncode == 2 and "read-only file system" in r.stderr, r.stderr
            _no_traceback(r)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.parametrize("pipelined", [True, False])
def test_a_frame_the_model_fails_on_is_reported_and_the_run_goes_on(
    setup: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pipelined: bool
) -> None:
    from edge import predictor, runner

    model, d = setup
    real_score = predictor.Predictor.score

    def flaky(self, images, dets, sources=None):  # the scoring stage, shared by both loops
        if sources and sources[0].endswith("r3.jpg"):
            raise RuntimeError("backend exploded")
        return real_score(self, images, dets, sources)

    monkeypatch.setattr(predictor.Predictor, "score", flaky)
    run = runner.score_inputs(
        [d], model, tmp_path / "o", progress=False, log=lambda s: None, pipelined=pipelined
    )
    assert len(run.records) == 5
    assert [(Path(e.source).name, e.message) for e in run.errors] == [
        ("r3.jpg", "scoring failed (RuntimeError: backend exploded)")
    ]
    assert (tmp_path / "o" / "errors.csv").read_text().count("r3.jpg") == 1


def test_formula_in_a_model_unit_label_is_inert_in_csv_and_xlsx(
    setup: tuple[Path, Path], tmp_path: Path
) -> None:
    """Landed earlier (edge.records.escape_cell); the issue's case: a unit label in the ONNX metadata
    that starts with ``=`` must not become a live formula in frames.csv / frames.xlsx."""
    from dataclasses import replace

    from openpyxl import load_workbook

    _, d = setup
    units = list(RGS.units)
    units[0] = replace(units[0], label='=HYPERLINK("http://x","eye")')
    spec = replace(RGS, units=tuple(units))
    model = build_tiny_onnx(tmp_path / "evil.onnx", spec, imgsz=320)
    out = tmp_path / "o"
    r = _run("score", str(d / "r0.jpg"), "-m", str(model), "-o", str(out), "--no-progress")
    assert r.returncode == 0, r.stderr
    header = (out / "frames.csv").read_text().splitlines()[0]
    assert "'=HYPERLINK" in header and ",=HYPERLINK" not in header
    ws = load_workbook(out / "frames.xlsx")["frames"]
    cells = [ws.cell(row=1, column=c) for c in range(1, ws.max_column + 1)]
    evil = [c for c in cells if str(c.value).startswith("=HYPERLINK")]
    assert evil and all(c.data_type == "s" for c in evil)


def test_out_inside_the_input_folder_is_not_scored_on_resume(
    setup: tuple[Path, Path], tmp_path: Path
) -> None:
    import shutil

    model, d = setup
    inputs = tmp_path / "in"
    shutil.copytree(d, inputs)
    out = inputs / "results"
    assert _run("score", str(inputs), "-m", str(model), "-o", str(out), "--no-progress").returncode == 0
    r = _run("score", str(inputs), "-m", str(model), "-o", str(out), "--no-progress", "--resume")
    assert r.returncode == 0, r.stderr
    assert "under --out" in r.stderr
    rows = list(csv.DictReader((out / "frames.csv").open()))
    assert len(rows) == 6 and not any("annotated" in row["source"] for row in rows)


def test_grimace_debug_shows_the_traceback(setup: tuple[Path, Path], tmp_path: Path) -> None:
    model, d = setup
    a_file = tmp_path / "afile"
    a_file.write_text("x")
    plain = _run("score", str(d), "-m", str(model), "-o", str(a_file), "--no-progress")
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    debug = _run(
        "score", str(d), "-m", str(model), "-o", str(a_file), "--no-progress", env={"GRIMACE_DEBUG": "1"}
    )
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "OutputError" in debug.stderr


def test_resume_with_a_model_of_another_scale_is_refused(setup: tuple[Path, Path], tmp_path: Path) -> None:
    from edge.scales import MGS

    model, d = setup
    out = tmp_path / "o"
    assert _run("score", str(d / "r0.jpg"), "-m", str(model), "-o", str(out), "--no-progress").returncode == 0
    mgs = build_tiny_onnx(tmp_path / "mgs.onnx", MGS, imgsz=320)
    r = _run("score", str(d), "-m", str(mgs), "-o", str(out), "--no-progress", "--resume")
    assert r.returncode == 2 and "holds a run of scale 'rgs'" in r.stderr, r.stderr
