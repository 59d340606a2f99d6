"""Push a station's SQLite store to a central PostgreSQL (``grimace sync --to postgresql://...``).

One pass (:func:`sync_once`) reads the station store read-only in one snapshot (an SQLite read
transaction: the station keeps writing meanwhile) and pushes the tables of :data:`SYNC_TABLES` that
exist in it, through SQLAlchemy Core with psycopg 3:

* **Keyed by station.** Every central row is the local row plus ``station_id``; its primary key is
  ``(station_id, <local key>)``. Inserts are ``ON CONFLICT DO NOTHING`` (append tables) or ``ON CONFLICT
  DO UPDATE ... WHERE <something changed>`` (upsert tables), so a re-run, a retry after a network cut
  or two passes at once add no duplicate.
* **Resumable.** Append tables (their integer key only grows: ``frames``, ``detections``, ``events``)
  are pushed in batches past a watermark kept centrally in ``sync_state``; each batch and its watermark
  commit in one transaction, so a pass killed at any point resumes after the last committed batch.
  Upsert tables (small, rows change: sessions, intervals, the study tables, grades) are compared whole
  on every pass.
* **A session is complete centrally only when all of it is there.** Sessions are pushed first with a
  ``complete`` status held back as ``running``; the sessions that were complete *in the snapshot* are
  marked complete centrally only after every other table has been pushed up to the snapshot. A reader of
  the central database therefore sees a half-synced session as running, never as complete.
* **Selected frames' images** (``intervals.image_path``) are copied, before their row is pushed, to
  an image folder (``--images``: a local folder or a mounted share) as ``<station>/<session>/<file>``;
  the central row holds that relative path. S3 is not built in (mount a bucket with s3fs/rclone).
* **Credentials stay on the station**: ``users`` and ``logins`` (password hashes, login tokens) and
  ``meta`` are never pushed (:data:`NEVER_SYNCED`).

Central schema: versioned by :data:`CENTRAL_MIGRATIONS` (``grimace_meta.schema_version``); a central
database of a newer version is refused. Data tables are created from the station's table definitions
(column types mapped from SQLite affinities) and gain columns when a newer station store has more.

**Per-station roles** (:mod:`edge.scale.roles`, ``grimace central init``): in a central database set
up that way (``grimace_meta.access = 'roles'``) the sync runs no DDL at all (a table or column the
station's store has and the central database lacks is an error naming ``grimace central init``,
raised before anything is written), and a login that is a member of ``grimace_station`` syncs only as
the station its role names (row-level security enforces it on the server; the sync refuses another
``station_id`` up front with a clear message). Without ``central init``, an owner or superuser
connection creates and extends the tables itself, as before.

:func:`sync_continuous` repeats passes every ``interval`` seconds; an unreachable central database is
retried with exponential backoff and the station is never affected (it only reads its own store).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.fileio import atomic_write_bytes

CENTRAL_SCHEMA_VERSION = 1
"""Version of the central database's own tables (:data:`CENTRAL_MIGRATIONS`)."""

CENTRAL_MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        "CREATE TABLE IF NOT EXISTS stations (station_id TEXT PRIMARY KEY, host TEXT NOT NULL, "
        "store_schema_version INTEGER, first_sync_at DOUBLE PRECISION NOT NULL, "
        "last_sync_at DOUBLE PRECISION NOT NULL)",
        "CREATE TABLE IF NOT EXISTS sync_state (station_id TEXT NOT NULL, table_name TEXT NOT NULL, "
        "watermark BIGINT NOT NULL, updated_at DOUBLE PRECISION NOT NULL, "
        "PRIMARY KEY (station_id, table_name))",
    ),
}
"""Central version -> statements from the version before it (``grimace_meta`` itself is created first)."""

ROWID = "rowid"
"""Key name meaning SQLite's implicit row id (tables without a primary key); central column
``local_rowid``."""

LOCK_ID = 0x67726D63  # "grmc": advisory lock serialising central schema changes between stations

