"""A read-only facility view of the central database (``grimace station --central postgresql://...``).

Every station's studies, as ``grimace sync --to`` pushed them (:mod:`edge.scale.sync`): a stations
page, a study page per station (animals x timepoints with session scores, group means) and a session
page (score over time, selected frames). The pages are built by the station's own code
(:func:`edge.station.views.study_figures`, :func:`~edge.station.views.session_figures`, the same
templates' base, :class:`edge.station.app.WebCore` for login, logout, CSRF and rendering); users and
logins live in the local ``--data`` store, never in the central database.

**Never writes centrally.** Every connection is opened with ``default_transaction_read_only=on``
(a server setting at connect time) and every transaction begins ``READ ONLY``
(``postgresql_readonly``); an INSERT, UPDATE or DDL through it is refused by the server. The
recommended credential is a role with ``SELECT`` only (docs/scale-out.md, "A facility view").

Images of selected frames are served only when an image folder (``grimace sync --images``) is given,
by frame id: the relative path is read from the central row and must resolve inside that folder.

**Paged lists.** The stations list, a station's studies and sessions and a session's frames are read
:data:`PAGE_SIZE` rows at a time (``LIMIT``/``OFFSET`` with a total from ``COUNT(*)``; ``?page=N``,
``?studies_page=N`` on a station page), so a facility of many stations and long sessions never loads
a whole table. Counts are aggregated by the server for the rows of the page only. A session's plot
reads only ``t_s``/``score``/``abstained`` of its frames (whole rows for the selected ones).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from markupsafe import Markup

from edge.aggregate import mean_sem
from edge.scale.sync import STATION_ID, engine_url
from edge.scales import BUILTIN_SCALES, RGS, ScaleSpec
from edge.station import views
from edge.station.app import WebCore, local_store
from edge.station.study import ID_PATTERN

STUDIES_SHOWN = 5
"""Studies linked per station on the stations page (the station page pages through all)."""

READ_ONLY_OPTIONS = "-c default_transaction_read_only=on"
"""libpq ``options`` of every central connection: the server refuses writes in its transactions."""


def read_only_engine(url: str) -> Any:
    """An SQLAlchemy engine on the central database that cannot write.

    Two locks: the session default ``default_transaction_read_only=on`` is set by the server at
    connect time, and every transaction SQLAlchemy begins is ``READ ONLY``.

    Args:
        url: ``postgresql://reader@host/db?sslmode=verify-full``.

    Returns:
        The engine.
    """
    import sqlalchemy as sa

    from edge.scale.sync import _require_sqlalchemy

    _require_sqlalchemy()
    eng = sa.create_engine(
        engine_url(url),
        pool_pre_ping=True,
        connect_args={"connect_timeout": 10, "options": READ_ONLY_OPTIONS},
    )
    return eng.execution_options(postgresql_readonly=True)


PAGE_SIZE = 50
"""Rows per page of the facility view's lists."""

MAX_PAGE = 10**6


@dataclass(frozen=True)
class Page:
    """One page of a list.

    Attributes:
        number: 1-based page number (clamped to the pages there are).
        size: Rows per page.
        total: Rows in the whole list.
    """

    number: int
    size: int
    total: int

    @classmethod
    def of(cls, requested: int, total: int, size: int = PAGE_SIZE) -> Page:
        """The page ``requested`` of ``total`` rows (past the last page: the last page)."""
        pages = max(1, math.ceil(total / size))
        return cls(min(max(1, int(requested)), pages), size, int(total))

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / self.size))

    @property
    def offset(self) -> int:
        return (self.number - 1) * self.size

    @property
    def first(self) -> int:
        """1-based index of the page's first row (0 for an empty list)."""
        return self.offset + 1 if self.total else 0

    @property
    def last(self) -> int:
        return min(self.total, self.offset + self.size)

    @property
    def has_prev(self) -> bool:
        return self.number > 1

    @property
    def has_next(self) -> bool:
        return self.number < self.pages


