"""Central-side enforcement (``grimace central init / add-station / add-reader``) on a REAL PostgreSQL
server (tests/pg_helpers.py) whose loopback logins other than the test superuser need their SCRAM
password, as a facility's would.

A non-superuser database owner with CREATEROLE sets the database up; each station's login syncs and
sees and writes only its own rows, even with raw SQL (row-level security, no DELETE, no DDL); a
station login asking for another station id is refused before anything is written; a newer store's
column is an error naming ``central init``; a reader reads every row and writes none, also through
the facility view; ``central init`` twice changes nothing.
"""

from __future__ import annotations

import os
import re
import sqlite3
from pathlib import Path

import pytest

pytest.importorskip("sqlalchemy")
pytest.importorskip("psycopg")

import sqlalchemy as sa
from typer.testing import CliRunner

from edge.scale.cli import app as sync_app
from edge.scale.cli import central_app
from edge.scale.sync import SyncError, sync_once
from edge.storage import Store

pytest.register_assert_rewrite("tests.pg_helpers")  # before its import: it is also a plugin (below)
from tests.pg_helpers import PgServer, add_frames  # noqa: E402

pytest_plugins = ["tests.pg_helpers"]  # the pg fixture

ADMIN_PW = "admin-secret"
run = CliRunner().invoke