STATION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

STATION_ROLE = "grimace_station"
"""Group role of the stations' logins (``grimace central add-station``): row-level security limits a
member to the rows whose ``station_id`` is its login name."""

READER_ROLE = "grimace_reader"
"""Group role of read-only logins (``grimace central add-reader``, the facility view): every row, no
write."""

INIT_HINT = "the facility admin runs `grimace central init --db URL` (as the database owner)"


@dataclass(frozen=True)
class SyncTable:
    """How one station table is pushed.

    Attributes:
        name: Table name (the same centrally).
        key: Local key columns (``"rowid"``: SQLite's row id); centrally ``(station_id, *key)``.
        mode: ``"append"``: rows are only inserted and the single integer key grows; pushed past a
            watermark. ``"upsert"``: rows may change; every pass compares them all and updates changed
            rows.
        images: Columns holding paths of image files to copy to the image folder.
        hold: ``(column, final, shown)``: a row whose ``column`` is ``final`` is pushed with ``shown``
            until the rest of the pass is in (the session's completion).
    """

    name: str
    key: tuple[str, ...]
    mode: str = "upsert"
    images: tuple[str, ...] = ()
    hold: tuple[str, str, str] | None = None


SYNC_TABLES: tuple[SyncTable, ...] = (
    # study model (store schema 3) first: what sessions refer to
    SyncTable("studies", ("id",)),
    SyncTable("animals", ("study_id", "id")),
    SyncTable("timepoints", ("study_id", "id")),
    SyncTable("chambers", ("id",)),
    SyncTable("sessions", ("id",), hold=("status", "complete", "running")),
    SyncTable("study_sessions", ("session_id",)),
    SyncTable("frames", ("id",), mode="append"),
    SyncTable("detections", (ROWID,), mode="append"),
    SyncTable("intervals", ("session_id", "interval_index"), images=("image_path",)),
    SyncTable("events", ("id",), mode="append"),
    SyncTable("grades", ("frame_id", "grader", "unit")),
)
"""Pushed in this order; a table the station store does not have is skipped. A new station table is
synced by adding it here with its key."""

NEVER_SYNCED = frozenset({"users", "logins", "meta", "sqlite_sequence"})
"""Station tables that stay on the station (credentials, login tokens, local bookkeeping)."""


class SyncError(RuntimeError):
    """The sync cannot run (bad station store, bad station id, central database newer...)."""


class CentralUnavailable(SyncError):
    """The central database cannot be reached (network, server down, authentication); retry later."""


@dataclass
class SyncReport:
    """What one pass pushed.

    Attributes:
        station_id: The station.
        rows: Table -> rows sent (inserted or updated; conflicts that changed nothing are not counted).
        images: Images copied.
        images_missing: Selected-frame images referenced but not on disk (rotated away): pushed with
            no image.
        completed: Sessions marked complete centrally in this pass.
        seconds: Duration.
    """

    station_id: str
    rows: dict[str, int] = field(default_factory=dict)
    images: int = 0
    images_missing: int = 0
    completed: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        """One line for the terminal."""
        rows = ", ".join(f"{t} {n}" for t, n in self.rows.items() if n) or "nothing new"
        done = f"; {len(self.completed)} session(s) complete" if self.completed else ""
        miss = f" ({self.images_missing} missing on disk)" if self.images_missing else ""
        return f"station {self.station_id}: {rows}; {self.images} image(s){miss}{done} in {self.seconds:.1f}s"


# ------------------------------------------------------------------------------------ helpers
def engine_url(url: str) -> str:
    """``postgresql://`` / ``postgres://`` URLs use psycopg 3 (``postgresql+psycopg://``)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    if not url.startswith("postgresql+"):
        raise SyncError(f"--to must be a postgresql:// URL, got {redact(url)!r}")
    return url


def redact(url: str) -> str:
    """The URL with its password replaced by ``***`` (for messages and logs)."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def check_station_id(station_id: str) -> str:
    """A station id is a key and an image folder name: letters, digits, ``.``, ``_``, ``-`` (<= 64).

    Raises:
        SyncError: Another id.
    """
    if not STATION_ID.match(station_id) or station_id in (".", ".."):
        raise SyncError(
            f"station id {station_id!r} must be 1-64 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit"
        )
    return station_id


