"""The station app without a browser (FastAPI TestClient): the whole flow on two chambers with one
batching model, and the security rules (login on every page and form, CSRF, cross-site posts,
path-traversal frame ids, escaping of names)."""

from __future__ import annotations

import io
import re
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from fastapi.testclient import TestClient

from edge.predictor import load_model
from edge.station import auth
from edge.station.app import create_app
from edge.station.chambers import Station
from edge.station.study import Protocol, Study
from edge.storage import Store
from tests.station_helpers import make_model, make_video

PW = "correct horse battery"
XSS = '<script>alert("x")</script>'


@pytest.fixture(scope="module")
def station(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("station")
    model = make_model(root)
    vids = [make_video(root / f"cam{i}.mp4", 6, seed=i) for i in range(2)]
    data = root / "data"
    st = Station(load_model(model, threads=1), data, realtime=0.0)
    for i, v in enumerate(vids):
        st.add_chamber(f"c{i + 1}", str(v))
    with Store(st.db_path) as s:
        auth.create_user(s, "admin", "admin", PW)
        auth.create_user(s, "alice", "grader", PW)
        auth.create_user(s, "bob", "grader", PW)
    yield st
    st.close()


def _without_tokens(html: str) -> str:
    """The page without its CSRF token values (random text that can contain any short id)."""
    return re.sub(r'name="csrf" value="[^"]*"', 'name="csrf"', html)


def _login(client: TestClient, name: str) -> str:
    r = client.get("/login")
    pre = re.search(r'name="csrf" value="([^"]+)"', r.text).group(1)
    r = client.post("/login", data={"name": name, "password": PW, "csrf": pre}, follow_redirects=False)
    assert r.status_code == 303, r.text
    page = client.get("/grade")
    return re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)


