"""The one frame record and its writers: every command that writes frames goes through this module.

``grimace score``, ``watch``, ``predict``, ``teacher score``, ``train distill`` and the station all turn
a :class:`~edge.results.FrameResult` into a :class:`FrameRecord` with :func:`frame_record`, and write it
as a table row (:func:`table_row`: CSV, XLSX and Parquet), a JSON line (:func:`json_line`) or an SQL row
(:func:`sql_row`). One vocabulary, record schema :data:`RECORD_SCHEMA`, named from the scale spec
(``S`` = :attr:`~edge.scales.ScaleSpec.score_name`, e.g. ``RGS``, ``MGS``, ``GOAT``):

============================  =====================================================================
column                        meaning
============================  =====================================================================
``Filename``                  file name; video and camera frames ``name@000123`` (seed's column)
``S``                         frame score from **expected** (probability-weighted) grades (seed's)
``<unit label>``              unit score from expected grades, e.g. ``Orbital Tightening`` (seed's)
``S argmax``                  frame score from **argmax** grades (the seed's ViTs gave argmax grades)
``<unit label> argmax``       unit score from argmax grades
``animal``                    animal id (subject map, ``subjects.csv``, or the folder/video name)
``group``, ``timepoint``      from the subject map when it has them
``session``                   video file, folder or live session id
``source``                    path of the file or camera
``frame_index``, ``time_s``   position in the video/stream (time from the container's timestamps)
``<unit>_count``              boxes of the unit that were scored (RGS: up to 2 eyes, 2 ears, 1 nose)
``quality``                   frame quality in ``[0, 1]`` (when measured)
``abstained``                 why the frame has no score (empty when scored)
``n_boxes``                   boxes kept after NMS
``pain``                      binary scales: 1 when ``S`` is at or above the scale's threshold
============================  =====================================================================

Abstained frames have empty score cells and the reason in ``abstained``; a score is never NaN. A
command may append its own columns after these (``teacher score``: ``pain_probability``), never
re-use one of these names for something else. Readers (``grimace eval``) accept exactly this schema;
files written before schema 2 are read through :func:`upgrade_legacy_header` (table in
``docs/evaluation.md``).

Writers escape spreadsheet formulas (a cell starting with ``= + - @``, tab or CR is written as text)
and write each file under a temporary name, renamed when complete.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge.fileio import atomic_write_bytes, atomic_write_text
from edge.results import FrameResult
from edge.scales import ScaleSpec

if TYPE_CHECKING:
    from edge.aggregate import SubjectMap
    from edge.sources import Frame

RECORD_SCHEMA = 2
"""Version of the frame-record vocabulary (written to every JSON line and ``run.json``)."""

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
"""A spreadsheet evaluates a cell that starts with one of these as a formula (CSV injection)."""


@dataclass
class FrameRecord:
    """One scored (or abstained) frame, flat.

    Attributes:
        name: ``Filename``: file name, ``video.mp4@000123`` for video frames.
        source: Path of the file or camera.
        index: Frame index in its video (0 for images).
        time_s: Video/session time in seconds.
        subject: Animal id (column ``animal``).
        session: Session id (video file, folder or live session).
        score: Frame score from expected grades (``None`` when abstained).
        score_argmax: Frame score from argmax grades (``None`` when abstained).
        abstained: Reason when not scored.
        quality: Frame quality in ``[0, 1]``.
        unit_scores: Expected-grade score per unit name (``None`` when not found).
        unit_argmax: Argmax-grade score per unit name.
        unit_counts: Scored boxes per unit name.
        n_boxes: All kept boxes.
        pain: Binary scales: whether ``score >= threshold``.
        group: Treatment group, when known.
        timepoint: Timepoint, when known.
        extra: Command-specific columns appended after the standard ones.
    """

    name: str
    source: str
    index: int
    time_s: float
    subject: str
    session: str
    score: float | None
    score_argmax: float | None
    abstained: str | None
    quality: float | None
    unit_scores: dict[str, float | None] = field(default_factory=dict)
    unit_argmax: dict[str, float | None] = field(default_factory=dict)
    unit_counts: dict[str, int] = field(default_factory=dict)
    n_boxes: int = 0
    pain: bool | None = None
    group: str = ""
    timepoint: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """All fields as a JSON-safe dict (attribute names)."""
        return asdict(self)


def _pain(spec: ScaleSpec, score: float | None, threshold: float | None = None) -> bool | None:
    """Binary scales: whether the frame score reaches the threshold (default: the scale's)."""
    thr = spec.pain_threshold if threshold is None else threshold
    if spec.aggregation != "binary" or score is None or thr is None:
        return None
    return bool(score >= thr)


def frame_record(
    result: FrameResult,
    spec: ScaleSpec,
    *,
    name: str,
    source: str,
    index: int = 0,
    time_s: float = 0.0,
    subject: str = "",
    session: str = "",
    group: str = "",
    timepoint: str = "",
    threshold: float | None = None,
    extra: dict[str, Any] | None = None,
) -> FrameRecord:
    """Flatten a :class:`~edge.results.FrameResult` (both frame scores come from ``score_frame``).

    Args:
        result: The scored frame.
        spec: Its scale.
        name: ``Filename`` value.
        source: Path of the file or camera.
        index: Frame index in the video.
        time_s: Time in seconds.
        subject: Animal id.
        session: Session id.
        group: Treatment group.
        timepoint: Timepoint.
        threshold: Pain threshold of binary scales (default: the scale's ``pain_threshold``).
        extra: Command-specific columns.
    """
    return FrameRecord(
        name=name,
        source=source,
        index=int(index),
        time_s=float(time_s),
        subject=subject,
        session=session,
        score=result.score,
        score_argmax=result.score_argmax,
        abstained=result.abstained,
        quality=result.quality,
        unit_scores=dict(result.unit_scores),
        unit_argmax=dict(result.unit_argmax),
        unit_counts=dict(result.unit_counts),
        n_boxes=len(result.detections),
        pain=_pain(spec, result.score, threshold),
        group=group,
        timepoint=timepoint,
        extra=dict(extra or {}),
    )


def default_subject(source: str | Path, kind: str) -> str:
    """Animal id when no subject map is given: a video's file stem, an image's parent folder name."""
    p = Path(source)
    return p.stem if kind in ("video", "camera") else (p.parent.name or "all")


def record_from_frame(
    result: FrameResult,
    spec: ScaleSpec,
    frame: Frame,
    subject_map: SubjectMap | None = None,
    extra: dict[str, Any] | None = None,
) -> FrameRecord:
    """The frame record of a frame read by :mod:`edge.sources`: name, source, index and time from the
    frame; animal, group, timepoint and session from the subject map (a file not in it is animal
    ``unmapped``) or, without one, :func:`default_subject` and the video or the image's folder."""
    kind = frame.meta.get("kind", "image")
    group = timepoint = ""
    if subject_map is not None:
        info = subject_map.lookup(frame.source)
        subject = info.subject if info else "unmapped"
        session = (info.session if info and info.session else "") or frame.source
        if info:
            group, timepoint = info.group, info.timepoint
    else:
        subject = default_subject(frame.source, kind)
        session = frame.source if kind == "video" else str(Path(frame.source).parent)
    return frame_record(
        result,
        spec,
        name=frame.name,
        source=frame.source,
        index=frame.index,
        time_s=frame.time_s,
        subject=subject,
        session=session,
        group=group,
        timepoint=timepoint,
        extra=extra,
    )


# ------------------------------------------------------------------------------------ vocabulary
def argmax_column(column: str) -> str:
    """``"RGS"`` -> ``"RGS argmax"``, ``"Ear Changes"`` -> ``"Ear Changes argmax"``."""
    return f"{column} argmax"


def frame_columns(spec: ScaleSpec, extra: Sequence[str] = ()) -> list[str]:
    """Per-frame table columns of record schema 2: the seed's first, then ours, then ``extra``."""
    s = spec.score_name
    cols = ["Filename", s, *[u.label for u in spec.units]]
    cols += [argmax_column(s), *[argmax_column(u.label) for u in spec.units]]
    cols += ["animal", "group", "timepoint", "session", "source", "frame_index", "time_s"]
    cols += [f"{u.name}_count" for u in spec.units]
    cols += ["quality", "abstained", "n_boxes"]
    if spec.aggregation == "binary":
        cols.append("pain")
    cols += [c for c in extra if c not in cols]
    return cols


def _round(v: float | None, nd: int | None) -> float | None:
    if v is None:
        return None
    return float(v) if nd is None else round(float(v), nd)


def table_row(rec: FrameRecord, spec: ScaleSpec, ndigits: int | None = 4) -> dict[str, Any]:
    """One row under :func:`frame_columns` (``None`` for empty cells, never NaN).

    Args:
        rec: The record.
        spec: Its scale.
        ndigits: Round scores to this many digits (``None``: full precision, as in JSON lines).
    """
    s = spec.score_name
    row: dict[str, Any] = {"Filename": rec.name, s: _round(rec.score, ndigits)}
    for u in spec.units:
        row[u.label] = _round(rec.unit_scores.get(u.name), ndigits)
    row[argmax_column(s)] = _round(rec.score_argmax, ndigits)
    for u in spec.units:
        row[argmax_column(u.label)] = _round(rec.unit_argmax.get(u.name), ndigits)
    row.update(
        animal=rec.subject,
        group=rec.group,
        timepoint=rec.timepoint,
        session=rec.session,
        source=rec.source,
        frame_index=rec.index,
        time_s=round(rec.time_s, 3) if ndigits is not None else rec.time_s,
    )
    for u in spec.units:
        row[f"{u.name}_count"] = rec.unit_counts.get(u.name, 0)
    row.update(quality=_round(rec.quality, ndigits), abstained=rec.abstained, n_boxes=rec.n_boxes)
    if spec.aggregation == "binary":
        row["pain"] = None if rec.pain is None else int(rec.pain)
    for k, v in rec.extra.items():
        row.setdefault(k, v)
    return row


def detection_dicts(result: FrameResult, spec: ScaleSpec) -> list[dict[str, Any]]:
    """Boxes of a frame as JSON-safe dicts (unit name, confidence, box, grade distribution)."""
    d = result.detections
    sel = set(result.selected.tolist())
    exp, arg = d.expected_grade, d.argmax_grade
    return [
        {
            "unit": spec.units[int(d.unit[i])].name,
            "confidence": round(float(d.confidence[i]), 5),
            "xyxy": [round(float(v), 2) for v in d.xyxy[i]],
            "grade_probs": [
                round(float(v), 5) for v in d.grade_probs[i][: spec.units[int(d.unit[i])].grades]
            ],
            "expected_grade": round(float(exp[i]), 5),
            "argmax_grade": int(arg[i]),
            "selected": i in sel,
        }
        for i in range(len(d))
    ]


def json_line(rec: FrameRecord, spec: ScaleSpec, result: FrameResult | None = None) -> dict[str, Any]:
    """A JSON-lines object: the table row's keys at full precision, plus the boxes when ``result``
    is given and ``record_schema``."""
    obj: dict[str, Any] = {"record_schema": RECORD_SCHEMA, **table_row(rec, spec, ndigits=None)}
    if result is not None:
        obj["detections"] = detection_dicts(result, spec)
        if result.meta.get("quality_parts") is not None:
            obj["quality_parts"] = result.meta["quality_parts"]
    return obj


SQL_COLUMNS = (
    "score",
    "score_argmax",
    "abstained",
    "quality",
    "unit_scores",
    "unit_argmax",
    "unit_counts",
    "n_boxes",
)
"""Frame columns of the SQL store that come from the record (the store adds keys and times)."""


def record_from_json_line(obj: dict[str, Any], spec: ScaleSpec) -> FrameRecord:
    """A frame record from one of our JSON lines (the inverse of :func:`json_line`; used by
    ``grimace score --resume``)."""
    s = spec.score_name
    pain = obj.get("pain")
    return FrameRecord(
        name=str(obj.get("Filename", "")),
        source=str(obj.get("source", "")),
        index=int(obj.get("frame_index") or 0),
        time_s=float(obj.get("time_s") or 0.0),
        subject=str(obj.get("animal") or ""),
        session=str(obj.get("session") or ""),
        score=obj.get(s),
        score_argmax=obj.get(argmax_column(s)),
        abstained=obj.get("abstained") or None,
        quality=obj.get("quality"),
        unit_scores={u.name: obj.get(u.label) for u in spec.units},
        unit_argmax={u.name: obj.get(argmax_column(u.label)) for u in spec.units},
        unit_counts={u.name: int(obj.get(f"{u.name}_count") or 0) for u in spec.units},
        n_boxes=int(obj.get("n_boxes") or 0),
        pain=None if pain is None else bool(pain),
        group=str(obj.get("group") or ""),
        timepoint=str(obj.get("timepoint") or ""),
    )


def sql_row(rec: FrameRecord) -> dict[str, Any]:
    """The record's values for :data:`SQL_COLUMNS` (per-unit dicts as JSON text keyed by unit name)."""
    return {
        "score": rec.score,
        "score_argmax": rec.score_argmax,
        "abstained": rec.abstained,
        "quality": rec.quality,
        "unit_scores": json.dumps(rec.unit_scores),
        "unit_argmax": json.dumps(rec.unit_argmax),
        "unit_counts": json.dumps(rec.unit_counts),
        "n_boxes": rec.n_boxes,
    }


def record_from_sql(
    row: dict[str, Any],
    spec: ScaleSpec,
    *,
    name: str,
    source: str,
    subject: str = "",
    session: str = "",
    group: str = "",
    timepoint: str = "",
) -> FrameRecord:
    """Rebuild a :class:`FrameRecord` from a stored frame row (``frame_index``, ``t_s`` and
    :data:`SQL_COLUMNS`); rows of schema-1 stores have no ``unit_argmax``/``unit_counts`` (left empty)."""

    def _json(key: str) -> dict[str, Any]:
        text = row.get(key)
        return json.loads(text) if text else {}

    score = row.get("score")
    return FrameRecord(
        name=name,
        source=source,
        index=int(row.get("frame_index", 0)),
        time_s=float(row.get("t_s", 0.0)),
        subject=subject,
        session=session,
        score=score,
        score_argmax=row.get("score_argmax"),
        abstained=row.get("abstained"),
        quality=row.get("quality"),
        unit_scores=_json("unit_scores"),
        unit_argmax=_json("unit_argmax"),
        unit_counts=_json("unit_counts"),
        n_boxes=int(row.get("n_boxes", 0)),
        pain=_pain(spec, score),
        group=group,
        timepoint=timepoint,
    )


# --------------------------------------------------------------------------- earlier files (read)
def upgrade_legacy_header(header: Sequence[str], spec: ScaleSpec) -> tuple[list[str], str | None]:
    """Rename the columns of a table written before record schema 2 to schema-2 names.

    Two earlier layouts existed (both detected by a column only they have):

    * ``grimace teacher score`` (has ``<S> expected``): ``<S>`` and ``<unit label>`` held **argmax**
      means, ``<S> expected``/``<unit label> expected`` the expected grades; ``<unit> count`` the
      counts, ``Path`` the source.
    * ``grimace score`` (has ``<S>_argmax``): ``<S>_argmax`` is now ``<S> argmax``, ``subject`` is
      ``animal``.

    Returns:
        ``(header, note)``: the renamed header (unchanged for schema-2 files and grader sheets) and a
        note naming the layout that was upgraded (``None`` when nothing was renamed).
    """
    s = spec.score_name
    cols = list(header)
    if f"{s} expected" in cols:
        ren = {s: argmax_column(s), f"{s} expected": s, "Path": "source"}
        for u in spec.units:
            ren[u.label] = argmax_column(u.label)
            ren[f"{u.label} expected"] = u.label
            ren[f"{u.name} count"] = f"{u.name}_count"
        return [ren.get(c, c) for c in cols], "upgraded from the teacher-score layout of record schema 1"
    if f"{s}_argmax" in cols:
        ren = {f"{s}_argmax": argmax_column(s), "subject": "animal"}
        return [ren.get(c, c) for c in cols], "upgraded from the score layout of record schema 1"
    return cols, None


# ----------------------------------------------------------------------------------- summaries
GROUP_KEY_COLUMN = {"subject": "animal", "session": "session", "source": "source"}
"""Column heading the group key of a summary, by what :func:`edge.aggregate.aggregate` grouped by."""


# ------------------------------------------------------------------------------------- writers
def escape_cell(value: Any) -> Any:
    """A text cell that a spreadsheet would run as a formula, made inert with a leading ``'``.

    Numbers are left alone; only strings starting with one of :data:`FORMULA_START` change.
    """
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def unescape_cell(text: str) -> str:
    """Undo :func:`escape_cell` on a cell read back from our own CSV."""
    if len(text) > 1 and text[0] == "'" and text[1:].startswith(FORMULA_START):
        return text[1:]
    return text


def _cell(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, float) and not np.isfinite(v):
        return ""
    if isinstance(v, bool):
        return int(v)
    return escape_cell(v)


def csv_text(rows: Iterable[dict[str, Any]], columns: Sequence[str]) -> str:
    """Rows as CSV text under ``columns`` (``None``/NaN empty, formulas escaped)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([escape_cell(c) for c in columns])
    for r in rows:
        w.writerow([_cell(r.get(c)) for c in columns])
    return buf.getvalue()


def write_csv(path: str | Path, rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> Path:
    """Write dict rows as CSV atomically (columns: given, else the union in first-seen order)."""
    if columns is None:
        columns = list(dict.fromkeys(k for r in rows for k in r))
    return atomic_write_text(path, csv_text(rows, columns))


def write_xlsx(
    path: str | Path, sheets: dict[str, tuple[Sequence[str], Sequence[dict[str, Any]]]]
) -> Path | None:
    """Write sheets ``name -> (columns, rows)`` to an XLSX workbook atomically (openpyxl).

    Text cells are stored as text, never as formulas, whatever they start with.

    Returns:
        The path, or ``None`` when openpyxl is not installed (the caller reports the skip).
    """
    try:
        from openpyxl import Workbook
    except ImportError:
        return None
    wb = Workbook(write_only=False)
    wb.remove(wb.active)
    for title, (cols, rows) in sheets.items():
        ws = wb.create_sheet(_sheet_title(title))
        for c, name in enumerate(cols, start=1):
            _set_cell(ws, 1, c, name)
        for r_i, r in enumerate(rows, start=2):
            for c, name in enumerate(cols, start=1):
                v = r.get(name)
                if v is None or v == "" or (isinstance(v, float) and not np.isfinite(v)):
                    continue
                _set_cell(ws, r_i, c, int(v) if isinstance(v, bool) else v)
        ws.freeze_panes = "A2"
    buf = io.BytesIO()
    wb.save(buf)
    return atomic_write_bytes(path, buf.getvalue())


def _sheet_title(title: str) -> str:
    bad = set("[]:*?/\\")
    clean = "".join("_" if ch in bad else ch for ch in title).strip("'") or "sheet"
    return clean[:31]


def _set_cell(ws: Any, row: int, col: int, value: Any) -> None:
    cell = ws.cell(row=row, column=col, value=value)
    if isinstance(value, str):
        cell.data_type = "s"  # openpyxl makes "=..." a formula; text stays text


def write_table(
    path: str | Path, columns: Sequence[str], rows: Sequence[dict[str, Any]], sheet: str = "frames"
) -> Path:
    """One table to ``.csv`` or ``.xlsx`` by the path's suffix.

    Raises:
        ValueError: Another suffix.
        ImportError: ``.xlsx`` without openpyxl.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".csv":
        return write_csv(p, rows, columns)
    if suffix == ".xlsx":
        out = write_xlsx(p, {sheet: (columns, rows)})
        if out is None:
            raise ImportError("writing .xlsx needs openpyxl (pip install openpyxl), or write a .csv")
        return out
    raise ValueError(f"{p}: a table must end in .csv or .xlsx")


def frame_column_types(spec: ScaleSpec) -> dict[str, str]:
    """Value type of each :func:`frame_columns` column (``"str"``, ``"float"`` or ``"int"``), so a typed
    table (Parquet) has the same column types whatever the rows hold (a column of empty cells too)."""
    s = spec.score_name
    types = dict.fromkeys(
        ["Filename", "animal", "group", "timepoint", "session", "source", "abstained"], "str"
    )
    for c in [
        s,
        *[u.label for u in spec.units],
        argmax_column(s),
        *[argmax_column(u.label) for u in spec.units],
    ]:
        types[c] = "float"
    types.update(frame_index="int", time_s="float", quality="float", n_boxes="int", pain="int")
    for u in spec.units:
        types[f"{u.name}_count"] = "int"
    return types


def write_parquet(
    path: str | Path,
    rows: Sequence[dict[str, Any]],
    columns: Sequence[str],
    types: dict[str, str] | None = None,
) -> Path | None:
    """Write dict rows as a Parquet file atomically (pyarrow), one typed column per name.

    Cells are stored as values (no spreadsheet escaping: Parquet is not opened by a spreadsheet as
    formulas); ``None``/NaN are nulls.

    Args:
        path: The ``.parquet`` file.
        rows: Rows (dicts keyed by column).
        columns: Column order.
        types: ``"str"``/``"float"``/``"int"`` per column (:func:`frame_column_types`); a column not
            named is typed from its values.

    Returns:
        The path, or ``None`` when pyarrow is not installed (the caller reports the skip).
    """
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return None
    arrow = {"str": pa.string(), "float": pa.float64(), "int": pa.int64()}
    types = types or {}
    arrays = {}
    for c in columns:
        vals = [r.get(c) for r in rows]
        vals = [None if isinstance(v, float) and not np.isfinite(v) else v for v in vals]
        vals = [int(v) if isinstance(v, bool) else v for v in vals]
        t = arrow.get(types.get(c, ""))
        arrays[c] = pa.array(vals, type=t) if t is not None else pa.array(vals)
    buf = pa.BufferOutputStream()
    pq.write_table(pa.table(arrays), buf)
    return atomic_write_bytes(path, buf.getvalue().to_pybytes())


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def dumps(obj: dict[str, Any]) -> str:
    """One JSON line (numpy values converted, NaN written as null)."""
    return json.dumps(_nan_to_none(obj), default=_json_default, allow_nan=False)


def _nan_to_none(o: Any) -> Any:
    if isinstance(o, float) and not np.isfinite(o):
        return None
    if isinstance(o, dict):
        return {k: _nan_to_none(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_nan_to_none(v) for v in o]
    return o


class JsonlWriter:
    """JSON-lines file (one object per frame or error); each line is written whole, unbuffered.

    Args:
        path: The file.
        append: Keep existing lines (resuming a run) instead of starting a new file.
    """

    def __init__(self, path: str | Path, append: bool = False) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = self.path.open("ab" if append else "wb", buffering=0)

    def write(self, obj: dict[str, Any]) -> None:
        """Write one object.

        Raises:
            OSError: The disk is full or the file cannot be written; a partly written line is cut
                off again, so the file keeps only whole lines.
        """
        data = (dumps(obj) + "\n").encode("utf-8")
        pos = self._f.seek(0, 2)
        try:
            view = memoryview(data)
            while view:
                n = self._f.write(view)
                view = view[n:]
        except OSError as e:
            with contextlib.suppress(OSError):
                self._f.truncate(pos)
            if e.filename is None:
                e.filename = str(self.path)
            raise

    def close(self) -> None:
        """Close the file (idempotent)."""
        with contextlib.suppress(OSError):
            self._f.close()

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
