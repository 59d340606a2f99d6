"""``grimace sync`` into a REAL PostgreSQL server (Debian's package), started per module under a temp
dir with initdb/pg_ctl as a non-root user, listening on 127.0.0.1 only.

Cases: two stations' stores synced in (same local ids, kept apart by station id); a sync killed with
SIGKILL mid-way and re-run (no duplicate, no lost row: counts and checksums; a half-synced session is
never complete centrally); a station offline (server stopped) that keeps recording and catches up in
continuous mode. Skipped, with the reason, where the PostgreSQL binaries are not installed.
"""

from __future__ import annotations

import hashlib
import json
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("sqlalchemy")
pytest.importorskip("psycopg")

import sqlalchemy as sa

from edge.scale.sync import (
    NEVER_SYNCED,
    CentralUnavailable,
    SyncError,
    check_station_id,
    sync_continuous,
    sync_once,
)
from edge.storage import Store

pytest.register_assert_rewrite("tests.pg_helpers")  # before its import: it is also a plugin (below)
from tests.pg_helpers import PgServer, add_frames  # noqa: E402

pytest_plugins = ["tests.pg_helpers"]  # the pg and central fixtures

# ------------------------------------------------------------------------------ station stores


def make_station(folder: Path, sessions: dict[str, tuple[int, bool]], seed: int = 0) -> Path:
    """A ``grimace watch --out`` folder: the real store schema, sessions with ``n`` frames (every
    other one with a box), one selected image per 10 frames, events; complete ones marked complete;
    plus a grades table (as the station schema has) and a users table that must never leave."""
    folder.mkdir(parents=True, exist_ok=True)
    with Store(folder / "grimace.sqlite") as st:
        for sid, (n, complete) in sessions.items():
            st.open_session(sid, source="cam0", model="m.onnx", scale="rgs", interval_s=90, duration_s=900)
            add_frames(st, sid, 0, n, seed)
            if complete:
                st.complete(sid, n * 0.5)
        # the station's tables (store schema 3): a grader and one blinded grade
        st.db.execute("INSERT OR REPLACE INTO users VALUES ('ann', 'grader', 'scrypt$secret', 1.0)")
        st.db.execute("INSERT OR REPLACE INTO grades VALUES (1, 'ann', 'eye', 2, 1.5)")
    return folder


# --------------------------------------------------------------------------------- comparisons
TABLES = {
    "sessions": ("id",),
    "frames": ("id",),
    "detections": ("frame_id", "unit"),
    "intervals": ("session_id", "interval_index"),
    "events": ("id",),
    "grades": ("frame_id", "grader", "unit"),
}


def _digest(rows: list[tuple]) -> tuple[int, str]:
    canon = sorted(json.dumps(list(r), default=str) for r in rows)
    return len(canon), hashlib.sha256("\n".join(canon).encode()).hexdigest()


def local_digest(folder: Path, table: str) -> tuple[int, str]:
    db = sqlite3.connect(folder / "grimace.sqlite")
    cols = [r[1] for r in db.execute(f"PRAGMA table_info({table})") if r[1] != "image_path"]
    rows = db.execute(f"SELECT {', '.join(cols)} FROM {table}").fetchall()
    db.close()
    return _digest(rows)


def central_digest(eng: sa.Engine, station: str, folder: Path, table: str) -> tuple[int, str]:
    db = sqlite3.connect(folder / "grimace.sqlite")
    cols = [r[1] for r in db.execute(f"PRAGMA table_info({table})") if r[1] != "image_path"]
    db.close()
    with eng.connect() as c:
        rows = c.execute(
            sa.text(f"SELECT {', '.join(cols)} FROM {table} WHERE station_id=:s"), {"s": station}
        ).fetchall()
    return _digest([tuple(r) for r in rows])


def assert_same(eng: sa.Engine, station: str, folder: Path) -> None:
    for t in TABLES:
        assert central_digest(eng, station, folder, t) == local_digest(folder, t), t
    with eng.connect() as c:
        dup = c.execute(sa.text("SELECT COUNT(*) - COUNT(DISTINCT (station_id, id)) FROM frames")).scalar()
    assert dup == 0


