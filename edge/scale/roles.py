"""Central-side access control: per-station logins that can write only their own rows
(``grimace central init``, ``add-station``, ``add-reader``).

Everything is PostgreSQL's own machinery, set up once by the facility admin as the database owner:

* :func:`init_central` applies :data:`~edge.scale.sync.CENTRAL_MIGRATIONS`, creates the data tables of
  the current station store schema (so stations never need DDL rights) and the facility view's
  indexes, creates the group roles :data:`~edge.scale.sync.STATION_ROLE` (``SELECT, INSERT, UPDATE`` on
  the data tables, ``stations`` and ``sync_state``; no ``DELETE``) and
  :data:`~edge.scale.sync.READER_ROLE` (``SELECT``), takes ownership of tables a station created
  before, and enables and **forces** row-level security on every station-keyed table with the
  policies of :data:`POLICIES`: a member of ``grimace_station`` sees and writes only rows whose
  ``station_id`` is its login name; a reader sees every row; the admin who ran it keeps every row.
  It marks the database ``grimace_meta.access = 'roles'``, after which ``grimace sync`` runs no DDL.
  Rerunning it changes nothing that is already in place (it reports what it changed).
* :func:`add_login` creates a LOGIN role in one of the groups with a generated password, sent to the
  server as a SCRAM verifier (the plain password never reaches the server or its log).

Identifiers are composed with :mod:`psycopg.sql` (``Identifier``/``Literal``), never formatted in.
"""

from __future__ import annotations

import secrets
import sqlite3
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.scale.sync import (
    NEVER_SYNCED,
    READER_ROLE,
    STATION_ROLE,
    SYNC_TABLES,
    CentralUnavailable,
    SyncError,
    _central_table,
    _first_line,
    _local_columns,
    check_station_id,
    make_engine,
    migrate_central,
    redact,
)

BOOKKEEPING = ("stations", "sync_state")
"""Central tables of the sync itself that are keyed by station (row-level security as the data)."""

STATION_PRIVILEGES = ("SELECT", "INSERT", "UPDATE")
"""What :data:`~edge.scale.sync.STATION_ROLE` may do on a station-keyed table (the sync never deletes)."""

