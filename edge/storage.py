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

The same :class:`Store` also runs on PostgreSQL (``Store("postgresql://user@host/db")``, psycopg 3 from
the ``central`` extra, imported only then): one connection per :class:`Store`, in autocommit mode with
explicit transactions. The SQL is written once, in the subset both speak (``?`` placeholders, upserts
as ``INSERT ... ON CONFLICT ... DO NOTHING/UPDATE``); :class:`PgConnection` translates the placeholders
and :func:`pg_ddl` renders :data:`SCHEMA` and :data:`MIGRATIONS` for PostgreSQL (``REAL`` -> ``DOUBLE
PRECISION``, ``INTEGER`` -> ``BIGINT``, autoincrement ids -> identity columns, text compared byte-wise
like SQLite). The ``meta`` table and the migration loop are the same code; on PostgreSQL they run under
an advisory lock so two stations opening one database at once do not race. Server faults (unreachable,
password refused, database missing, permission denied, connection lost) are :class:`StoreError`
sentences naming the server with the password hidden; a lost connection fails the transaction in
flight (a frame's row is either committed or not) and the next :class:`Store` reconnects.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

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
        'CREATE TABLE logins (token_hash TEXT PRIMARY KEY, "user" TEXT NOT NULL REFERENCES users(name), '
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


# ------------------------------------------------------------------------------------ PostgreSQL
PG_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")
"""URL schemes of a PostgreSQL store (anything else is an SQLite file path)."""

_PG_LOCK = 0x67726D63  # advisory-lock key of the schema migrations ("grmc")


def is_postgres(target: str | Path) -> bool:
    """Whether a store target is a PostgreSQL URL (``postgresql://...``) rather than a file path."""
    return isinstance(target, str) and target.split("://", 1)[0].lower() in PG_SCHEMES and "://" in target


def redact(url: str) -> str:
    """The URL with its password replaced by ``***`` (for messages and logs)."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    except ValueError:
        return re.sub(r"//([^:/@]*):[^@/]*@", r"//\1:***@", url)


def check_target(target: str | Path, option: str = "--db") -> str | Path:
    """Validate a store target early: a ``postgresql://`` URL (checked, psycopg present) or a file path.

    Args:
        target: What the user gave.
        option: The option's name, for the message.

    Returns:
        The URL (a ``str``) or the path (a :class:`~pathlib.Path`).

    Raises:
        StoreError: Another URL scheme, a URL psycopg cannot parse, or psycopg is not installed.
    """
    text = str(target)
    if "://" not in text:
        return Path(target)
    if not is_postgres(text):
        raise StoreError(
            f"{option} {redact(text)}: give a postgresql://user@host/database URL or an SQLite file path"
        )
    _psycopg()
    from psycopg.conninfo import conninfo_to_dict

    try:
        conninfo_to_dict(_pg_url(text))
    except Exception as e:  # psycopg.ProgrammingError: not a valid URL
        raise StoreError(
            f"{option} {redact(text)} is not a valid PostgreSQL URL: {_first_line(e, text)}"
        ) from None
    return text


def _pg_url(url: str) -> str:
    """The URL as libpq reads it (``postgresql+psycopg://`` is SQLAlchemy's spelling)."""
    scheme, rest = url.split("://", 1)
    return f"postgresql://{rest}" if scheme.lower() == "postgresql+psycopg" else url


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:
        raise StoreError(
            "a PostgreSQL store needs psycopg: install the central extra "
            "(pip install 'grimace-edge[central]')"
        ) from None
    return psycopg


def _first_line(e: BaseException, url: str = "") -> str:
    """The first non-empty line of an error's message, any password of ``url`` removed."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    text = lines[0] if lines else type(e).__name__
    with contextlib.suppress(ValueError):
        pw = urlsplit(url).password if url else None
        if pw:
            text = text.replace(pw, "***")
    return text


@functools.lru_cache(maxsize=512)
def pg_sql(sql: str) -> str:
    """One SQL text with ``?`` placeholders (outside quoted literals and names) as psycopg's ``%s``,
    literal ``%`` doubled."""
    out, quote = [], ""
    for ch in sql:
        if quote:
            if ch == quote:
                quote = ""
        elif ch in ("'", '"'):
            quote = ch
        elif ch == "?":
            out.append("%s")
            continue
        out.append("%%" if ch == "%" else ch)
    return "".join(out)


_PG_TYPES = (
    (
        re.compile(r"\bINTEGER PRIMARY KEY AUTOINCREMENT\b"),
        "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
    ),
    (re.compile(r"\bREAL\b"), "DOUBLE PRECISION"),  # PostgreSQL's REAL is 4 bytes: it would round
    (re.compile(r"\bINTEGER\b"), "BIGINT"),
    (re.compile(r"\bTEXT\b"), 'TEXT COLLATE "C"'),  # byte-wise order and comparison, as SQLite
)


@functools.lru_cache(maxsize=128)
def pg_ddl(stmt: str) -> str:
    """One statement of :data:`SCHEMA` or :data:`MIGRATIONS` rendered for PostgreSQL (the types; the
    rest of the DDL is common)."""
    for pattern, repl in _PG_TYPES:
        stmt = pattern.sub(repl, stmt)
    return stmt


def statements(script: str) -> list[str]:
    """The statements of an SQL script such as :data:`SCHEMA` (no ``;`` inside its literals)."""
    return [s.strip() for s in script.split(";") if s.strip()]


def describe_pg_error(where: str, e: BaseException, doing: str, url: str = "") -> str:
    """A plain sentence for a PostgreSQL failure: which server/database, doing what, what it means."""
    text = str(e).lower()
    sqlstate = str(getattr(e, "sqlstate", "") or "")
    if "password authentication failed" in text or sqlstate == "28P01":
        what = "the server refused the user name or password"
    elif "no password supplied" in text or "password is required" in text:
        what = "the server wants a password and the URL gives none (or use ~/.pgpass)"
    elif sqlstate == "28000" or ("role" in text and "does not exist" in text):
        what = "the server does not know this user (or does not let it connect from here)"
    elif sqlstate == "3D000" or ("database" in text and "does not exist" in text):
        what = "the database does not exist on that server (create it first: createdb NAME)"
    elif sqlstate == "42501" or "permission denied" in text:
        what = "permission denied: the user may not create or write the store's tables there"
    elif "could not translate host name" in text or "name or service not known" in text:
        what = "unknown server name"
    elif (
        "connection refused" in text
        or "timeout expired" in text
        or "could not connect" in text
        or ("connection failed" in text and "is the server running" in text)
    ):
        what = "the server cannot be reached (is PostgreSQL running there and listening on that port?)"
    elif (
        sqlstate.startswith("57P")
        or sqlstate.startswith("08")
        or ("connection" in text and ("closed" in text or "lost" in text or "terminat" in text))
        or "server closed" in text
        or "consuming input failed" in text
    ):
        what = "the connection to the server was lost (server restarted or network down)"
    elif sqlstate == "53100" or "no space left" in text:
        what = "the database server's disk is full"
    else:
        what = _first_line(e, url)
    return f"{where}: {doing} failed: {what} ({type(e).__name__}: {_first_line(e, url)})"


class PgFault(StoreError):
    """A PostgreSQL failure of a :class:`PgConnection` statement (a :class:`StoreError`; the
    :class:`Store` re-describes it with what it was doing)."""

    def __init__(self, message: str, error: BaseException) -> None:
        super().__init__(message)
        self.error = error


class PgConnection:
    """The sqlite3-like surface of one psycopg connection that the store and the station use:
    :meth:`execute` / :meth:`executemany` with ``?`` placeholders, cursors with ``fetchone`` /
    ``fetchall`` / iteration / ``description``, :attr:`in_transaction`, :meth:`close`.

    Args:
        url: The PostgreSQL URL.
        connect_timeout_s: Seconds to wait for the server.

    Raises:
        StoreError: psycopg missing, or the server refused or could not be reached.
    """

    def __init__(self, url: str, connect_timeout_s: float = 10.0) -> None:
        self.psycopg = _psycopg()
        from psycopg.conninfo import conninfo_to_dict

        self.url, self.where = url, f"PostgreSQL store {redact(url)}"
        try:
            info = conninfo_to_dict(_pg_url(url))
        except Exception as e:
            raise StoreError(f"{redact(url)} is not a valid PostgreSQL URL: {_first_line(e, url)}") from None
        info.setdefault("connect_timeout", str(max(1, int(connect_timeout_s))))
        info.setdefault("application_name", "grimace-edge")
        try:
            self.conn = self.psycopg.connect(autocommit=True, **info)
        except self.psycopg.Error as e:
            raise StoreError(describe_pg_error(self.where, e, "connecting", url)) from None

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> Any:
        """Run one statement (``?`` placeholders); returns the cursor."""
        try:
            return self.conn.execute(pg_sql(sql), tuple(params) if not isinstance(params, dict) else params)
        except self.psycopg.Error as e:
            raise PgFault(describe_pg_error(self.where, e, "a query", self.url), e) from None

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> Any:
        """Run one statement for each parameter row."""
        try:
            cur = self.conn.cursor()
            cur.executemany(pg_sql(sql), [tuple(r) for r in rows])
            return cur
        except self.psycopg.Error as e:
            raise PgFault(describe_pg_error(self.where, e, "a query", self.url), e) from None

    @property
    def in_transaction(self) -> bool:
        """Whether a transaction is open (also one a failed statement aborted)."""
        from psycopg.pq import TransactionStatus

        return self.conn.info.transaction_status in (TransactionStatus.INTRANS, TransactionStatus.INERROR)

    @property
    def broken(self) -> bool:
        """Whether the connection is closed or was lost."""
        return bool(self.conn.closed or self.conn.broken)

    def close(self) -> None:
        """Close the connection."""
        with contextlib.suppress(Exception):
            self.conn.close()


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
    """The session database, on SQLite (a file) or PostgreSQL (a URL).

    Args:
        path: SQLite file (created with its folder when missing), or a ``postgresql://`` URL (the
            database must exist; the tables are created or upgraded in it).
        lock_timeout_s: How long to keep retrying a database that another process holds locked
            (each wait is reported through ``notify``) before giving up with a :class:`StoreError`.
        recover_corrupt: Move a corrupt database aside and start a new one (else refuse it).
        notify: ``f(message)`` for retries and recovery (default: nothing; the messages are also
            kept in :attr:`notices`).

    Raises:
        StoreError: The path is a folder, the database stays locked, cannot be created or written,
            or is corrupt and ``recover_corrupt`` is False; the PostgreSQL server cannot be reached,
            refuses the login, has no such database, or its schema is newer.

    Attributes:
        kind: ``"sqlite"`` or ``"postgresql"``.
        path: The SQLite file (``None`` on PostgreSQL).
        location: What messages name: the file, or the URL with its password hidden.
        db: The connection: an ``sqlite3.Connection`` or a :class:`PgConnection` (same ``execute``).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        lock_timeout_s: float = 30.0,
        recover_corrupt: bool = True,
        notify: Callable[[str], None] | None = None,
    ) -> None:
        self.lock_timeout_s = float(lock_timeout_s)
        self.notices: list[str] = []
        self._notify = notify
        self.moved_aside: Path | None = None
        """Where a corrupt database found at :attr:`path` was moved (``None`` when none was)."""
        if is_postgres(path):
            self.kind, self.path, self.url = "postgresql", None, str(path)
            self.location = f"PostgreSQL store {redact(self.url)}"
            self.db: Any = PgConnection(self.url, connect_timeout_s=max(1.0, min(30.0, self.lock_timeout_s)))
            try:
                self.schema_version = self._migrate()
            except BaseException:
                self.db.close()
                raise
            return
        self.kind, self.path, self.url = "sqlite", Path(path), ""
        self.location = str(self.path)
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
        """Turn an SQLite or PostgreSQL failure into a :class:`StoreError` naming the file (or server)
        and what it means."""
        try:
            yield
        except sqlite3.IntegrityError:
            raise
        except sqlite3.Error as e:
            raise StoreError(describe_sqlite_error(self.path, e, doing)) from None
        except PgFault as e:
            raise StoreError(describe_pg_error(self.location, e.error, doing, self.url)) from None

    @property
    def broken(self) -> bool:
        """Whether the connection was lost (PostgreSQL; a new :class:`Store` reconnects)."""
        return self.kind == "postgresql" and self.db.broken

    def transaction(self, doing: str) -> contextlib.AbstractContextManager[None]:
        """A context manager: its statements commit together or not at all; a failure is a
        :class:`StoreError` saying what it was ``doing``."""
        return self._transaction(doing)

    def insert(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run an ``INSERT`` into a table with an autoincrement ``id`` and return the new row's id
        (SQLite's ``lastrowid``, PostgreSQL's ``RETURNING id``)."""
        if self.kind == "postgresql":
            return int(self.db.execute(f"{sql} RETURNING id", params).fetchone()[0])
        return int(self.db.execute(sql, params).lastrowid)

    @contextlib.contextmanager
    def _transaction(self, doing: str) -> Iterator[None]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``; on failure a rollback only if SQLite did not already roll
        back (a full disk ends the transaction itself: rolling back again would hide the real error
        behind "cannot rollback - no transaction is active"). On PostgreSQL ``BEGIN`` ... ``COMMIT``:
        a lost connection fails the transaction (nothing of it is committed)."""
        with self._guard(doing):
            self._begin(doing)
            try:
                yield
                self.db.execute("COMMIT")
            except BaseException:
                if self.db.in_transaction:
                    with contextlib.suppress(sqlite3.Error, StoreError):
                        self.db.execute("ROLLBACK")
                raise

    def _begin(self, doing: str) -> None:
        """``BEGIN IMMEDIATE`` (takes the write lock), retried with a notice while another process
        holds the lock, for at most ``lock_timeout_s``. PostgreSQL: ``BEGIN`` (rows lock as written)."""
        if self.kind == "postgresql":
            self.db.execute("BEGIN")
            return
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
        version; a store written by a newer grimace-edge is refused. The same statements on both
        backends (:func:`pg_ddl` renders them for PostgreSQL, where all of it runs under an advisory
        lock: a second station opening the same database waits, then finds it up to date)."""
        pg = self.kind == "postgresql"
        with self._guard("preparing the store's tables") if pg else contextlib.nullcontext():
            if pg:
                self.db.execute(f"SELECT pg_advisory_lock({_PG_LOCK})")
            try:
                return self._migrate_locked()
            finally:
                if pg and not self.db.broken:
                    self.db.execute(f"SELECT pg_advisory_unlock({_PG_LOCK})")

    def _ddl(self, stmt: str) -> str:
        return pg_ddl(stmt) if self.kind == "postgresql" else stmt

    def _migrate_locked(self) -> int:
        if self.kind == "postgresql":
            for stmt in statements(SCHEMA):
                self.db.execute(self._ddl(stmt))
        else:
            self.db.executescript(SCHEMA)
        self.db.execute("INSERT INTO meta (key, value) VALUES ('schema_version', '1') ON CONFLICT DO NOTHING")
        version = int(self.db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.location}: store schema version {version} is newer than this grimace-edge supports "
                f"({SCHEMA_VERSION}); upgrade grimace-edge to open it"
            )
        for v in range(version + 1, SCHEMA_VERSION + 1):
            self.db.execute("BEGIN IMMEDIATE" if self.kind == "sqlite" else "BEGIN")
            try:
                for stmt in MIGRATIONS[v]:
                    self.db.execute(self._ddl(stmt))
                self.db.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(v),))
                self.db.execute("COMMIT")
            except BaseException:
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
                raise
        return SCHEMA_VERSION

    def close(self) -> None:
        """Close the connection (SQLite: a WAL checkpoint runs on close)."""
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
                f"{self.location}: session {session_id!r} was recorded with scale {row[0]!r}, not {scale!r}; "
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
            fid = self.insert(
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
