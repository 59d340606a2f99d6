"""Server-side figures of the station pages: the data behind the session, study and validation pages,
and their SVG plots (built here with every label escaped, so templates insert them as markup).

No web framework here: the functions take a :class:`~edge.storage.Store` and return plain values.
"""

from __future__ import annotations

import html
import json
import math
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from edge.aggregate import mean_sem
from edge.records import frame_columns, record_from_sql, table_row, write_csv, write_xlsx
from edge.scales import ScaleSpec
from edge.station.agreement import icc21, kappa_quadratic
from edge.station.study import Study
from edge.storage import Store

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")


def _esc(v: Any) -> str:
    return html.escape(str(v), quote=True)


def _fmt(v: float | None, nd: int = 2) -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{nd}f}"


def max_score(spec: ScaleSpec) -> float:
    """Top of the score axis: the highest grade of the scale's units (RGS: 2)."""
    return float(max((u.grades - 1 for u in spec.units), default=2) or 1)


# ------------------------------------------------------------------------------------ SVG plots
def line_plot(
    series: list[dict[str, Any]],
    x_labels: list[str] | None = None,
    y_max: float = 2.0,
    width: int = 640,
    height: int = 240,
    x_max: float | None = None,
    title: str = "",
) -> str:
    """An SVG line plot.

    Args:
        series: ``{"name", "points": [(x, y), ...], "color", "width", "dots"}``; ``y`` may be None (gap).
        x_labels: Category labels at x = 0, 1, ... (else numeric ticks up to ``x_max``).
        y_max: Top of the y axis (the scale's maximum score).
        width: Pixels.
        height: Pixels.
        x_max: Right end of a numeric x axis.
        title: Accessible title.

    Returns:
        SVG markup (all text escaped).
    """
    left, right, top, bottom = 44, 130, 12, 30
    pw, ph = width - left - right, height - top - bottom
    if x_labels is not None:
        n = max(len(x_labels) - 1, 1)
        xmax = float(n)
    else:
        xmax = float(x_max or max((p[0] for s in series for p in s["points"]), default=1.0) or 1.0)

    def sx(x: float) -> float:
        return left + (x / xmax) * pw if xmax else left

    def sy(y: float) -> float:
        return top + ph - (y / y_max) * ph if y_max else top + ph

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="{_esc(title)}" class="plot"><title>{_esc(title)}</title>'
    ]
    for t in np.linspace(0, y_max, 5):
        y = sy(float(t))
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11">{t:.2g}</text>')
    if x_labels is not None:
        for i, lab in enumerate(x_labels):
            out.append(
                f'<text x="{sx(i):.1f}" y="{top + ph + 18}" text-anchor="middle" font-size="11">'
                f"{_esc(lab)}</text>"
            )
    else:
        for t in np.linspace(0, xmax, 6):
            out.append(
                f'<text x="{sx(float(t)):.1f}" y="{top + ph + 18}" text-anchor="middle" font-size="11">'
                f"{t:.0f}</text>"
            )
    out.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>')
    for k, s in enumerate(series):
        color = s.get("color", PALETTE[k % len(PALETTE)])
        seg: list[str] = []
        segs = []
        for x, y in s["points"]:
            if y is None:
                if seg:
                    segs.append(seg)
                seg = []
                continue
            seg.append(f"{sx(x):.1f},{sy(y):.1f}")
        if seg:
            segs.append(seg)
        for sg in segs:
            out.append(
                f'<polyline fill="none" stroke="{color}" stroke-width="{s.get("width", 1.5)}" '
                f'points="{" ".join(sg)}"/>'
            )
        if s.get("dots", True):
            for x, y in s["points"]:
                if y is not None:
                    out.append(
                        f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="{s.get("r", 3)}" fill="{color}"/>'
                    )
        out.append(
            f'<text x="{left + pw + 8}" y="{top + 14 + 14 * k}" font-size="11" fill="{color}">'
            f"{_esc(s['name'])}</text>"
        )
    out.append("</svg>")
    return "".join(out)


# -------------------------------------------------------------------------------------- session
def session_view(store: Store, session_id: str, spec: ScaleSpec) -> dict[str, Any]:
    """Everything the session page shows (``{}`` when there is no such session)."""
    row = store.session_row(session_id)
    if not row:
        return {}
    return {
        **session_figures(row, store.frames(session_id), store.intervals(session_id), spec),
        "study": Study(store).study_session(session_id),
        "events": store.events(session_id)[-30:],
    }


