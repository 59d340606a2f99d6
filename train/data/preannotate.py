"""Pre-annotation: run a model over new frames and write them as editable suggestions for CVAT or
Label Studio, so a person corrects boxes and grades instead of drawing them.

``grimace data export-preannotations FRAMES... --model fused.onnx --out PRE`` (or ``--teacher RUN``)
writes::

    PRE/
      images/*.png                 # the frames to upload to the tool (video frames sampled at --fps)
      cvat_annotations.xml         # CVAT: create a task from images/, then Upload annotations, CVAT 1.1
      label_studio_tasks.json      # Label Studio: import as tasks; the boxes arrive as predictions
      label_studio_config.xml      # the labeling config those tasks (and import-label-studio) expect
      uncertainty.csv              # every frame, most uncertain first, and why

Re-importing the corrected export (``data import-cvat`` / ``data import-label-studio``) closes the loop.

**Least certain first.** Each frame gets an uncertainty in ``[0, 1]``, the largest of:

* ``grade_entropy``: the largest normalised entropy of a box's grade distribution over its unit's
  levels (1 = the model cannot tell the grades apart);
* ``low_confidence``: ``1 -`` the lowest box confidence;
* ``missing``: the share of the scale's required units not found (a frame with no box scores 1).

``--select uncertain --limit N`` keeps the N most uncertain frames (the ones a label teaches the model
most); ``--select all`` keeps the input order.

The model is an edge artifact (ONNX / TensorRT through :class:`edge.backends.Predictor`, no torch) or a
teacher run folder (torch; ``--device``).
"""

from __future__ import annotations

import csv
import math
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.results import Detections
from edge.scales import ScaleSpec
from train.data.annotations import (
    SuggestedImage,
    Suggestion,
    label_studio_config,
    safe_file_name,
    write_cvat_xml,
    write_label_studio,
)
from train.data.importers import DatasetImportError, _prepare_out

FORMATS = ("cvat", "label-studio")
SELECT = ("uncertain", "all")
CVAT_FILE = "cvat_annotations.xml"
LS_FILE = "label_studio_tasks.json"
LS_CONFIG = "label_studio_config.xml"
UNCERTAINTY_FILE = "uncertainty.csv"

Detect = Callable[[list[np.ndarray]], list[Detections]]
"""A model as pre-annotation sees it: BGR frames -> one :class:`Detections` per frame."""


@dataclass
class Uncertainty:
    """How unsure the model is about one frame (all in ``[0, 1]``; ``value`` is the largest)."""

    grade_entropy: float
    low_confidence: float
    missing: float

    @property
    def value(self) -> float:
        """The frame's uncertainty."""
        return max(self.grade_entropy, self.low_confidence, self.missing)


def frame_uncertainty(det: Detections, spec: ScaleSpec) -> Uncertainty:
    """Uncertainty of one frame's detections (see the module docstring).

    Args:
        det: The frame's detections (``grade_probs`` ``(N, ng)``).
        spec: The scale (grade levels per unit, required units).

    Returns:
        The three parts.
    """
    required = [i for i, u in enumerate(spec.units) if u.required]
    found = set(det.unit.tolist())
    missing = (sum(i not in found for i in required) / len(required)) if required else 0.0
    if len(det) == 0:
        return Uncertainty(0.0, 0.0, 1.0)
    ent = 0.0
    for u, p in zip(det.unit, det.grade_probs, strict=True):
        k = spec.units[int(u)].grades
        if k < 2:
            continue
        q = np.clip(np.asarray(p[:k], np.float64), 0.0, None)
        s = q.sum()
        if not np.isfinite(s) or s <= 0:
            ent = 1.0
            continue
        q = q / s
        h = -float(np.sum(q[q > 0] * np.log(q[q > 0]))) / math.log(k)
        ent = max(ent, min(1.0, h))
    return Uncertainty(ent, float(1.0 - det.confidence.min()), missing)


def suggestions(det: Detections, spec: ScaleSpec) -> list[Suggestion]:
    """A frame's detections as suggestions: box, unit, argmax grade over the unit's levels, confidence."""
    out = []
    for xyxy, u, c, p in zip(det.xyxy, det.unit, det.confidence, det.grade_probs, strict=True):
        k = spec.units[int(u)].grades
        q = np.asarray(p[:k], np.float64)
        grade = int(np.argmax(q)) if np.isfinite(q).all() and q.sum() > 0 else None
        out.append(Suggestion(int(u), tuple(float(v) for v in xyxy), grade, float(c)))  # type: ignore[arg-type]
    return out


