"""The station's web app (FastAPI, server-rendered Jinja2 pages, plain HTML forms; no CDN, no build
step). ``grimace station`` serves it with uvicorn; :func:`create_app` builds it around a
:class:`~edge.station.chambers.Station`.

Security: every page and form needs a login (``/login``; ``/setup`` sets the first admin password,
only from the station itself and only while none is set); every POST carries the login's CSRF
token, and a POST whose ``Origin``/``Referer`` is another site is refused; login cookies are
``HttpOnly`` and ``SameSite=Strict``; frames are served by integer id, their file path read from the
store, never from the request; Jinja2 autoescaping is on for every template. Graders see only the
grading page: frames in their own random order, without animal, group, timepoint, session or the
model's grades, and never another grader's grades.
"""

from __future__ import annotations

import contextlib
import ipaddress
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import FastAPI, Form, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from edge.records import csv_text
from edge.station import auth, views
from edge.station.chambers import Station
from edge.station.study import ID_PATTERN, Protocol, Study, StudyError
from edge.storage import Store

HERE = Path(__file__).resolve().parent
COOKIE = "grimace_login"
PRE_COOKIE = "grimace_pre"


def _is_loopback(host: str | None) -> bool:
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def templates() -> Environment:
    """The Jinja2 environment of the station's templates (autoescaping on for every template)."""
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(["html", "xml"], default_for_string=True, default=True),
    )
    env.globals["fmt"] = views._fmt
    return env