def complete_only_when_whole(eng: sa.Engine, station: str, folder: Path) -> None:
    """A session complete centrally has all its frames, detections and intervals there."""
    db = sqlite3.connect(folder / "grimace.sqlite")
    local = {sid: n for sid, n in db.execute("SELECT session_id, COUNT(*) FROM frames GROUP BY session_id")}
    db.close()
    with eng.connect() as c:
        if not sa.inspect(c).has_table("sessions"):
            return
        done = [
            r[0]
            for r in c.execute(
                sa.text("SELECT id FROM sessions WHERE station_id=:s AND status='complete'"), {"s": station}
            )
        ]
        for sid in done:
            n = c.execute(
                sa.text("SELECT COUNT(*) FROM frames WHERE station_id=:s AND session_id=:i"),
                {"s": station, "i": sid},
            ).scalar()
            assert n == local[sid], f"session {sid} complete centrally with {n} of {local[sid]} frames"


# ---------------------------------------------------------------------------------------- tests
def test_two_stations_synced_in_and_rerun_adds_nothing(
    central: sa.Engine, pg: PgServer, tmp_path: Path
) -> None:
    a = make_station(tmp_path / "a", {"s1": (40, True), "s2": (25, False)}, seed=1)
    b = make_station(tmp_path / "b", {"s1": (30, True)}, seed=2)  # same session id and frame ids as a
    imgs = tmp_path / "central-images"
    ra = sync_once(a, pg.url, station_id="cage-a", images_dir=imgs)
    rb = sync_once(b / "grimace.sqlite", pg.url, station_id="cage-b", images_dir=imgs)
    assert ra.rows["frames"] == 65 and rb.rows["frames"] == 30
    assert ra.completed == ["s1"] and rb.completed == ["s1"]
    assert_same(central, "cage-a", a)
    assert_same(central, "cage-b", b)
    with central.connect() as c:
        assert c.execute(sa.text("SELECT COUNT(*) FROM frames")).scalar() == 95
        status = dict(c.execute(sa.text("SELECT station_id || '/' || id, status FROM sessions")).fetchall())
        assert status == {"cage-a/s1": "complete", "cage-a/s2": "running", "cage-b/s1": "complete"}
        paths = [
            r[0] for r in c.execute(sa.text("SELECT image_path FROM intervals WHERE station_id='cage-b'"))
        ]
        names = set(sa.inspect(c).get_table_names())
        version = c.execute(sa.text("SELECT value FROM grimace_meta WHERE key='schema_version'")).scalar()
    assert version == "1"
    assert not names & (NEVER_SYNCED - {"meta"}), "credentials left the station"
    assert len(paths) == 3 and all(p.startswith("cage-b/s1/interval_") for p in paths)
    assert (imgs / paths[0]).read_bytes().startswith(b"jpeg s1")
    # a re-run (or a retry after a cut) adds nothing and changes nothing
    again = sync_once(a, pg.url, station_id="cage-a", images_dir=imgs)
    assert not any(again.rows.values()) and again.images == 0 and again.completed == []
    assert_same(central, "cage-a", a)


