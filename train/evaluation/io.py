"""Readers for the grade tables compared by ``grimace eval grades``.

Prediction CSVs (``grimace teacher score``, ``grimace score``, ``grimace predict``) and grader CSVs
(``grimace synth --graders K`` or a lab's own spreadsheet exported to CSV) share the seed's layout::

    Filename,RGS,Orbital Tightening,Ear Changes,Nose Flattening[,Whisker Change][,extra columns...]

Columns are matched to the scale's units by the unit *label* (``Orbital Tightening``) or the unit
*name* (``eye``), case-insensitively; the total-score column is the scale name (``RGS``, ``MGS``,
``GOAT``, also ``rgs-seed`` → ``RGS``) or ``Score``. The file column is ``Filename``, ``File``,
``Image`` or ``Source``; rows are keyed by the file *name* (folders dropped), like ``subjects.csv``.

Empty cells and ``NA``/``NaN``/``None``/``-``/``abstained`` are missing values (an abstained frame);
they are kept as NaN and excluded pair by pair later, with counts reported. Anything else that is not
a number is an error naming the file, line and column.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge.scales import ScaleSpec

MISSING = {"", "na", "n/a", "nan", "none", "null", "-", "abstained", "abstain"}
FILE_COLUMNS = ("filename", "file", "image", "source", "path")
NAME_KEYS = ("image", "name", "filename", "file", "source", "path")


def record_image_name(rec: dict[str, object]) -> str | None:
    """File name (no folders) of the image a JSON prediction record is about, from the first of
    :data:`NAME_KEYS` it has; ``None`` when it names no image."""
    name = next((rec[k] for k in NAME_KEYS if rec.get(k)), None)
    return Path(str(name).replace("\\", "/")).name if name else None
"""Keys naming the image in a JSON record, in order of preference."""


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
    """

    path: Path
    images: list[str]
    units: dict[str, np.ndarray]
    total: np.ndarray
    total_from_file: bool
    unit_columns: dict[str, str] = field(default_factory=dict)

    def index(self) -> dict[str, int]:
        """Image name -> row."""
        return {name: i for i, name in enumerate(self.images)}


def score_column_names(spec: ScaleSpec) -> list[str]:
    """Accepted (lower-case) names of the total-score column for a scale."""
    base = spec.name.lower()
    names = [base, base.split("-")[0], "score", "total", f"{base} score", "frame score"]
    return list(dict.fromkeys(names))


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


def read_grade_csv(path: str | Path, spec: ScaleSpec, *, integer_grades: bool = False) -> GradeTable:
    """Read a prediction or grader table: CSV, or the first sheet of an ``.xlsx`` workbook.

    Args:
        path: The CSV (or ``.xlsx``, as ``grimace teacher score`` writes by default) file.
        spec: Scale whose unit labels/names name the columns.
        integer_grades: Require unit values to be whole grades (human graders); model files may hold
            mean grades such as 1.5 (mean of two eyes) or expected grades.

    Raises:
        GradeFileError: Unreadable file, no file column, no unit or score column, duplicate image,
            non-numeric or out-of-range value (message gives ``file:line``, and the column).
    """
    path = Path(path)
    if not path.is_file():
        raise GradeFileError(f"{path}: no such file")
    if path.suffix.lower() in (".xlsx", ".xlsm"):
        reader = iter(_xlsx_rows(path))
    else:
        try:
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as e:
            raise GradeFileError(f"{path}: cannot read: {e}") from None
        reader = csv.reader(text.splitlines())
    try:
        header = next(reader)
    except StopIteration:
        raise GradeFileError(f"{path}:1: empty file (expected a header row)") from None
    low = [h.strip().lower() for h in header]
    file_col = next((low.index(c) for c in FILE_COLUMNS if c in low), None)
    if file_col is None:
        raise GradeFileError(
            f"{path}:1: no file-name column; expected one of {', '.join(FILE_COLUMNS)} (have {header})"
        )
    unit_cols: dict[str, int] = {}
    for u in spec.units:
        for key in (u.label.lower(), u.name.lower()):
            if key in low:
                unit_cols[u.name] = low.index(key)
                break
    score_col = next((low.index(c) for c in score_column_names(spec) if c in low), None)
    if not unit_cols and score_col is None:
        expected = [spec.name.upper()] + [u.label for u in spec.units]
        raise GradeFileError(
            f"{path}:1: none of the columns {expected} of scale {spec.name!r} found (have {header})"
        )
    images: list[str] = []
    seen: dict[str, int] = {}
    unit_vals: dict[str, list[float]] = {name: [] for name in unit_cols}
    totals: list[float] = []
    for lineno, row in enumerate(reader, start=2):
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
    )


def read_grade_jsonl(path: str | Path, spec: ScaleSpec) -> GradeTable:
    """Read frame records (JSON lines) as written by ``grimace predict --json`` and the edge runtime.

    Each record needs an image name (``source``/``image``/``file``/``path``) and may hold
    ``unit_scores`` (unit name -> mean grade or null) and ``score`` (frame score or null when
    abstained). Units are keyed by name (labels also accepted).

    Raises:
        GradeFileError: Invalid JSON, missing name, non-numeric grade, duplicate image (``file:line``).
    """
    import json

    path = Path(path)
    if not path.is_file():
        raise GradeFileError(f"{path}: no such file")
    by_label = {u.label.lower(): u.name for u in spec.units}
    images: list[str] = []
    seen: dict[str, int] = {}
    vals: dict[str, list[float]] = {u.name: [] for u in spec.units}
    present: set[str] = set()
    totals: list[float] = []
    has_score = False
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise GradeFileError(f"{where}: invalid JSON: {e.msg}") from None
        if not isinstance(rec, dict):
            raise GradeFileError(f"{where}: a record must be a JSON object")
        name = record_image_name(rec)
        if not name:
            raise GradeFileError(f"{where}: no image name (keys {'/'.join(NAME_KEYS)})")
        if name in seen:
            raise GradeFileError(f"{where}: image {name!r} listed twice (first on line {seen[name]})")
        seen[name] = lineno
        images.append(name)
        scores = rec.get("unit_scores") or {}
        if not isinstance(scores, dict):
            raise GradeFileError(f"{where}: 'unit_scores' must be an object")
        scores = {by_label.get(str(k).lower(), str(k)): v for k, v in scores.items()}
        for u in spec.units:
            v = scores.get(u.name)
            if u.name in scores:
                present.add(u.name)
            vals[u.name].append(_parse_value("" if v is None else str(v), f"{where}: unit {u.name!r}"))
        if "score" in rec:
            has_score = True
        s = rec.get("score")
        totals.append(_parse_value("" if s is None else str(s), f"{where}: 'score'"))
    if not images:
        raise GradeFileError(f"{path}: no records")
    units = {k: np.asarray(v, dtype=float) for k, v in vals.items() if k in present}
    total = np.asarray(totals, dtype=float) if has_score else total_from_units(spec, units, len(images))
    return GradeTable(path, images, units, total, has_score, {k: k for k in units})


def read_grade_file(path: str | Path, spec: ScaleSpec, *, integer_grades: bool = False) -> GradeTable:
    """:func:`read_grade_csv`, or :func:`read_grade_jsonl` for ``.jsonl``/``.json`` files."""
    if Path(path).suffix.lower() in (".jsonl", ".json", ".ndjson"):
        return read_grade_jsonl(path, spec)
    return read_grade_csv(path, spec, integer_grades=integer_grades)