def session_figures(
    row: dict[str, Any], frames: list[dict[str, Any]], intervals: list[dict[str, Any]], spec: ScaleSpec
) -> dict[str, Any]:
    """The session page's figures from its rows (a station store's or the central database's).

    Args:
        row: The ``sessions`` row.
        frames: Its ``frames`` rows in time order.
        intervals: Its ``intervals`` rows (selected frames).
        spec: The scale.

    Returns:
        ``session``, ``selected``, ``n_frames``, abstentions, scores, ``plot`` (SVG) and ``units``.
    """
    by_id = {int(f["id"]): f for f in frames}
    units = [u.name for u in spec.units]
    selected = []
    for r in intervals:
        f = by_id[int(r["frame_id"])]
        us = json.loads(f["unit_scores"] or "{}")
        selected.append(
            {
                "interval": int(r["interval_index"]) + 1,
                "frame_id": int(r["frame_id"]),
                "t_s": f["t_s"],
                "score": f["score"],
                "quality": f["quality"],
                "abstained": f["abstained"],
                "final": bool(r["final"]),
                "has_image": bool(r["image_path"]),
                "units": [(u, us.get(u)) for u in units],
            }
        )
    reasons: dict[str, int] = defaultdict(int)
    for f in frames:
        if f["abstained"]:
            reasons[f["abstained"]] += 1
    score, sem = mean_sem(s["score"] for s in selected if s["score"] is not None)
    cont = mean_sem(f["score"] for f in frames if f["score"] is not None)[0]
    sel_ids = {s["frame_id"] for s in selected}
    plot = line_plot(
        [
            {
                "name": "every frame",
                "points": [(f["t_s"], f["score"]) for f in frames],
                "color": "#9aa",
                "dots": False,
                "width": 1,
            },
            {
                "name": "selected",
                "points": [(f["t_s"], f["score"]) for f in frames if int(f["id"]) in sel_ids],
                "color": "#d62728",
                "width": 0,
                "r": 4,
            },
        ],
        y_max=max_score(spec),
        x_max=float(row["duration_s"]),
        title=f"{spec.score_name} over session time (s)",
    )
    return {
        "session": row,
        "selected": selected,
        "n_frames": len(frames),
        "abstentions": sorted(reasons.items(), key=lambda kv: -kv[1]),
        "n_abstained": sum(reasons.values()),
        "score": score,
        "sem": sem,
        "continuous": cont,
        "plot": plot,
        "units": units,
    }


# ---------------------------------------------------------------------------------------- study
def study_rows(store: Store, study_id: str, spec: ScaleSpec) -> tuple[list[str], list[dict[str, Any]]]:
    """The study export: one frame record row (:mod:`edge.records`, the seed's columns first) per
    selected interval frame of every session, with ``study``, ``chamber``, ``interval`` appended."""
    st = Study(store)
    rows = []
    for s in st.sessions(study_id):
        sid = s["session_id"]
        source = str(store.session_row(sid).get("source", ""))
        by_id = {int(f["id"]): f for f in store.frames(sid)}
        for r in store.intervals(sid):
            f = by_id[int(r["frame_id"])]
            rec = record_from_sql(
                f,
                spec,
                name=frame_name(sid, int(f["frame_index"])),
                source=source,
                subject=s["animal_id"],
                session=sid,
                group=s["grp"],
                timepoint=s["timepoint_id"],
            )
            rows.append(
                {
                    **table_row(rec, spec),
                    "study": study_id,
                    "chamber": s["chamber_id"],
                    "interval": int(r["interval_index"]) + 1,
                }
            )
    return [*frame_columns(spec), "study", "chamber", "interval"], rows


def session_scores(store: Store, study_id: str) -> list[dict[str, Any]]:
    """Per session: animal, group, timepoint, status, session score (mean of selected frames), SEM."""
    out = []
    for s in Study(store).sessions(study_id):
        score, sem = mean_sem(r["score"] for r in store.intervals(s["session_id"]) if r["score"] is not None)
        status = "stopped" if s["status"] == "running" and s["wanted"] == "stop" else s["status"]
        out.append({**s, "status": status, "score": score, "sem": sem})
    return out