def _safe_part(name: str) -> str:
    """A path component from a stored name (session id): kept when safe, else hashed."""
    if STATION_ID.match(name) and name not in (".", ".."):
        return name
    return "id-" + hashlib.sha256(name.encode()).hexdigest()[:16]


def _open_local(path: Path) -> tuple[sqlite3.Connection, Path]:
    """The station store opened read-only, and the folder it lives in."""
    if str(path).split(":", 1)[0].lower() in ("postgresql", "postgres", "postgresql+psycopg"):
        raise SyncError(
            "grimace sync reads a station's SQLite store (grimace.sqlite); a station whose store is on "
            "PostgreSQL (--db postgresql://...) is already in a server database and is not synced"
        )
    if path.is_dir():
        path = path / "grimace.sqlite"
    if not path.is_file():
        raise SyncError(f"{path}: no station store (the grimace.sqlite of a `grimace watch --out` folder)")
    try:
        db = sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True, timeout=30.0)
        db.execute("SELECT name FROM sqlite_master LIMIT 1").fetchall()
    except sqlite3.Error as e:
        raise SyncError(f"{path}: cannot read the station store: {e}") from None
    db.row_factory = sqlite3.Row
    return db, path.parent


def _local_columns(db: sqlite3.Connection, table: str) -> list[tuple[str, str]]:
    """``(name, declared type)`` of a local table, in order."""
    return [(r["name"], r["type"] or "") for r in db.execute(f'PRAGMA table_info("{table}")')]


def _sa_type(decl: str) -> Any:
    """SQLAlchemy type of an SQLite declared type (SQLite's affinity rules, plus booleans)."""
    import sqlalchemy as sa

    d = decl.upper()
    if "INT" in d or "BOOL" in d:
        return sa.BigInteger()
    if any(s in d for s in ("CHAR", "CLOB", "TEXT")):
        return sa.Text()
    if "BLOB" in d:
        return sa.LargeBinary()
    if any(s in d for s in ("REAL", "FLOA", "DOUB")):
        return sa.Double()
    return sa.Text()


def _central_name(col: str) -> str:
    return "local_rowid" if col == ROWID else col


def default_station_id() -> str:
    """The host name, made a valid station id (the id of a sync that names none and does not log in
    as a station role)."""
    name = re.sub(r"[^A-Za-z0-9._-]", "-", _hostname()).strip(".-") or "station"
    return name[:64]


@dataclass(frozen=True)
class Access:
    """Who a central connection is, as far as the sync cares.

    Attributes:
        user: The login (``current_user``).
        station: A member of :data:`STATION_ROLE` (not a superuser): may only sync as ``user``.
        managed: ``grimace central init`` has set the database up: the sync runs no DDL.
    """

    user: str
    station: bool
    managed: bool

    @property
    def ddl(self) -> bool:
        """Whether the sync may create and extend central tables itself."""
        return not (self.station or self.managed)


def connection_access(conn: Any) -> Access:
    """The :class:`Access` of an open central connection (catalog reads only; works for any role).

    Raises:
        SyncError: A station login on a database that ``grimace central init`` did not set up.
    """
    import sqlalchemy as sa

    row = conn.execute(
        sa.text(
            "SELECT current_user::text AS usr, "
            "COALESCE((SELECT pg_has_role(current_user, r.oid, 'USAGE') FROM pg_roles r "
            "WHERE r.rolname = :g), false) "
            "AND NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) AS station, "
            "to_regclass('grimace_meta') IS NOT NULL AS has_meta, "
            "COALESCE(has_table_privilege(to_regclass('grimace_meta'), 'SELECT'), false) AS can_read"
        ),
        {"g": STATION_ROLE},
    ).one()
    managed = False
    if row.has_meta and row.can_read:
        managed = (
            conn.execute(sa.text("SELECT value FROM grimace_meta WHERE key = 'access'")).scalar() == "roles"
        )
    if row.station and not managed:
        raise SyncError(
            f"the central database is not set up for station logins ({row.usr!r} is a member of "
            f"{STATION_ROLE}); {INIT_HINT}"
        )
    return Access(str(row.usr), bool(row.station), managed)