@dataclass
class PreannotationReport:
    """What :func:`export_preannotations` wrote.

    Attributes:
        out: Output folder.
        frames: Frames scored.
        written: Frames written (after selection).
        boxes: Suggested boxes written.
        files: Annotation files written.
        skipped: Inputs that could not be read (``source: why``).
    """

    out: Path
    frames: int = 0
    written: int = 0
    boxes: int = 0
    files: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for the CLI."""
        return (
            f"{self.out}: {self.written} of {self.frames} frames, {self.boxes} suggested boxes -> "
            + ", ".join(p.name for p in self.files)
        )


def _frame_name(source: str, index: int, is_video: bool, used: set[str]) -> str:
    stem = Path(safe_file_name(Path(source).name)).stem
    base = f"{stem}_f{index:06d}" if is_video else stem
    name, k = f"{base}.png", 2
    while name.lower() in used:
        name, k = f"{base}_{k}.png", k + 1
    used.add(name.lower())
    return name


def export_preannotations(
    inputs: Sequence[str | Path],
    detect: Detect,
    spec: ScaleSpec,
    out: str | Path,
    *,
    formats: Sequence[str] = FORMATS,
    select: str = "uncertain",
    limit: int | None = None,
    fps: float | None = 1.0,
    batch: int = 8,
    url_prefix: str = "/data/local-files/?d=",
    model_version: str = "grimace",
) -> PreannotationReport:
    """Run ``detect`` over frames and write CVAT / Label Studio imports of its suggestions.

    Args:
        inputs: Image files, folders and/or videos (read with :func:`edge.sources.iter_inputs`).
        detect: The model (:data:`Detect`); see :func:`detector_from_model` / :func:`detector_from_teacher`.
        spec: The model's scale.
        out: New output folder (must not exist or be empty).
        formats: Any of :data:`FORMATS`.
        select: ``uncertain`` (most uncertain first) or ``all`` (input order).
        limit: Keep at most this many frames (after ordering).
        fps: Video frames sampled per second of video (``None`` = every frame).
        batch: Frames per model call.
        url_prefix: Prefix of the image URL in the Label Studio tasks (``images/`` names follow it).
        model_version: Shown by Label Studio next to the predictions.

    Returns:
        The report.

    Raises:
        DatasetImportError: Unknown format/selection, no readable frame, or ``out`` not empty.
    """
    from edge.sources import ItemError, is_video, iter_inputs

    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise DatasetImportError(f"unknown format(s) {bad or formats}; choose from {FORMATS}")
    if select not in SELECT:
        raise DatasetImportError(f"--select must be one of {SELECT}, got {select!r}")
    if limit is not None and limit < 1:
        raise DatasetImportError(f"--limit must be >= 1, got {limit}")
    out = _prepare_out(out)
    img_dir = out / "images"
    img_dir.mkdir()
    rep = PreannotationReport(out=out)
    rows: list[tuple[SuggestedImage, Uncertainty, str, int]] = []
    used: set[str] = set()
    pending: list[Any] = []

    def flush() -> None:
        dets = detect([f.image for f in pending])
        for f, d in zip(pending, dets, strict=True):
            name = _frame_name(f.source, f.index, is_video(f.source), used)
            ok, enc = cv2.imencode(".png", f.image)
            if not ok:
                rep.skipped.append(f"{f.name}: could not encode the frame")
                continue
            enc.tofile(str(img_dir / name))
            h, w = f.image.shape[:2]
            unc = frame_uncertainty(d, spec)
            im = SuggestedImage(name, w, h, suggestions(d, spec), score=1.0 - unc.value)
            rows.append((im, unc, f.source, f.index))
        rep.frames += len(pending)
        pending.clear()

    for item in iter_inputs([str(p) for p in inputs], fps=fps):
        if isinstance(item, ItemError):
            rep.skipped.append(str(item))
            continue
        pending.append(item)
        if len(pending) >= batch:
            flush()
    if pending:
        flush()
    if not rows:
        shutil.rmtree(out)
        names = [str(p) for p in inputs]
        raise DatasetImportError(f"no readable frame in {names} ({len(rep.skipped)} skipped)")
    order = list(range(len(rows)))
    if select == "uncertain":
        order.sort(key=lambda i: -rows[i][1].value)  # stable: ties keep the input order
    keep = order[:limit] if limit else order
    for i in order[len(keep) :]:
        (img_dir / rows[i][0].name).unlink()
    chosen = [rows[i][0] for i in keep]
    rep.written = len(chosen)
    rep.boxes = sum(len(im.boxes) for im in chosen)
    if "cvat" in formats:
        rep.files.append(write_cvat_xml(chosen, spec, out / CVAT_FILE))
    if "label-studio" in formats:
        rep.files.append(write_label_studio(chosen, spec, out / LS_FILE, url_prefix, model_version))
        (out / LS_CONFIG).write_text(label_studio_config(spec))
        rep.files.append(out / LS_CONFIG)
    with (out / UNCERTAINTY_FILE).open("w", newline="") as fh:
        wr = csv.writer(fh)
        wr.writerow(["rank", "image", "uncertainty", "grade_entropy", "low_confidence", "missing", "boxes",
                     "selected", "source_frame"])  # fmt: skip
        for rank, i in enumerate(order, start=1):
            im, unc, src, idx = rows[i]
            wr.writerow([rank, im.name, f"{unc.value:.4f}", f"{unc.grade_entropy:.4f}",
                         f"{unc.low_confidence:.4f}", f"{unc.missing:.4f}", len(im.boxes),
                         int(rank <= len(keep)), f"{safe_file_name(Path(src).name)}@{idx}"])  # fmt: skip
    rep.files.append(out / UNCERTAINTY_FILE)
    return rep


def detector_from_model(path: str | Path, conf: float = 0.25, iou: float = 0.45) -> tuple[Detect, ScaleSpec]:
    """An edge artifact (ONNX or TensorRT engine with its metadata) as a :data:`Detect`."""
    from edge.predictor import Predictor, load_model

    model = load_model(path)
    pred = Predictor(model, conf=conf, iou=iou)
    return pred.detect, model.spec


def detector_from_teacher(
    run_dir: str | Path, conf: float = 0.25, iou: float = 0.45, device: str = "auto"
) -> tuple[Detect, ScaleSpec]:
    """A teacher run folder (detector + graders, torch) as a :data:`Detect`."""
    from train.teacher.teacher import load_teacher

    t = load_teacher(run_dir, device=device)
    return (lambda images: t.predict(images, conf=conf, iou=iou)), t.spec