def test_flow_two_chambers_grading_validation_export(station: Station) -> None:
    c = TestClient(create_app(station))
    csrf = _login(c, "admin")
    post = lambda url, **d: c.post(url, data={"csrf": csrf, **d}, follow_redirects=False)  # noqa: E731
    assert post("/studies", study_id="S1", interval_s="1", duration_s="4", fps="4").status_code == 303
    assert post("/studies/S1/animals", animal_id="R1", group="sham", sex="f", notes=XSS).status_code == 303
    assert post("/studies/S1/animals", animal_id="R2", group="surgery", sex="m").status_code == 303
    for t in ("baseline", "day1"):
        post("/studies/S1/timepoints", timepoint_id=t)
    assert post("/chambers/c1/start", subject="S1/R1", timepoint="baseline").status_code == 303
    assert post("/chambers/c2/start", subject="S1/R2", timepoint="baseline").status_code == 303
    for _ in range(300):
        if all(ch.state == "complete" for ch in station.chambers.values()):
            break
        time.sleep(0.1)
    assert [ch.state for ch in station.chambers.values()] == ["complete", "complete"], [
        ch.status() for ch in station.chambers.values()
    ]
    assert station.scorer.mean_batch > 1.0  # frames of the two chambers shared inference calls
    page = c.get("/sessions/S1-R1-baseline").text
    assert "interval 4" in page and "<svg" in page and "complete" in page
    frame_ids = [int(f) for f in re.findall(r'data-frame="(\d+)"', page)]
    assert len(frame_ids) == 4
    assert c.get(f"/frames/{frame_ids[0]}.jpg?annotated=1").headers["content-type"] == "image/jpeg"
    study = c.get("/studies/S1").text
    assert XSS not in study and "&lt;script&gt;" in study  # the note is escaped
    assert "missing" in study and "R2 · day1" in study
    # blinded grading by two graders: different orders, no study fields, only their own progress
    orders = {}
    for name, bias in (("alice", 0), ("bob", 1)):
        g = TestClient(create_app(station))
        gcsrf = _login(g, name)
        assert g.get("/chambers", follow_redirects=False).status_code == 403
        assert g.get("/validation", follow_redirects=False).status_code == 403
        seen = []
        for _ in range(20):
            p = g.get("/grade").text
            p = _without_tokens(p)  # a random CSRF token may contain "S1" or "R1"
            assert "S1" not in p and "R1" not in p and "sham" not in p and "baseline" not in p
            m = re.search(r'action="/grade/(\d+)"', p)
            if not m:
                break
            fid = int(m.group(1))
            seen.append(fid)
            grades = {f"u_{u}": str((fid + bias) % 3) for u in ("eye", "ear", "nose")} | {"u_whiskers": "nv"}
            assert g.post(f"/grade/{fid}", data={"csrf": gcsrf, **grades}).status_code == 200
        orders[name] = seen
        assert "8 of 8 frames graded" in g.get("/grade").text
    assert sorted(orders["alice"]) == sorted(orders["bob"]) and orders["alice"] != orders["bob"]
    val = c.get("/validation").text
    assert 'id="n-shared">8<' in val and "ICC(2,1)" in val and "alice" in val and "bob" in val
    # the grades leave the station as `grimace eval grades` inputs: one Filename per frame everywhere
    assert "/validation/export/grader-alice.csv" in val and "/validation/export/model.csv" in val
    exports = {}
    for t in ("model", "subjects", "grader-alice", "grader-bob"):
        r = c.get(f"/validation/export/{t}.csv")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv"), t
        exports[t] = r.text
    assert c.get("/validation/export/grader-nobody.csv").status_code == 404
    assert c.get("/validation/export/..%2Fgrimace.csv").status_code == 404
    with TestClient(create_app(station)) as anon:
        assert anon.get("/validation/export/model.csv", follow_redirects=False).status_code == 303
    eval_io = pytest.importorskip("train.evaluation.io")
    from edge.scales import RGS

    tables = {}
    for t, text in exports.items():
        f = station.data / f"{t}.csv"
        f.write_text(text, encoding="utf-8")
        if t != "subjects":
            tables[t] = eval_io.read_grade_csv(f, RGS, integer_grades=t != "model")
    assert (
        sorted(tables["model"].images)
        == sorted(tables["grader-alice"].images)
        == sorted(tables["grader-bob"].images)
    )
    assert len(tables["model"].images) == 8
    alice = tables["grader-alice"]
    eye = alice.units["eye"]
    assert set(eye[~np.isnan(eye)].astype(int)) <= {0, 1, 2} and np.isnan(alice.units["whiskers"]).all()
    from train.data.format import read_subjects

    groups = read_subjects(station.data / "subjects.csv")  # what `eval grades --groups` reads
    assert set(groups) == set(tables["model"].images)
    subj = exports["subjects"].splitlines()
    assert subj[0] == "image,subject,group,timepoint" and len(subj) == 9
    assert {tuple(x.split(",")[1:]) for x in subj[1:]} == {
        ("R1", "sham", "baseline"),
        ("R2", "surgery", "baseline"),
    }
    # XLSX export in the frame-record columns
    from openpyxl import load_workbook

    r = c.get("/studies/S1/export.xlsx")
    wb = load_workbook(io.BytesIO(r.content))
    rows = list(wb["frames"].iter_rows(values_only=True))
    head = rows[0]
    assert head[:2] == ("Filename", "RGS") and "animal" in head and "group" in head and "timepoint" in head
    body = [dict(zip(head, x, strict=True)) for x in rows[1:]]
    assert len(body) == 8
    assert {(b["animal"], b["group"], b["timepoint"]) for b in body} == {
        ("R1", "sham", "baseline"),
        ("R2", "surgery", "baseline"),
    }
    assert c.get("/studies/S1/export.csv").text.startswith("Filename,RGS")