def resolve_station_id(access: Access, station_id: str | None) -> str:
    """The station id a pass syncs as: a station login syncs as its own name only.

    Args:
        access: The connection's :class:`Access`.
        station_id: The id asked for (``None``: the login's name for a station login, else the host
            name).

    Raises:
        SyncError: A station login asked for another station's id.
    """
    if access.station:
        if station_id is not None and station_id != access.user:
            raise SyncError(
                f"this credential is station {access.user!r}: it cannot sync as station {station_id!r} "
                f"(the central database lets a station write only its own rows); use --station "
                f"{access.user} or leave --station out, or sync with the credential of station {station_id!r}"
            )
        return check_station_id(access.user)
    return check_station_id(station_id if station_id is not None else default_station_id())


# ------------------------------------------------------------------------------- central schema
def migrate_central(conn: Any) -> int:
    """Bring the central database's own tables to :data:`CENTRAL_SCHEMA_VERSION` (under an advisory
    lock, so stations starting together do not race).

    Raises:
        SyncError: The central database was made by a newer grimace-edge.
    """
    import sqlalchemy as sa

    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": LOCK_ID})
    conn.execute(
        sa.text("CREATE TABLE IF NOT EXISTS grimace_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    )
    conn.execute(
        sa.text("INSERT INTO grimace_meta (key, value) VALUES ('schema_version', '0') ON CONFLICT DO NOTHING")
    )
    version = int(conn.execute(sa.text("SELECT value FROM grimace_meta WHERE key='schema_version'")).scalar())
    if version > CENTRAL_SCHEMA_VERSION:
        raise SyncError(
            f"the central database has schema version {version}, newer than this grimace-edge supports "
            f"({CENTRAL_SCHEMA_VERSION}); upgrade grimace-edge on this station"
        )
    for v in range(version + 1, CENTRAL_SCHEMA_VERSION + 1):
        for stmt in CENTRAL_MIGRATIONS[v]:
            conn.execute(sa.text(stmt))
        conn.execute(sa.text("UPDATE grimace_meta SET value=:v WHERE key='schema_version'"), {"v": str(v)})
    return CENTRAL_SCHEMA_VERSION


def check_central_version(conn: Any) -> int:
    """The central schema version of a database this connection may not change (a station login, or
    one that ``grimace central init`` manages): it must be exactly :data:`CENTRAL_SCHEMA_VERSION`.

    Raises:
        SyncError: Not set up, older (the admin reruns ``central init``) or newer (upgrade the station).
    """
    import sqlalchemy as sa

    if conn.execute(sa.text("SELECT to_regclass('grimace_meta') IS NULL")).scalar():
        raise SyncError(f"the central database has no grimace tables yet; {INIT_HINT}")
    got = conn.execute(sa.text("SELECT value FROM grimace_meta WHERE key='schema_version'")).scalar()
    version = int(got or 0)
    if version > CENTRAL_SCHEMA_VERSION:
        raise SyncError(
            f"the central database has schema version {version}, newer than this grimace-edge supports "
            f"({CENTRAL_SCHEMA_VERSION}); upgrade grimace-edge on this station"
        )
    if version < CENTRAL_SCHEMA_VERSION:
        raise SyncError(
            f"the central database has schema version {version}, older than this station's "
            f"({CENTRAL_SCHEMA_VERSION}); {INIT_HINT} with this grimace-edge version"
        )
    return version


def _central_table(conn: Any, spec: SyncTable, local_cols: list[tuple[str, str]], *, ddl: bool = True) -> Any:
    """The central table for ``spec``: created from the local columns, or given the columns it lacks.

    Args:
        conn: A central connection in a transaction.
        spec: The table.
        local_cols: The station table's ``(name, declared type)``.
        ddl: Whether this connection may create or alter the table; without, a missing table or
            column is a :class:`SyncError` naming ``grimace central init``.
    """
    import sqlalchemy as sa

    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": LOCK_ID})
    missing = [k for k in spec.key if k != ROWID and k not in {c for c, _t in local_cols}]
    if missing:
        raise SyncError(
            f"station table {spec.name!r} has no key column(s) {missing}; fix its entry in SYNC_TABLES"
        )
    cols = list(local_cols)
    if ROWID in spec.key:
        cols = [(ROWID, "INTEGER"), *cols]
    key = {_central_name(k) for k in spec.key}
    md = sa.MetaData()
    table = sa.Table(
        spec.name,
        md,
        sa.Column("station_id", sa.Text(), primary_key=True),
        *[sa.Column(_central_name(c), _sa_type(t), primary_key=_central_name(c) in key) for c, t in cols],
        sa.Column("synced_at", sa.Double(), nullable=False),
    )
    insp = sa.inspect(conn)
    exists = insp.has_table(spec.name)
    have = {c["name"] for c in insp.get_columns(spec.name)} if exists else set()
    lacking = [c.name for c in table.columns if c.name not in have]
    if lacking and not ddl:
        what = (
            f"has no table {spec.name!r}" if not exists else f"table {spec.name!r} lacks column(s) {lacking}"
        )
        raise SyncError(
            f"the central database {what} that this station's store has, and this login may not change "
            f"the central schema; {INIT_HINT} with a grimace-edge at least as new as this station's, "
            "then sync again (nothing was pushed)"
        )
    if not exists:
        table.create(conn)
    else:
        prep = conn.dialect.identifier_preparer
        for c in table.columns:
            if c.name not in have:
                col_type = c.type.compile(dialect=conn.dialect)
                conn.execute(
                    sa.text(f"ALTER TABLE {prep.quote(spec.name)} ADD COLUMN {prep.quote(c.name)} {col_type}")
                )
    return table


# ---------------------------------------------------------------------------------------- a pass
def sync_once(
    store: str | Path,
    url: str,
    *,
    station_id: str | None = None,
    images_dir: str | Path | None = None,
    batch: int = 1000,
    tables: Sequence[SyncTable] = SYNC_TABLES,
    log: Callable[[str], None] | None = None,
    engine: Any = None,
) -> SyncReport:
    """One pass: push everything in the station store's current snapshot to the central database.

    Args:
        store: The station's ``grimace.sqlite`` (or the ``grimace watch --out`` folder holding it).
        url: ``postgresql://user:password@host/db?sslmode=verify-full``.
        station_id: This station's id (:func:`check_station_id`); ``None``: the login's name when it
            is a station role (:data:`STATION_ROLE`), else the host name. A station role must sync
            as its own name.
        images_dir: Folder for selected frames' images (``None``: images are not copied, rows keep
            no central image path).
        batch: Rows per central transaction of append tables.
        tables: Tables and their keys.
        log: ``f(str)`` for progress messages.
        engine: An SQLAlchemy engine to reuse (continuous mode), else one is made from ``url``.

    Returns:
        The :class:`SyncReport`.

    Raises:
        CentralUnavailable: The central database cannot be reached; nothing on the station changed.
        SyncError: Bad arguments, unreadable store, central database too new or not set up for
            this login, a station login syncing as another station.
    """
    sa = _require_sqlalchemy()
    if station_id is not None:
        check_station_id(station_id)
    t0 = time.perf_counter()
    report = SyncReport(station_id or "?")
    own_engine = engine is None
    if own_engine:
        engine = make_engine(url)
    local, base = _open_local(Path(store))
    try:
        local.execute("BEGIN")  # one read snapshot for the whole pass
        present = {r[0] for r in local.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        store_version = None
        if "meta" in present:
            row = local.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            store_version = int(row[0]) if row else None
        specs = [t for t in tables if t.name in present and t.name not in NEVER_SYNCED]
        held: dict[str, list[dict[str, Any]]] = {}
        try:
            with engine.begin() as conn:
                access = connection_access(conn)
                station_id = report.station_id = resolve_station_id(access, station_id)
                if access.ddl:
                    migrate_central(conn)
                else:
                    check_central_version(conn)
                central = {
                    t.name: _central_table(conn, t, _local_columns(local, t.name), ddl=access.ddl)
                    for t in specs
                }
                now = time.time()
                conn.execute(
                    sa.text(
                        "INSERT INTO stations (station_id, host, store_schema_version, first_sync_at, "
                        "last_sync_at) VALUES (:s, :h, :v, :t, :t) ON CONFLICT (station_id) DO UPDATE SET "
                        "host=excluded.host, store_schema_version=excluded.store_schema_version"
                    ),
                    {"s": station_id, "h": _hostname(), "v": store_version, "t": now},
                )
            for spec in specs:
                n = _push_table(
                    engine, local, spec, central[spec.name], station_id, images_dir, base, batch, report, held
                )
                report.rows[spec.name] = n
                if log and n:
                    log(f"{spec.name}: {n} row(s)")
            with engine.begin() as conn:  # completion last: everything of these sessions is in
                for spec in specs:
                    report.completed += _release_held(conn, central[spec.name], spec, station_id, held)
                conn.execute(
                    sa.text("UPDATE stations SET last_sync_at=:t WHERE station_id=:s"),
                    {"t": time.time(), "s": station_id},
                )
        except sa.exc.OperationalError as e:
            raise CentralUnavailable(
                f"central database {redact(url)} unreachable: {_first_line(e.orig or e)}"
            ) from None
        except sa.exc.InterfaceError as e:
            raise CentralUnavailable(f"central database {redact(url)}: {_first_line(e.orig or e)}") from None
        except sa.exc.DBAPIError as e:  # refused by the server (permissions, a conflicting table...)
            raise SyncError(
                f"central database {redact(url)} refused the sync: {_first_line(e.orig or e)}"
            ) from None
    finally:
        with contextlib.suppress(sqlite3.Error):
            local.execute("ROLLBACK")
        local.close()
        if own_engine:
            engine.dispose()
    report.seconds = time.perf_counter() - t0
    return report


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _hostname() -> str:
    import socket

    return socket.gethostname()


def _require_sqlalchemy() -> Any:
    from edge.deps import require

    require("psycopg", "grimace sync")
    return require("sqlalchemy", "grimace sync")


def make_engine(url: str) -> Any:
    """An SQLAlchemy engine for the central database (psycopg 3; connections checked before use, a
    10 s connect timeout so an unreachable server fails fast)."""
    sa = _require_sqlalchemy()
    return sa.create_engine(engine_url(url), pool_pre_ping=True, connect_args={"connect_timeout": 10})


def _select_cols(spec: SyncTable, local_cols: list[tuple[str, str]]) -> str:
    names = [f'"{c}"' for c, _t in local_cols]
    if ROWID in spec.key:
        names = ["rowid AS local_rowid", *names]
    return ", ".join(names)


def _rows(cur: Iterable[sqlite3.Row], text_cols: set[str]) -> list[dict[str, Any]]:
    out = []
    for r in cur:
        d = dict(r)
        for c in text_cols:  # untyped SQLite columns hold anything; the central column is text
            if d.get(c) is not None and not isinstance(d[c], str):
                d[c] = str(d[c])
        out.append(d)
    return out


def _push_table(
    engine: Any,
    local: sqlite3.Connection,
    spec: SyncTable,
    table: Any,
    station_id: str,
    images_dir: str | Path | None,
    base: Path,
    batch: int,
    report: SyncReport,
    held: dict[str, list[dict[str, Any]]],
) -> int:
    import sqlalchemy as sa
    from sqlalchemy.dialects.postgresql import insert as pg_insert

    local_cols = _local_columns(local, spec.name)
    text_cols = {c for c, t in local_cols if isinstance(_sa_type(t), sa.Text)}
    select = _select_cols(spec, local_cols)
    keys = [_central_name(k) for k in spec.key]
    sent = 0
    if spec.mode == "append":
        if len(spec.key) != 1:
            raise SyncError(f"{spec.name}: an append table needs one integer key, got {spec.key}")
        k_local = "rowid" if spec.key[0] == ROWID else f'"{spec.key[0]}"'
        bound = local.execute(f'SELECT COALESCE(MAX({k_local}), 0) FROM "{spec.name}"').fetchone()[0]
        while True:
            with engine.begin() as conn:
                wm = conn.execute(
                    sa.text(
                        "SELECT watermark FROM sync_state WHERE station_id=:s AND table_name=:t FOR UPDATE"
                    ),
                    {"s": station_id, "t": spec.name},
                ).scalar()
                wm = -(2**62) if wm is None else int(wm)
                if wm >= bound:
                    break
                rows = _rows(
                    local.execute(
                        f'SELECT {select} FROM "{spec.name}" WHERE {k_local} > ? AND {k_local} <= ? '
                        f"ORDER BY {k_local} LIMIT ?",
                        (wm, bound, batch),
                    ),
                    text_cols,
                )
                if not rows:
                    break
                now = time.time()
                for r in rows:
                    r["station_id"], r["synced_at"] = station_id, now
                res = conn.execute(
                    pg_insert(table).on_conflict_do_nothing().returning(table.c.station_id), rows
                )
                sent += len(res.all())
                conn.execute(
                    pg_insert(
                        sa.table(
                            "sync_state",
                            sa.column("station_id"),
                            sa.column("table_name"),
                            sa.column("watermark"),
                            sa.column("updated_at"),
                        )
                    )
                    .values(
                        station_id=station_id,
                        table_name=spec.name,
                        watermark=rows[-1][keys[0]],
                        updated_at=now,
                    )
                    .on_conflict_do_update(
                        index_elements=["station_id", "table_name"],
                        set_={"watermark": rows[-1][keys[0]], "updated_at": now},
                    )
                )
        return sent

    rows = _rows(local.execute(f'SELECT {select} FROM "{spec.name}"'), text_cols)
    if spec.hold is not None:
        col, final, shown = spec.hold
        held[spec.name] = [r for r in rows if r.get(col) == final]
        rows = [dict(r, **{col: shown}) if r.get(col) == final else r for r in rows]
    for start in range(0, len(rows), batch):
        chunk = rows[start : start + batch]
        now = time.time()
        for r in chunk:
            r["station_id"], r["synced_at"] = station_id, now
            for c in spec.images:
                r[c] = _copy_image(r.get(c), r, station_id, images_dir, base, report)
        stmt = pg_insert(table)
        data_cols = [c.name for c in table.columns if c.name not in {"station_id", "synced_at", *keys}]
        set_ = {c: stmt.excluded[c] for c in [*data_cols, "synced_at"]}
        if spec.hold is not None:  # never take a centrally complete row back to the shown value
            col, final, _shown = spec.hold
            set_[col] = sa.case((table.c[col] == final, table.c[col]), else_=stmt.excluded[col])
        changed = sa.or_(*[table.c[c].is_distinct_from(set_[c]) for c in data_cols]) if data_cols else None
        stmt = stmt.on_conflict_do_update(index_elements=["station_id", *keys], set_=set_, where=changed)
        with engine.begin() as conn:
            res = conn.execute(stmt.returning(table.c.station_id), chunk)
            sent += len(res.all())
    return sent


def _release_held(
    conn: Any, table: Any, spec: SyncTable, station_id: str, held: dict[str, list[dict[str, Any]]]
) -> list[str]:
    """Give held rows (complete sessions) their final value; the ids released in this pass."""
    import sqlalchemy as sa

    if spec.hold is None or not held.get(spec.name):
        return []
    col, final, _shown = spec.hold
    keys = [_central_name(k) for k in spec.key]
    done = []
    for r in held[spec.name]:
        cond = sa.and_(
            table.c.station_id == station_id,
            table.c[col] != final,
            *[table.c[k] == r[k] for k in keys],
        )
        res = conn.execute(sa.update(table).where(cond).values({col: final}))
        if res.rowcount:
            done.append(str(r[keys[0]]))
    return done


def _find_image(value: str, base: Path) -> Path | None:
    """The file a stored image path names: as written (absolute, or relative to where the station
    ran), else under the store's folder (``selected/...`` of a ``grimace watch --out`` folder)."""
    p = Path(value)
    cands = [p] if p.is_absolute() else [p, base / p]
    if "selected" in p.parts:
        cands.append(base.joinpath(*p.parts[p.parts.index("selected") :]))
    return next((c for c in cands if c.is_file()), None)


def _copy_image(
    value: Any,
    row: dict[str, Any],
    station_id: str,
    images_dir: str | Path | None,
    base: Path,
    report: SyncReport,
) -> str | None:
    """Copy a selected frame's image into ``images_dir/<station>/<session>/<file>``; the central path
    relative to ``images_dir`` (``None`` when there is no image, no folder or the file is gone)."""
    if not value or images_dir is None:
        return None
    src = _find_image(str(value), base)
    if src is None:
        report.images_missing += 1
        return None
    session = _safe_part(str(row.get("session_id") or "session"))
    rel = Path(station_id) / session / _safe_part(src.name)
    dst = Path(images_dir) / rel
    st = src.stat()
    if dst.is_file():  # copied before: the copy carries the source's size and mtime
        d = dst.stat()
        if d.st_size == st.st_size and d.st_mtime_ns == st.st_mtime_ns:
            return rel.as_posix()
    dst.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(dst, src.read_bytes())
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
    report.images += 1
    return rel.as_posix()


# ----------------------------------------------------------------------------------- continuous
def sync_continuous(
    store: str | Path,
    url: str,
    *,
    station_id: str | None = None,
    interval_s: float = 60.0,
    images_dir: str | Path | None = None,
    batch: int = 1000,
    max_backoff_s: float = 600.0,
    should_stop: Callable[[], bool] = lambda: False,
    log: Callable[[str], None] = print,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Sync every ``interval_s`` seconds until ``should_stop()``; the central database being down is
    retried with exponential backoff (``interval_s`` doubling up to ``max_backoff_s``). ``station_id``
    as for :func:`sync_once`.

    Returns:
        Passes that completed.
    """
    engine = make_engine(url)
    passes, failures = 0, 0
    try:
        while not should_stop():
            try:
                report = sync_once(
                    store, url, station_id=station_id, images_dir=images_dir, batch=batch, engine=engine
                )
            except CentralUnavailable as e:
                failures += 1
                wait = min(max_backoff_s, interval_s * 2 ** min(failures, 20))
                log(f"{e}; retrying in {wait:.0f}s (attempt {failures})")
                _nap(wait, should_stop, sleep)
                continue
            if failures:
                log(f"central database reachable again after {failures} failed attempt(s)")
            failures = 0
            passes += 1
            if any(report.rows.values()) or report.completed:
                log(report.summary())
            _nap(interval_s, should_stop, sleep)
    finally:
        engine.dispose()
    return passes


def _nap(seconds: float, should_stop: Callable[[], bool], sleep: Callable[[float], None]) -> None:
    end = time.monotonic() + seconds
    while not should_stop() and time.monotonic() < end:
        sleep(min(0.2, max(0.0, end - time.monotonic())))
