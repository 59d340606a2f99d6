"""The read-only facility view (``grimace station --central``) over a REAL PostgreSQL server (the
shared fixture of tests/pg_helpers.py): two stations' stores synced in with ``sync_once``, then the
pages through FastAPI's TestClient. Login on every page, both stations listed, a study's table equal
to the station's own, a half-synced session shown as incomplete, escaping, images served only from
the image folder, and a connection that the server refuses to write through."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest.importorskip("sqlalchemy")
pytest.importorskip("psycopg")
pytest.importorskip("fastapi")

import sqlalchemy as sa
from fastapi.testclient import TestClient

from edge.scale.sync import sync_once
from edge.scales import RGS
from edge.station import auth, views
from edge.station.central import CentralReader, create_central_app, read_only_engine
from edge.station.study import Protocol, Study
from edge.storage import Store

pytest.register_assert_rewrite("tests.pg_helpers")  # before its import: it is also a plugin (below)
from tests.pg_helpers import PgServer, add_frames  # noqa: E402

pytest_plugins = ["tests.pg_helpers"]  # the pg and central fixtures

PW = "correct horse battery"
XSS = '<script>alert("x")</script>'


class Interrupted(RuntimeError):
    """Raised from the sync's progress callback: the pass stops mid-way, as after a network cut."""


def make_study_station(folder: Path, seed: int, complete: dict[tuple[str, str], int]) -> Path:
    """A station store with study S1 (animals R1 sham with a script in its notes, R2 surgery;
    timepoints baseline, day1) and one session per ``(animal, timepoint) -> frames``; sessions with
    a positive count are completed, a negative count leaves the session running."""
    folder.mkdir(parents=True, exist_ok=True)
    with Store(folder / "grimace.sqlite") as st:
        study = Study(st)
        proto = Protocol("rgs", 5.0, 60.0, 2.0)
        study.add_study("S1", proto, title=f"pain {XSS}")
        study.add_animal("S1", "R1", group="sham", sex="f", notes=XSS)
        study.add_animal("S1", "R2", group="surgery", sex="m")
        for t in ("baseline", "day1"):
            study.add_timepoint("S1", t)
        study.add_chamber("c1", "0")
        for (animal, tp), n in complete.items():
            sid = study.session_id_for("S1", animal, tp)
            st.open_session(sid, source="cam0", model="m.onnx", scale="rgs", interval_s=5, duration_s=60)
            study.link_session(sid, "S1", animal, tp, "c1", proto)
            add_frames(st, sid, 0, abs(n), seed + len(animal + tp))
            if n > 0:
                st.complete(sid, abs(n) * 0.5)
    return folder