class WebCore:
    """What every grimace web app shares: rendering, the login cookie, CSRF and same-site checks,
    and the ``/login``, ``/logout`` and ``/setup`` routes (users and logins live in a local
    :class:`~edge.storage.Store`, see :mod:`edge.station.auth`).

    Args:
        app: The FastAPI app the routes are added to.
        store: ``f()`` returning this thread's store.
        spec: Scale of the pages (``None``: none; templates then show no scale).
        home: ``f(user)`` returning the page a login lands on.
        env_globals: Extra template globals (``central``: the facility view's navigation).
    """

    def __init__(
        self,
        app: FastAPI,
        store: Callable[[], Store],
        spec: Any,
        home: Callable[[dict[str, Any]], str],
        **env_globals: Any,
    ) -> None:
        self.app, self.store, self.spec, self.home = app, store, spec, home
        app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
        self.env = templates()
        self.env.globals.update(env_globals)
        self._routes()

    def render(
        self, request: Request, name: str, user: dict[str, Any] | None, status: int = 200, **ctx: Any
    ) -> HTMLResponse:
        """A template rendered as a no-store HTML response."""
        ctx.setdefault("spec", self.spec)
        html = self.env.get_template(name).render(request=request, user=user, **ctx)
        return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})

    def current(self, request: Request) -> dict[str, Any] | None:
        """The logged-in user of a request, or ``None``."""
        return auth.session_user(self.store(), request.cookies.get(COOKIE))

    def page_user(self, request: Request, role: str = "admin") -> dict[str, Any]:
        """The logged-in user of a page; redirect to the login page otherwise."""
        u = self.current(request)
        if u is None:
            raise HTTPException(303, headers={"Location": "/login"})
        if role == "admin" and u["role"] != "admin":
            raise HTTPException(403, "this page is for the station's admin")
        return u

    @staticmethod
    def same_origin(request: Request) -> bool:
        """Whether the ``Origin``/``Referer`` of a post (if any) is this site."""
        host = request.headers.get("host", "")
        for h in ("origin", "referer"):
            v = request.headers.get(h)
            if v and v != "null" and urlsplit(v).netloc != host:
                return False
            if v == "null":
                return False
        return True

    def form_user(self, request: Request, csrf: str | None, role: str = "admin") -> dict[str, Any]:
        """The user of a form post: logged in, same-site and with the login's CSRF token; 403 otherwise."""
        if not self.same_origin(request):
            raise HTTPException(403, "cross-site form post refused")
        u = self.current(request)
        if u is None:
            raise HTTPException(403, "not logged in")
        if not auth.csrf_ok(u["csrf"], csrf):
            raise HTTPException(403, "missing or wrong CSRF token; reload the page")
        if role == "admin" and u["role"] != "admin":
            raise HTTPException(403, "this form is for the station's admin")
        return u

    @staticmethod
    def back(url: str, msg: str = "") -> RedirectResponse:
        """A 303 redirect to ``url`` with a message shown there."""
        from urllib.parse import quote

        return RedirectResponse(url + (f"?msg={quote(msg)}" if msg else ""), status_code=303)

    def _routes(self) -> None:
        app, store, render, back, same_origin = self.app, self.store, self.render, self.back, self.same_origin

        def pre_login_form(request: Request, template: str) -> Response:
            """A form shown before any login (login, first-start setup), with its pre-login CSRF
            token in a cookie."""
            import secrets

            pre = request.cookies.get(PRE_COOKIE) or secrets.token_urlsafe(24)
            resp = render(request, template, None, pre=pre, msg=request.query_params.get("msg", ""))
            resp.set_cookie(PRE_COOKIE, pre, httponly=True, samesite="strict")
            return resp

        @app.get("/login", response_class=HTMLResponse)
        def login_page(request: Request) -> Response:
            if not auth.has_admin(store()):
                return RedirectResponse("/setup", status_code=303)
            return pre_login_form(request, "login.html")

        @app.post("/login")
        def login_post(
            request: Request, name: str = Form(""), password: str = Form(""), csrf: str = Form("")
        ) -> Response:
            if not same_origin(request) or not auth.csrf_ok(request.cookies.get(PRE_COOKIE, ""), csrf):
                raise HTTPException(403, "cross-site or stale login form refused; reload the page")
            got = auth.login(store(), name.strip(), password)
            if got is None:
                return back("/login", "wrong name or password")
            u = auth.session_user(store(), got[0])
            resp = RedirectResponse(self.home(u or {}), status_code=303)
            resp.set_cookie(
                COOKIE, got[0], httponly=True, samesite="strict", max_age=int(auth.LOGIN_HOURS * 3600)
            )
            resp.delete_cookie(PRE_COOKIE)
            return resp

        @app.post("/logout")
        def logout_post(request: Request, csrf: str = Form("")) -> Response:
            self.form_user(request, csrf, role="any")
            auth.logout(store(), request.cookies.get(COOKIE))
            resp = RedirectResponse("/login", status_code=303)
            resp.delete_cookie(COOKIE)
            return resp

        @app.get("/setup", response_class=HTMLResponse)
        def setup_page(request: Request) -> Response:
            if auth.has_admin(store()):
                return RedirectResponse("/login", status_code=303)
            if not _is_loopback(request.client.host if request.client else None):
                raise HTTPException(
                    403, "set the admin password on the station itself (or with grimace station passwd)"
                )
            return pre_login_form(request, "setup.html")

        @app.post("/setup")
        def setup_post(
            request: Request, password: str = Form(""), password2: str = Form(""), csrf: str = Form("")
        ) -> Response:
            if auth.has_admin(store()) or not _is_loopback(request.client.host if request.client else None):
                raise HTTPException(403, "the admin password is set already")
            if not same_origin(request) or not auth.csrf_ok(request.cookies.get(PRE_COOKIE, ""), csrf):
                raise HTTPException(403, "cross-site or stale form refused; reload the page")
            if password != password2:
                return back("/setup", "the passwords differ")
            try:
                auth.create_user(store(), "admin", "admin", password)
            except StudyError as e:
                return back("/setup", str(e))
            return back("/login", "admin password set; log in as admin")


#: Seconds a thread's PostgreSQL connection may sit unused before :func:`local_store` checks it with
#: ``SELECT 1``: a server restart or a dropped network link is then found before a page's queries,
#: not by them (each web worker thread holds its own connection, and each would fail once).
PG_PING_AFTER_S = 2.0