def study_view(store: Store, study_id: str, spec: ScaleSpec) -> dict[str, Any]:
    """Everything the study page shows (``{}`` when there is no such study)."""
    st = Study(store)
    study = st.study(study_id)
    if not study:
        return {}
    animals = st.animals(study_id)
    tps = st.timepoints(study_id)
    scores = session_scores(store, study_id)
    return {
        "study": study,
        **study_figures(animals, tps, scores, spec),
        "missing": st.missing(study_id),
    }


def study_figures(
    animals: list[dict[str, Any]], tps: list[str], scores: list[dict[str, Any]], spec: ScaleSpec
) -> dict[str, Any]:
    """The study page's table, group means and plot from its rows (a station store's or the central
    database's).

    Args:
        animals: ``animals`` rows (``id``, ``grp``, ...), in display order.
        tps: Timepoint ids in order.
        scores: Sessions as :func:`session_scores` gives them (``animal_id``, ``timepoint_id``,
            ``score``, ...) oldest first: the latest of an animal at a timepoint fills its cell.
        spec: The scale.

    Returns:
        ``animals``, ``timepoints``, ``table``, ``groups``, ``sessions`` and ``plot`` (SVG).
    """
    cell: dict[tuple[str, str], dict[str, Any]] = {}
    for s in scores:  # the latest session of an animal at a timepoint
        cell[(s["animal_id"], s["timepoint_id"])] = s
    table = [{"animal": a, "cells": [cell.get((a["id"], t)) for t in tps]} for a in animals]
    groups = sorted({a["grp"] for a in animals})
    gcolor = {g: PALETTE[i % len(PALETTE)] for i, g in enumerate(groups)}
    group_rows = []
    series = []
    for g in groups:
        members = [a["id"] for a in animals if a["grp"] == g]
        means = []
        for t in tps:
            vals = [
                cell[(a, t)]["score"] for a in members if (a, t) in cell and cell[(a, t)]["score"] is not None
            ]
            m, e = mean_sem(vals)
            means.append({"mean": m, "sem": e, "n": len(vals)})
        group_rows.append({"group": g, "n": len(members), "cells": means})
        series.append(
            {
                "name": f"group {g or '(none)'} (mean)",
                "points": [(i, c["mean"]) for i, c in enumerate(means)],
                "color": gcolor[g],
                "width": 3,
            }
        )
    for a in animals:
        series.append(
            {
                "name": a["id"],
                "points": [
                    (i, cell[(a["id"], t)]["score"] if (a["id"], t) in cell else None)
                    for i, t in enumerate(tps)
                ],
                "color": gcolor[a["grp"]],
                "width": 1,
                "r": 2,
            }
        )
    plot = (
        line_plot(series, x_labels=tps, y_max=max_score(spec), title=f"{spec.score_name} by timepoint")
        if tps
        else ""
    )
    return {
        "animals": animals,
        "timepoints": tps,
        "table": table,
        "groups": group_rows,
        "sessions": scores,
        "plot": plot,
    }


def export_study(store: Store, study_id: str, spec: ScaleSpec, folder: Path, fmt: str) -> Path:
    """Write the study export (:func:`study_rows`, plus a ``sessions`` sheet in XLSX) with the
    :mod:`edge.records` writers; returns the file.

    Raises:
        ValueError: ``fmt`` is not ``csv``/``xlsx``.
        ImportError: XLSX without openpyxl.
    """
    cols, rows = study_rows(store, study_id, spec)
    path = folder / f"study_{study_id}.{fmt}"
    if fmt == "csv":
        return write_csv(path, rows, cols)
    if fmt != "xlsx":
        raise ValueError(f"export format must be csv or xlsx, not {fmt!r}")
    scols = ["session", "animal", "group", "timepoint", "chamber", "status", spec.score_name, "SEM"]
    srows = [
        {
            "session": s["session_id"],
            "animal": s["animal_id"],
            "group": s["grp"],
            "timepoint": s["timepoint_id"],
            "chamber": s["chamber_id"],
            "status": s["status"],
            spec.score_name: s["score"],
            "SEM": s["sem"],
        }
        for s in session_scores(store, study_id)
    ]
    out = write_xlsx(path, {"frames": (cols, rows), "sessions": (scols, srows)})
    if out is None:
        raise ImportError("writing .xlsx needs openpyxl (pip install openpyxl); export CSV instead")
    return out


