"""``grimace score --engine ray`` on a real local Ray cluster (2 CPUs, no dashboard, offline).

The same folder of synthetic images and videos, bad files among them, is scored locally and on Ray:
the frame rows (CSV, Parquet, JSON lines), summaries and errors are equal. A half-finished job is
resumed without re-scoring what was done, and an actor process killed with SIGKILL mid-run is
restarted by Ray without losing or duplicating a row.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.scales import RGS
from tests.tiny_onnx import build_tiny_onnx, face_image

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
ray = pytest.importorskip("ray")
pytest.importorskip("pyarrow")
psutil = pytest.importorskip("psutil")

from edge.runner import score_inputs  # noqa: E402
from edge.scale.ray_score import PARTS, score_inputs_ray  # noqa: E402


def _video(path: Path, n: int, seed: int = 0) -> Path:
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (320, 240))
    for i in range(n):
        vw.write(face_image(RGS, 240, 320, size=24, shift=(int(10 * np.sin(i / 3 + seed)), 0), seed=i + seed))
    vw.release()
    return path


@pytest.fixture(scope="module")
def cluster() -> object:
    """One local cluster for the module (starting one takes seconds on 2 shared cores)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("archive")
    model = build_tiny_onnx(root / "model.onnx", RGS, imgsz=320)
    d = root / "inputs"
    (d / "R1").mkdir(parents=True)
    (d / "R2").mkdir()
    face = face_image(RGS)
    cv2.imwrite(str(d / "R1" / "a.jpg"), face)
    cv2.imwrite(str(d / "R1" / "b.png"), face_image(RGS, shift=(20, 10), seed=3))
    cv2.imwrite(str(d / "R2" / "gray.png"), cv2.cvtColor(face, cv2.COLOR_BGR2GRAY))
    _ok, buf = cv2.imencode(".jpg", face)
    (d / "R2" / "corrupt.jpg").write_bytes(buf.tobytes()[: len(buf) // 3])
    (d / "R2" / "empty.jpg").write_bytes(b"")
    (d / "notes.png").write_text("a text file with an image extension\n")
    for k in range(3):
        _video(d / f"rat{k}_session.mp4", 24, seed=k)
    full = _video(root / "cut.mp4", 24).read_bytes()
    (d / "truncated.mp4").write_bytes(full[: len(full) // 2])
    smap = root / "subjects.csv"
    smap.write_text("file,subject,group\na.jpg,R1,saline\nb.png,R1,saline\nrat0_session.mp4,R3,drug\n")
    return model, d, smap


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _key(row: dict) -> tuple:
    return (row["source"], int(row["frame_index"]))


def _same_outputs(a: Path, b: Path) -> None:
    import pyarrow.parquet as pq

    fa, fb = _csv(a / "frames.csv"), _csv(b / "frames.csv")
    assert fa and sorted(fa, key=_key) == sorted(fb, key=_key)
    assert len({_key(r) for r in fb}) == len(fb), "duplicate frame rows"
    for name in ("summary_by_animal.csv", "summary_by_session.csv", "errors.csv"):
        assert _csv(a / name) == _csv(b / name), name
    pa_, pb = pq.read_table(a / "frames.parquet"), pq.read_table(b / "frames.parquet")
    assert pa_.schema == pb.schema
    assert sorted(pa_.to_pylist(), key=_key) == sorted(pb.to_pylist(), key=_key)
    la = sorted((a / "frames.jsonl").read_text().splitlines())
    lb = sorted((b / "frames.jsonl").read_text().splitlines())
    assert la == lb


def test_ray_rows_equal_local_and_resume_skips_done(
    cluster: object, archive: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    model, d, smap = archive
    kw = {"fps": 5.0, "subject_map": smap, "progress": False, "log": lambda s: None}
    local = score_inputs([d], model, tmp_path / "local", annotate_images=False, **kw)
    on_ray = score_inputs_ray([d], model, tmp_path / "ray", **kw)
    assert len(on_ray.records) == len(local.records) > 0
    assert [e.source for e in on_ray.errors] == [e.source for e in local.errors]
    assert {Path(s).name for s in on_ray.failed_sources} == {
        "corrupt.jpg",
        "empty.jpg",
        "notes.png",
        "truncated.mp4",
    }
    _same_outputs(tmp_path / "local", tmp_path / "ray")
    info = json.loads((tmp_path / "ray" / "run.json").read_text())
    assert info["engine"] == "ray" and info["inputs_resumed"] == 0 and info["actors"] == 2
    assert len(info["actor_pids"]) >= 1

    # a half-finished job: only some parts on disk, no final tables
    parts = sorted((tmp_path / "ray" / PARTS).glob("*.json"))
    assert len(parts) == info["inputs"]
    kept = parts[: len(parts) // 2]
    stamps = {p: p.stat().st_mtime_ns for p in kept}
    for p in parts[len(parts) // 2 :]:
        p.unlink()
    for name in ("frames.csv", "frames.parquet", "frames.jsonl", "errors.csv"):
        (tmp_path / "ray" / name).unlink()
    again = score_inputs_ray([d], model, tmp_path / "ray", **kw)
    info2 = json.loads((tmp_path / "ray" / "run.json").read_text())
    assert info2["inputs_resumed"] == len(kept)
    assert info2["inputs_scored_now"] == len(parts) - len(kept)
    assert all(p.stat().st_mtime_ns == stamps[p] for p in kept), "a finished input was scored again"
    assert len(again.records) == len(local.records)
    _same_outputs(tmp_path / "local", tmp_path / "ray")

    # everything done: a third run starts no Ray job at all
    third = score_inputs_ray([d], model, tmp_path / "ray", **kw)
    assert json.loads((tmp_path / "ray" / "run.json").read_text())["inputs_scored_now"] == 0
    assert len(third.records) == len(local.records)

    # a changed input (new content, size, mtime) is scored again, the rest is kept
    cv2.imwrite(str(d / "R1" / "a.jpg"), face_image(RGS, shift=(-30, 5), seed=9))
    score_inputs_ray([d], model, tmp_path / "ray", **kw)
    info4 = json.loads((tmp_path / "ray" / "run.json").read_text())
    assert info4["inputs_scored_now"] == 1 and info4["inputs_resumed"] == info["inputs"] - 1
    score_inputs([d], model, tmp_path / "local2", annotate_images=False, **kw)
    _same_outputs(tmp_path / "local2", tmp_path / "ray")


def _actor_pids() -> list[int]:
    pids = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(p.info.get("cmdline") or [])
        if "_ScoreActor" in cmd:
            pids.append(p.info["pid"])
    return pids


def test_worker_killed_mid_run_loses_and_duplicates_nothing(
    cluster: object, archive: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    model, _d, _smap = archive
    d = tmp_path / "many"
    d.mkdir()
    for k in range(8):
        _video(d / f"cam{k}.mp4", 40, seed=10 + k)
    (d / "broken.mp4").write_bytes(b"\x00" * 512)
    kw = {"progress": False, "log": lambda s: None}
    out = tmp_path / "ray"
    result: dict = {}

    def run() -> None:
        try:
            result["run"] = score_inputs_ray([d], model, out, **kw)
        except BaseException as e:  # surfaced by the assertion below
            result["error"] = e

    th = threading.Thread(target=run)
    th.start()
    killed, before, after = None, set(), set()
    deadline = time.monotonic() + 120
    while th.is_alive() and time.monotonic() < deadline:
        done = len(list((out / PARTS).glob("*.json"))) if (out / PARTS).is_dir() else 0
        pids = _actor_pids()
        if killed is None and 1 <= done <= 6 and pids:
            before = set(pids)
            killed = pids[0]
            os.kill(killed, signal.SIGKILL)
        elif killed is not None:
            after |= set(pids) - before
        time.sleep(0.02)
    th.join(timeout=180)
    assert "error" not in result, result.get("error")
    assert killed is not None, "the run finished before an actor could be killed mid-run"
    assert after, "Ray started no replacement actor"
    done_parts = len(list((out / PARTS).glob("*.json")))
    assert done_parts == 9
    local = score_inputs([d], model, tmp_path / "local", annotate_images=False, **kw)
    assert len(result["run"].records) == len(local.records) == 8 * 40
    _same_outputs(tmp_path / "local", out)


def test_cli_refuses_an_unknown_engine(archive: tuple[Path, Path, Path], tmp_path: Path) -> None:
    model, d, _smap = archive
    cmd = [sys.executable, "-m", "edge.cli", "score", str(d / "R1"), "-m", str(model), "-o", str(tmp_path)]
    bad = subprocess.run([*cmd, "--engine", "spark"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--engine must be local or ray" in bad.stderr
    assert not (tmp_path / "frames.csv").exists()


@pytest.mark.slow
def test_cli_engine_ray_on_a_fresh_local_cluster(archive: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """``grimace score --engine ray`` as a user runs it (its own local cluster, in a subprocess)."""
    model, d, _smap = archive
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    cmd = [sys.executable, "-m", "edge.cli", "score", str(d), "-m", str(model), "-o", str(tmp_path)]
    r = subprocess.run(
        [*cmd, "--engine", "ray", "--no-progress", "--fps", "5"], capture_output=True, text=True, env=env
    )
    assert r.returncode == 1, r.stderr  # some inputs are bad: exit 1 as locally, the rest is written
    assert "scored" in r.stdout and (tmp_path / "frames.parquet").is_file()
    assert "truncated.mp4" in r.stderr and "empty.jpg" in r.stderr
    assert len(_csv(tmp_path / "errors.csv")) == 4
