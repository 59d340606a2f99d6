"""Study model (store schema 3): upgrading a v2 store in place, id checks, study sessions, and
``grimace watch --study/--animal/--timepoint``."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from edge import storage
from edge.scales import RGS
from edge.station.study import Protocol, Study, StudyError, check_id
from edge.storage import Store
from tests.tiny_onnx import build_tiny_onnx, face_image


def _v2_store(path: Path) -> None:
    """A store as grimace-edge with schema 2 wrote it, with one session and one frame."""
    con = sqlite3.connect(path, isolation_level=None)
    con.executescript(storage.SCHEMA)
    con.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    for stmt in storage.MIGRATIONS[2]:
        con.execute(stmt)
    con.execute("UPDATE meta SET value='2' WHERE key='schema_version'")
    con.execute(
        "INSERT INTO sessions (id, source, model, scale, interval_s, duration_s, started_at, updated_at) "
        "VALUES ('old', 'cam0', 'm.onnx', 'rgs', 90, 900, 1, 1)"
    )
    con.execute(
        "INSERT INTO frames (session_id, frame_index, t_s, wall_time, interval_index, score, unit_scores, "
        "n_boxes, unit_argmax, unit_counts) VALUES ('old', 0, 0.5, 1, 0, 1.25, '{}', 3, '{}', '{}')"
    )
    con.close()


def test_v2_store_upgrades_in_place_and_keeps_its_rows(tmp_path: Path) -> None:
    db = tmp_path / "grimace.sqlite"
    _v2_store(db)
    with Store(db) as s:
        assert s.schema_version == storage.SCHEMA_VERSION == 3
        assert s.frames("old")[0]["score"] == 1.25
        assert s.session_row("old")["source"] == "cam0"
        st = Study(s)
        st.add_study("rgs-2026", Protocol(interval_s=10, duration_s=60))
        st.add_animal("rgs-2026", "R1", group="sham", sex="f")
        assert st.animals("rgs-2026")[0]["grp"] == "sham"
    with Store(db) as s:  # reopening does not re-run the migration
        assert s.db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == "3"
        assert Study(s).animal("rgs-2026", "R1")


@pytest.mark.parametrize("bad", ["", "../etc", "a/b", ".hidden", "a..b", "x" * 65, "r 1", "<script>"])
def test_ids_that_become_paths_are_checked(bad: str) -> None:
    with pytest.raises(StudyError, match="not a valid id"):
        check_id(bad, "animal")


def test_study_sessions_missing_and_resumable(tmp_path: Path) -> None:
    with Store(tmp_path / "s.sqlite") as s:
        st = Study(s)
        st.add_study("S", Protocol(interval_s=5, duration_s=20))
        for a, g in (("A1", "sham"), ("A2", "surgery")):
            st.add_animal("S", a, group=g)
        for t in ("baseline", "day1"):
            st.add_timepoint("S", t)
        with pytest.raises(StudyError, match="no animal"):
            st.check_session("S", "A9", "baseline")
        with pytest.raises(StudyError, match="no timepoint"):
            st.check_session("S", "A1", "day30")
        with pytest.raises(StudyError, match="exists already"):
            st.add_animal("S", "A1")
        sid = st.session_id_for("S", "A1", "baseline")
        s.open_session(sid, source="cam", model="m", scale="rgs", interval_s=5, duration_s=20)
        st.link_session(sid, "S", "A1", "baseline", "c1", st.protocol("S"))
        assert [r["session_id"] for r in st.resumable()] == [sid]
        with pytest.raises(StudyError, match="belongs to"):
            st.link_session(sid, "S", "A2", "baseline", "c1", st.protocol("S"))
        st.set_wanted(sid, "stop")
        assert st.resumable() == []
        s.complete(sid, 20.0)
        assert ("A1", "baseline") not in st.missing("S")
        assert len(st.missing("S")) == 3


def test_watch_with_study_records_animal_group_timepoint(tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    model = build_tiny_onnx(tmp_path / "m.onnx", RGS, imgsz=160, cell=8, box=24)
    video = tmp_path / "cam.mp4"
    vw = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (320, 240))
    for i in range(30):
        vw.write(face_image(RGS, 240, 320, size=24, seed=i))
    vw.release()
    out = tmp_path / "out"
    base = [sys.executable, "-m", "edge.cli", "watch", "-c", str(video), "-m", str(model), "-o", str(out)]
    base += ["--interval", "1", "--session", "3", "--fps", "4", "--threads", "1", "--quiet"]
    r = subprocess.run(
        [*base, "--study", "S1", "--animal", "R1", "--timepoint", "baseline"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    with Store(out / "grimace.sqlite") as s:
        row = Study(s).study_session("S1-R1-baseline")
        assert row["animal_id"] == "R1" and row["timepoint_id"] == "baseline" and row["status"] == "complete"
    csv = (out / "session_S1-R1-baseline.csv").read_text().splitlines()
    header = csv[0].split(",")
    assert csv[1].split(",")[header.index("animal")] == "R1"
    assert csv[1].split(",")[header.index("timepoint")] == "baseline"
    # a typo in an existing study is refused, a path-like id too; nothing traceback-like is printed
    for extra in (["--animal", "R9", "--timepoint", "baseline"], ["--animal", "../x", "--timepoint", "b"]):
        r = subprocess.run([*base, "--study", "S1", *extra], capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert "animal" in r.stderr
    r = subprocess.run([*base, "--study", "S1"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "go together" in r.stderr