# -------------------------------------------------------------------------------------- grading
def gradable_frames(store: Store) -> list[int]:
    """Frame ids the graders grade: the selected frame of every interval that has an image."""
    return [
        int(r[0])
        for r in store.db.execute(
            "SELECT frame_id FROM intervals WHERE image_path IS NOT NULL AND image_path != '' "
            "ORDER BY frame_id"
        )
    ]


def grading_order(frame_ids: list[int], grader: str) -> list[int]:
    """The grader's own random order of the frames (fixed per grader, differs between graders)."""
    ids = sorted(frame_ids)
    random.Random(f"grimace-grading:{grader}").shuffle(ids)
    return ids


def graded_by(store: Store, grader: str) -> set[int]:
    """Frames this grader has graded."""
    return {
        int(r[0]) for r in store.db.execute("SELECT DISTINCT frame_id FROM grades WHERE grader=?", (grader,))
    }


def save_grades(store: Store, frame_id: int, grader: str, grades: dict[str, int | None]) -> None:
    """Store one grader's grades of one frame (``None`` = not visible), replacing earlier ones."""
    import time

    with store.transaction(f"saving the grades of frame {frame_id}"):
        for unit, g in grades.items():
            store.db.execute(
                "INSERT INTO grades (frame_id, grader, unit, grade, graded_at) VALUES (?,?,?,?,?) "
                "ON CONFLICT(frame_id, grader, unit) DO UPDATE SET grade=excluded.grade, "
                "graded_at=excluded.graded_at",
                (frame_id, grader, unit, g, time.time()),
            )


def validation_view(store: Store, spec: ScaleSpec) -> dict[str, Any]:
    """Model vs graders and grader vs grader on the frames graded by at least two graders.

    A grader's frame score is the mean of the units they could see (the scale's score rule); the
    model's is the frame's score from expected grades. ICC(2,1) on frame scores; quadratic-weighted
    kappa per unit on grades 0-2 (the model's unit grade is its argmax unit score rounded half up).
    """
    units = [u.name for u in spec.units]
    levels = list(range(spec.units[0].grades)) if spec.units else [0, 1, 2]
    g: dict[int, dict[str, dict[str, int | None]]] = defaultdict(lambda: defaultdict(dict))
    for fid, grader, unit, grade in store.db.execute("SELECT frame_id, grader, unit, grade FROM grades"):
        g[int(fid)][grader][unit] = grade
    graders = sorted({gr for f in g.values() for gr in f})
    shared = sorted(f for f, by in g.items() if len(by) >= 2)
    model: dict[int, dict[str, Any]] = {}
    for fid in shared:
        r = store.db.execute("SELECT score, unit_argmax FROM frames WHERE id=?", (fid,)).fetchone()
        if r:
            model[fid] = {"score": r[0], "units": json.loads(r[1] or "{}")}

    def fscore(d: dict[str, int | None]) -> float:
        v = [x for x in d.values() if x is not None]
        return float(np.mean(v)) if v else math.nan

    def pair(a_get: Any, b_get: Any) -> dict[str, Any]:
        x = np.array([[a_get(f)["score"], b_get(f)["score"]] for f in shared], float).reshape(-1, 2)
        ok = np.isfinite(x).all(1)
        kap = {}
        for u in units:
            aa, bb = [], []
            for f in shared:
                ua, ub = a_get(f)["units"].get(u), b_get(f)["units"].get(u)
                if ua is not None and ub is not None:
                    aa.append(math.floor(ua + 0.5))
                    bb.append(math.floor(ub + 0.5))
            kap[u] = {"kappa": kappa_quadratic(aa, bb, levels), "n": len(aa)}
        icc = icc21(x[ok]) if ok.sum() >= 2 else math.nan
        return {"n": int(ok.sum()), "icc": None if math.isnan(icc) else icc, "kappa": kap}

    def grader_get(name: str) -> Any:
        def get(f: int) -> dict[str, Any]:
            d = g[f].get(name)
            if d is None:
                return {"score": math.nan, "units": {}}
            return {"score": fscore(d), "units": d}

        return get

    def model_get(f: int) -> dict[str, Any]:
        m = model.get(f, {})
        s = m.get("score")
        return {"score": math.nan if s is None else float(s), "units": m.get("units", {})}

    def mean_get(f: int) -> dict[str, Any]:
        vals = [fscore(d) for d in g[f].values()]
        vals = [v for v in vals if math.isfinite(v)]
        return {"score": float(np.mean(vals)) if vals else math.nan, "units": {}}

    pairs = []
    for i, a in enumerate(graders):
        for b in graders[i + 1 :]:
            pairs.append({"a": a, "b": b, **pair(grader_get(a), grader_get(b))})
    vs_model = [{"a": "model", "b": gr, **pair(model_get, grader_get(gr))} for gr in graders]
    vs_mean = pair(model_get, mean_get) if shared else None
    allk = np.array([[grader_get(gr)(f)["score"] for gr in graders] for f in shared], float)
    icc_all = icc21(allk) if len(shared) >= 2 and len(graders) >= 2 else math.nan
    progress = {gr: sum(1 for f in g.values() if gr in f) for gr in graders}
    return {
        "graders": graders,
        "n_shared": len(shared),
        "pairs": pairs,
        "vs_model": vs_model,
        "vs_mean": vs_mean,
        "icc_all": None if math.isnan(icc_all) else icc_all,
        "units": units,
        "progress": progress,
        "n_gradable": len(gradable_frames(store)),
        "fmt": _fmt,
        "exports": ["model", "subjects", *[f"grader-{gr}" for gr in graders]],
    }