def test_every_page_and_form_needs_a_login(station: Station) -> None:
    c = TestClient(create_app(station))
    pages = [
        "/",
        "/chambers",
        "/chambers/status",
        "/chambers/c1/preview.jpg",
        "/studies",
        "/studies/S1",
        "/studies/S1/export.xlsx",
        "/sessions/S1-R1-baseline",
        "/frames/1.jpg",
        "/grade",
        "/validation",
        "/users",
    ]
    for p in pages:
        r = c.get(p, follow_redirects=False)
        assert r.status_code in (303, 401, 403), p
        assert r.status_code != 303 or r.headers["location"] == "/login"
    forms = [
        "/logout",
        "/chambers",
        "/chambers/c1/start",
        "/chambers/c1/stop",
        "/studies",
        "/studies/S1/animals",
        "/studies/S1/timepoints",
        "/grade/1",
        "/users",
    ]
    for f in forms:
        assert c.post(f, data={"csrf": "x"}, follow_redirects=False).status_code == 403, f
    # setup is only offered while no admin exists
    assert c.get("/setup", follow_redirects=False).headers["location"] == "/login"


def test_csrf_cross_site_and_path_traversal_refused(station: Station) -> None:
    c = TestClient(create_app(station))
    csrf = _login(c, "admin")
    n = len(Study(Store(station.db_path)).studies())
    assert c.post("/studies", data={"study_id": "X1"}, follow_redirects=False).status_code == 403  # no token
    assert c.post("/studies", data={"study_id": "X1", "csrf": "wrong"}).status_code == 403
    r = c.post("/studies", data={"study_id": "X1", "csrf": csrf}, headers={"Origin": "http://evil.example"})
    assert r.status_code == 403
    with Store(station.db_path) as s:
        assert len(Study(s).studies()) == n
    for bad in (
        "/frames/..%2F..%2Fetc%2Fpasswd.jpg",
        "/frames/../../etc/passwd",
        "/frames/-1.jpg",
        "/frames/1e9.jpg",
        "/frames/99999.jpg",
        "/sessions/..%2F..%2Fetc",
        "/studies/..%2Fx",
    ):
        r = c.get(bad)
        assert r.status_code in (404, 422), bad
        assert "root:" not in r.text
    r = c.post("/studies/S1/animals", data={"csrf": csrf, "animal_id": "../../x"}, follow_redirects=True)
    assert "not a valid id" in r.text


def test_chamber_camera_lost_then_reconnects(tmp_path: Path) -> None:
    """A camera that disappears (stand-in driver: reads fail, then opening fails twice) shows as lost
    and the session continues once it is back."""
    import cv2

    video = make_video(tmp_path / "cam.mp4", 4)
    state = {"reads": 0, "opens": 0}

    class FlakyCameraStandIn:
        """Stand-in for a camera driver: a video file that fails after 15 reads."""

        def __init__(self) -> None:
            self.cap = cv2.VideoCapture(str(video))

        def isOpened(self) -> bool:
            return self.cap.isOpened()

        def read(self):
            state["reads"] += 1
            if state["reads"] == 15:
                return False, None
            ok, img = self.cap.read()
            if not ok:
                self.cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                ok, img = self.cap.read()
            time.sleep(0.02)
            return ok, img

        def release(self) -> None:
            self.cap.release()

    class Closed:
        def isOpened(self) -> bool:
            return False

        def release(self) -> None:
            pass

    def opener(_arg, _api):
        state["opens"] += 1
        return Closed() if state["opens"] in (2, 3) else FlakyCameraStandIn()

    st = Station(load_model(make_model(tmp_path), threads=1), tmp_path / "d", opener=opener, backoff_s=0.2)
    try:
        st.add_chamber("c1", "0")
        with Store(st.db_path) as s:
            Study(s).add_study("S", Protocol(interval_s=1, duration_s=3, fps=10))
            Study(s).add_animal("S", "A")
            Study(s).add_timepoint("S", "t0")
        st.start_session("c1", "S", "A", "t0")
        ch = st.chambers["c1"]
        states = set()
        for _ in range(200):
            states.add(ch.state)
            if ch.state == "complete":
                break
            time.sleep(0.02)
        assert "lost" in states and ch.state == "complete", (states, ch.status())
        with Store(st.db_path) as s:
            kinds = [e["kind"] for e in s.events("S-A-t0")]
        assert "camera_lost" in kinds and "camera_retry" in kinds and "camera_reconnected" in kinds
    finally:
        st.close()