REVOKED = ("DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
"""Privileges the two groups must not hold on those tables (revoked when someone granted them)."""

POLICIES: dict[str, str] = {
    "grimace_station_own": (
        "FOR ALL TO {station} USING (station_id = current_user::text) "
        "WITH CHECK (station_id = current_user::text)"
    ),
    "grimace_reader_all": "FOR SELECT TO {reader} USING (true)",
    "grimace_admin_all": "FOR ALL TO CURRENT_USER USING (true) WITH CHECK (true)",
}
"""Row-level security policies of every station-keyed table (permissive, so OR-ed). ``FORCE ROW
LEVEL SECURITY`` applies them to the table owner too; the owner is the admin who ran ``central
init`` (``CURRENT_USER`` there), whose policy keeps every row. Superusers bypass row-level security."""

VIEW_INDEXES: dict[str, tuple[str, tuple[str, ...]]] = {
    "grimace_frames_session": ("frames", ("station_id", "session_id", "frame_index")),
    "grimace_sessions_started": ("sessions", ("station_id", "started_at")),
}
"""Indexes of the facility view's paged lists (a session's frames, a station's sessions by time)."""

RESERVED = frozenset({STATION_ROLE, READER_ROLE, "public"})


@dataclass
class InitReport:
    """What :func:`init_central` changed (empty: everything was already in place).

    Attributes:
        changes: One line per change.
        tables: The station-keyed tables now under row-level security.
    """

    changes: list[str] = field(default_factory=list)
    tables: list[str] = field(default_factory=list)


def _sql() -> Any:
    from psycopg import sql

    return sql


def _x(conn: Any, query: Any) -> None:
    """Run a composed :mod:`psycopg.sql` statement in the SQLAlchemy connection's transaction."""
    conn.connection.driver_connection.execute(query)


def _one(conn: Any, text: str, **params: Any) -> Any:
    import sqlalchemy as sa

    return conn.execute(sa.text(text), params).scalar()


def _store_columns() -> dict[str, list[tuple[str, str]]]:
    """The current station store schema: table -> ``(column, declared type)``, from a new store."""
    from edge.storage import Store

    with tempfile.TemporaryDirectory(prefix="grimace-schema-") as d:
        path = Path(d) / "grimace.sqlite"
        Store(path).close()
        db = sqlite3.connect(path)
        db.row_factory = sqlite3.Row
        try:
            present = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            return {
                t.name: _local_columns(db, t.name)
                for t in SYNC_TABLES
                if t.name in present and t.name not in NEVER_SYNCED
            }
        finally:
            db.close()


def _run(url: str, what: str, body: Callable[[Any], Any]) -> Any:
    """``body(conn)`` in one central transaction; server errors as :class:`SyncError`."""
    import sqlalchemy as sa

    from edge.scale.sync import _require_sqlalchemy

    _require_sqlalchemy()
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            return body(conn)
    except sa.exc.OperationalError as e:
        raise CentralUnavailable(
            f"central database {redact(url)} unreachable: {_first_line(e.orig or e)}"
        ) from None
    except sa.exc.DBAPIError as e:
        raise SyncError(
            f"central database {redact(url)} refused {what}: {_first_line(e.orig or e)} (run it as the "
            "database owner with CREATEROLE, or as a superuser)"
        ) from None
    finally:
        engine.dispose()


def init_central(url: str) -> InitReport:
    """Set the central database up for per-station logins (idempotent; one transaction).

    Args:
        url: ``postgresql://admin@host/grimace?sslmode=verify-full``, a login that owns the database
            (and the grimace tables, or is a member of their owner) and has ``CREATEROLE``, or a
            superuser.

    Returns:
        The :class:`InitReport`.

    Raises:
        CentralUnavailable: The server cannot be reached.
        SyncError: Refused by the server (privileges), a group role that can log in, a central
            database of a newer grimace-edge.
    """
    return _run(url, "`grimace central init`", _init)


def _init(conn: Any) -> InitReport:
    import sqlalchemy as sa

    sql = _sql()
    rep = InitReport()
    ch = rep.changes
    before = 0
    if _one(conn, "SELECT to_regclass('grimace_meta') IS NOT NULL"):
        before = int(_one(conn, "SELECT value FROM grimace_meta WHERE key='schema_version'") or 0)
    after = migrate_central(conn)  # takes the schema advisory lock for the whole transaction
    if after != before:
        ch.append(f"central schema version {before} -> {after}")
    done = conn.execute(
        sa.text("INSERT INTO grimace_meta (key, value) VALUES ('access', 'roles') ON CONFLICT DO NOTHING")
    ).rowcount
    if done:
        ch.append("grimace_meta.access = 'roles' (grimace sync runs no DDL from now on)")

    insp = sa.inspect(conn)
    store_cols = _store_columns()
    for spec in SYNC_TABLES:
        cols = store_cols.get(spec.name)
        if cols is None:
            continue
        existed = insp.has_table(spec.name)
        have = {c["name"] for c in insp.get_columns(spec.name)} if existed else set()
        table = _central_table(conn, spec, cols, ddl=True)
        added = [c.name for c in table.columns if c.name not in have]
        if not existed:
            ch.append(f"created table {spec.name}")
        elif added:
            ch.append(f"added column(s) {', '.join(added)} to {spec.name}")

    for name, (table, cols) in VIEW_INDEXES.items():
        if _one(conn, "SELECT to_regclass(:n) IS NULL", n=name):
            _x(
                conn,
                sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} ({})").format(
                    sql.Identifier(name), sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, cols))
                ),
            )
            ch.append(f"created index {name} on {table}")

    for group in (STATION_ROLE, READER_ROLE):
        login = conn.execute(
            sa.text("SELECT rolcanlogin FROM pg_roles WHERE rolname=:g"), {"g": group}
        ).first()
        if login is None:
            _x(conn, sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(group)))
            ch.append(f"created group role {group}")
        elif login[0]:
            raise SyncError(f"role {group!r} exists and can log in; it must be a group role (NOLOGIN)")

    schema = str(_one(conn, "SELECT current_schema()"))
    s_id = sql.Identifier(schema)
    if _one(conn, "SELECT has_schema_privilege('public', :s, 'CREATE')", s=schema):
        _x(conn, sql.SQL("REVOKE CREATE ON SCHEMA {} FROM PUBLIC").format(s_id))
        ch.append(f"revoked CREATE on schema {schema} from PUBLIC")
    db = str(_one(conn, "SELECT current_database()"))
    for group in (STATION_ROLE, READER_ROLE):
        g_id = sql.Identifier(group)
        if not _one(conn, "SELECT has_schema_privilege(:g, :s, 'USAGE')", g=group, s=schema):
            _x(conn, sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(s_id, g_id))
            ch.append(f"granted USAGE on schema {schema} to {group}")
        if not _one(conn, "SELECT has_database_privilege(:g, :d, 'CONNECT')", g=group, d=db):
            _x(conn, sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(db), g_id))
            ch.append(f"granted CONNECT on database {db} to {group}")

    me = str(_one(conn, "SELECT current_user::text"))
    keyed = [t.name for t in SYNC_TABLES if _one(conn, "SELECT to_regclass(:t) IS NOT NULL", t=t.name)]
    keyed += BOOKKEEPING
    for t in keyed:
        t_id = sql.Identifier(t)
        owner = _one(conn, "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = to_regclass(:t)", t=t)
        if owner != me:
            _x(conn, sql.SQL("ALTER TABLE {} OWNER TO CURRENT_USER").format(t_id))
            ch.append(f"{t}: owner {owner} -> {me}")
        _grants(conn, t, {STATION_ROLE: STATION_PRIVILEGES, READER_ROLE: ("SELECT",)}, REVOKED, ch)
        flags = conn.execute(
            sa.text("SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid = to_regclass(:t)"),
            {"t": t},
        ).one()
        if not flags[0]:
            _x(conn, sql.SQL("ALTER TABLE {} ENABLE ROW LEVEL SECURITY").format(t_id))
            ch.append(f"{t}: row-level security enabled")
        if not flags[1]:
            _x(conn, sql.SQL("ALTER TABLE {} FORCE ROW LEVEL SECURITY").format(t_id))
            ch.append(f"{t}: row-level security forced (the owner too)")
        have = {
            r[0]
            for r in conn.execute(
                sa.text("SELECT policyname FROM pg_policies WHERE schemaname=:s AND tablename=:t"),
                {"s": schema, "t": t},
            )
        }
        for name, body in POLICIES.items():
            if name in have:
                continue
            rest = sql.SQL(body).format(
                station=sql.Identifier(STATION_ROLE), reader=sql.Identifier(READER_ROLE)
            )
            _x(conn, sql.SQL("CREATE POLICY {} ON {} ").format(sql.Identifier(name), t_id) + rest)
            ch.append(f"{t}: policy {name}")
    _grants(conn, "grimace_meta", {STATION_ROLE: ("SELECT",), READER_ROLE: ("SELECT",)}, (), ch)
    rep.tables = keyed
    return rep