# ------------------------------------------------------------------------- validation exports
def frame_name(session_id: str, frame_index: int) -> str:
    """The ``Filename`` of a station frame in every export (study, model, graders, subjects)."""
    return f"{session_id}@{int(frame_index):06d}"


def validation_tables(store: Store, spec: ScaleSpec) -> dict[str, tuple[list[str], list[dict[str, Any]]]]:
    """Tables for ``grimace eval grades`` over the graded frames (one row per frame, one ``Filename``).

    Returns:
        ``"model"``: the model's frame records (:mod:`edge.records` columns); ``"subjects"``: ``image,
        subject, group, timepoint`` (``--groups``); ``"grader:<name>"``: that grader's grades under the
        units' labels (empty where the grader marked a unit not visible).
    """
    graded = sorted({int(r[0]) for r in store.db.execute("SELECT DISTINCT frame_id FROM grades")})
    study = {
        r[0]: (r[1], r[2], r[3])
        for r in store.db.execute(
            "SELECT ss.session_id, ss.animal_id, a.grp, ss.timepoint_id FROM study_sessions ss "
            "LEFT JOIN animals a ON a.study_id = ss.study_id AND a.id = ss.animal_id"
        )
    }
    names: dict[int, str] = {}
    sources: dict[str, str] = {}  # session -> camera, read once per session
    model_rows, subject_rows = [], []
    for fid in graded:
        cur = store.db.execute("SELECT * FROM frames WHERE id=?", (fid,))
        row = cur.fetchone()
        if row is None:
            continue
        f = dict(zip([c[0] for c in cur.description], row, strict=True))
        sid = str(f["session_id"])
        names[fid] = frame_name(sid, int(f["frame_index"]))
        animal, grp, tp = study.get(sid, ("", "", ""))
        if sid not in sources:
            sources[sid] = str(store.session_row(sid).get("source", ""))
        rec = record_from_sql(
            f,
            spec,
            name=names[fid],
            source=sources[sid],
            subject=animal or sid,
            session=sid,
            group=grp or "",
            timepoint=tp or "",
        )
        model_rows.append(table_row(rec, spec))
        subject_rows.append({"image": names[fid], "subject": animal or sid, "group": grp or "",
                             "timepoint": tp or ""})  # fmt: skip
    out: dict[str, tuple[list[str], list[dict[str, Any]]]] = {
        "model": (frame_columns(spec), model_rows),
        "subjects": (["image", "subject", "group", "timepoint"], subject_rows),
    }
    by: dict[str, dict[int, dict[str, int | None]]] = defaultdict(dict)
    for fid, grader, unit, grade in store.db.execute("SELECT frame_id, grader, unit, grade FROM grades"):
        by[grader].setdefault(int(fid), {})[unit] = grade
    cols = ["Filename", *[u.label for u in spec.units]]
    for grader, frames in sorted(by.items()):
        rows = []
        for fid in sorted(frames):
            if fid in names:
                g = frames[fid]
                rows.append({"Filename": names[fid], **{u.label: g.get(u.name) for u in spec.units}})
        out[f"grader:{grader}"] = (cols, rows)
    return out