def login(client: TestClient, name: str = "viewer") -> None:
    r = client.get("/login")
    pre = re.search(r'name="csrf" value="([^"]+)"', r.text).group(1)
    r = client.post("/login", data={"name": name, "password": PW, "csrf": pre}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/stations", r.text


@pytest.fixture
def facility(central: sa.Engine, pg: PgServer, tmp_path: Path):
    """Station a fully synced; station b's completed session interrupted mid-pass (frames in, its
    completion not); an image folder; a read-only engine and a logged-in client."""
    a = make_study_station(
        tmp_path / "a", 1, {("R1", "baseline"): 30, ("R2", "baseline"): 24, ("R1", "day1"): 20}
    )
    b = make_study_station(tmp_path / "b", 2, {("R1", "baseline"): 26, ("R2", "baseline"): -12})
    images = tmp_path / "images"
    sync_once(a, pg.url, station_id="cage-a", images_dir=images)

    def cut(msg: str) -> None:
        if msg.startswith("frames:"):
            raise Interrupted(msg)

    with pytest.raises(Interrupted):
        sync_once(b, pg.url, station_id="cage-b", images_dir=images, log=cut)
    data = tmp_path / "view"
    data.mkdir()
    with Store(data / "grimace.sqlite") as s:
        auth.create_user(s, "viewer", "admin", PW)
    engine = read_only_engine(pg.url)
    client = TestClient(create_central_app(data, engine, images))
    yield {"a": a, "b": b, "images": images, "engine": engine, "client": client, "pg": pg, "data": data}
    engine.dispose()


def test_every_page_needs_a_login(facility: dict) -> None:
    c = facility["client"]
    urls = [
        "/",
        "/stations",
        "/stations/cage-a",
        "/stations/cage-a/studies/S1",
        "/stations/cage-a/sessions/S1-R1-baseline",
        "/stations/cage-a/frames/1.jpg",
    ]
    for url in urls:
        r = c.get(url, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/login", url
    login(c)
    for url in urls[:-1]:
        assert c.get(url).status_code == 200, url
    # graders stay blinded: the view (scores per animal and group) is for admins only
    with Store(facility["data"] / "grimace.sqlite") as s:
        auth.create_user(s, "ann", "grader", PW)
    g = TestClient(c.app)
    login(g, "ann")
    assert all(g.get(url).status_code == 403 for url in urls[1:])
    # the view has no forms but login/logout: nothing to post to
    assert c.post("/stations/cage-a/studies/S1/animals", data={}).status_code in (404, 405)


def test_stations_listed_with_incomplete_sessions(facility: dict) -> None:
    c = facility["client"]
    login(c)
    page = c.get("/stations").text
    rows = dict(re.findall(r'<tr data-station="([^"]+)">(.*?)</tr>', page, re.S))
    assert set(rows) == {"cage-a", "cage-b"}

    def cell(row: str, cls: str) -> str:
        return re.sub(r"<[^>]+>", "", re.search(rf'class="{cls}">(.*?)</td>', row, re.S).group(1)).strip()

    for sid, folder in (("cage-a", facility["a"]), ("cage-b", facility["b"])):
        with Store(folder / "grimace.sqlite") as s:
            n_sessions = s.db.execute("SELECT COUNT(*) FROM sessions").fetchone()[0]
            n_frames = s.db.execute("SELECT COUNT(*) FROM frames").fetchone()[0]
        assert cell(rows[sid], "n-sessions") == str(n_sessions)
        assert cell(rows[sid], "n-frames") == str(n_frames)
    assert cell(rows["cage-a"], "n-incomplete") == "0"
    # b: one session complete on the station but its sync was cut, one still running: both incomplete
    assert cell(rows["cage-b"], "n-incomplete") == "2 incomplete"
    assert cell(rows["cage-b"], "n-complete") == "0"
    session = c.get("/stations/cage-b/sessions/S1-R1-baseline").text
    assert re.search(r'class="session-status">incomplete<', session)
    # the next pass completes it
    sync_once(facility["b"], facility["pg"].url, station_id="cage-b", images_dir=facility["images"])
    session = c.get("/stations/cage-b/sessions/S1-R1-baseline").text
    assert re.search(r'class="session-status">complete<', session)
    assert re.search(
        r'class="session-status">incomplete<', c.get("/stations/cage-b/sessions/S1-R2-baseline").text
    )


def test_study_table_equals_the_stations_own(facility: dict) -> None:
    reader = CentralReader(facility["engine"])
    cut = reader.study("cage-b", "S1")  # the interrupted pass pushed no selected frame: no score yet
    assert [c["score"] for r in cut["table"] for c in r["cells"] if c] == [None, None]
    sync_once(facility["b"], facility["pg"].url, station_id="cage-b", images_dir=facility["images"])
    for sid, folder in (("cage-a", facility["a"]), ("cage-b", facility["b"])):
        with Store(folder / "grimace.sqlite") as s:
            local = views.study_view(s, "S1", RGS)
        got = reader.study(sid, "S1")
        assert got["timepoints"] == local["timepoints"]

        def cells(v: dict) -> list[tuple]:
            return [
                (r["animal"]["id"], *[(c["session_id"], c["score"]) if c else None for c in r["cells"]])
                for r in v["table"]
            ]

        assert cells(got) == cells(local)
        assert any(c for r in cells(got) for c in r[1:])  # there are scores to compare
        assert [[(c["mean"], c["n"]) for c in g["cells"]] for g in got["groups"]] == [
            [(c["mean"], c["n"]) for c in g["cells"]] for g in local["groups"]
        ]
    # the page shows the same numbers, stations kept apart (same study and animal ids on both)
    c = facility["client"]
    login(c)
    for sid, folder in (("cage-a", facility["a"]), ("cage-b", facility["b"])):
        page = c.get(f"/stations/{sid}/studies/S1").text
        with Store(folder / "grimace.sqlite") as s:
            want = {
                (x["animal_id"], x["timepoint_id"]): views._fmt(x["score"])
                for x in views.session_scores(s, "S1")
            }
        shown = dict(re.findall(r'href="/stations/' + sid + r'/sessions/S1-([^"]+)">([^<]+)</a>', page))
        assert shown == {f"{a}-{t}": v for (a, t), v in want.items()}


def test_script_in_names_renders_as_text(facility: dict) -> None:
    c = facility["client"]
    login(c)
    for url in ("/stations/cage-a/studies/S1", "/stations", "/stations/cage-a"):
        page = c.get(url).text
        assert "<script>alert" not in page, url
    page = c.get("/stations/cage-a/studies/S1").text
    assert page.count("&lt;script&gt;alert(") == 2  # the study title and the animal's notes


def test_images_only_from_the_image_folder(facility: dict, central: sa.Engine, tmp_path: Path) -> None:
    c = facility["client"]
    login(c)
    page = c.get("/stations/cage-a/sessions/S1-R1-baseline").text
    ids = re.findall(r'src="/stations/cage-a/frames/(\d+)\.jpg"', page)
    assert ids
    r = c.get(f"/stations/cage-a/frames/{ids[0]}.jpg")
    with central.connect() as conn:
        rel = conn.execute(
            sa.text("SELECT image_path FROM intervals WHERE station_id='cage-a' AND frame_id=:f"),
            {"f": int(ids[0])},
        ).scalar()
    assert r.status_code == 200 and r.content == (facility["images"] / rel).read_bytes()
    # a central row pointing outside the folder is refused (written with the test's own login)
    (tmp_path / "secret.jpg").write_bytes(b"secret")
    with central.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE intervals SET image_path='../secret.jpg' WHERE station_id='cage-a' AND frame_id=:f"
            ),
            {"f": int(ids[0])},
        )
    assert c.get(f"/stations/cage-a/frames/{ids[0]}.jpg").status_code == 404
    # without --images no image is shown or served
    plain = TestClient(create_central_app(tmp_path / "view", facility["engine"], None))
    login(plain)
    assert "/frames/" not in plain.get("/stations/cage-a/sessions/S1-R1-baseline").text
    assert plain.get(f"/stations/cage-a/frames/{ids[1]}.jpg").status_code == 404