def local_store(path: Path | str) -> Callable[[], Store]:
    """``f()`` returning a :class:`Store` of ``path`` (an SQLite file or a ``postgresql://`` URL)
    opened once per thread (connections are not shared between threads). A PostgreSQL connection
    unused for :data:`PG_PING_AFTER_S` is checked first, and one that was lost is reopened."""
    local = threading.local()

    def store() -> Store:
        s = getattr(local, "store", None)
        now = time.monotonic()
        idle = now - getattr(local, "used", now)
        if s is not None and s.kind == "postgresql" and not s.broken and idle >= PG_PING_AFTER_S:
            with contextlib.suppress(Exception):  # a lost connection shows as broken below
                s.db.execute("SELECT 1")
        if s is not None and s.broken:
            s.close()
            s = None
        if s is None:
            s = local.store = Store(path)
        local.used = now
        return s

    return store


def create_app(station: Station) -> FastAPI:
    """The web app of a station.

    Args:
        station: The running station (model, chambers, data folder).

    Returns:
        The FastAPI app.
    """
    app = FastAPI(title="grimace station", docs_url=None, redoc_url=None, openapi_url=None)
    spec = station.spec
    store = local_store(station.db_path)
    core = WebCore(app, store, spec, lambda u: "/grade" if u.get("role") == "grader" else "/chambers")
    render, page_user, form_user, back = core.render, core.page_user, core.form_user, core.back

    @app.get("/")
    def root(request: Request) -> Response:
        u = page_user(request, role="any")
        return RedirectResponse("/grade" if u["role"] == "grader" else "/chambers", status_code=303)

    # --------------------------------------------------------------------------- chambers
    def _chambers_ctx() -> dict[str, Any]:
        st = Study(store())
        studies = st.studies()
        choices = [
            {"id": s["id"], "animals": st.animals(s["id"]), "timepoints": st.timepoints(s["id"])}
            for s in studies
        ]
        return {"chambers": [c.status() for c in station.chambers.values()], "studies": choices}

    @app.get("/chambers", response_class=HTMLResponse)
    def chambers_page(request: Request) -> Response:
        u = page_user(request)
        return render(request, "chambers.html", u, msg=request.query_params.get("msg", ""), **_chambers_ctx())

    @app.get("/chambers/status", response_class=HTMLResponse)
    def chambers_status(request: Request) -> Response:
        u = page_user(request)
        return render(
            request, "_chamber_status.html", u, chambers=[c.status() for c in station.chambers.values()]
        )

    @app.get("/chambers/{chamber_id}/preview.jpg")
    def chamber_preview(request: Request, chamber_id: str) -> Response:
        page_user(request)
        ch = station.chambers.get(chamber_id)
        if ch is None or ch.preview is None:
            raise HTTPException(404, "no preview yet")
        return Response(ch.preview, media_type="image/jpeg", headers={"Cache-Control": "no-store"})

    @app.post("/chambers")
    def chamber_add(
        request: Request, chamber_id: str = Form(""), camera: str = Form(""), csrf: str = Form("")
    ) -> Response:
        form_user(request, csrf)
        try:
            station.add_chamber(chamber_id, camera)
        except StudyError as e:
            return back("/chambers", str(e))
        return back("/chambers", f"chamber {chamber_id} added")

    @app.post("/chambers/{chamber_id}/start")
    def chamber_start(
        request: Request,
        chamber_id: str,
        subject: str = Form(""),
        timepoint: str = Form(""),
        csrf: str = Form(""),
    ) -> Response:
        form_user(request, csrf)
        study_id, _, animal_id = subject.partition("/")
        try:
            sid = station.start_session(chamber_id, study_id, animal_id, timepoint)
        except StudyError as e:
            return back("/chambers", str(e))
        return back("/chambers", f"session {sid} started in chamber {chamber_id}")

    @app.post("/chambers/{chamber_id}/stop")
    def chamber_stop(request: Request, chamber_id: str, csrf: str = Form("")) -> Response:
        form_user(request, csrf)
        try:
            station.stop_session(chamber_id)
        except StudyError as e:
            return back("/chambers", str(e))
        return back("/chambers", f"chamber {chamber_id} stopped")

    # ---------------------------------------------------------------------------- studies
    @app.get("/studies", response_class=HTMLResponse)
    def studies_page(request: Request) -> Response:
        u = page_user(request)
        return render(
            request,
            "studies.html",
            u,
            studies=Study(store()).studies(),
            msg=request.query_params.get("msg", ""),
        )

    @app.post("/studies")
    def study_add(
        request: Request,
        study_id: str = Form(""),
        title: str = Form(""),
        interval_s: float = Form(90.0),
        duration_s: float = Form(900.0),
        fps: float = Form(2.0),
        csrf: str = Form(""),
    ) -> Response:
        form_user(request, csrf)
        try:
            sid = Study(store()).add_study(
                study_id, Protocol(spec.name, interval_s, duration_s, fps), title=title
            )
        except StudyError as e:
            return back("/studies", str(e))
        return back(f"/studies/{sid}")

    def _study_id(study_id: str) -> str:
        if not ID_PATTERN.match(study_id):
            raise HTTPException(404, "no such study")
        return study_id

    @app.get("/studies/{study_id}", response_class=HTMLResponse)
    def study_page(request: Request, study_id: str) -> Response:
        u = page_user(request)
        v = views.study_view(store(), _study_id(study_id), spec)
        if not v:
            raise HTTPException(404, "no such study")
        v["plot"] = Markup(v["plot"])  # built by views.line_plot with every label escaped
        return render(request, "study.html", u, msg=request.query_params.get("msg", ""), **v)

    @app.post("/studies/{study_id}/animals")
    def animal_add(
        request: Request,
        study_id: str,
        animal_id: str = Form(""),
        group: str = Form(""),
        sex: str = Form(""),
        strain: str = Form(""),
        notes: str = Form(""),
        csrf: str = Form(""),
    ) -> Response:
        form_user(request, csrf)
        try:
            Study(store()).add_animal(
                _study_id(study_id), animal_id, group=group, sex=sex, strain=strain, notes=notes
            )
        except StudyError as e:
            return back(f"/studies/{study_id}", str(e))
        return back(f"/studies/{study_id}")

    @app.post("/studies/{study_id}/timepoints")
    def timepoint_add(
        request: Request, study_id: str, timepoint_id: str = Form(""), csrf: str = Form("")
    ) -> Response:
        form_user(request, csrf)
        try:
            Study(store()).add_timepoint(_study_id(study_id), timepoint_id)
        except StudyError as e:
            return back(f"/studies/{study_id}", str(e))
        return back(f"/studies/{study_id}")

    @app.get("/studies/{study_id}/export.{fmt}")
    def study_export(request: Request, study_id: str, fmt: str) -> Response:
        page_user(request)
        sid = _study_id(study_id)
        if fmt not in ("csv", "xlsx") or not Study(store()).study(sid):
            raise HTTPException(404, "no such export")
        path = views.export_study(store(), sid, spec, station.data / "exports", fmt)
        media = (
            "text/csv"
            if fmt == "csv"
            else "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
        )
        return FileResponse(path, media_type=media, filename=path.name)

    # --------------------------------------------------------------------------- sessions
    @app.get("/sessions/{session_id}", response_class=HTMLResponse)
    def session_page(request: Request, session_id: str) -> Response:
        u = page_user(request)
        if len(session_id) > 200 or not all(c.isalnum() or c in "_.-@" for c in session_id):
            raise HTTPException(404, "no such session")
        v = views.session_view(store(), session_id, spec)
        if not v:
            raise HTTPException(404, "no such session")
        v["plot"] = Markup(v["plot"])
        return render(request, "session.html", u, **v)

    @app.get("/frames/{frame_id}.jpg")
    def frame_image(request: Request, frame_id: int, annotated: int = 0) -> Response:
        """A selected frame's image by its integer id (the path comes from the store)."""
        u = page_user(request, role="any")
        row = (
            store()
            .db.execute(
                "SELECT image_path FROM intervals WHERE frame_id=? AND image_path IS NOT NULL", (frame_id,)
            )
            .fetchone()
        )
        if row is None:
            raise HTTPException(404, "no image for this frame")
        path = Path(row[0])
        if annotated and u["role"] == "admin":  # graders never see the model's boxes and grades
            path = path.with_name(path.stem + "_annotated.jpg")
        root = (station.data / "selected").resolve()
        real = path.resolve()
        if root not in real.parents or not real.is_file():
            raise HTTPException(404, "no image for this frame")
        return FileResponse(real, media_type="image/jpeg", headers={"Cache-Control": "no-store"})

    # ---------------------------------------------------------------------------- grading
    @app.get("/grade", response_class=HTMLResponse)
    def grade_page(request: Request) -> Response:
        u = page_user(request, role="any")
        s = store()
        order = views.grading_order(views.gradable_frames(s), u["name"])
        done = views.graded_by(s, u["name"])
        todo = [f for f in order if f not in done]
        return render(
            request,
            "grade.html",
            u,
            frame_id=todo[0] if todo else None,
            n_done=len(done & set(order)),
            n_total=len(order),
            units=spec.units,
        )

    @app.post("/grade/{frame_id}")
    async def grade_post(request: Request, frame_id: int) -> Response:
        form = await request.form()
        csrf = form.get("csrf")
        u = form_user(request, str(csrf) if csrf is not None else None, role="any")
        s = store()
        if frame_id not in set(views.gradable_frames(s)):
            raise HTTPException(404, "no such frame to grade")
        grades: dict[str, int | None] = {}
        for unit in spec.units:
            v = str(form.get(f"u_{unit.name}", ""))
            if v == "nv":
                grades[unit.name] = None
            elif v.isdigit() and int(v) < unit.grades:
                grades[unit.name] = int(v)
            else:
                raise HTTPException(
                    400, f"grade every unit ({unit.label}: 0-{unit.grades - 1} or not visible)"
                )
        views.save_grades(s, frame_id, u["name"], grades)
        return RedirectResponse("/grade", status_code=303)

    # ------------------------------------------------------------------------- validation
    @app.get("/validation", response_class=HTMLResponse)
    def validation_page(request: Request) -> Response:
        u = page_user(request)
        return render(request, "validation.html", u, **views.validation_view(store(), spec))

    @app.get("/validation/export/{table}.csv")
    def validation_export(request: Request, table: str) -> Response:
        """The model's and each grader's grades of the graded frames, and the subjects table, as CSV
        files for ``grimace eval grades --pred model.csv --human grader-*.csv --groups subjects.csv``."""
        page_user(request)
        tables = views.validation_tables(store(), spec)
        key = table if table in ("model", "subjects") else f"grader:{table.removeprefix('grader-')}"
        if not table.startswith(("model", "subjects", "grader-")) or key not in tables:
            raise HTTPException(404, "no such export")
        cols, rows = tables[key]
        return Response(
            csv_text(rows, cols),  # formula-like cells escaped, as in every table we write
            media_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{table}.csv"'},
        )

    # ------------------------------------------------------------------------------ users
    @app.get("/users", response_class=HTMLResponse)
    def users_page(request: Request) -> Response:
        u = page_user(request)
        return render(
            request, "users.html", u, users=auth.users(store()), msg=request.query_params.get("msg", "")
        )

    @app.post("/users")
    def user_add(
        request: Request,
        name: str = Form(""),
        password: str = Form(""),
        role: str = Form("grader"),
        csrf: str = Form(""),
    ) -> Response:
        form_user(request, csrf)
        try:
            auth.create_user(store(), name, role, password)
        except StudyError as e:
            return back("/users", str(e))
        return back("/users", f"user {name} saved")

    return app