def _grants(
    conn: Any, table: str, want: dict[str, tuple[str, ...]], revoke: tuple[str, ...], changes: list[str]
) -> None:
    """Grant each group the privileges it lacks on ``table`` and revoke ``revoke`` where held."""
    sql = _sql()
    for group, privs in want.items():
        g_id, t_id = sql.Identifier(group), sql.Identifier(table)
        held = {
            p
            for p in (*privs, *revoke)
            if _one(conn, "SELECT has_table_privilege(:g, to_regclass(:t), :p)", g=group, t=table, p=p)
        }
        grant = [p for p in privs if p not in held]
        drop = [p for p in revoke if p in held]
        if grant:
            _x(conn, sql.SQL("GRANT {} ON TABLE {} TO {}").format(sql.SQL(", ".join(grant)), t_id, g_id))
            changes.append(f"{table}: granted {', '.join(grant)} to {group}")
        if drop:
            _x(conn, sql.SQL("REVOKE {} ON TABLE {} FROM {}").format(sql.SQL(", ".join(drop)), t_id, g_id))
            changes.append(f"{table}: revoked {', '.join(drop)} from {group}")


# ----------------------------------------------------------------------------------------- logins
def new_password() -> str:
    """A generated password (32 URL-safe characters, 192 bits)."""
    return secrets.token_urlsafe(24)