def test_sync_killed_mid_way_then_rerun_loses_and_duplicates_nothing(
    central: sa.Engine, pg: PgServer, tmp_path: Path
) -> None:
    st = make_station(tmp_path / "st", {"big": (3000, True), "b2": (1500, True)}, seed=3)
    cmd = [
        sys.executable,
        "-m",
        "edge.cli",
        "sync",
        str(st),
        "--to",
        pg.url,
        "--station",
        "st1",
        "--batch",
        "25",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen = 0
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            with central.connect() as c:
                seen = c.execute(sa.text("SELECT COUNT(*) FROM frames")).scalar() or 0
        except sa.exc.ProgrammingError:  # table not created yet
            seen = 0
        if 0 < seen < 2000:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, f"sync finished before it could be killed ({seen} frames)"
    complete_only_when_whole(central, "st1", st)
    with central.connect() as c:
        partial = c.execute(sa.text("SELECT COUNT(*) FROM frames")).scalar()
        status = dict(c.execute(sa.text("SELECT id, status FROM sessions")).fetchall())
    assert 0 < partial < 4500
    assert set(status.values()) == {"running"}, "a half-synced session is visible as complete"
    report = sync_once(st, pg.url, station_id="st1", batch=500)
    assert report.rows["frames"] == 4500 - partial
    assert sorted(report.completed) == ["b2", "big"]
    assert_same(central, "st1", st)


def test_station_offline_keeps_recording_and_catches_up(
    central: sa.Engine, pg: PgServer, tmp_path: Path
) -> None:
    st = make_station(tmp_path / "st", {"s1": (20, False)}, seed=4)
    sync_once(st, pg.url, station_id="cage-c")
    pg.stop()
    try:
        with pytest.raises(CentralUnavailable, match="unreachable"):
            sync_once(st, pg.url, station_id="cage-c")
        r = subprocess.run(
            [sys.executable, "-m", "edge.cli", "sync", str(st), "--to", pg.url, "--station", "cage-c"],
            capture_output=True,
            text=True,
        )
        assert r.returncode == 1 and "unreachable" in r.stderr and "Traceback" not in r.stderr
        with Store(st / "grimace.sqlite") as s:  # the station records on while the centre is down
            add_frames(s, "s1", 20, 30, seed=4)
            s.complete("s1", 25.0)
        logs: list[str] = []
        stop = threading.Event()
        th = threading.Thread(
            target=sync_continuous,
            args=(st, pg.url),
            kwargs={
                "station_id": "cage-c",
                "interval_s": 0.1,
                "max_backoff_s": 0.4,
                "should_stop": stop.is_set,
                "log": logs.append,
            },
        )
        th.start()
        time.sleep(1.0)  # a few failed attempts with backoff
    finally:
        pg.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any("complete" in m for m in logs):
        time.sleep(0.1)
    stop.set()
    th.join(timeout=30)
    assert any("retrying in" in m for m in logs) and any("reachable again" in m for m in logs), logs
    assert_same(central, "cage-c", st)
    with central.connect() as c:
        assert (
            c.execute(sa.text("SELECT status FROM sessions WHERE station_id='cage-c'")).scalar() == "complete"
        )


def test_bad_station_id_and_url_are_refused(tmp_path: Path) -> None:
    st = make_station(tmp_path / "st", {"s1": (2, False)})
    for bad in ("../x", "", "a/b", "x" * 65):
        with pytest.raises(SyncError):
            check_station_id(bad)
    with pytest.raises(SyncError, match="postgresql://"):
        sync_once(st, "mysql://u:pw@h/db", station_id="ok")
    with pytest.raises(SyncError, match="no station store"):
        sync_once(tmp_path / "nothing", "postgresql://u@127.0.0.1:1/db", station_id="ok")


def test_central_schema_versioned_and_evolves_with_the_station(
    central: sa.Engine, pg: PgServer, tmp_path: Path
) -> None:
    st = make_station(tmp_path / "st", {"s1": (5, True)})
    sync_once(st, pg.url, station_id="cage-e")
    # a newer station store has one more frame column: the central table gains it, old rows keep NULL
    db = sqlite3.connect(st / "grimace.sqlite")
    db.execute("ALTER TABLE frames ADD COLUMN pose TEXT")
    db.execute("UPDATE frames SET pose='side' WHERE frame_index=4")
    db.execute(
        "INSERT INTO frames (session_id, frame_index, t_s, wall_time, interval_index, unit_scores, "
        "n_boxes, pose) VALUES ('s1', 5, 2.5, 1.7e9, 0, '{}', 0, 'front')"
    )
    db.commit()
    db.close()
    report = sync_once(st, pg.url, station_id="cage-e")
    assert report.rows["frames"] == 1  # append table: the new row; earlier rows are not revisited
    with central.connect() as c:
        poses = dict(c.execute(sa.text("SELECT frame_index, pose FROM frames")).fetchall())
    assert poses[5] == "front" and poses[0] is None
    # a central database made by a newer grimace-edge is refused, before anything is written
    with central.begin() as c:
        c.execute(sa.text("UPDATE grimace_meta SET value='99' WHERE key='schema_version'"))
    with pytest.raises(SyncError, match="schema version 99"):
        sync_once(st, pg.url, station_id="cage-e")


def test_a_wrong_key_in_the_table_list_is_named(central: sa.Engine, pg: PgServer, tmp_path: Path) -> None:
    from edge.scale.sync import SyncTable

    st = make_station(tmp_path / "st", {"s1": (2, False)})
    with pytest.raises(SyncError, match="'grades' has no key column"):
        sync_once(st, pg.url, station_id="cage-f", tables=(SyncTable("grades", ("grade_id",)),))


def test_a_shared_writer_role_without_central_init_keeps_working(pg: PgServer, tmp_path: Path) -> None:
    """A database set up by hand before ``grimace central init`` existed: one login per station
    acting as a shared grimace_writer (one table owner, a later station can add columns), a read-only
    reader. The sync still creates and extends tables there (no ``grimace_meta.access``); the
    enforced setup is tests/test_central_roles.py."""
    admin = sa.create_engine(
        pg.url.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as c:
        c.execute(sa.text("DROP DATABASE IF EXISTS grimace"))
        for r in ("station_cage_a", "station_cage_b", "grimace_reader", "grimace_writer"):
            c.execute(sa.text(f"DROP ROLE IF EXISTS {r}"))
        c.execute(sa.text("CREATE ROLE grimace_writer NOLOGIN"))
        c.execute(sa.text("CREATE DATABASE grimace OWNER grimace_writer"))
    db_url = pg.url.rsplit("/", 1)[0] + "/grimace"
    setup = sa.create_engine(
        db_url.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT"
    )
    with setup.connect() as c:
        c.execute(sa.text("ALTER SCHEMA public OWNER TO grimace_writer"))
        for st in ("cage_a", "cage_b"):
            c.execute(sa.text(f"CREATE ROLE station_{st} LOGIN PASSWORD 'x' IN ROLE grimace_writer"))
            c.execute(sa.text(f"ALTER ROLE station_{st} SET role TO grimace_writer"))
        c.execute(sa.text("CREATE ROLE grimace_reader LOGIN PASSWORD 'y'"))
        c.execute(sa.text("GRANT USAGE ON SCHEMA public TO grimace_reader"))
        c.execute(
            sa.text(
                "ALTER DEFAULT PRIVILEGES FOR ROLE grimace_writer IN SCHEMA public "
                "GRANT SELECT ON TABLES TO grimace_reader"
            )
        )
    a = make_station(tmp_path / "a", {"s1": (6, True)})
    b = make_station(tmp_path / "b", {"s1": (4, True)})
    db = sqlite3.connect(b / "grimace.sqlite")  # station b runs a newer store: one more column
    db.execute("ALTER TABLE frames ADD COLUMN pose TEXT")
    db.commit()
    db.close()
    host = pg.url.split("@", 1)[1]
    sync_once(a, f"postgresql://station_cage_a:x@{host.rsplit('/', 1)[0]}/grimace", station_id="cage-a")
    sync_once(b, f"postgresql://station_cage_b:x@{host.rsplit('/', 1)[0]}/grimace", station_id="cage-b")
    with setup.connect() as c:
        owners = {
            r[0]
            for r in c.execute(sa.text("SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname='public'"))
        }
        assert owners == {"grimace_writer"}
    reader = sa.create_engine(f"postgresql+psycopg://grimace_reader:y@{host.rsplit('/', 1)[0]}/grimace")
    with reader.connect() as c:
        assert c.execute(sa.text("SELECT COUNT(*) FROM frames")).scalar() == 10
        with pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
            c.execute(sa.text("DELETE FROM frames"))
    for e in (reader, setup, admin):
        e.dispose()
