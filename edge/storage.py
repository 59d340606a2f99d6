"""Crash-safe storage of live sessions: SQLite in WAL mode plus atomically written frame images.

Durability rules:

* The database runs with ``journal_mode=WAL`` and ``synchronous=FULL``: a transaction that returned
  from ``COMMIT`` survives a ``kill -9`` of the process and a power cut (the WAL is fsynced on each
  commit). Each scored frame is one short transaction.
* Images are written to a temporary file in the same folder, flushed, fsynced and renamed over the
  target (then the folder is fsynced), so a reader sees either the old file or the complete new
  one, never a torn JPEG. The row referencing an image is written after the image.
* A session that did not reach ``complete`` is resumed by :meth:`Store.open_session`: its frames,
  interval selections and clock continue where the last committed row left them.

Tables: ``sessions``, ``frames`` (every scored frame), ``detections`` (boxes of stored frames),
``intervals`` (the best frame of each protocol interval), ``events`` (start, resume, camera loss,
reconnect, completion).

Faults are named, never a bare ``sqlite3`` traceback: every failure is a :class:`StoreError` that
says which file and what happened (disk full, locked, read-only, corrupt). A database path that is a
folder is refused. A database another process holds locked is retried with a message for
``lock_timeout_s``, then refused. A corrupt database (not a database, malformed, failing
``PRAGMA quick_check``) is moved aside, kept under a timestamped name next to it with its
``-wal``/``-shm`` files, and a new one is started (:attr:`Store.moved_aside`, with a notice).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.records import SQL_COLUMNS, FrameRecord, sql_row
from edge.results import FrameResult

SCHEMA_VERSION = 3
"""Version of the store's schema; :data:`MIGRATIONS` bring an older store up to it in place."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    model TEXT NOT NULL,
    scale TEXT NOT NULL,
    interval_s REAL NOT NULL,
    duration_s REAL NOT NULL,
    status TEXT NOT NULL DEFAULT 'running',
    started_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    resumes INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS frames (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL REFERENCES sessions(id),
    frame_index INTEGER NOT NULL,
    t_s REAL NOT NULL,
    wall_time REAL NOT NULL,
    interval_index INTEGER NOT NULL,
    score REAL,
    score_argmax REAL,
    abstained TEXT,
    quality REAL,
    unit_scores TEXT NOT NULL,
    n_boxes INTEGER NOT NULL,
    UNIQUE (session_id, frame_index)
);
CREATE TABLE IF NOT EXISTS detections (
    frame_id INTEGER NOT NULL REFERENCES frames(id),
    unit INTEGER NOT NULL,
    confidence REAL NOT NULL,
    x1 REAL NOT NULL, y1 REAL NOT NULL, x2 REAL NOT NULL, y2 REAL NOT NULL,
    expected_grade REAL NOT NULL,
    argmax_grade INTEGER NOT NULL,
    grade_probs TEXT NOT NULL,
    selected INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS intervals (
    session_id TEXT NOT NULL REFERENCES sessions(id),
    interval_index INTEGER NOT NULL,
    frame_id INTEGER NOT NULL REFERENCES frames(id),
    quality REAL,
    score REAL,
    image_path TEXT,
    final INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (session_id, interval_index)
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL,
    t_s REAL NOT NULL,
    wall_time REAL NOT NULL,
    kind TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS frames_session ON frames (session_id, frame_index);
CREATE INDEX IF NOT EXISTS detections_frame ON detections (frame_id);
"""
"""Schema version 1 (the tables as first released); later versions are reached by :data:`MIGRATIONS`."""

MIGRATIONS: dict[int, tuple[str, ...]] = {
    2: (
        # record schema 2: the frame's argmax unit scores and scored-box counts (edge.records.sql_row)
        "ALTER TABLE frames ADD COLUMN unit_argmax TEXT",
        "ALTER TABLE frames ADD COLUMN unit_counts TEXT",
    ),
    3: (
        # study model (edge.station.study): studies, animals, timepoints, chambers; a study session
        # links one store session to an animal at a timepoint in a chamber. Station users and
        # blinded grades (edge.station).
        "CREATE TABLE studies (id TEXT PRIMARY KEY, title TEXT NOT NULL DEFAULT '', "
        "scale TEXT NOT NULL, interval_s REAL NOT NULL, duration_s REAL NOT NULL, fps REAL NOT NULL, "
        "notes TEXT NOT NULL DEFAULT '', created_at REAL NOT NULL)",
        "CREATE TABLE animals (study_id TEXT NOT NULL REFERENCES studies(id), id TEXT NOT NULL, "
        "grp TEXT NOT NULL DEFAULT '', sex TEXT NOT NULL DEFAULT '', strain TEXT NOT NULL DEFAULT '', "
        "notes TEXT NOT NULL DEFAULT '', PRIMARY KEY (study_id, id))",
        "CREATE TABLE timepoints (study_id TEXT NOT NULL REFERENCES studies(id), id TEXT NOT NULL, "
        "position INTEGER NOT NULL, PRIMARY KEY (study_id, id))",
        "CREATE TABLE chambers (id TEXT PRIMARY KEY, camera TEXT NOT NULL, notes TEXT NOT NULL DEFAULT '')",
        "CREATE TABLE study_sessions (session_id TEXT PRIMARY KEY REFERENCES sessions(id), "
        "study_id TEXT NOT NULL REFERENCES studies(id), animal_id TEXT NOT NULL, "
        "timepoint_id TEXT NOT NULL, chamber_id TEXT NOT NULL, settings TEXT NOT NULL, "
        "wanted TEXT NOT NULL DEFAULT 'run', "
        "FOREIGN KEY (study_id, animal_id) REFERENCES animals(study_id, id), "
        "FOREIGN KEY (study_id, timepoint_id) REFERENCES timepoints(study_id, id))",
        "CREATE INDEX study_sessions_study ON study_sessions (study_id, animal_id, timepoint_id)",
        "CREATE TABLE users (name TEXT PRIMARY KEY, role TEXT NOT NULL, pw_hash TEXT NOT NULL, "
        "created_at REAL NOT NULL)",
        "CREATE TABLE logins (token_hash TEXT PRIMARY KEY, user TEXT NOT NULL REFERENCES users(name), "
        "csrf TEXT NOT NULL, created_at REAL NOT NULL, expires_at REAL NOT NULL)",
        "CREATE TABLE grades (frame_id INTEGER NOT NULL REFERENCES frames(id), "
        "grader TEXT NOT NULL REFERENCES users(name), unit TEXT NOT NULL, grade INTEGER, "
        "graded_at REAL NOT NULL, PRIMARY KEY (frame_id, grader, unit))",
    ),
}
"""Version -> statements that take a store from the version before it to this one (applied in order,
each version in one transaction, ``meta.schema_version`` updated with it)."""


class StoreError(RuntimeError):
    """The session database cannot be used (the message names the file and what is wrong)."""


class _Corrupt(Exception):
    """A database that opened but fails its integrity check."""


_CORRUPT = ("SQLITE_CORRUPT", "SQLITE_NOTADB")
_BUSY = ("SQLITE_BUSY", "SQLITE_LOCKED")


def _code(e: sqlite3.Error) -> str:
    """SQLite's error name (``SQLITE_FULL``...) of an exception, from its attribute or its text."""
    name = str(getattr(e, "sqlite_errorname", "") or "")
    if name:
        return name.split("_", 2)[0] + "_" + name.split("_", 2)[1] if name.count("_") > 1 else name
    text = str(e).lower()
    for needle, code in (
        ("disk is full", "SQLITE_FULL"),
        ("database or disk is full", "SQLITE_FULL"),
        ("locked", "SQLITE_BUSY"),
        ("not a database", "SQLITE_NOTADB"),
        ("malformed", "SQLITE_CORRUPT"),
        ("readonly", "SQLITE_READONLY"),
        ("unable to open", "SQLITE_CANTOPEN"),
        ("disk i/o error", "SQLITE_IOERR"),
    ):
        if needle in text:
            return code
    return ""


def describe_sqlite_error(path: Path, e: sqlite3.Error, doing: str) -> str:
    """A plain sentence for an SQLite failure: which file, while doing what, what it means."""
    code = _code(e)
    what = {
        "SQLITE_FULL": "the disk is full",
        "SQLITE_BUSY": "the database is locked by another process (another grimace watch on this --out?)",
        "SQLITE_LOCKED": "the database is locked by another connection",
        "SQLITE_READONLY": "the database or its folder is read-only",
        "SQLITE_CANTOPEN": "the file cannot be opened (missing folder, no permission, or it is a folder)",
        "SQLITE_IOERR": "an input/output error (failing disk, disk full or removed drive)",
        "SQLITE_CORRUPT": "the database file is corrupt",
        "SQLITE_NOTADB": "the file is not an SQLite database",
    }.get(code, str(e))
    return f"{path}: {doing} failed: {what} ({code or type(e).__name__}: {e})"


@dataclass
class SessionState:
    """Where a (possibly resumed) session stands.

    Attributes:
        session_id: Its id.
        resumed: Whether rows from an earlier run existed.
        n_frames: Committed frames.
        last_frame_index: Highest committed frame index (-1 when none).
        last_t_s: Session time of the last committed frame (0 when none).
        best: Interval index -> (quality, frame_id) of the committed best frame.
        status: ``running`` or ``complete``.
    """

    session_id: str
    resumed: bool
    n_frames: int
    last_frame_index: int
    last_t_s: float
    best: dict[int, tuple[float, int]]
    status: str


class Store:
    """The session database.

    Args:
        path: SQLite file (created with its folder when missing).
        lock_timeout_s: How long to keep retrying a database that another process holds locked
            (each wait is reported through ``notify``) before giving up with a :class:`StoreError`.
        recover_corrupt: Move a corrupt database aside and start a new one (else refuse it).
        notify: ``f(message)`` for retries and recovery (default: nothing; the messages are also
            kept in :attr:`notices`).

    Raises:
        StoreError: The path is a folder, the database stays locked, cannot be created or written,
            or is corrupt and ``recover_corrupt`` is False.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        lock_timeout_s: float = 30.0,
        recover_corrupt: bool = True,
        notify: Callable[[str], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self.lock_timeout_s = float(lock_timeout_s)
        self.notices: list[str] = []
        self._notify = notify
        self.moved_aside: Path | None = None
        """Where a corrupt database found at :attr:`path` was moved (``None`` when none was)."""
        if self.path.is_dir():
            raise StoreError(f"{self.path} is a folder, not a database file; give a file path")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"{self.path}: cannot create its folder: {e.strerror or e}") from None
        deadline = time.monotonic() + self.lock_timeout_s
        attempt = 0
        while True:
            attempt += 1
            try:
                self.db = self._connect()
                break
            except sqlite3.Error as e:
                with contextlib.suppress(Exception):
                    self.db.close()
                code = _code(e)
                if code in _CORRUPT and recover_corrupt and self.moved_aside is None:
                    self._move_aside(str(e))
                    continue
                if code in _BUSY and time.monotonic() < deadline:
                    left = deadline - time.monotonic()
                    self._notice(
                        f"{self.path} is locked by another process; retrying (attempt {attempt}, "
                        f"giving up in {left:.0f}s)"
                    )
                    time.sleep(min(1.0, max(0.05, left)))
                    continue
                msg = describe_sqlite_error(self.path, e, "opening the session database")
                if code in _BUSY:
                    msg += f"; still locked after {self.lock_timeout_s:g}s"
                raise StoreError(msg) from None
            except _Corrupt as c:
                with contextlib.suppress(Exception):
                    self.db.close()
                if not recover_corrupt or self.moved_aside is not None:
                    raise StoreError(f"{self.path}: the database file is corrupt ({c})") from None
                self._move_aside(str(c))

    def _notice(self, msg: str) -> None:
        self.notices.append(msg)
        if self._notify is not None:
            self._notify(msg)

    def _connect(self) -> sqlite3.Connection:
        busy_ms = int(max(0.05, min(1.0, self.lock_timeout_s / 4)) * 1000)
        self.db = sqlite3.connect(str(self.path), isolation_level=None, timeout=busy_ms / 1000)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("PRAGMA foreign_keys=ON")
        mode = self.db.execute("PRAGMA journal_mode").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(f"{self.path}: SQLite refused WAL mode (got {mode}); use a local disk")
        check = self.db.execute("PRAGMA quick_check(1)").fetchone()
        if check is None or str(check[0]).lower() != "ok":
            raise _Corrupt(f"quick_check: {check[0] if check else 'no answer'}")
        self.schema_version = self._migrate()
        return self.db

    def _move_aside(self, why: str) -> None:
        """Rename a corrupt database (and its -wal/-shm/-journal) to a timestamped name; kept, never
        deleted, so what it held can still be salvaged."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        target = self.path.with_name(f"{self.path.stem}.corrupt-{stamp}{self.path.suffix}")
        k = 1
        while target.exists():
            target = self.path.with_name(f"{self.path.stem}.corrupt-{stamp}-{k}{self.path.suffix}")
            k += 1
        try:
            self.path.rename(target)
            for suffix in ("-wal", "-shm", "-journal"):
                side = Path(f"{self.path}{suffix}")
                if side.exists():
                    side.rename(Path(f"{target}{suffix}"))
        except OSError as e:
            raise StoreError(
                f"{self.path}: the database is corrupt ({why}) and could not be moved aside: "
                f"{e.strerror or e}"
            ) from None
        self.moved_aside = target
        self._notice(
            f"{self.path} is corrupt ({why}); it was moved aside to {target} (kept, not deleted) "
            "and a new database was started"
        )

    @contextlib.contextmanager
    def _guard(self, doing: str) -> Iterator[None]:
        """Turn an SQLite failure into a :class:`StoreError` naming the file and what it means."""
        try:
            yield
        except sqlite3.IntegrityError:
            raise
        except sqlite3.Error as e:
            raise StoreError(describe_sqlite_error(self.path, e, doing)) from None

    @contextlib.contextmanager
    def _transaction(self, doing: str) -> Iterator[None]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``; on failure a rollback only if SQLite did not already roll
        back (a full disk ends the transaction itself: rolling back again would hide the real error
        behind "cannot rollback - no transaction is active")."""
        with self._guard(doing):
            self._begin(doing)
            try:
                yield
                self.db.execute("COMMIT")
            except BaseException:
                if self.db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        self.db.execute("ROLLBACK")
                raise

    def _begin(self, doing: str) -> None:
        """``BEGIN IMMEDIATE`` (takes the write lock), retried with a notice while another process
        holds the lock, for at most ``lock_timeout_s``."""
        deadline = time.monotonic() + self.lock_timeout_s
        attempt = 0
        while True:
            attempt += 1
            try:
                self.db.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as e:
                if _code(e) not in _BUSY or time.monotonic() >= deadline:
                    if _code(e) in _BUSY:
                        raise StoreError(
                            describe_sqlite_error(self.path, e, doing)
                            + f"; still locked after {self.lock_timeout_s:g}s"
                        ) from None
                    raise
                self._notice(
                    f"{self.path} is locked by another process while {doing}; retrying (attempt "
                    f"{attempt}, giving up in {deadline - time.monotonic():.0f}s)"
                )

    def _migrate(self) -> int:
        """Create the tables (version 1) when new, then apply :data:`MIGRATIONS` up to the current
        version; a store written by a newer grimace-edge is refused."""
        self.db.executescript(SCHEMA)
        self.db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', '1')")
        version = int(self.db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: store schema version {version} is newer than this grimace-edge supports "
                f"({SCHEMA_VERSION}); upgrade grimace-edge to open it"
            )
        for v in range(version + 1, SCHEMA_VERSION + 1):
            self.db.execute("BEGIN IMMEDIATE")
            try:
                for stmt in MIGRATIONS[v]:
                    self.db.execute(stmt)
                self.db.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(v),))
                self.db.execute("COMMIT")
            except BaseException:
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
                raise
        return SCHEMA_VERSION

    def close(self) -> None:
        """Close the connection (a WAL checkpoint runs on close)."""
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------- sessions
    def open_session(
        self,
        session_id: str,
        *,
        source: str,
        model: str,
        scale: str,
        interval_s: float,
        duration_s: float,
    ) -> SessionState:
        """Create a session or resume the one with this id.

        Raises:
            ValueError: When an existing session with this id used another scale.
        """
        now = time.time()
        with self._guard("reading the sessions"):
            row = self.db.execute("SELECT scale, status FROM sessions WHERE id=?", (session_id,)).fetchone()
        if row is None:
            with self._guard(f"creating session {session_id}"):
                self.db.execute(
                    "INSERT INTO sessions (id, source, model, scale, interval_s, duration_s, started_at, "
                    "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (session_id, source, model, scale, interval_s, duration_s, now, now),
                )
            self.event(session_id, 0.0, "start", f"session {session_id} started on {source}")
            return SessionState(session_id, False, 0, -1, 0.0, {}, "running")
        if row[0] != scale:
            raise ValueError(
                f"{self.path}: session {session_id!r} was recorded with scale {row[0]!r}, not {scale!r}; "
                "use another --session-id or output folder"
            )
        st = self.state(session_id)
        if st.status != "complete":
            with self._guard(f"resuming session {session_id}"):
                self.db.execute(
                    "UPDATE sessions SET resumes=resumes+1, updated_at=? WHERE id=?", (now, session_id)
                )
            self.event(
                session_id,
                st.last_t_s,
                "resume",
                f"resumed after frame {st.last_frame_index} ({st.n_frames} committed frames)",
            )
        st.resumed = True
        return st

    def state(self, session_id: str) -> SessionState:
        """Committed state of a session."""
        n, last_i, last_t = self.db.execute(
            "SELECT COUNT(*), COALESCE(MAX(frame_index), -1), COALESCE(MAX(t_s), 0) FROM frames "
            "WHERE session_id=?",
            (session_id,),
        ).fetchone()
        best = {
            int(i): (float(q if q is not None else -1.0), int(f))
            for i, q, f in self.db.execute(
                "SELECT interval_index, quality, frame_id FROM intervals WHERE session_id=?", (session_id,)
            )
        }
        status_row = self.db.execute("SELECT status FROM sessions WHERE id=?", (session_id,)).fetchone()
        return SessionState(
            session_id,
            n > 0,
            int(n),
            int(last_i),
            float(last_t),
            best,
            status_row[0] if status_row else "none",
        )

    def complete(self, session_id: str, t_s: float) -> None:
        """Mark a session complete and finalise its interval selections."""
        with self._transaction("marking the session complete"):
            self.db.execute("UPDATE intervals SET final=1 WHERE session_id=?", (session_id,))
            self.db.execute(
                "UPDATE sessions SET status='complete', updated_at=? WHERE id=?", (time.time(), session_id)
            )
        self.event(session_id, t_s, "complete", "session complete")

    def event(self, session_id: str, t_s: float, kind: str, message: str) -> None:
        """Record an event (its own committed transaction)."""
        with self._transaction(f"recording a {kind} event"):
            self.db.execute(
                "INSERT INTO events (session_id, t_s, wall_time, kind, message) VALUES (?, ?, ?, ?, ?)",
                (session_id, float(t_s), time.time(), kind, message),
            )

    # --------------------------------------------------------------------------------- frames
    def add_frame(
        self,
        session_id: str,
        *,
        frame_index: int,
        t_s: float,
        interval_index: int,
        result: FrameResult,
        record: FrameRecord,
        store_detections: bool = False,
        wall_time: float | None = None,
    ) -> int:
        """Insert one scored frame (and optionally its boxes) in one committed transaction.

        Args:
            session_id: The session.
            frame_index: Frame index in the session.
            t_s: Session time.
            interval_index: Protocol interval the frame falls in.
            result: The scored frame (its boxes are stored with ``store_detections``).
            record: Its frame record (:func:`edge.records.frame_record`); the row's values are
                :func:`edge.records.sql_row` of it.
            store_detections: Also store every box.
            wall_time: Capture time (default now).

        Returns:
            The frame's row id.
        """
        row = sql_row(record)
        cols = ", ".join(SQL_COLUMNS)
        with self._transaction(f"storing frame {frame_index}"):
            cur = self.db.execute(
                f"INSERT INTO frames (session_id, frame_index, t_s, wall_time, interval_index, {cols}) "
                f"VALUES (?,?,?,?,?,{','.join('?' * len(SQL_COLUMNS))})",
                (
                    session_id,
                    int(frame_index),
                    float(t_s),
                    float(wall_time if wall_time is not None else time.time()),
                    int(interval_index),
                    *(row[c] for c in SQL_COLUMNS),
                ),
            )
            fid = int(cur.lastrowid)
            if store_detections:
                self._insert_detections(fid, result)
            self.db.execute("UPDATE sessions SET updated_at=? WHERE id=?", (time.time(), session_id))
        return fid

    def _insert_detections(self, frame_id: int, result: FrameResult) -> None:
        d = result.detections
        if not len(d):
            return
        sel = set(result.selected.tolist())
        exp, arg = d.expected_grade, d.argmax_grade
        self.db.executemany(
            "INSERT INTO detections VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            [
                (
                    frame_id,
                    int(d.unit[i]),
                    float(d.confidence[i]),
                    *(float(v) for v in d.xyxy[i]),
                    float(exp[i]),
                    int(arg[i]),
                    json.dumps([round(float(p), 6) for p in d.grade_probs[i]]),
                    int(i in sel),
                )
                for i in range(len(d))
            ],
        )

    def set_interval_best(
        self,
        session_id: str,
        interval_index: int,
        frame_id: int,
        result: FrameResult,
        image_path: str | None,
        final: bool = False,
    ) -> None:
        """Record (or replace) the best frame of an interval, with its boxes, in one transaction."""
        with self._transaction(f"storing the selection of interval {interval_index}"):
            has = self.db.execute("SELECT 1 FROM detections WHERE frame_id=? LIMIT 1", (frame_id,)).fetchone()
            if not has:
                self._insert_detections(frame_id, result)
            self.db.execute(
                "INSERT INTO intervals (session_id, interval_index, frame_id, quality, score, image_path, "
                "final) VALUES (?,?,?,?,?,?,?) ON CONFLICT(session_id, interval_index) DO UPDATE SET "
                "frame_id=excluded.frame_id, quality=excluded.quality, score=excluded.score, "
                "image_path=excluded.image_path, final=excluded.final",
                (session_id, interval_index, frame_id, result.quality, result.score, image_path, int(final)),
            )

    def finalize_interval(self, session_id: str, interval_index: int) -> None:
        """Mark an interval's selection final."""
        with self._transaction(f"finalising interval {interval_index}"):
            self.db.execute(
                "UPDATE intervals SET final=1 WHERE session_id=? AND interval_index=?",
                (session_id, interval_index),
            )

    # -------------------------------------------------------------------------------- reading
    def session_row(self, session_id: str) -> dict[str, Any]:
        """The session's row (``{}`` when there is none)."""
        cur = self.db.execute("SELECT * FROM sessions WHERE id=?", (session_id,))
        row = cur.fetchone()
        return dict(zip([c[0] for c in cur.description], row, strict=True)) if row else {}

    def frames(self, session_id: str) -> list[dict[str, Any]]:
        """All committed frames of a session, by frame index."""
        cur = self.db.execute("SELECT * FROM frames WHERE session_id=? ORDER BY frame_index", (session_id,))
        cols = [c[0] for c in cur.description]
        return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]

    def intervals(self, session_id: str) -> list[dict[str, Any]]:
        """Interval selections of a session, by interval."""
        cur = self.db.execute(
            "SELECT i.*, f.frame_index, f.t_s FROM intervals i JOIN frames f ON f.id=i.frame_id "
            "WHERE i.session_id=? ORDER BY i.interval_index",
            (session_id,),
        )
        cols = [c[0] for c in cur.description]
        return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]

    def events(self, session_id: str) -> list[dict[str, Any]]:
        """Events of a session in order."""
        cur = self.db.execute("SELECT * FROM events WHERE session_id=? ORDER BY id", (session_id,))
        cols = [c[0] for c in cur.description]
        return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]

    def running_sessions(self) -> list[str]:
        """Ids of sessions that did not complete (candidates for resuming)."""
        return [
            r[0]
            for r in self.db.execute("SELECT id FROM sessions WHERE status='running' ORDER BY started_at")
        ]
