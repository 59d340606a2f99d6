"""edge.storage: WAL database, resumable sessions, atomic image writes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.fileio import atomic_write_bytes, atomic_write_image
from edge.records import frame_record
from edge.results import Detections
from edge.scales import RGS
from edge.scoring import score_frame
from edge.storage import Store


def _result(q: float, grade: int = 1):
    gp = np.zeros((5, 3), np.float32)
    gp[:, grade] = 1
    d = Detections(np.tile([[0, 0, 10, 10]], (5, 1)), [0, 0, 1, 1, 2], np.full(5, 0.9), gp)
    return score_frame(d, RGS, quality=q)


def test_atomic_writes_leave_no_temp_files(tmp_path: Path) -> None:
    p = atomic_write_bytes(tmp_path / "a" / "x.bin", b"hello")
    assert p.read_bytes() == b"hello"
    atomic_write_bytes(p, b"world")
    assert p.read_bytes() == b"world"
    img = np.full((20, 30, 3), 77, np.uint8)
    q = atomic_write_image(tmp_path / "a" / "f.jpg", img)
    assert cv2.imread(str(q)).shape == (20, 30, 3)
    assert sorted(f.name for f in (tmp_path / "a").iterdir()) == ["f.jpg", "x.bin"]


def test_store_sessions_frames_intervals_and_resume(tmp_path: Path) -> None:
    db = tmp_path / "g.sqlite"
    kw = dict(source="cam0", model="m.onnx", scale="rgs", interval_s=10.0, duration_s=60.0)
    with Store(db) as s:
        assert s.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        st = s.open_session("s1", **kw)
        assert not st.resumed and st.last_frame_index == -1
        ids = []
        for i, q in enumerate([0.2, 0.7, 0.5]):
            r = _result(q)
            fid = s.add_frame(
                "s1",
                frame_index=i,
                t_s=i * 2.0,
                interval_index=0,
                result=r,
                record=frame_record(r, RGS, name=f"s1@{i:06d}", source="cam0", index=i),
                store_detections=(i == 0),
            )
            ids.append(fid)
            if q >= 0.5 and (i == 1):
                s.set_interval_best("s1", 0, fid, r, str(tmp_path / "i0.jpg"))
        with pytest.raises(sqlite3.IntegrityError):  # one row per frame index
            r = _result(0.1)
            rec = frame_record(r, RGS, name="s1@000001", source="cam0", index=1)
            s.add_frame("s1", frame_index=1, t_s=2.0, interval_index=0, result=r, record=rec)
        assert s.db.execute("SELECT COUNT(*) FROM detections WHERE frame_id=?", (ids[0],)).fetchone()[0] == 5
        assert s.db.execute("SELECT COUNT(*) FROM detections WHERE frame_id=?", (ids[1],)).fetchone()[0] == 5
    # a new connection (a restarted process) sees every committed row and resumes
    with Store(db) as s:
        st = s.open_session("s1", **kw)
        assert st.resumed and st.n_frames == 3 and st.last_frame_index == 2 and st.last_t_s == 4.0
        assert st.best == {0: (pytest.approx(0.7), ids[1])}
        assert [e["kind"] for e in s.events("s1")] == ["start", "resume"]
        s.complete("s1", 4.0)
        assert s.intervals("s1")[0]["final"] == 1 and s.running_sessions() == []
        with pytest.raises(ValueError, match="recorded with scale 'rgs', not 'goat'"):
            s.open_session("s1", **{**kw, "scale": "goat"})


def test_one_store_api_on_sqlite_transaction_insert_and_targets(tmp_path: Path) -> None:
    from edge.storage import StoreError, check_target, is_postgres, redact

    with Store(tmp_path / "g.sqlite") as s:
        assert s.kind == "sqlite" and s.location == str(tmp_path / "g.sqlite") and not s.broken
        s.open_session("a", source="cam0", model="m", scale="rgs", interval_s=1.0, duration_s=4.0)
        eid = s.insert(
            "INSERT INTO events (session_id, t_s, wall_time, kind, message) VALUES (?,?,?,?,?)",
            ("a", 0.5, 1.0, "note", "x"),
        )
        assert eid == max(e["id"] for e in s.events("a"))
        with pytest.raises(ZeroDivisionError), s.transaction("two events"):
            s.db.execute(
                "INSERT INTO events (session_id, t_s, wall_time, kind, message) VALUES ('a',1,1,'k','m')"
            )
            raise ZeroDivisionError
        assert [e["kind"] for e in s.events("a")] == ["start", "note"]  # rolled back together
        assert not s.db.in_transaction
    assert is_postgres("postgresql://u@h/db") and is_postgres("postgres://h/db")
    assert not is_postgres("g.sqlite") and not is_postgres(Path("postgresql:/h/db"))
    assert (
        redact("postgresql://u:s3cret@h:5432/db?sslmode=require")
        == "postgresql://u:***@h:5432/db?sslmode=require"
    )
    assert redact("postgresql://u@h/db") == "postgresql://u@h/db"
    assert check_target(str(tmp_path / "x.sqlite")) == tmp_path / "x.sqlite"
    with pytest.raises(StoreError, match="give a postgresql://") as e:
        check_target("sqlite:///x.db")
    assert "Traceback" not in str(e.value)


def test_postgres_store_without_psycopg_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from edge.storage import StoreError

    monkeypatch.setitem(sys.modules, "psycopg", None)  # import psycopg -> ImportError
    with pytest.raises(
        StoreError, match=r"install the central extra \(pip install 'grimace-edge\[central\]'\)"
    ):
        Store("postgresql://grimace:pw@db.lab/station")
