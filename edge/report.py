"""Outputs of ``grimace score``: per-frame CSV / XLSX / JSON lines, summaries, annotated images.

The per-frame table starts with the seed paper's columns (``Filename``, the scale score named after
the scale, e.g. ``RGS``, then one column per unit label, e.g. ``Orbital Tightening``, ``Ear Changes``,
``Nose Flattening``) and continues with grimace-edge's own (argmax scores, counts, quality,
abstention, subject, time...). Scores are expected (probability-weighted) grades unless the column
says ``argmax``. Abstained frames have empty score cells and the reason in ``abstained``.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.aggregate import FrameRecord, GroupSummary
from edge.results import FrameResult
from edge.scales import ScaleSpec

PALETTE_BGR = [(60, 60, 230), (60, 200, 60), (230, 120, 40), (40, 200, 230), (200, 60, 200), (200, 200, 60)]


def frame_columns(spec: ScaleSpec) -> list[str]:
    """Per-frame table columns: the seed's first, then ours."""
    name = spec.name.upper()
    cols = ["Filename", name, *[u.label for u in spec.units]]
    cols += ["source", "frame_index", "time_s", "subject", "session", f"{name}_argmax"]
    cols += [f"{u.label} argmax" for u in spec.units]
    cols += [f"{u.name}_count" for u in spec.units]
    cols += ["quality", "abstained", "n_boxes"]
    if spec.aggregation == "binary":
        cols.append("pain")
    return cols


def _num(v: float | None, nd: int = 4) -> float | str:
    return "" if v is None else round(float(v), nd)


def frame_row(rec: FrameRecord, spec: ScaleSpec) -> dict[str, Any]:
    """One per-frame table row (empty strings for missing values)."""
    name = spec.name.upper()
    row: dict[str, Any] = {"Filename": rec.name, name: _num(rec.score)}
    for u in spec.units:
        row[u.label] = _num(rec.unit_scores.get(u.name))
    row.update(
        source=rec.source,
        frame_index=rec.index,
        time_s=round(rec.time_s, 3),
        subject=rec.subject,
        session=rec.session,
    )
    row[f"{name}_argmax"] = _num(rec.score_argmax)
    for u in spec.units:
        row[f"{u.label} argmax"] = _num(rec.unit_argmax.get(u.name))
    for u in spec.units:
        row[f"{u.name}_count"] = rec.unit_counts.get(u.name, 0)
    row.update(quality=_num(rec.quality), abstained=rec.abstained or "", n_boxes=rec.n_boxes)
    if spec.aggregation == "binary":
        row["pain"] = "" if rec.pain is None else int(rec.pain)
    return row


def write_csv(path: str | Path, rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> Path:
    """Write dict rows as CSV (columns: given, else the union in first-seen order)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    if columns is None:
        columns = list(dict.fromkeys(k for r in rows for k in r))
    with p.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in columns})
    return p


def write_xlsx(
    path: str | Path, sheets: dict[str, tuple[Sequence[str], Sequence[dict[str, Any]]]]
) -> Path | None:
    """Write sheets ``name -> (columns, rows)`` to an XLSX workbook with openpyxl.

    Returns:
        The path, or ``None`` when openpyxl is not installed (the caller reports the skip).
    """
    try:
        from openpyxl import Workbook
    except ImportError:
        return None
    wb = Workbook()
    wb.remove(wb.active)
    for title, (cols, rows) in sheets.items():
        ws = wb.create_sheet(title[:31])
        ws.append(list(cols))
        for r in rows:
            ws.append([None if r.get(c) in ("", None) else r.get(c) for c in cols])
        ws.freeze_panes = "A2"
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    wb.save(p)
    return p


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


class JsonlWriter:
    """Append-mode JSON lines file (one object per frame or error), flushed per line."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = self.path.open("w", encoding="utf-8")

    def write(self, obj: dict[str, Any]) -> None:
        """Write one object."""
        self._f.write(json.dumps(obj, default=_json_default) + "\n")
        self._f.flush()

    def close(self) -> None:
        """Close the file."""
        self._f.close()


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def summary_rows(groups: Iterable[GroupSummary], spec: ScaleSpec) -> list[dict[str, Any]]:
    """Rows of a summary table, numbers rounded."""
    out = []
    for g in groups:
        r = g.row(spec)
        out.append({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()})
    return out


def annotate(image: np.ndarray, result: FrameResult, spec: ScaleSpec, title: str = "") -> np.ndarray:
    """Draw boxes (unit, argmax grade, confidence; selected boxes thick) and the frame score.

    Args:
        image: BGR uint8 frame (not modified).
        result: Its scoring.
        spec: The scale.
        title: Text for the banner (e.g. the file name).

    Returns:
        A new annotated BGR image.
    """
    out = image.copy()
    h, w = out.shape[:2]
    fs = max(0.4, min(w, h) / 900)
    th = max(1, round(fs * 2))
    d = result.detections
    sel = set(result.selected.tolist())
    arg = d.argmax_grade
    exp = d.expected_grade
    for i in range(len(d)):
        u = int(d.unit[i])
        colour = PALETTE_BGR[u % len(PALETTE_BGR)]
        x1, y1, x2, y2 = (round(float(v)) for v in d.xyxy[i])
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, th * (2 if i in sel else 1))
        unit = spec.units[u]
        grade = unit.grade_names[int(arg[i])] if unit.grade_names else str(int(arg[i]))
        label = f"{unit.name} {grade} ({exp[i]:.2f}) {d.confidence[i]:.2f}"
        (tw, tth), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, fs, 1)
        ty = max(y1, tth + 4)
        cv2.rectangle(out, (x1, ty - tth - 4), (x1 + tw + 2, ty), colour, -1)
        cv2.putText(
            out, label, (x1 + 1, ty - 3), cv2.FONT_HERSHEY_SIMPLEX, fs, (255, 255, 255), 1, cv2.LINE_AA
        )
    if result.scored:
        banner = f"{spec.name.upper()} {result.score:.2f}"
    else:
        banner = f"not scored: {result.abstained}"
    if result.quality is not None:
        banner += f" | quality {result.quality:.2f}"
    if title:
        banner = f"{title} | {banner}"
    (tw, tth), _ = cv2.getTextSize(banner, cv2.FONT_HERSHEY_SIMPLEX, fs, 1)
    cv2.rectangle(out, (0, 0), (min(w, tw + 8), tth + 10), (0, 0, 0), -1)
    cv2.putText(out, banner, (4, tth + 4), cv2.FONT_HERSHEY_SIMPLEX, fs, (255, 255, 255), 1, cv2.LINE_AA)
    return out


class AnnotatedVideo:
    """Writes annotated frames to an MP4 (``mp4v``); frame size fixed by the first frame."""

    def __init__(self, path: str | Path, fps: float) -> None:
        self.path = Path(path)
        self.fps = max(float(fps), 0.1)
        self._w: cv2.VideoWriter | None = None
        self._size: tuple[int, int] | None = None

    def write(self, frame: np.ndarray) -> None:
        """Add a frame (resized to the first frame's size if it differs)."""
        if self._w is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._size = (frame.shape[1], frame.shape[0])
            self._w = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, self._size)
            if not self._w.isOpened():
                raise OSError(f"{self.path}: cannot open a video writer (mp4v)")
        if (frame.shape[1], frame.shape[0]) != self._size:
            frame = cv2.resize(frame, self._size)
        self._w.write(frame)

    def close(self) -> None:
        """Finish the file."""
        if self._w is not None:
            self._w.release()
            self._w = None