def sa_url(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


@pytest.fixture(scope="module")
def scram(pg: PgServer) -> PgServer:
    """The module's server asking every loopback login but ``postgres`` for its SCRAM password."""
    (pg.data / "pg_hba.conf").write_text(
        "local all all trust\nhost all postgres 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n"
    )
    pg._run("pg_ctl", "-D", str(pg.data), "reload")
    return pg


@pytest.fixture
def facility(scram: PgServer) -> dict:
    """A fresh database ``grimace`` owned by ``facility_admin`` (LOGIN CREATEROLE, not a superuser),
    no other role; the admin's URL and a superuser engine on it."""
    root = sa.create_engine(sa_url(scram.url), isolation_level="AUTOCOMMIT")
    with root.connect() as c:
        c.execute(sa.text("DROP DATABASE IF EXISTS grimace WITH (FORCE)"))
        roles = c.execute(
            sa.text("SELECT rolname FROM pg_roles WHERE rolname !~ '^pg_' AND rolname <> 'postgres'")
        ).scalars()
        for r in roles:
            c.execute(sa.text(f'DROP OWNED BY "{r}"'))
            c.execute(sa.text(f'DROP ROLE "{r}"'))
        c.execute(sa.text(f"CREATE ROLE facility_admin LOGIN CREATEROLE PASSWORD '{ADMIN_PW}'"))
        c.execute(sa.text("CREATE DATABASE grimace OWNER facility_admin"))
    root.dispose()
    base = f"127.0.0.1:{scram.port}/grimace"
    su = sa.create_engine(f"postgresql+psycopg://postgres@{base}")
    yield {"admin": f"postgresql://facility_admin:{ADMIN_PW}@{base}", "base": base, "su": su, "pg": scram}
    su.dispose()


def add(kind: str, name: str, fac: dict, *extra: str) -> str:
    """``grimace central add-<kind> NAME``; the URL with the printed password."""
    r = run(central_app, [f"add-{kind}", name, "--db", fac["admin"], *extra])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    pw = lines[lines.index(next(x for x in lines if x.startswith("password (shown once"))) + 1]
    assert f"connect as: postgresql://{name}@{fac['base']}" in r.output
    return f"postgresql://{name}:{pw}@{fac['base']}"


def make_station(folder: Path, sessions: dict[str, tuple[int, bool]], seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with Store(folder / "grimace.sqlite") as st:
        for sid, (n, complete) in sessions.items():
            st.open_session(sid, source="cam0", model="m.onnx", scale="rgs", interval_s=5, duration_s=60)
            add_frames(st, sid, 0, n, seed)
            if complete:
                st.complete(sid, n * 0.5)
    return folder


def init(fac: dict) -> str:
    r = run(central_app, ["init", "--db", fac["admin"]])
    assert r.exit_code == 0, r.output
    assert ADMIN_PW not in r.output
    return r.output


def catalog(su: sa.Engine) -> dict:
    """Everything ``central init`` sets, read from the catalogs."""
    with su.connect() as c:
        q = {
            "roles": "SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname LIKE 'grimace%' ORDER BY 1",
            "tables": "SELECT relname, pg_get_userbyid(relowner), relacl::text, relrowsecurity, "
            "relforcerowsecurity FROM pg_class WHERE relnamespace = 'public'::regnamespace "
            "AND relkind = 'r' ORDER BY 1",
            "policies": "SELECT tablename, policyname, cmd, roles::text, qual, with_check FROM pg_policies "
            "ORDER BY 1, 2",
            "columns": "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'public' ORDER BY 1, 2",
            "indexes": "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1",
            "meta": "SELECT key, value FROM grimace_meta ORDER BY 1",
            "schema": "SELECT nspacl::text FROM pg_namespace WHERE nspname = 'public'",
        }
        return {k: [tuple(r) for r in c.execute(sa.text(v))] for k, v in q.items()}


KEYED = [
    "studies",
    "animals",
    "timepoints",
    "chambers",
    "sessions",
    "study_sessions",
    "frames",
    "detections",
    "intervals",
    "events",
    "grades",
    "stations",
    "sync_state",
]


def test_init_twice_changes_nothing(facility: dict) -> None:
    out = init(facility)
    assert "created group role grimace_station" in out and "frames: row-level security forced" in out
    first = catalog(facility["su"])
    tables = {t[0]: t for t in first["tables"]}
    for t in KEYED:  # every station-keyed table, the data tables included before any station synced
        assert tables[t][1] == "facility_admin" and tables[t][3] and tables[t][4], tables[t]
        pols = {p[1] for p in first["policies"] if p[0] == t}
        assert pols == {"grimace_station_own", "grimace_reader_all", "grimace_admin_all"}, t
    assert ("grimace_station", False) in first["roles"] and ("grimace_reader", False) in first["roles"]
    assert ("access", "roles") in first["meta"]
    again = init(facility)
    assert "already set up, nothing changed" in again
    assert catalog(facility["su"]) == first
    # a privilege granted by hand that stations must not have is taken back
    with facility["su"].begin() as c:
        c.execute(sa.text("GRANT DELETE, TRUNCATE ON frames TO grimace_station"))
    assert "frames: revoked DELETE, TRUNCATE from grimace_station" in init(facility)
    assert catalog(facility["su"]) == first


def test_each_station_writes_and_sees_only_its_own_rows(facility: dict, tmp_path: Path) -> None:
    init(facility)
    a_url, b_url = add("station", "cage-a", facility), add("station", "cage-b", facility)
    a = make_station(tmp_path / "a", {"s1": (20, True)}, seed=1)
    b = make_station(tmp_path / "b", {"s1": (12, True)}, seed=2)
    ra = sync_once(a, a_url)  # no --station: the login's name
    rb = sync_once(b, b_url, station_id="cage-b")
    assert (ra.station_id, ra.rows["frames"], ra.completed) == ("cage-a", 20, ["s1"])
    assert (rb.station_id, rb.rows["frames"]) == ("cage-b", 12)
    assert not any(sync_once(a, a_url).rows.values())  # a re-run through the role adds nothing
    with facility["su"].connect() as c:
        b_before = c.execute(sa.text("SELECT sum(score) FROM frames WHERE station_id='cage-b'")).scalar()
    eng = sa.create_engine(sa_url(a_url))
    with eng.connect() as c:
        for t in ("frames", "sessions", "stations", "sync_state", "intervals", "events"):
            got = set(c.execute(sa.text(f"SELECT DISTINCT station_id FROM {t}")).scalars())
            assert got == {"cage-a"}, t
        assert c.execute(sa.text("SELECT count(*) FROM frames")).scalar() == 20
    refused = {
        "INSERT INTO frames (station_id, id, session_id, frame_index, t_s, synced_at) "
        "VALUES ('cage-b', 999, 's1', 999, 0, 0)": "violates row-level security policy",
        "INSERT INTO stations (station_id, host, first_sync_at, last_sync_at) "
        "VALUES ('cage-c', 'h', 0, 0)": "violates row-level security policy",
        "UPDATE frames SET station_id='cage-b' WHERE id=1": "violates row-level security policy",
        "DELETE FROM frames WHERE station_id='cage-b'": "permission denied for table frames",
        "DELETE FROM frames": "permission denied for table frames",
        "TRUNCATE frames": "permission denied for table frames",
        "CREATE TABLE intruder (x int)": "permission denied for schema public",
        "ALTER TABLE frames DISABLE ROW LEVEL SECURITY": "must be owner",
        "DROP POLICY grimace_station_own ON frames": "must be owner",
        "UPDATE grimace_meta SET value='0'": "permission denied for table grimace_meta",
    }
    for stmt, msg in refused.items():
        with pytest.raises(sa.exc.DBAPIError, match=msg), eng.begin() as c:
            c.execute(sa.text(stmt))
    with eng.begin() as c:  # B's rows are invisible: an UPDATE aimed at them touches nothing
        assert c.execute(sa.text("UPDATE frames SET score=0 WHERE station_id='cage-b'")).rowcount == 0
        assert c.execute(sa.text("UPDATE sync_state SET watermark=0 WHERE station_id='cage-b'")).rowcount == 0
    eng.dispose()
    with facility["su"].connect() as c:
        assert (
            c.execute(sa.text("SELECT sum(score) FROM frames WHERE station_id='cage-b'")).scalar() == b_before
        )
        n = dict(c.execute(sa.text("SELECT station_id, count(*) FROM frames GROUP BY 1")).fetchall())
        wm = c.execute(sa.text("SELECT min(watermark) FROM sync_state WHERE station_id='cage-b'")).scalar()
    assert n == {"cage-a": 20, "cage-b": 12} and wm > 0


def test_a_station_login_cannot_sync_as_another_station(facility: dict, tmp_path: Path) -> None:
    init(facility)
    a_url = add("station", "cage-a", facility)
    a = make_station(tmp_path / "a", {"s1": (8, True)})
    r = run(sync_app, [str(a), "--to", a_url, "--station", "cage-b"])
    assert r.exit_code == 2, r.output
    assert "this credential is station 'cage-a': it cannot sync as station 'cage-b'" in r.output
    assert a_url.split(":")[2].split("@")[0] not in r.output  # the password is not printed
    with facility["su"].connect() as c:
        assert c.execute(sa.text("SELECT count(*) FROM stations")).scalar() == 0
        assert c.execute(sa.text("SELECT count(*) FROM frames")).scalar() == 0
    r = run(sync_app, [str(a), "--to", a_url])
    assert r.exit_code == 0 and "station cage-a: " in r.output, r.output


def test_a_newer_store_column_asks_for_central_init(
    facility: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    init(facility)
    a_url = add("station", "cage-a", facility)
    a = make_station(tmp_path / "a", {"s1": (5, True)})
    sync_once(a, a_url)
    with Store(a / "grimace.sqlite") as st:  # more data, and the store of a newer grimace-edge
        st.open_session("s2", source="cam0", model="m.onnx", scale="rgs", interval_s=5, duration_s=60)
        add_frames(st, "s2", 0, 4)
    db = sqlite3.connect(a / "grimace.sqlite")
    db.execute("ALTER TABLE frames ADD COLUMN pose TEXT")
    db.execute("UPDATE frames SET pose='side'")
    db.commit()
    db.close()
    before = catalog(facility["su"])
    with pytest.raises(
        SyncError, match=r"lacks column\(s\) \['pose'\].*grimace central init.*nothing was pushed"
    ):
        sync_once(a, a_url)
    with facility["su"].connect() as c:
        assert c.execute(sa.text("SELECT count(*) FROM sessions")).scalar() == 1  # s2 not pushed either
    assert catalog(facility["su"]) == before
    # the owner's own sync does no DDL either once the database is managed
    with pytest.raises(SyncError, match="grimace central init"):
        sync_once(a, facility["admin"], station_id="cage-a")
    # the admin's newer grimace-edge knows the column: central init adds it, the station catches up
    from edge.scale import roles

    cols = roles._store_columns()
    monkeypatch.setattr(
        roles, "_store_columns", lambda: {**cols, "frames": [*cols["frames"], ("pose", "TEXT")]}
    )
    assert "added column(s) pose to frames" in init(facility)
    rep = sync_once(a, a_url)
    assert rep.rows["frames"] == 4 and rep.rows["sessions"] == 1
    with facility["su"].connect() as c:
        assert c.execute(sa.text("SELECT count(*) FROM frames WHERE pose='side'")).scalar() == 4


def test_reader_reads_every_station_and_writes_nothing(facility: dict, tmp_path: Path) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from edge.station import auth
    from edge.station.central import CentralReader, create_central_app, read_only_engine

    init(facility)
    urls = {s: add("station", s, facility) for s in ("cage-a", "cage-b")}
    reader_url = add("reader", "facility_view", facility)
    for i, (s, url) in enumerate(urls.items()):
        sync_once(make_station(tmp_path / s, {"s1": (6 + i, True)}, seed=i), url)
    eng = sa.create_engine(sa_url(reader_url))
    with eng.connect() as c:
        n = dict(c.execute(sa.text("SELECT station_id, count(*) FROM frames GROUP BY 1")).fetchall())
        assert n == {"cage-a": 6, "cage-b": 7}
    for stmt, msg in {
        "INSERT INTO stations (station_id, host, first_sync_at, last_sync_at) VALUES ('x', 'h', 0, 0)": (
            "permission denied"
        ),
        "UPDATE sessions SET status='running'": "permission denied",
        "DELETE FROM frames": "permission denied",
        "CREATE TABLE intruder (x int)": "permission denied",
    }.items():
        with pytest.raises(sa.exc.DBAPIError, match=msg), eng.begin() as c:
            c.execute(sa.text(stmt))
    eng.dispose()
    # a reader login is no station: it cannot sync
    with pytest.raises(SyncError, match="permission denied"):
        sync_once(tmp_path / "cage-a", reader_url, station_id="facility_view")
    # the facility view through the reader role
    view = read_only_engine(reader_url)
    assert {s["station_id"]: s["frames"] for s in CentralReader(view).stations().rows} == {
        "cage-a": 6,
        "cage-b": 7,
    }
    data = tmp_path / "view"
    data.mkdir()
    with Store(data / "grimace.sqlite") as s:
        auth.create_user(s, "viewer", "admin", "correct horse battery")
    client = TestClient(create_central_app(data, view, None))
    pre = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text).group(1)
    client.post("/login", data={"name": "viewer", "password": "correct horse battery", "csrf": pre})
    assert 'data-station="cage-b"' in client.get("/stations").text
    assert client.get("/stations/cage-a/sessions/s1").status_code == 200
    view.dispose()


def test_logins_names_passwords_and_reset(facility: dict, tmp_path: Path) -> None:
    r = run(central_app, ["add-station", "cage-a", "--db", facility["admin"]])
    assert r.exit_code == 2 and "run `grimace central init` first" in r.output
    init(facility)
    for bad in ("../x", "pg_sneaky", "grimace_station", "a b", "x" * 65):
        r = run(central_app, ["add-station", bad, "--db", facility["admin"]])
        assert r.exit_code == 2 and "error:" in r.output, (bad, r.output)
    # an odd but valid name is quoted, never formatted into SQL
    url = add("station", "Cage.7-b_", facility)
    st = make_station(tmp_path / "st", {"s1": (3, True)})
    assert sync_once(st, url).station_id == "Cage.7-b_"
    with facility["su"].connect() as c:
        stored = c.execute(sa.text("SELECT rolpassword FROM pg_authid WHERE rolname='Cage.7-b_'")).scalar()
    assert stored.startswith("SCRAM-SHA-256$")  # the server never saw the plain password
    r = run(central_app, ["add-station", "Cage.7-b_", "--db", facility["admin"]])
    assert r.exit_code == 2 and "exists already" in r.output
    # a new password: the old one stops working
    pw_file = tmp_path / "cage.pw"
    r = run(
        central_app,
        [
            "add-station",
            "Cage.7-b_",
            "--db",
            facility["admin"],
            "--reset-password",
            "--password-file",
            str(pw_file),
        ],
    )
    assert r.exit_code == 0, r.output
    new_pw = pw_file.read_text().strip()
    assert new_pw not in r.output and len(new_pw) >= 32 and os.stat(pw_file).st_mode & 0o777 == 0o600
    with pytest.raises(SyncError, match="password authentication failed"):
        sync_once(st, url)
    assert sync_once(st, f"postgresql://Cage.7-b_:{new_pw}@{facility['base']}").station_id == "Cage.7-b_"
    r = run(central_app, ["add-reader", "v", "--db", facility["admin"], "--password-file", str(pw_file)])
    assert r.exit_code == 2 and "must be new" in r.output
    r = run(central_app, ["add-reader", "facility_admin", "--db", facility["admin"], "--reset-password"])
    assert r.exit_code == 2 and "not a plain member of grimace_reader" in r.output


def test_init_takes_over_tables_a_station_created(facility: dict, tmp_path: Path) -> None:
    """Before ``central init``, the first station to sync created (so owned) the tables; init moves
    them to the admin, after which that login is bound by row-level security like any other."""
    with facility["su"].begin() as c:
        c.execute(sa.text("CREATE ROLE early LOGIN PASSWORD 'early-pw'"))
        c.execute(sa.text("GRANT CREATE ON SCHEMA public TO early"))
    early = f"postgresql://early:early-pw@{facility['base']}"
    st = make_station(tmp_path / "st", {"s1": (4, True)})
    assert sync_once(st, early, station_id="early").rows["frames"] == 4  # unmanaged: it creates the tables
    # the database owner is no member of 'early': the server refuses, and the message says who may
    r = run(central_app, ["init", "--db", facility["admin"]])
    assert r.exit_code == 2 and "refused `grimace central init`: permission denied" in r.output
    assert "as a superuser" in r.output
    su_url = f"postgresql://postgres@{facility['base']}"
    r = run(central_app, ["init", "--db", su_url])
    assert r.exit_code == 0 and "frames: owner early -> postgres" in r.output, r.output
    with facility["su"].begin() as c:
        c.execute(sa.text("GRANT grimace_station TO early"))
        c.execute(sa.text("REVOKE CREATE ON SCHEMA public FROM early"))
    assert not any(sync_once(st, early).rows.values())  # now a station login: as itself only, no DDL
    with pytest.raises(SyncError, match="this credential is station 'early'"):
        sync_once(st, early, station_id="other")
    eng = sa.create_engine(sa_url(early))
    with pytest.raises(sa.exc.DBAPIError, match="must be owner"), eng.begin() as c:
        c.execute(sa.text("ALTER TABLE frames NO FORCE ROW LEVEL SECURITY"))
    eng.dispose()
