"""Shared fixtures of the tests that need a REAL PostgreSQL server (Debian's package): a throwaway
cluster started per module under a temp dir with initdb/pg_ctl (as the ``postgres`` user when the
tests run as root), listening on 127.0.0.1 only; an empty database per test; station store helpers.

Use: ``pytest_plugins = ["tests.pg_helpers"]`` in a test module (the ``pg`` and ``central`` fixtures).
Skipped, with the reason, where the PostgreSQL binaries are not installed.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest
import sqlalchemy as sa

from edge.storage import Store

BINS = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))


class PgServer:
    """A throwaway PostgreSQL cluster (trust auth, loopback only, fsync off: a test server)."""

    def __init__(self) -> None:
        self.bin = Path(BINS[-1]).parent
        self.root = Path(tempfile.mkdtemp(prefix="grimace-pg-"))
        self.data, self.sock, self.logf = self.root / "data", self.root / "sock", self.root / "log"
        self.sock.mkdir()
        self.user: list[str] = []
        if os.geteuid() == 0:  # postgres refuses to run as root
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                pytest.skip("running as root and there is no 'postgres' user to run the server as")
            for p in (self.root, self.sock):
                os.chown(p, pw.pw_uid, pw.pw_gid)
            self.user = ["runuser", "-u", "postgres", "--"]
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")
        self.start()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        r = subprocess.run([*self.user, str(self.bin / tool), *args], capture_output=True, text=True)
        if r.returncode:
            raise RuntimeError(f"{tool} failed: {r.stderr or r.stdout}")

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.sock} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.logf), "-o", opts, "-w", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def close(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def pg() -> PgServer:
    if not BINS:
        pytest.skip("PostgreSQL server binaries not installed (apt-get install postgresql; .ci/run does)")
    server = PgServer()
    yield server
    server.close()


@pytest.fixture
def central(pg: PgServer) -> sa.Engine:
    """The server with an empty database for each test."""
    eng = sa.create_engine(pg.url.replace("postgresql://", "postgresql+psycopg://"), pool_pre_ping=True)
    with eng.begin() as c:
        c.execute(sa.text("DROP SCHEMA public CASCADE"))
        c.execute(sa.text("CREATE SCHEMA public"))
    yield eng
    eng.dispose()


# ------------------------------------------------------------------------------ station stores
UNIT = json.dumps({"eye": 1.0, "ear": 0.5})


def add_frames(st: Store, sid: str, start: int, n: int, seed: int = 0) -> None:
    """Frames ``start..start+n-1`` of a session, in one transaction (fast; the store's real tables)."""
    sel = st.path.parent / "selected" / sid
    sel.mkdir(parents=True, exist_ok=True)
    st.db.execute("BEGIN IMMEDIATE")
    for i in range(start, start + n):
        score = None if (i + seed) % 7 == 0 else round(((i * 31 + seed) % 100) / 50.0, 4)
        cur = st.db.execute(
            "INSERT INTO frames (session_id, frame_index, t_s, wall_time, interval_index, score, "
            "score_argmax, abstained, quality, unit_scores, n_boxes, unit_argmax, unit_counts) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                sid,
                i,
                i * 0.5,
                1.7e9 + i,
                i // 10,
                score,
                score,
                None if score is not None else "no face",
                0.8,
                UNIT,
                1,
                UNIT,
                json.dumps({"eye": 1}),
            ),
        )
        fid = cur.lastrowid
        if i % 2 == 0:
            st.db.execute(
                "INSERT INTO detections VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (fid, 0, 0.9, 1.0, 2.0, 30.0, 40.0, 1.2, 1, "[0.1, 0.6, 0.3]", 1),
            )
        if i % 10 == 0:
            img = sel / f"interval_{i // 10:03d}.jpg"
            img.write_bytes(f"jpeg {sid} {i} {seed}".encode())
            st.db.execute(
                "INSERT OR REPLACE INTO intervals VALUES (?,?,?,?,?,?,0)",
                (sid, i // 10, fid, 0.8, score, str(img)),
            )
    st.db.execute("COMMIT")
    st.event(sid, start * 0.5, "frames", f"{n} frames from {start}")


# ------------------------------------------------------------------------ stores on PostgreSQL
@pytest.fixture
def pg_store_url(pg: PgServer) -> str:
    """The URL of a new, empty database on the server for each test (a station store on PostgreSQL)."""
    import uuid

    import psycopg

    name = f"store_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg.url, autocommit=True) as c:
        c.execute(f"CREATE DATABASE {name}")
    yield pg.url.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(pg.url, autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
