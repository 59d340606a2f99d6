"""``grimace teacher score``: the seed's spreadsheet, from a teacher run folder.

Per frame: the detector finds units; the top-k boxes per unit by detector confidence are kept (RGS:
2 eyes, 2 ears, 1 nose) and each crop is graded; a unit's grade is the mean over its crops; the total
is the mean over the units present (:func:`edge.scoring.score_frame`, the same rule as every other
command). Frames come from :func:`edge.sources.iter_inputs` (images, and videos sampled at ``fps``,
exactly as ``grimace score`` samples them) and rows are :mod:`edge.records` frame records: the seed's
columns first (``Filename, RGS, Orbital Tightening, Ear Changes, Nose Flattening``; expected grades),
``RGS argmax`` and ``<unit label> argmax`` for the argmax grades the seed's ViTs gave, then the
teacher's own columns (:data:`TEACHER_COLUMNS`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from edge.records import (
    FrameRecord,
    frame_columns,
    record_from_frame,
    table_row,
    write_csv,
    write_table,
    write_xlsx,
)
from edge.results import FrameResult
from edge.scales import ScaleSpec
from edge.scoring import score_frame
from edge.sources import Frame, ItemError, iter_inputs
from train.teacher.teacher import Teacher


def teacher_columns(spec: ScaleSpec) -> list[str]:
    """Columns ``teacher score`` appends to the frame record: mean detector confidence of each unit's
    scored boxes, the pain ViT's probability, the heatmap file."""
    return [*[f"{u.name}_confidence" for u in spec.units], "pain_probability", "heatmap"]


@dataclass
class TeacherScoreRun:
    """Outcome of :func:`score_inputs`.

    Attributes:
        records: One frame record per frame read.
        errors: Inputs that could not be read.
        seconds: Wall time.
    """

    records: list[FrameRecord] = field(default_factory=list)
    errors: list[ItemError] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def seconds_per_frame(self) -> float:
        """Wall seconds per frame read."""
        return self.seconds / max(len(self.records), 1)


def _record(item: Frame, fr: FrameResult, spec: ScaleSpec, pain: float | None) -> FrameRecord:
    extra: dict[str, Any] = {}
    for i, u in enumerate(spec.units):
        mine = fr.selected[fr.detections.unit[fr.selected] == i]
        extra[f"{u.name}_confidence"] = float(fr.detections.confidence[mine].mean()) if mine.size else None
    extra["pain_probability"] = None if pain is None or np.isnan(pain) else float(pain)
    return record_from_frame(fr, spec, item, extra=extra)


def score_inputs(
    teacher: Teacher,
    inputs: Sequence[str | Path],
    *,
    fps: float | None = None,
    conf: float = 0.25,
    min_units: int = 1,
    batch: int = 8,
    heatmaps: str | Path | None = None,
    progress: bool = True,
) -> TeacherScoreRun:
    """Score images and videos with the teacher.

    Args:
        teacher: Loaded teacher.
        inputs: Files and folders (as ``grimace score`` takes them).
        fps: Video sampling rate (``None``: every frame).
        conf: Detector confidence threshold.
        min_units: Fewest units found for a score.
        batch: Frames per step (detector batch; crops of the step are graded together).
        heatmaps: Folder for attention-rollout overlays of the pain ViT (needs one in the teacher).
        progress: Show a progress bar.

    Returns:
        The :class:`TeacherScoreRun`.
    """
    if heatmaps is not None and teacher.pain is None:
        raise ValueError("--heatmaps needs a teacher with a whole-face pain classifier (pain/)")
    run = TeacherScoreRun()
    t0 = time.perf_counter()
    chunk: list[Frame] = []
    bar = tqdm(desc="score", unit="frame", disable=not progress)

    def flush() -> None:
        imgs = [f.image for f in chunk]
        dets = teacher.predict(imgs, conf=conf)
        pain = teacher.pain_probability(imgs, [d.xyxy for d in dets])
        for k, (item, d) in enumerate(zip(chunk, dets, strict=True)):
            fr = score_frame(d, teacher.spec, min_units=max(min_units, 1), source=item.source)
            rec = _record(item, fr, teacher.spec, None if pain is None else float(pain[k]))
            if heatmaps is not None:
                from train.teacher.pain import write_heatmap

                assert teacher.pain is not None
                stem = Path(item.name).stem.replace("@", "_")
                out_png, _ = write_heatmap(  # the probability column was computed above, on the same boxes
                    teacher.pain, imgs[k], Path(heatmaps) / f"{stem}_attention.png", d.xyxy, float(pain[k])
                )
                rec.extra["heatmap"] = str(out_png)
            run.records.append(rec)
        bar.update(len(chunk))
        chunk.clear()

    try:
        for item in iter_inputs(inputs, fps=fps):
            if isinstance(item, ItemError):
                run.errors.append(item)
                bar.write(f"error: {item}")
                continue
            chunk.append(item)
            if len(chunk) >= batch:
                flush()
        if chunk:
            flush()
    finally:
        bar.close()
    run.seconds = time.perf_counter() - t0
    return run


def write_outputs(run: TeacherScoreRun, spec: ScaleSpec, out: str | Path) -> list[Path]:
    """Write the frame table to ``out`` (``.xlsx`` or ``.csv``) and the inputs that failed.

    An ``.xlsx`` gets an ``errors`` sheet; a ``.csv`` gets ``<out>.errors.csv`` beside it when an input
    failed.

    Returns:
        The files written.
    """
    out = Path(out)
    cols = frame_columns(spec, extra=teacher_columns(spec))
    rows = [table_row(r, spec) for r in run.records]
    err_cols = ["source", "error", "frames_read"]
    errs = [{"source": e.source, "error": e.message, "frames_read": e.frames_read} for e in run.errors]
    if out.suffix.lower() == ".xlsx":
        path = write_xlsx(out, {spec.score_name: (cols, rows), "errors": (err_cols, errs)})
        if path is None:
            raise ImportError("writing .xlsx needs openpyxl (pip install openpyxl), or write a .csv")
        return [path]
    written = [write_table(out, cols, rows)]
    if errs:
        written.append(write_csv(out.with_name(out.name + ".errors.csv"), errs, err_cols))
    return written