def check_login_name(name: str) -> str:
    """A login name: a valid station id (:func:`~edge.scale.sync.check_station_id`), not a group's
    name and not PostgreSQL's reserved ``pg_`` prefix.

    Raises:
        SyncError: Another name.
    """
    check_station_id(name)
    if name.lower() in RESERVED or name.lower().startswith("pg_"):
        raise SyncError(f"{name!r} is reserved (a group role, 'public' or PostgreSQL's pg_ prefix)")
    return name


def add_login(url: str, name: str, group: str, password: str, *, reset: bool = False) -> None:
    """Create the LOGIN role ``name`` in ``group`` (or, with ``reset``, give that member a new password).

    Args:
        url: The admin connection (as for :func:`init_central`).
        name: The login (for a station: its station id).
        group: :data:`~edge.scale.sync.STATION_ROLE` or :data:`~edge.scale.sync.READER_ROLE`.
        password: Its password (:func:`new_password`); stored by the server as a SCRAM verifier
            computed here.
        reset: The role exists already in ``group``: set the new password (and LOGIN) instead.

    Raises:
        SyncError: Bad name, ``central init`` not run, the role exists (without ``reset``) or is not a
            plain member of ``group`` (with it), refused by the server.
        CentralUnavailable: The server cannot be reached.
    """
    import sqlalchemy as sa

    check_login_name(name)
    if group not in (STATION_ROLE, READER_ROLE):
        raise SyncError(f"unknown group {group!r}")

    def body(conn: Any) -> None:
        sql = _sql()
        if _one(conn, "SELECT count(*) FROM pg_roles WHERE rolname=:g", g=group) == 0:
            raise SyncError(f"there is no role {group!r} yet: run `grimace central init` first")
        row = conn.execute(
            sa.text(
                "SELECT r.rolsuper, EXISTS (SELECT 1 FROM pg_auth_members m "
                "JOIN pg_roles g ON g.oid = m.roleid WHERE m.member = r.oid AND g.rolname = :g) AS member "
                "FROM pg_roles r WHERE r.rolname = :n"
            ),
            {"g": group, "n": name},
        ).first()
        raw = conn.connection.driver_connection
        verifier = raw.pgconn.encrypt_password(password.encode(), name.encode(), b"scram-sha-256").decode()
        n_id = sql.Identifier(name)
        if row is None:
            if reset:
                raise SyncError(
                    f"there is no role {name!r} to reset; leave out --reset-password to create it"
                )
            _x(
                conn,
                sql.SQL(
                    "CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION INHERIT "
                    "PASSWORD {} IN ROLE {}"
                ).format(n_id, sql.Literal(verifier), sql.Identifier(group)),
            )
            return
        if not reset:
            raise SyncError(f"role {name!r} exists already; --reset-password gives it a new password")
        if row.rolsuper or not row.member:
            raise SyncError(
                f"role {name!r} is not a plain member of {group}; its password is not changed here"
            )
        _x(conn, sql.SQL("ALTER ROLE {} WITH LOGIN PASSWORD {}").format(n_id, sql.Literal(verifier)))

    _run(url, f"adding login {name!r}", body)


def login_url(url: str, name: str) -> str:
    """The admin URL with ``name`` as user and no password (what a station or reader connects to)."""
    from sqlalchemy.engine import URL, make_url

    from edge.scale.sync import engine_url

    u = make_url(engine_url(url))
    clean = URL.create(
        "postgresql", username=name, host=u.host, port=u.port, database=u.database, query=u.query
    )
    return clean.render_as_string(hide_password=False)
