"""Readers for the grade tables compared by ``grimace eval grades``.

Prediction files (``grimace score``, ``grimace teacher score``, ``grimace predict --json``, the station)
and grader sheets share one schema: the frame record of :mod:`edge.records` (record schema 2), whose
first columns are the seed's::

    Filename,RGS,Orbital Tightening,Ear Changes,Nose Flattening[,Whisker Change][,more columns...]

``Filename`` names the image (rows are keyed by the file *name*, folders dropped, like
``subjects.csv``); a unit's column is its *label* (``Orbital Tightening``); the frame score's column is
the scale's :attr:`~edge.scales.ScaleSpec.score_name` (``RGS``, ``MGS``, ``GOAT``). Column names are
matched case-insensitively and nothing else is accepted. The seed's own spreadsheet has exactly these
columns. Files written before record schema 2 are renamed on reading by
:func:`edge.records.upgrade_legacy_header` (the note is kept in :attr:`GradeTable.note`); earlier JSON
lines are read by :func:`legacy_json_row`.

CSV, the first sheet of an ``.xlsx`` workbook and JSON lines are all read as rows of that schema.
Empty cells and ``NA``/``NaN``/``None``/``-``/``abstained`` are missing values (an abstained frame);
they are kept as NaN and excluded pair by pair later, with counts reported. Anything else that is not
a number is an error naming the file, line and column.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.records import unescape_cell, upgrade_legacy_header
from edge.scales import ScaleSpec

MISSING = {"", "na", "n/a", "nan", "none", "null", "-", "abstained", "abstain"}
FILE_COLUMN = "Filename"
"""The column naming the image (record schema 2 and the seed's spreadsheet)."""


def record_image_name(rec: dict[str, object]) -> str | None:
    """File name (no folders) of the image a JSON frame record is about (its ``Filename``), ``None``
    when it names none. Earlier records (``name``/``source``) go through :func:`legacy_json_row`."""
    name = rec.get(FILE_COLUMN)
    return Path(str(name).replace("\\", "/")).name if name else None


def legacy_json_row(rec: dict[str, Any], spec: ScaleSpec) -> dict[str, Any]:
    """A JSON record of record schema 1 as a schema-2 row.

    Schema 1 (``grimace score`` frames.jsonl before schema 2, ``grimace predict --json``) used the
    attribute names: ``name``/``source`` (image), ``score`` (expected-grade frame score),
    ``score_argmax``, ``unit_scores``/``unit_argmax`` (unit name -> score), ``abstained``;
    ``predict`` wrote its boxes under ``boxes``. Schema-2 records (they carry ``record_schema``) are
    returned unchanged.
    """
    if "record_schema" in rec or FILE_COLUMN in rec:
        return rec
    s = spec.score_name
    name = rec.get("name") or rec.get("source")
    row: dict[str, Any] = {FILE_COLUMN: name, "source": rec.get("source"), "abstained": rec.get("abstained")}
    if "score" in rec:
        row[s] = rec.get("score")
    if "score_argmax" in rec:
        row[f"{s} argmax"] = rec.get("score_argmax")
    scores = rec.get("unit_scores")
    by_key = {**{u.name: u for u in spec.units}, **{u.label.lower(): u for u in spec.units}}
    if isinstance(scores, dict):
        for k, v in scores.items():
            u = by_key.get(str(k)) or by_key.get(str(k).lower())
            row[u.label if u else str(k)] = v
    elif scores is not None:
        row["unit_scores"] = scores  # reported as malformed below
    dets = rec.get("detections", rec.get("boxes"))
    if dets is not None:
        row["detections"] = dets
    return row


class GradeFileError(ValueError):
    """A grade table is malformed; the message starts with ``file:line:``."""


@dataclass
class GradeTable:
    """Grades of one rater (model or human) keyed by image file name.

    Attributes:
        path: Source file.
        units: Unit name -> float array ``(N,)`` in ``images`` order (NaN = missing).
        total: Total score per image ``(N,)`` (NaN = missing or abstained).
        images: File names ``(N,)`` (no folders).
        total_from_file: Whether ``total`` was read from a column (else computed from the units).
        unit_columns: Unit name -> the column it was read from (units absent from the file are left
            out of ``units``).
        note: How an earlier layout was upgraded (:func:`edge.records.upgrade_legacy_header`), if it was.
    """

    path: Path
    images: list[str]
    units: dict[str, np.ndarray]
    total: np.ndarray
    total_from_file: bool
    unit_columns: dict[str, str] = field(default_factory=dict)
    note: str | None = None

    def index(self) -> dict[str, int]:
        """Image name -> row."""
        return {name: i for i, name in enumerate(self.images)}


def _parse_value(text: str, where: str) -> float:
    s = text.strip()
    if s.lower() in MISSING:
        return math.nan
    try:
        v = float(s)
    except ValueError:
        raise GradeFileError(
            f"{where}: not a number: {s!r} (use an empty cell for a missing grade)"
        ) from None
    if not math.isfinite(v):
        return math.nan
    return v


def total_from_units(spec: ScaleSpec, units: dict[str, np.ndarray], n: int) -> np.ndarray:
    """Frame score from unit grades by the scale's rule, shape ``(N,)`` (NaN where abstained).

    ``mean_of_unit_means``: mean of the units present; NaN if a required unit is missing.
    ``binary``: the single unit's grade (0 or 1).
    """
    total = np.full(n, np.nan)
    if not units:
        return total
    names = [u.name for u in spec.units if u.name in units]
    mat = np.stack([units[name] for name in names], axis=1)
    required = np.array([spec.unit(name).required for name in names])
    ok = np.isfinite(mat)
    complete = ok[:, required].all(axis=1) if required.any() else ok.any(axis=1)
    missing_required = [u.name for u in spec.units if u.required and u.name not in units]
    if missing_required:
        return total
    with np.errstate(invalid="ignore"):
        sums = np.where(ok, mat, 0.0).sum(axis=1)
        cnt = ok.sum(axis=1)
        mean = np.where(cnt > 0, sums / np.maximum(cnt, 1), np.nan)
    total[complete] = mean[complete]
    return total


def _xlsx_rows(path: Path) -> list[list[str]]:
    """Rows of the first worksheet as strings (``None`` -> ``""``); line numbers = sheet rows."""
    try:
        import openpyxl
    except ImportError:
        raise GradeFileError(
            f"{path}: reading .xlsx needs openpyxl (pip install 'grimace-edge[eval]')"
        ) from None
    try:
        wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as e:  # zipfile/openpyxl raise many kinds
        raise GradeFileError(f"{path}: cannot read workbook: {e}") from None
    try:
        ws = wb.worksheets[0]
        return [["" if v is None else str(v) for v in row] for row in ws.iter_rows(values_only=True)]
    finally:
        wb.close()


def _csv_rows(path: Path) -> Iterator[list[str]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise GradeFileError(f"{path}: cannot read: {e}") from None
    for row in csv.reader(text.splitlines()):
        yield [unescape_cell(c) for c in row]


def _jsonl_rows(path: Path, spec: ScaleSpec) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise GradeFileError(f"{path}: cannot read: {e}") from None
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise GradeFileError(f"{path}:{lineno}: invalid JSON: {e.msg}") from None
        if not isinstance(rec, dict):
            raise GradeFileError(f"{path}:{lineno}: a record must be a JSON object")
        if "error" in rec and FILE_COLUMN not in rec and "name" not in rec:
            continue  # a failed input of `grimace score`: no frame
        yield lineno, legacy_json_row(rec, spec)


def _cell_text(v: Any) -> str:
    return "" if v is None else str(v)


def read_grade_csv(path: str | Path, spec: ScaleSpec, *, integer_grades: bool = False) -> GradeTable:
    """Read a prediction or grader table: CSV, the first sheet of an ``.xlsx`` workbook, or JSON lines.

    Args:
        path: The file (``.csv``, ``.xlsx``/``.xlsm``, ``.jsonl``/``.json``/``.ndjson``).
        spec: Scale whose unit labels and score name name the columns.
        integer_grades: Require unit values to be whole grades (human graders); model files may hold
            mean grades such as 1.5 (mean of two eyes) or expected grades.

    Raises:
        GradeFileError: Unreadable file, no ``Filename`` column, no unit or score column, duplicate
            image, non-numeric or out-of-range value (message gives ``file:line``, and the column).
    """
    path = Path(path)
    if not path.is_file():
        raise GradeFileError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        recs = list(_jsonl_rows(path, spec))
        if not recs:
            raise GradeFileError(f"{path}: no records")
        header = list(dict.fromkeys(k for _, r in recs for k in r))
        rows = [(n, [_cell_text(r.get(k)) for k in header], r) for n, r in recs]
        for n, _, r in rows:
            if "unit_scores" in r:
                raise GradeFileError(f"{path}:{n}: 'unit_scores' must be an object")
    else:
        reader = iter(_xlsx_rows(path)) if suffix in (".xlsx", ".xlsm") else _csv_rows(path)
        try:
            header = next(reader)
        except StopIteration:
            raise GradeFileError(f"{path}:1: empty file (expected a header row)") from None
        rows = [(n, row, None) for n, row in enumerate(reader, start=2)]
    header, note = upgrade_legacy_header([h.strip() for h in header], spec)
    low = [h.lower() for h in header]
    if FILE_COLUMN.lower() not in low:
        raise GradeFileError(f"{path}:1: no file-name column; expected {FILE_COLUMN!r} (have {header})")
    file_col = low.index(FILE_COLUMN.lower())
    unit_cols = {u.name: low.index(u.label.lower()) for u in spec.units if u.label.lower() in low}
    score_col = low.index(spec.score_name.lower()) if spec.score_name.lower() in low else None
    if not unit_cols and score_col is None:
        expected = [spec.score_name] + [u.label for u in spec.units]
        raise GradeFileError(
            f"{path}:1: none of the columns {expected} of scale {spec.name!r} found (have {header})"
        )
    images: list[str] = []
    seen: dict[str, int] = {}
    unit_vals: dict[str, list[float]] = {name: [] for name in unit_cols}
    totals: list[float] = []
    for lineno, row, _rec in rows:
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) < len(header):
            row = row + [""] * (len(header) - len(row))
        name = Path(row[file_col].strip().replace("\\", "/")).name
        if not name:
            raise GradeFileError(f"{path}:{lineno}: empty file name in column {header[file_col]!r}")
        if name in seen:
            raise GradeFileError(f"{path}:{lineno}: image {name!r} listed twice (first on line {seen[name]})")
        seen[name] = lineno
        images.append(name)
        for uname, col in unit_cols.items():
            where = f"{path}:{lineno}: column {header[col]!r}"
            v = _parse_value(row[col], where)
            top = spec.unit(uname).grades - 1
            if math.isfinite(v):
                if not -1e-6 <= v <= top + 1e-6:
                    raise GradeFileError(f"{where}: grade {v:g} outside 0..{top} of unit {uname!r}")
                if integer_grades and abs(v - round(v)) > 1e-6:
                    raise GradeFileError(f"{where}: a human grade must be a whole number, got {v:g}")
            unit_vals[uname].append(v)
        if score_col is not None:
            totals.append(_parse_value(row[score_col], f"{path}:{lineno}: column {header[score_col]!r}"))
    if not images:
        raise GradeFileError(f"{path}: no data rows")
    units = {k: np.asarray(v, dtype=float) for k, v in unit_vals.items()}
    if score_col is not None:
        total = np.asarray(totals, dtype=float)
    else:
        total = total_from_units(spec, units, len(images))
    return GradeTable(
        path=path,
        images=images,
        units=units,
        total=total,
        total_from_file=score_col is not None,
        unit_columns={k: header[c] for k, c in unit_cols.items()},
        note=note,
    )


def read_grade_file(path: str | Path, spec: ScaleSpec, *, integer_grades: bool = False) -> GradeTable:
    """Any grade table (CSV, XLSX or JSON lines): :func:`read_grade_csv`."""
    return read_grade_csv(path, spec, integer_grades=integer_grades)