def test_the_connection_refuses_writes(facility: dict) -> None:
    eng = facility["engine"]  # logged in as the server's superuser: only the connection's mode stops it
    with eng.connect() as conn:
        assert conn.execute(sa.text("SHOW default_transaction_read_only")).scalar() == "on"
        assert conn.execute(sa.text("SHOW transaction_read_only")).scalar() == "on"
    n = CentralReader(eng).stations()
    for stmt in (
        "INSERT INTO stations (station_id, host, first_sync_at, last_sync_at) VALUES ('x', 'h', 0, 0)",
        "UPDATE sessions SET status='complete'",
        "CREATE TABLE intruder (x int)",
    ):
        with pytest.raises(sa.exc.DBAPIError, match="read-only transaction"), eng.begin() as conn:
            conn.execute(sa.text(stmt))
    assert CentralReader(eng).stations() == n


def test_cli_binds_loopback_until_a_password_and_names_an_unreachable_database(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from edge.station.cli import app

    run = CliRunner().invoke
    url = "postgresql://reader@127.0.0.1:9/none"  # port 9 (discard): nothing listens
    r = run(app, ["--data", str(tmp_path / "v"), "--central", url, "--host", "0.0.0.0"])
    assert r.exit_code == 2 and "needs an admin password first" in r.output
    with Store(tmp_path / "v" / "grimace.sqlite") as s:
        auth.create_user(s, "admin", "admin", PW)
    r = run(app, ["--data", str(tmp_path / "v"), "--central", url.replace("reader@", "reader:pw@")])
    assert r.exit_code == 2 and "central database postgresql://reader:***@127.0.0.1:9/none" in r.output
    assert "pw@" not in r.output
    r = run(app, ["--data", str(tmp_path / "v"), "--model", "m.onnx", "--images", str(tmp_path)])
    assert r.exit_code == 2 and "--images is for the facility view" in r.output


def test_long_lists_are_paged(facility: dict, central: sa.Engine) -> None:
    """120 more stations, a station with 130 sessions and 60 studies, a session of 260 frames
    (inserted directly): every list comes 50 rows at a time, with totals and next/previous links
    that keep the other list's page, and no statement of a list page fetches more than a page."""
    with central.begin() as c:
        c.execute(
            sa.text(
                "INSERT INTO stations (station_id, host, first_sync_at, last_sync_at) "
                "SELECT 'bulk-' || lpad(i::text, 3, '0'), 'h', 0, 0 FROM generate_series(1, 120) i"
            )
        )
        c.execute(
            sa.text(
                "INSERT INTO sessions (station_id, id, status, scale, duration_s, started_at, updated_at, "
                "synced_at) SELECT 'bulk-001', 'sess-' || lpad(i::text, 3, '0'), "
                "CASE WHEN i % 3 = 0 THEN 'complete' ELSE 'running' END, 'rgs', 900, 1.7e9 + i, 1.7e9 + i, 0 "
                "FROM generate_series(1, 130) i"
            )
        )
        c.execute(
            sa.text(
                "INSERT INTO frames (station_id, id, session_id, frame_index, t_s, score, quality, n_boxes, "
                "synced_at) SELECT 'bulk-001', i, 'sess-130', i - 1, (i - 1) * 0.5, (i % 5) * 0.4, 0.8, 1, 0 "
                "FROM generate_series(1, 260) i"
            )
        )
        c.execute(
            sa.text(
                "INSERT INTO studies (station_id, id, title, scale, synced_at) "
                "SELECT 'bulk-001', 'ST' || lpad(i::text, 2, '0'), :t, 'rgs', 0 FROM generate_series(1, 60) i"
            ),
            {"t": XSS},
        )
    fetched: list[int] = []

    def count(_conn, cursor, _stmt, _params, _ctx, _many) -> None:
        fetched.append(cursor.rowcount)

    eng = facility["engine"]
    sa.event.listen(eng, "after_cursor_execute", count)
    c = facility["client"]
    login(c)

    def nav(page: str, param: str) -> dict:
        m = re.search(rf'<nav class="pager small" data-param="{param}"(.*?)</nav>', page, re.S)
        body = m.group(1)
        return {
            "attrs": dict(re.findall(r'data-(page|pages|total)="(\d+)"', body)),
            "prev": re.findall(r'rel="prev" href="([^"]+)"', body),
            "next": re.findall(r'rel="next" href="([^"]+)"', body),
            "text": re.sub(r"<[^>]+>|\s+", " ", body),
        }

    fetched.clear()
    page = c.get("/stations").text
    assert fetched and max(fetched) <= 50, fetched
    ids = re.findall(r'<tr data-station="([^"]+)">', page)
    assert len(ids) == 50 and ids == sorted(ids)
    n = nav(page, "page")
    assert n["attrs"] == {"page": "1", "pages": "3", "total": "122"} and "stations 1–50 of 122" in n["text"]
    assert n["prev"] == [] and n["next"] == ["/stations?page=2"]
    seen = list(ids)
    for p in (2, 3):
        page = c.get(f"/stations?page={p}").text
        seen += re.findall(r'<tr data-station="([^"]+)">', page)
    assert len(seen) == 122 == len(set(seen)) and {"cage-a", "cage-b", "bulk-120"} <= set(seen)
    assert nav(page, "page")["next"] == [] and nav(page, "page")["prev"] == ["/stations?page=2"]
    assert 'data-page="3"' in c.get("/stations?page=99").text  # past the end: the last page
    assert c.get("/stations?page=0").status_code == 422
    assert c.get("/stations?page=x").status_code == 422
    row = dict(re.findall(r'<tr data-station="([^"]+)">(.*?)</tr>', c.get("/stations").text, re.S))[
        "bulk-001"
    ]
    assert len(re.findall(r"/studies/ST\d\d", row)) == 5 and 'href="/stations/bulk-001">all 60</a>' in row

    fetched.clear()
    page = c.get("/stations/bulk-001").text
    assert fetched and max(fetched) <= 50, fetched
    sess = re.findall(r'href="/stations/bulk-001/sessions/(sess-\d+)"', page)
    assert sess == [f"sess-{i:03d}" for i in range(130, 80, -1)]  # newest first
    assert len(re.findall(r'href="/stations/bulk-001/studies/ST', page)) == 50
    assert "<script>alert" not in page and page.count("&lt;script&gt;alert(") == 50
    page = c.get("/stations/bulk-001?page=3&studies_page=2").text
    assert re.findall(r'href="/stations/bulk-001/sessions/(sess-\d+)"', page) == [
        f"sess-{i:03d}" for i in range(30, 0, -1)
    ]
    assert len(re.findall(r'href="/stations/bulk-001/studies/ST', page)) == 10
    n, ns = nav(page, "page"), nav(page, "studies_page")
    assert n["attrs"] == {"page": "3", "pages": "3", "total": "130"} and n["next"] == []
    assert n["prev"] == ["/stations/bulk-001?page=2&amp;studies_page=2"]
    assert ns["prev"] == ["/stations/bulk-001?page=3&amp;studies_page=1"] and ns["next"] == []

    page = c.get("/stations/bulk-001/sessions/sess-130").text
    assert "260 frames synced" in page  # the plot and counts cover the whole session
    frames = re.findall(r'<tr data-frame="(\d+)">', page)
    assert frames == [str(i) for i in range(1, 51)]
    assert "frames 1–50 of 260" in nav(page, "page")["text"]
    page = c.get("/stations/bulk-001/sessions/sess-130?page=6").text
    assert re.findall(r'<tr data-frame="(\d+)">', page) == [str(i) for i in range(251, 261)]
    sa.event.remove(eng, "after_cursor_execute", count)
    reader = CentralReader(eng)
    got = reader.station_sessions("bulk-001", page=2)
    assert [r["id"] for r in got.rows] == [f"sess-{i:03d}" for i in range(80, 30, -1)]
    assert (got.page.total, got.page.pages, got.page.first, got.page.last) == (130, 3, 51, 100)
    assert len(reader.stations()) == 122
