"""The station in a real browser (Playwright driving Debian's headless Chromium) against a real
``grimace station`` process with two chambers fed by synthetic videos standing in for cameras.

Both tests are marked slow (about 30 s and 60 s here), so ``make test`` stays fast; ``.ci/run``
runs this file on its own after ``make test``. The fast core without a browser is
``tests/test_station_app.py``. One browser launch for the whole flow: first-start admin password,
a study with two animals in two groups, a session in each chamber, selected frames with overlays,
stop, blinded grading by two graders, the validation page and the XLSX export. Screenshots of every page go to
``$GRIMACE_STATION_SHOTS`` when set. Also (no browser): ``kill -9`` of the station mid-session and a
restart that resumes the sessions without losing a committed frame.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("onnx")
pw = pytest.importorskip("playwright.sync_api")

from tests.station_helpers import make_model, make_video  # noqa: E402

CHROMIUM = os.environ.get("GRIMACE_CHROMIUM", "/usr/bin/chromium")
PW = "correct horse battery"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_station(data: Path, model: Path, chambers: list[tuple[str, Path]], port: int, log: Path):
    cmd = [sys.executable, "-m", "edge.cli", "station", "--data", str(data), "--model", str(model)]
    cmd += ["--port", str(port), "--threads", "1", "--realtime", "1"]
    for cid, v in chambers:
        cmd += ["--chamber", f"{cid}={v}"]
    proc = subprocess.Popen(
        cmd, stdout=log.open("a"), stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        with contextlib.suppress(OSError):
            urllib.request.urlopen(url + "/static/station.css", timeout=1)
            return proc, url
        if proc.poll() is not None:
            raise AssertionError(f"station exited {proc.returncode}:\n{log.read_text()}")
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"station did not come up:\n{log.read_text()}")


def _rows(db: Path, sql: str) -> list[tuple]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> dict:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    root = tmp_path_factory.mktemp("browser")
    return {
        "root": root,
        "model": make_model(root),
        "videos": [make_video(root / f"cage{i}.mp4", 12, seed=i) for i in range(2)],
    }


def _shot(page, name: str) -> None:
    d = os.environ.get("GRIMACE_STATION_SHOTS")
    if d:
        Path(d).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(d) / f"{name}.png"), full_page=True)


def _login(page, url: str, name: str) -> None:
    page.goto(url + "/login")
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", PW)
    page.click("button[type=submit]")
    page.wait_for_load_state()


def _grade_all(page, url: str, name: str, bias: int) -> int:
    _login(page, url, name)
    n = 0
    while page.locator("form.grade-form").count():
        body = page.content()
        body = re.sub(r'name="csrf" value="[^"]*"', 'name="csrf"', body)  # random tokens may hold "S1"
        assert "S1" not in body and "sham" not in body and "baseline" not in body  # blinded
        fid = int(re.search(r'action="/grade/(\d+)"', body).group(1))
        if n == 0:
            _shot(page, f"grading-{name}")
        for unit in ("eye", "ear", "nose", "whiskers"):
            g = "nv" if unit == "whiskers" else str((fid + bias) % 3)
            page.check(f"input[name='u_{unit}'][value='{g}']")
        page.click("form.grade-form button[type=submit]")
        page.wait_for_load_state()
        n += 1
    assert "Nothing left to grade" in page.content()
    return n


@pytest.mark.slow
def test_station_in_the_browser(kit: dict) -> None:
    root, model = kit["root"], kit["model"]
    data, port = root / "data", _free_port()
    log = root / "station.log"
    chambers = [("c1", kit["videos"][0]), ("c2", kit["videos"][1])]
    proc, url = _start_station(data, model, chambers, port, log)
    dialogs: list[str] = []
    try:
        with pw.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
            page = browser.new_page()
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            # first start: the admin password
            page.goto(url + "/")
            assert page.url.endswith("/login") or page.url.endswith("/setup")
            page.goto(url + "/setup")
            _shot(page, "setup")
            page.fill("input[name=password]", PW)
            page.fill("input[name=password2]", PW)
            page.click("button[type=submit]")
            _login(page, url, "admin")
            assert page.url.endswith("/chambers")
            # a study with two animals in two groups and two timepoints
            page.goto(url + "/studies")
            page.fill("input[name=study_id]", "S1")
            page.fill("input[name=interval_s]", "2")
            page.fill("input[name=duration_s]", "8")
            page.fill("input[name=fps]", "3")
            page.click("form[action='/studies'] button")
            page.wait_for_url(url + "/studies/S1")
            for aid, grp, note in (("R1", "sham", '<script>alert("x")</script>'), ("R2", "surgery", "")):
                page.fill("input[name=animal_id]", aid)
                page.fill("input[name=group]", grp)
                page.fill("input[name=notes]", note)
                page.click("form[action$='/animals'] button")
                page.wait_for_load_state()
            page.fill("input[name=animal_id]", "<img src=x onerror=alert(1)>")  # refused id, echoed escaped
            page.evaluate("document.querySelector('input[name=animal_id]').removeAttribute('pattern')")
            page.click("form[action$='/animals'] button")
            page.wait_for_load_state()
            assert "not a valid id" in page.content()
            for t in ("baseline", "day1"):
                page.fill("input[name=timepoint_id]", t)
                page.click("form[action$='/timepoints'] button")
                page.wait_for_load_state()
            assert page.locator("#animal-scores tbody tr").count() == 2
            assert "&lt;script&gt;" in page.content()
            # graders
            page.goto(url + "/users")
            for g in ("alice", "bob"):
                page.fill("input[name=name]", g)
                page.fill("input[name=password]", PW)
                page.click("form[action='/users'] button")
                page.wait_for_load_state()
            _shot(page, "users")
            # a session in each chamber
            page.goto(url + "/chambers")
            for cid, animal in (("c1", "S1/R1"), ("c2", "S1/R2")):
                sec = page.locator(f"#chamber-{cid}")
                sec.locator("select[name=subject]").select_option(animal)
                sec.locator("select[name=timepoint]").select_option("baseline")
                sec.locator("button[name=start]").click()
                page.wait_for_load_state()
            page.wait_for_function(
                "() => [...document.querySelectorAll('img.preview')].every(i => i.naturalWidth > 0)",
                timeout=20000,
            )
            page.wait_for_function(
                "() => document.querySelectorAll('.state-running').length === 2", timeout=20000
            )
            _shot(page, "chambers")
            # selected frames appear with their overlays
            page.goto(url + "/sessions/S1-R1-baseline")
            for _ in range(60):
                if page.locator(".selected-frame img").count() >= 2:
                    break
                time.sleep(0.5)
                page.reload()
            imgs = page.locator(".selected-frame img")
            assert imgs.count() >= 2
            # every overlay image decodes (waited for: the page may still be loading them)
            page.wait_for_function(
                "() => [...document.querySelectorAll('.selected-frame img')]"
                ".every(i => i.complete && i.naturalWidth > 0)",
                timeout=10000,
            )
            # stop chamber 1 mid-session; chamber 2 runs to its end
            page.goto(url + "/chambers")
            page.locator("#chamber-c1 button[name=stop]").click()
            page.wait_for_load_state()
            assert "chamber c1 stopped" in page.content()
            for _ in range(60):
                st = _rows(data / "grimace.sqlite", "SELECT status FROM sessions WHERE id='S1-R2-baseline'")
                if st and st[0][0] == "complete":
                    break
                time.sleep(0.5)
            assert st[0][0] == "complete"
            page.goto(url + "/sessions/S1-R2-baseline")
            assert page.locator(".selected-frame").count() == 4
            assert page.locator("svg.plot").count() == 1
            _shot(page, "session")
            page.goto(url + "/studies/S1")
            _shot(page, "study")
            assert "missing" in page.locator("#animal-scores").inner_text()
            # blinded grading by two graders (own contexts: own logins)
            n_frames = len(
                _rows(data / "grimace.sqlite", "SELECT frame_id FROM intervals WHERE image_path != ''")
            )
            for bias, g in enumerate(("alice", "bob")):
                ctx = browser.new_context()
                gp = ctx.new_page()
                assert _grade_all(gp, url, g, bias) == n_frames
                gp.goto(url + "/validation")
                assert "admin" in gp.content() and gp.locator("#n-shared").count() == 0  # refused to graders
                ctx.close()
            page.goto(url + "/validation")
            assert page.locator("#n-shared").inner_text() == str(n_frames)
            _shot(page, "validation")
            # XLSX export, checked row by row
            page.goto(url + "/studies/S1")
            with page.expect_download() as dl:
                page.click("a[href$='export.xlsx']")
            xlsx = root / "export.xlsx"
            dl.value.save_as(xlsx)
            browser.close()
        from openpyxl import load_workbook

        rows = list(load_workbook(xlsx)["frames"].iter_rows(values_only=True))
        head, body = rows[0], [dict(zip(rows[0], r, strict=True)) for r in rows[1:]]
        assert head[0] == "Filename" and head[1] == "RGS"
        assert len(body) == n_frames
        assert {(b["animal"], b["group"], b["timepoint"]) for b in body} == {
            ("R1", "sham", "baseline"),
            ("R2", "surgery", "baseline"),
        }
        db_scores = sorted(
            round(r[0], 4)
            for r in _rows(
                data / "grimace.sqlite",
                "SELECT f.score FROM intervals i JOIN frames f ON f.id=i.frame_id WHERE f.score IS NOT NULL",
            )
        )
        assert sorted(round(b["RGS"], 4) for b in body if b["RGS"] is not None) == db_scores
        assert not dialogs, dialogs  # no script from a note or an id ran
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.slow
def test_station_kill9_resumes_sessions_without_losing_frames(kit: dict) -> None:
    root, model = kit["root"], kit["model"]
    data, log = root / "killed", root / "killed.log"
    db = data / "grimace.sqlite"
    chambers = [("c1", kit["videos"][0]), ("c2", kit["videos"][1])]
    # study and admin made with the station's own command and modules
    env = {**os.environ, "GRIMACE_STATION_PASSWORD": PW}
    subprocess.run(
        [sys.executable, "-m", "edge.cli", "station", "--data", str(data), "--set-password"],
        env=env,
        check=True,
        capture_output=True,
    )
    from edge.station.study import Protocol, Study
    from edge.storage import Store

    with Store(db) as s:
        st = Study(s)
        st.add_study("K", Protocol(interval_s=2, duration_s=10, fps=3))
        for a in ("A1", "A2"):
            st.add_animal("K", a, group=a[-1])
        st.add_timepoint("K", "t0")
    port = _free_port()
    proc, url = _start_station(data, model, chambers, port, log)
    # start both sessions through the app's forms (logged in, with the CSRF token), as a browser would
    import http.cookiejar

    from edge.predictor import load_model

    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    page = opener.open(url + "/login").read().decode()
    pre = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    from urllib.parse import urlencode

    opener.open(url + "/login", urlencode({"name": "admin", "password": PW, "csrf": pre}).encode())
    page = opener.open(url + "/chambers").read().decode()
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    for cid, a in (("c1", "A1"), ("c2", "A2")):
        opener.open(
            url + f"/chambers/{cid}/start",
            urlencode({"csrf": csrf, "subject": f"K/{a}", "timepoint": "t0"}).encode(),
        )
    for _ in range(200):
        n = _rows(db, "SELECT COUNT(*) FROM frames WHERE session_id LIKE 'K-%'")[0][0]
        if n >= 10:
            break
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = _rows(
        db, "SELECT id, session_id, frame_index, score FROM frames WHERE session_id LIKE 'K-%' ORDER BY id"
    )
    assert len(before) >= 10
    assert {r[0] for r in _rows(db, "SELECT status FROM sessions WHERE id LIKE 'K-%'")} == {"running"}
    proc, url = _start_station(data, model, chambers, port, log)
    try:
        for _ in range(300):
            st = {r[0] for r in _rows(db, "SELECT status FROM sessions WHERE id LIKE 'K-%'")}
            if st == {"complete"}:
                break
            time.sleep(0.1)
        assert st == {"complete"}, log.read_text()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    text = log.read_text()
    assert "resumed session K-A1-t0" in text and "resumed session K-A2-t0" in text
    after = _rows(
        db, "SELECT id, session_id, frame_index, score FROM frames WHERE session_id LIKE 'K-%' ORDER BY id"
    )
    assert after[: len(before)] == before  # every committed frame kept, unchanged
    for sid in ("K-A1-t0", "K-A2-t0"):
        idx = [r[2] for r in after if r[1] == sid]
        assert idx == sorted(set(idx))  # continued after the last committed frame, no duplicates
        assert len(_rows(db, f"SELECT * FROM intervals WHERE session_id='{sid}'")) == 5
        kinds = [r[0] for r in _rows(db, f"SELECT kind FROM events WHERE session_id='{sid}'")]
        assert "resume" in kinds and "complete" in kinds
    del load_model