@dataclass(frozen=True)
class Paged:
    """A page of rows and where it lies in the list."""

    rows: list[dict[str, Any]]
    page: Page

    def __len__(self) -> int:
        """Rows in the whole list (``len(reader.stations())``: every station), not on this page."""
        return self.page.total


def scale_of(name: str | None) -> ScaleSpec:
    """The built-in scale a central row names (never a file path from the database); RGS when
    unknown."""
    return BUILTIN_SCALES.get(str(name or "").lower(), RGS)


class CentralReader:
    """Queries of the facility view (each in its own read-only transaction).

    Args:
        engine: From :func:`read_only_engine`.
    """

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def _tables(self, conn: Any) -> set[str]:
        import sqlalchemy as sa

        return set(sa.inspect(conn).get_table_names())

    def _rows(self, conn: Any, sql: str, **params: Any) -> list[dict[str, Any]]:
        import sqlalchemy as sa

        return [dict(r._mapping) for r in conn.execute(sa.text(sql), params)]

    def _paged(self, conn: Any, count_sql: str, rows_sql: str, page: int, size: int, **params: Any) -> Paged:
        import sqlalchemy as sa

        total = int(conn.execute(sa.text(count_sql), params).scalar() or 0)
        pg = Page.of(page, total, size)
        rows = self._rows(conn, rows_sql + " LIMIT :lim OFFSET :off", lim=pg.size, off=pg.offset, **params)
        return Paged(rows, pg)

    def _summaries(self, conn: Any, have: set[str], ids: list[str]) -> dict[str, dict[str, Any]]:
        """Per station of ``ids``: sessions (complete, incomplete), frames, last session time, studies
        (count and the first :data:`STUDIES_SHOWN`), aggregated by the server."""
        out: dict[str, dict[str, Any]] = {
            i: {
                "sessions": 0,
                "complete": 0,
                "incomplete": 0,
                "frames": 0,
                "last_session_at": None,
                "n_studies": 0,
                "studies": [],
            }
            for i in ids
        }
        if not ids:
            return out
        if "sessions" in have:
            for r in self._rows(
                conn,
                "SELECT station_id, COUNT(*) AS n, COUNT(*) FILTER (WHERE status = 'complete') AS done, "
                "MAX(updated_at) AS last FROM sessions WHERE station_id = ANY(:ids) GROUP BY station_id",
                ids=ids,
            ):
                n, done = int(r["n"]), int(r["done"])
                out[r["station_id"]].update(
                    sessions=n, complete=done, incomplete=n - done, last_session_at=r["last"]
                )
        if "frames" in have:
            for r in self._rows(
                conn,
                "SELECT station_id, COUNT(*) AS n FROM frames WHERE station_id = ANY(:ids) "
                "GROUP BY station_id",
                ids=ids,
            ):
                out[r["station_id"]]["frames"] = int(r["n"])
        if "studies" in have:
            for r in self._rows(
                conn,
                "SELECT station_id, id, title, n FROM (SELECT station_id, id, title, "
                "ROW_NUMBER() OVER (PARTITION BY station_id ORDER BY id) AS k, "
                "COUNT(*) OVER (PARTITION BY station_id) AS n FROM studies WHERE station_id = ANY(:ids)) s "
                "WHERE k <= :k ORDER BY station_id, id",
                ids=ids,
                k=STUDIES_SHOWN,
            ):
                o = out[r["station_id"]]
                o["n_studies"] = int(r["n"])
                o["studies"].append({"id": r["id"], "title": r["title"]})
        return out

    def stations(self, page: int = 1, size: int = PAGE_SIZE) -> Paged:
        """One page of the stations that synced (by id): host, last sync, sessions (complete and
        incomplete), frames, last session time and their first studies."""
        with self.engine.connect() as conn:
            have = self._tables(conn)
            if "stations" not in have:
                return Paged([], Page.of(1, 0, size))
            got = self._paged(
                conn,
                "SELECT COUNT(*) FROM stations",
                "SELECT * FROM stations ORDER BY station_id",
                page,
                size,
            )
            summary = self._summaries(conn, have, [r["station_id"] for r in got.rows])
        for r in got.rows:
            r.update(summary[r["station_id"]])
        return got

    def station(self, station: str) -> dict[str, Any] | None:
        """One station's row with its counts (``None``: it never synced)."""
        with self.engine.connect() as conn:
            have = self._tables(conn)
            if "stations" not in have:
                return None
            found = self._rows(conn, "SELECT * FROM stations WHERE station_id = :st", st=station)
            if not found:
                return None
            return {**found[0], **self._summaries(conn, have, [station])[station]}

    def station_studies(self, station: str, page: int = 1, size: int = PAGE_SIZE) -> Paged:
        """One page of a station's studies (by id)."""
        with self.engine.connect() as conn:
            if "studies" not in self._tables(conn):
                return Paged([], Page.of(1, 0, size))
            return self._paged(
                conn,
                "SELECT COUNT(*) FROM studies WHERE station_id = :st",
                "SELECT id, title, scale FROM studies WHERE station_id = :st ORDER BY id",
                page,
                size,
                st=station,
            )

    def station_sessions(self, station: str, page: int = 1, size: int = PAGE_SIZE) -> Paged:
        """One page of a station's sessions, newest first (id, status, times, frames synced)."""
        with self.engine.connect() as conn:
            have = self._tables(conn)
            if "sessions" not in have:
                return Paged([], Page.of(1, 0, size))
            n_frames = (
                "(SELECT COUNT(*) FROM frames f WHERE f.station_id = s.station_id AND f.session_id = s.id)"
                if "frames" in have
                else "0"
            )
            return self._paged(
                conn,
                "SELECT COUNT(*) FROM sessions WHERE station_id = :st",
                f"SELECT s.id, s.status, s.scale, s.started_at, s.updated_at, {n_frames} AS n_frames "
                "FROM sessions s WHERE s.station_id = :st ORDER BY s.started_at DESC, s.id",
                page,
                size,
                st=station,
            )

    def study(self, station: str, study_id: str) -> dict[str, Any]:
        """The study page of a station's study (``{}``: no such study)."""
        need = {"studies", "animals", "timepoints", "study_sessions", "sessions"}
        with self.engine.connect() as conn:
            if not need <= self._tables(conn):
                return {}
            p = {"st": station, "sid": study_id}
            found = self._rows(conn, "SELECT * FROM studies WHERE station_id=:st AND id=:sid", **p)
            if not found:
                return {}
            animals = self._rows(
                conn, "SELECT * FROM animals WHERE station_id=:st AND study_id=:sid ORDER BY grp, id", **p
            )
            tps = [
                r["id"]
                for r in self._rows(
                    conn,
                    "SELECT id FROM timepoints WHERE station_id=:st AND study_id=:sid ORDER BY position",
                    **p,
                )
            ]
            sessions = self._rows(
                conn,
                "SELECT ss.*, a.grp, s.status, s.started_at, s.updated_at FROM study_sessions ss "
                "JOIN sessions s ON s.station_id = ss.station_id AND s.id = ss.session_id "
                "JOIN animals a ON a.station_id = ss.station_id AND a.study_id = ss.study_id "
                "AND a.id = ss.animal_id WHERE ss.station_id=:st AND ss.study_id=:sid ORDER BY s.started_at",
                **p,
            )
            iv: dict[str, list[float]] = {}
            if "intervals" in self._tables(conn):
                for r in self._rows(
                    conn,
                    "SELECT i.session_id, i.score FROM intervals i JOIN study_sessions ss ON "
                    "ss.station_id = i.station_id AND ss.session_id = i.session_id "
                    "WHERE i.station_id=:st AND ss.study_id=:sid",
                    **p,
                ):
                    iv.setdefault(r["session_id"], []).append(r["score"])
        scores = []
        for s in sessions:
            score, sem = mean_sem(v for v in iv.get(s["session_id"], []) if v is not None)
            scores.append({**s, "status": _status(s), "score": score, "sem": sem})
        study = found[0]
        spec = scale_of(study.get("scale"))
        return {
            "study": study,
            "station": station,
            "spec": spec,
            **views.study_figures(animals, tps, scores, spec),
        }

    def session(
        self, station: str, session_id: str, frames_page: int = 1, size: int = PAGE_SIZE
    ) -> dict[str, Any]:
        """The session page of a station's session (``{}``: no such session): figures from every
        frame's time and score, and one page of its frames (``frames``: :class:`Paged`)."""
        with self.engine.connect() as conn:
            have = self._tables(conn)
            if "sessions" not in have:
                return {}
            p = {"st": station, "sid": session_id}
            found = self._rows(conn, "SELECT * FROM sessions WHERE station_id=:st AND id=:sid", **p)
            if not found:
                return {}
            plot_frames: list[dict[str, Any]] = []
            listed = Paged([], Page.of(1, 0, size))
            intervals: list[dict[str, Any]] = []
            if "frames" in have:
                plot_frames = self._rows(
                    conn,
                    "SELECT id, t_s, score, abstained FROM frames WHERE station_id=:st AND session_id=:sid "
                    "ORDER BY frame_index",
                    **p,
                )
                listed = self._paged(
                    conn,
                    "SELECT COUNT(*) FROM frames WHERE station_id=:st AND session_id=:sid",
                    "SELECT id, frame_index, t_s, score, quality, abstained, n_boxes FROM frames "
                    "WHERE station_id=:st AND session_id=:sid ORDER BY frame_index",
                    frames_page,
                    size,
                    **p,
                )
            if "intervals" in have:
                intervals = self._rows(
                    conn,
                    "SELECT * FROM intervals WHERE station_id=:st AND session_id=:sid "
                    "ORDER BY interval_index",
                    **p,
                )
            full: dict[int, dict[str, Any]] = {}
            if intervals and "frames" in have:  # whole rows only for the selected frames
                full = {
                    int(r["id"]): r
                    for r in self._rows(
                        conn,
                        "SELECT * FROM frames WHERE station_id=:st AND id = ANY(:ids)",
                        st=station,
                        ids=[int(r["frame_id"]) for r in intervals],
                    )
                }
            study = (
                self._rows(conn, "SELECT * FROM study_sessions WHERE station_id=:st AND session_id=:sid", **p)
                if "study_sessions" in have
                else []
            )
        row = found[0]
        spec = scale_of(row.get("scale"))
        frames = [full.get(int(f["id"]), f) for f in plot_frames]
        ids = {int(f["id"]) for f in frames}
        intervals = [r for r in intervals if int(r["frame_id"]) in ids]  # a frame not synced yet
        v = views.session_figures(row, frames, intervals, spec)
        v["session"] = {**row, "status": _status({**row, **(study[0] if study else {})})}
        return {**v, "station": station, "study": study[0] if study else None, "spec": spec, "frames": listed}

    def image_path(self, station: str, frame_id: int) -> str | None:
        """The relative image path (under the ``--images`` folder) of a selected frame, or ``None``."""
        with self.engine.connect() as conn:
            if "intervals" not in self._tables(conn):
                return None
            rows = self._rows(
                conn,
                "SELECT image_path FROM intervals WHERE station_id=:st AND frame_id=:f "
                "AND image_path IS NOT NULL",
                st=station,
                f=frame_id,
            )
        return str(rows[0]["image_path"]) if rows else None


