"""Batch scoring of images and videos (the work behind ``grimace score``).

:func:`score_inputs` reads every input (bad ones are reported by name and skipped), scores each
frame with the model, and writes into ``out``:

* ``frames.csv`` / ``frames.xlsx`` (openpyxl) / ``frames.jsonl``: one row per frame in the one frame
  record vocabulary (:mod:`edge.records`, seed columns first); the JSON lines also hold every box and
  one line per failed input,
* ``summary_by_animal.csv`` and ``summary_by_session.csv``: per animal / per session (video) aggregates,
* ``errors.csv``: the inputs that failed and why,
* ``annotated/``: annotated images (and ``*_annotated.mp4`` per video with ``annotate_video``),
* ``run.json``: counts, per-stage times, frames/s, model and settings.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge import __version__
from edge.aggregate import SubjectMap, aggregate, load_subject_map, summary_rows
from edge.pipeline import prepared_stream
from edge.predictor import Predictor, StageTimes, load_model
from edge.quality import frame_quality
from edge.records import (
    RECORD_SCHEMA,
    FrameRecord,
    JsonlWriter,
    frame_columns,
    json_line,
    record_from_frame,
    table_row,
    write_csv,
    write_xlsx,
)
from edge.report import AnnotatedVideo, annotate
from edge.sources import Frame, ItemError, iter_inputs


@dataclass
class ScoreRun:
    """Outcome of :func:`score_inputs`.

    Attributes:
        records: One record per scored frame.
        errors: Inputs that failed.
        times: Per-stage times.
        wall_s: Total seconds.
        outputs: Name -> path of every file written.
        notes: Things the user should know (e.g. XLSX skipped).
    """

    records: list[FrameRecord] = field(default_factory=list)
    errors: list[ItemError] = field(default_factory=list)
    times: StageTimes = field(default_factory=StageTimes)
    wall_s: float = 0.0
    outputs: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def frames_per_s(self) -> float:
        """Frames scored per second of wall time."""
        return len(self.records) / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def failed_sources(self) -> list[str]:
        """Distinct failed inputs, in order."""
        return list(dict.fromkeys(e.source for e in self.errors))


def _unique(path: Path, used: set[Path]) -> Path:
    cand, k = path, 1
    while cand in used:
        cand = path.with_name(f"{path.stem}_{k}{path.suffix}")
        k += 1
    used.add(cand)
    return cand


def score_inputs(
    paths: Sequence[str | Path],
    model: str | Path,
    out: str | Path,
    *,
    scale: str | None = None,
    fps: float | None = None,
    subject_map: str | Path | SubjectMap | None = None,
    min_quality: float | None = None,
    conf: float = 0.25,
    iou: float = 0.45,
    annotate_images: bool = True,
    annotate_video: bool = False,
    threads: int = 0,
    progress: bool = True,
    log: Any = print,
    pipelined: bool = True,
) -> ScoreRun:
    """Score images and videos; see the module docstring for the outputs.

    Args:
        paths: Files and folders.
        model: ONNX model or TensorRT engine.
        out: Output folder (created).
        scale: Scale the model must have been made for (``None`` = the model's own).
        fps: Video sampling rate; ``None`` scores every frame.
        subject_map: CSV (or loaded map) mapping files/videos to animal ids.
        min_quality: Frames below this quality abstain.
        conf: Detection confidence threshold.
        iou: NMS IoU threshold.
        annotate_images: Write annotated copies of still images.
        annotate_video: Write an annotated video per input video.
        threads: ONNX Runtime threads (0 = default).
        progress: Show a progress bar.
        log: ``f(str)`` for messages (errors, notes).
        pipelined: Decode and pre-process in threads (:func:`edge.pipeline.prepared_stream`) while
            the model works; ``False`` reads, prepares and scores one frame after the other.

    Returns:
        The :class:`ScoreRun`.

    Raises:
        Errors of :func:`edge.predictor.load_model` and :func:`edge.aggregate.load_subject_map`, before any
        input is read.
    """
    from tqdm import tqdm

    t_start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    smap = load_subject_map(subject_map) if isinstance(subject_map, (str, Path)) else subject_map
    run = ScoreRun()
    with load_model(model, scale=scale, threads=threads) as m:
        spec = m.spec
        pred = Predictor(m, conf=conf, iou=iou, min_quality=min_quality, quality_fn=frame_quality)
        run.times = pred.times
        jsonl = JsonlWriter(out / "frames.jsonl")
        used: set[Path] = set()
        videos: dict[str, AnnotatedVideo] = {}
        bar = tqdm(unit="frame", desc="scoring", disable=not progress, dynamic_ncols=True)
        # decode and pre-processing of the next frames run in threads while this one is inferred
        stream = (
            prepared_stream(iter_inputs(paths, fps=fps), pred.prepare)
            if pipelined
            else ((item, None) for item in iter_inputs(paths, fps=fps))
        )
        try:
            for item, prepared in stream:
                if isinstance(item, ItemError):
                    run.errors.append(item)
                    jsonl.write(
                        {"error": item.message, "source": item.source, "frames_read": item.frames_read}
                    )
                    msg = f"error: {item}"
                    if progress:
                        bar.write(msg)
                    else:
                        log(msg)
                    continue
                _score_frame(
                    item,
                    pred,
                    spec,
                    smap,
                    run,
                    jsonl,
                    out,
                    used,
                    videos,
                    annotate_images,
                    annotate_video,
                    fps,
                    prepared,
                )
                bar.update(1)
        finally:
            stream.close()  # stops the decode/pre-processing threads (also on Ctrl-C)
            bar.close()
            jsonl.close()
            for v in videos.values():
                v.close()
        run.wall_s = time.perf_counter() - t_start
        _write_outputs(run, spec, out, smap, m.path, fps, conf, iou, min_quality)
    if smap is not None and smap.unmatched:
        run.notes.append(
            f"{len(smap.unmatched)} input(s) not in the subject map {smap.path}; grouped as 'unmapped'"
        )
    for n in run.notes:
        log(f"note: {n}")
    return run


def _score_frame(
    item: Frame,
    pred: Predictor,
    spec: Any,
    smap: SubjectMap | None,
    run: ScoreRun,
    jsonl: JsonlWriter,
    out: Path,
    used: set[Path],
    videos: dict[str, AnnotatedVideo],
    annotate_images: bool,
    annotate_video: bool,
    fps: float | None,
    prepared: tuple[Any, float] | None = None,
) -> None:
    kind = item.meta.get("kind", "image")
    pred.times.add("decode", item.decode_s)
    if prepared is not None:  # pre-processed in the pipeline's thread
        res = pred.score_prepared([item.image], prepared[0], [item.source], pre_s=prepared[1])[0]
    else:
        res = pred([item.image], [item.source])[0]
    rec = record_from_frame(res, spec, item, smap)
    run.records.append(rec)
    jsonl.write(json_line(rec, spec, res))
    if kind == "image" and annotate_images:
        dst = _unique(out / "annotated" / f"{Path(item.source).stem}.jpg", used)
        dst.parent.mkdir(parents=True, exist_ok=True)
        import cv2

        cv2.imwrite(str(dst), annotate(item.image, res, spec, title=item.name))
    elif kind == "video" and annotate_video:
        vid = videos.get(item.source)
        if vid is None:
            vfps = fps or float(item.meta.get("video_fps") or 25.0)
            dst = _unique(out / "annotated" / f"{Path(item.source).stem}_annotated.mp4", used)
            vid = videos[item.source] = AnnotatedVideo(dst, vfps)
            run.outputs[f"video:{item.source}"] = str(dst)
        vid.write(annotate(item.image, res, spec, title=f"{item.name} t={item.time_s:.1f}s"))


def _write_outputs(
    run: ScoreRun,
    spec: Any,
    out: Path,
    smap: SubjectMap | None,
    model_path: Path,
    fps: float | None,
    conf: float,
    iou: float,
    min_quality: float | None,
) -> None:
    cols = frame_columns(spec)
    rows = [table_row(r, spec) for r in run.records]
    run.outputs["frames_csv"] = str(write_csv(out / "frames.csv", rows, cols))
    run.outputs["frames_jsonl"] = str(out / "frames.jsonl")
    by_subject = summary_rows(aggregate(run.records, spec, by="subject"), spec, by="subject")
    by_session = summary_rows(aggregate(run.records, spec, by="session"), spec, by="session")
    run.outputs["summary_by_animal"] = str(write_csv(out / "summary_by_animal.csv", by_subject))
    run.outputs["summary_by_session"] = str(write_csv(out / "summary_by_session.csv", by_session))
    err_rows = [{"source": e.source, "error": e.message, "frames_read": e.frames_read} for e in run.errors]
    run.outputs["errors_csv"] = str(
        write_csv(out / "errors.csv", err_rows, ["source", "error", "frames_read"])
    )
    sheets = {
        "frames": (cols, rows),
        "by animal": (list(by_subject[0]) if by_subject else ["animal"], by_subject),
        "by session": (list(by_session[0]) if by_session else ["session"], by_session),
        "errors": (["source", "error", "frames_read"], err_rows),
    }
    xlsx = write_xlsx(out / "frames.xlsx", sheets)
    if xlsx is None:
        run.notes.append("openpyxl is not installed: frames.xlsx skipped (pip install openpyxl)")
    else:
        run.outputs["frames_xlsx"] = str(xlsx)
    info = {
        "grimace_edge": __version__,
        "record_schema": RECORD_SCHEMA,
        "python": platform.python_version(),
        "model": str(model_path),
        "scale": spec.name,
        "fps": fps,
        "conf": conf,
        "iou": iou,
        "min_quality": min_quality,
        "frames_scored": len(run.records),
        "frames_abstained": sum(r.score is None for r in run.records),
        "inputs_failed": run.failed_sources,
        "wall_s": round(run.wall_s, 3),
        "frames_per_s": round(run.frames_per_s, 2),
        "stage_ms_per_frame": {k: round(v, 3) for k, v in run.times.per_frame_ms().items()},
    }
    (out / "run.json").write_text(json.dumps(info, indent=2))
    run.outputs["run_json"] = str(out / "run.json")