def _status(s: dict[str, Any]) -> str:
    """What a central session is: ``complete`` only when the sync marked it so; a session still
    running on its station or not fully synced yet is ``incomplete``; one the operator stopped is
    ``stopped``."""
    if s.get("status") == "complete":
        return "complete"
    if s.get("wanted") == "stop":
        return "stopped (incomplete)"
    return "incomplete"


def _when(t: float | None) -> str:
    """A UNIX time as ``YYYY-MM-DD HH:MM UTC`` (``-`` when unknown)."""
    import datetime as dt

    if t is None:
        return "-"
    return dt.datetime.fromtimestamp(float(t), dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _station(station: str) -> str:
    if not STATION_ID.match(station):
        raise HTTPException(404, "no such station")
    return station


PAGE_PARAMS = ("page", "studies_page")
"""Query parameters of the paged lists (kept in each other's links)."""

PAGE_QUERY = Query(1, ge=1, le=MAX_PAGE, description="Page number (1-based)")


def create_central_app(data: Path, engine: Any, images: Path | None = None) -> FastAPI:
    """The read-only facility view.

    Args:
        data: Local data folder whose ``grimace.sqlite`` holds the users and logins.
        engine: From :func:`read_only_engine`.
        images: The ``grimace sync --images`` folder (``None``: no images shown).

    Returns:
        The FastAPI app.
    """
    app = FastAPI(title="grimace facility view", docs_url=None, redoc_url=None, openapi_url=None)
    store = local_store(Path(data) / "grimace.sqlite")
    core = WebCore(app, store, None, lambda _u: "/stations", central=True, when=_when)
    render, page_user = core.render, core.page_user
    reader = CentralReader(engine)
    root = Path(images).resolve() if images is not None else None

    @app.get("/")
    def home(request: Request) -> Response:
        page_user(request)
        return RedirectResponse("/stations", status_code=303)

    def href(request: Request) -> Any:
        """``href(param, n)``: this page's URL with ``?param=n`` (its other page numbers kept)."""

        def _href(param: str, n: int) -> str:
            q = {k: v for k, v in request.query_params.items() if k in PAGE_PARAMS}
            q[param] = str(n)
            return f"{request.url.path}?{urlencode(sorted(q.items()))}"

        return _href

    @app.get("/stations")
    def stations_page(request: Request, page: int = PAGE_QUERY) -> Response:
        u = page_user(request)
        got = reader.stations(page)
        return render(request, "central_stations.html", u, stations=got, href=href(request))

    @app.get("/stations/{station}")
    def station_page(
        request: Request, station: str, page: int = PAGE_QUERY, studies_page: int = PAGE_QUERY
    ) -> Response:
        u = page_user(request)
        st = reader.station(_station(station))
        if st is None:
            raise HTTPException(404, "no such station")
        return render(
            request,
            "central_station.html",
            u,
            station=st,
            studies=reader.station_studies(station, studies_page),
            sessions=reader.station_sessions(station, page),
            href=href(request),
        )

    @app.get("/stations/{station}/studies/{study_id}")
    def study_page(request: Request, station: str, study_id: str) -> Response:
        u = page_user(request)
        if not ID_PATTERN.match(study_id):
            raise HTTPException(404, "no such study")
        v = reader.study(_station(station), study_id)
        if not v:
            raise HTTPException(404, "no such study")
        v["plot"] = Markup(v["plot"])  # built by views.line_plot with every label escaped
        return render(request, "central_study.html", u, **v)

    @app.get("/stations/{station}/sessions/{session_id}")
    def session_page(request: Request, station: str, session_id: str, page: int = PAGE_QUERY) -> Response:
        u = page_user(request)
        if len(session_id) > 200 or not all(c.isalnum() or c in "_.-@" for c in session_id):
            raise HTTPException(404, "no such session")
        v = reader.session(_station(station), session_id, page)
        if not v:
            raise HTTPException(404, "no such session")
        v["plot"] = Markup(v["plot"])
        return render(request, "central_session.html", u, images=root is not None, href=href(request), **v)

    @app.get("/stations/{station}/frames/{frame_id}.jpg")
    def frame_image(request: Request, station: str, frame_id: int) -> Response:
        """A selected frame's image by id; the path comes from the central row and must lie in the
        image folder."""
        page_user(request)
        if root is None:
            raise HTTPException(404, "no image folder given (--images)")
        rel = reader.image_path(_station(station), frame_id)
        if rel is None:
            raise HTTPException(404, "no image for this frame")
        real = (root / rel).resolve()
        if root not in real.parents or not real.is_file():
            raise HTTPException(404, "no image for this frame")
        return FileResponse(real, media_type="image/jpeg", headers={"Cache-Control": "no-store"})

    return app
