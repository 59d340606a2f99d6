"""Batch scoring of images and videos (the work behind ``grimace score``).

:func:`score_inputs` reads every input (bad ones are reported by name and skipped), scores each
frame with the model, and writes into ``out``:

* ``frames.csv`` / ``frames.xlsx`` (openpyxl) / ``frames.jsonl``: one row per frame in the one frame
  record vocabulary (:mod:`edge.records`, seed columns first); the JSON lines also hold every box and
  one line per failed input,
* ``frames.parquet`` (pyarrow installed): the same rows, typed columns,
* ``summary_by_animal.csv`` and ``summary_by_session.csv``: per animal / per session (video) aggregates,
* ``errors.csv``: the inputs that failed and why,
* ``annotated/``: annotated images (and ``*_annotated.mp4`` per video with ``annotate_video``),
* ``run.json``: counts, per-stage times, frames/s, model and settings, and how the run ended,
* ``inputs_done.jsonl``: one line per input finished (scored or reported), for ``--resume``.

Outputs are transactional: ``frames.jsonl`` is written line by line as frames are scored (whole lines
only), and the tables are written from what it holds when the run ends, also when it ends early (a
SIGINT/SIGTERM, a full disk, a read-only folder): each table goes to a temporary name and is renamed
when complete, so every file in ``out`` is either whole or absent. An input that cannot be read or
scored is reported (file, what is wrong) and skipped; only an output that cannot be written stops the
run (:class:`OutputError`).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import platform
import shutil
import signal
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge import __version__
from edge.aggregate import SubjectMap, aggregate, load_subject_map, summary_rows
from edge.fileio import atomic_write_image, atomic_write_text, path_under
from edge.pipeline import prepared_stream
from edge.predictor import Predictor, StageTimes, load_model
from edge.quality import frame_quality
from edge.records import (
    RECORD_SCHEMA,
    FrameRecord,
    JsonlWriter,
    frame_column_types,
    frame_columns,
    json_line,
    record_from_frame,
    record_from_json_line,
    table_row,
    write_csv,
    write_parquet,
    write_xlsx,
)
from edge.report import AnnotatedVideo, annotate
from edge.sources import Frame, ItemError, expand_inputs, iter_inputs
from edge.verdict import DEFAULT_MIN_FRAMES, VerdictRule

OUTPUT_FILES = (
    "frames.jsonl",
    "frames.csv",
    "frames.parquet",
    "frames.xlsx",
    "summary_by_animal.csv",
    "summary_by_session.csv",
    "errors.csv",
    "run.json",
    "inputs_done.jsonl",
)
"""Files ``grimace score`` writes into ``out`` (plus the ``annotated/`` folder)."""

EXISTING = ("refuse", "overwrite", "resume")


class OutputError(RuntimeError):
    """The output folder cannot be used or a write to it failed (disk full, read-only, a name over
    the system's limits); the message names the path and the reason.

    Attributes:
        mid_run: The run had started (what was written is valid; ``--resume`` continues it); False
            when ``out`` was refused before any input was read.
    """

    def __init__(self, message: str, mid_run: bool = False) -> None:
        super().__init__(message)
        self.mid_run = mid_run


def _os_reason(e: OSError) -> str:
    if e.errno == errno.ENOSPC:
        return "no space left on the device (disk full)"
    if e.errno == errno.EDQUOT:
        return "disk quota exceeded"
    if e.errno == errno.EROFS:
        return "read-only file system"
    if e.errno == errno.ENAMETOOLONG:
        return "a file or folder name is longer than the system allows"
    if e.errno in (errno.ENOTDIR, errno.EEXIST):
        return "a part of the path is a file, not a folder"
    return e.strerror or str(e)


def prepare_out(out: str | Path, existing: str = "refuse") -> tuple[Path, list[str]]:
    """Make ``out`` ready for a run.

    Args:
        out: Output folder.
        existing: What to do when it already holds files: ``refuse``, ``overwrite`` (delete the files
            of an earlier run, :data:`OUTPUT_FILES` and ``annotated/``; other files are left alone) or
            ``resume`` (keep them; inputs already done are skipped).

    Returns:
        ``(folder, notes)``.

    Raises:
        OutputError: ``out`` is a file or lies under one, cannot be created or written, or is not
            empty and ``existing`` is ``refuse``.
    """
    if existing not in EXISTING:
        raise ValueError(f"existing must be one of {EXISTING}, got {existing!r}")
    out = Path(out)
    notes: list[str] = []
    try:
        if out.exists() and not out.is_dir():
            raise OutputError(f"--out {out} is a file, not a folder")
        out.mkdir(parents=True, exist_ok=True)
    except OutputError:
        raise
    except OSError as e:
        raise OutputError(f"--out {out}: cannot create the folder: {_os_reason(e)}") from None
    try:
        entries = sorted(p.name for p in out.iterdir())
    except OSError as e:
        raise OutputError(f"--out {out}: cannot list the folder: {_os_reason(e)}") from None
    if entries and existing == "refuse":
        shown = ", ".join(entries[:4]) + (", ..." if len(entries) > 4 else "")
        raise OutputError(
            f"--out {out} is not empty ({len(entries)} entries: {shown}); add --overwrite to replace an "
            "earlier run's results, --resume to continue it, or choose an empty folder"
        )
    if entries and existing == "overwrite":
        try:
            for name in OUTPUT_FILES:
                (out / name).unlink(missing_ok=True)
            if (out / "annotated").is_dir():
                shutil.rmtree(out / "annotated")
        except OSError as e:
            raise OutputError(f"--out {out}: cannot remove the earlier results: {_os_reason(e)}") from None
        others = [n for n in entries if n not in OUTPUT_FILES and n != "annotated"]
        if others:
            notes.append(f"--overwrite kept {len(others)} file(s) in {out} that grimace score did not write")
    try:  # writable? (a read-only mount or a full disk is found now, not after an hour of scoring)
        fd, probe = tempfile.mkstemp(prefix=".grimace-probe.", dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OutputError(f"--out {out}: cannot write into the folder: {_os_reason(e)}") from None
    return out, notes


def _under(path: Path, folder: Path) -> bool:
    """Whether ``path`` lies inside ``folder`` (both resolved)."""
    try:
        return folder.resolve() in path.resolve().parents
    except (OSError, RuntimeError):
        return False


def _load_resume(out: Path, spec: Any, run: ScoreRun) -> set[str]:
    """Inputs finished by an earlier run into ``out``; their records and errors go into ``run`` and
    ``frames.jsonl`` is rewritten without the lines of an input that was cut off mid-way."""
    with contextlib.suppress(FileNotFoundError, ValueError, AttributeError):
        earlier = json.loads((out / "run.json").read_text("utf-8"))
        if earlier.get("scale") not in (None, spec.name):
            raise OutputError(
                f"--resume: {out} holds a run of scale {earlier['scale']!r} (model {earlier.get('model')}); "
                f"this model is for {spec.name!r}. Use --overwrite or another --out"
            )
    done: set[str] = set()
    with contextlib.suppress(FileNotFoundError):
        for line in (out / "inputs_done.jsonl").read_text("utf-8", "replace").splitlines():
            with contextlib.suppress(ValueError, TypeError, KeyError):
                done.add(str(json.loads(line)["source"]))
    kept: list[str] = []
    with contextlib.suppress(FileNotFoundError):
        for line in (out / "frames.jsonl").read_text("utf-8", "replace").splitlines():
            try:
                obj = json.loads(line)
            except ValueError:  # a torn last line of a killed run
                continue
            src = str(obj.get("source", ""))
            if src not in done:
                continue
            kept.append(line)
            if "error" in obj:
                run.errors.append(ItemError(src, str(obj["error"]), int(obj.get("frames_read") or 0)))
            else:
                run.records.append(record_from_json_line(obj, spec))
    atomic_write_text(out / "frames.jsonl", "".join(x + "\n" for x in kept))
    return done


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
        stopped: Why the run ended before every input was done (``interrupted (SIGINT)``,
            ``output error: ...``); empty when it finished.
    """

    records: list[FrameRecord] = field(default_factory=list)
    errors: list[ItemError] = field(default_factory=list)
    times: StageTimes = field(default_factory=StageTimes)
    wall_s: float = 0.0
    outputs: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    stopped: str = ""

    @property
    def frames_per_s(self) -> float:
        """Frames scored per second of wall time."""
        return len(self.records) / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def failed_sources(self) -> list[str]:
        """Distinct failed inputs, in order."""
        return list(dict.fromkeys(e.source for e in self.errors))


def _unique(path: Path, used: set[Path]) -> Path:
    stem = path.stem[:100]  # a 255-byte file name plus "_annotated.mp4" would pass the system's limit
    cand, k = path.with_name(f"{stem}{path.suffix}"), 1
    while cand in used:
        cand = path.with_name(f"{stem}_{k}{path.suffix}")
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
    min_frames: int = DEFAULT_MIN_FRAMES,
    conf: float = 0.25,
    iou: float = 0.45,
    annotate_images: bool = True,
    annotate_video: bool = False,
    threads: int = 0,
    progress: bool = True,
    log: Any = print,
    existing: str = "overwrite",
    handle_signals: bool = True,
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
        min_frames: Binary scales (goats): fewest scored frames for a per-animal verdict
            (:class:`edge.verdict.VerdictRule`).
        conf: Detection confidence threshold.
        iou: NMS IoU threshold.
        annotate_images: Write annotated copies of still images.
        annotate_video: Write an annotated video per input video.
        threads: ONNX Runtime threads (0 = default).
        progress: Show a progress bar.
        log: ``f(str)`` for messages (errors, notes).
        existing: When ``out`` already holds files: ``refuse``, ``overwrite`` or ``resume``
            (:func:`prepare_out`).
        handle_signals: Turn SIGINT/SIGTERM into a clean stop (tables written, ``run.stopped`` set)
            while the run lasts (main thread only).
        pipelined: Decode and pre-process in threads (:func:`edge.pipeline.prepared_stream`) while
            the model works; ``False`` reads, prepares and scores one frame after the other.

    Returns:
        The :class:`ScoreRun`; ``run.stopped`` says why it ended early (empty when it did not).

    Raises:
        OutputError: ``out`` cannot be used (before anything is read), or writing to it failed during
            the run: then everything written until then is complete and valid (``frames.jsonl`` holds
            whole lines; each table is whole or absent) and the message says what was not written.
        Errors of :func:`edge.predictor.load_model` and :func:`edge.aggregate.load_subject_map`, before any
            input is read.
    """
    from tqdm import tqdm

    t_start = time.perf_counter()
    smap = load_subject_map(subject_map) if isinstance(subject_map, (str, Path)) else subject_map
    run = ScoreRun()
    stop = {"why": ""}

    def _on_signal(signum: int, _frame: Any) -> None:
        if stop["why"]:  # a second signal: stop waiting for the current frame
            raise KeyboardInterrupt
        stop["why"] = signal.Signals(signum).name

    with load_model(model, scale=scale, threads=threads) as m:
        out, notes = prepare_out(out, existing)
        run.notes += notes
        spec = m.spec
        done = _load_resume(out, spec, run) if existing == "resume" else set()
        if done:
            log(f"note: resuming {out}: {len(done)} input(s) already done are skipped")
        pred = Predictor(m, conf=conf, iou=iou, min_quality=min_quality, quality_fn=frame_quality)
        run.times = pred.times
        files, expand_errors = expand_inputs(paths)
        ours = [f for f in files if _under(f, out)]
        if ours:  # --out inside an input folder: our own annotated images are not inputs
            run.notes.append(f"{len(ours)} file(s) under --out {out} were not taken as inputs")
            files = [f for f in files if f not in ours]
        todo = [f for f in files if str(f) not in done]
        used: set[Path] = set()
        if (out / "annotated").is_dir():
            used.update((out / "annotated").iterdir())
        videos: dict[str, AnnotatedVideo] = {}
        failure: OSError | None = None
        failed_path = ""
        try:
            jsonl = JsonlWriter(out / "frames.jsonl", append=True)
            progress_log = JsonlWriter(out / "inputs_done.jsonl", append=existing == "resume")
        except OSError as e:
            raise OutputError(f"{out}: cannot open frames.jsonl: {_os_reason(e)}") from None
        old_handlers: dict[int, Any] = {}
        if handle_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(ValueError):  # not the main thread
                    old_handlers[sig] = signal.signal(sig, _on_signal)
        bar = tqdm(unit="frame", desc="scoring", disable=not progress, dynamic_ncols=True)
        current: str | None = None

        def finished(src: str | None) -> None:
            if src is not None:
                progress_log.write({"source": src})

        def report(item: ItemError) -> None:
            run.errors.append(item)
            jsonl.write({"error": item.message, "source": item.source, "frames_read": item.frames_read})
            msg = f"error: {item}"
            if progress:
                bar.write(msg)
            else:
                log(msg)

        # decode and pre-processing of the next frames run in threads while this one is inferred
        stream = (
            prepared_stream(iter_inputs(todo, fps=fps), pred.prepare)
            if pipelined
            else ((item, None) for item in iter_inputs(todo, fps=fps))
        )
        try:
            for e in expand_errors:
                if e.source not in done:
                    report(e)
                    finished(e.source)
            for item, prepared in stream:
                if stop["why"]:
                    break
                if item.source != current:
                    finished(current)
                    current = item.source
                if isinstance(item, ItemError):
                    report(item)
                    continue
                try:
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
                except OSError:
                    raise
                except Exception as e:  # the model or a post-processing step failed on this frame
                    if os.environ.get("GRIMACE_DEBUG"):
                        raise
                    report(ItemError(item.source, f"scoring failed ({type(e).__name__}: {e})", 0))
                    continue
                bar.update(1)
            else:
                finished(current)
        except OSError as e:  # an output write failed: stop, keep what is valid
            failure = e
            failed_path = str(e.filename or "")
            run.stopped = f"output error: {_os_reason(e)}"
        except KeyboardInterrupt:
            stop["why"] = stop["why"] or "SIGINT"
        finally:
            stream.close()  # stops the decode/pre-processing threads (also on Ctrl-C)
            bar.close()
            jsonl.close()
            progress_log.close()
            for src, v in videos.items():
                with contextlib.suppress(Exception):
                    v.close()
                try:  # cv2.VideoWriter.write reports nothing: check the file it left
                    ok = v.path.stat().st_size > 0
                except OSError:
                    ok = False
                if not ok:
                    run.notes.append(f"annotated video for {src} could not be written ({v.path})")
                    run.outputs.pop(f"video:{src}", None)
            for sig, h in old_handlers.items():
                signal.signal(sig, h)
        if stop["why"] and not run.stopped:
            run.stopped = f"interrupted ({stop['why']})"
        run.wall_s = time.perf_counter() - t_start
        not_written = _write_outputs(run, spec, out, smap, m.path, fps, conf, iou, min_quality, min_frames)
    if smap is not None and smap.unmatched:
        run.notes.append(
            f"{len(smap.unmatched)} input(s) not in the subject map {smap.path}; grouped as 'unmapped'"
        )
    for n in run.notes:
        log(f"note: {n}")
    if failure is not None or not_written:
        what = f"writing {failed_path or out} failed: {_os_reason(failure)}" if failure else ""
        miss = f"not written: {', '.join(not_written)}" if not_written else ""
        kept = ", ".join(Path(p).name for k, p in run.outputs.items() if not k.startswith("video:"))
        raise OutputError(
            "; ".join(x for x in (what, miss) if x)
            + f". The run stopped after {len(run.records)} frame(s); what is in {out} is complete and "
            f"valid ({kept or 'nothing'}); free space and rerun with --resume",
            mid_run=True,
        )
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
    jsonl.write(json_line(rec, spec, res))
    run.records.append(rec)  # after the line is on disk: the tables hold what frames.jsonl holds
    if kind == "image" and annotate_images:
        dst = path_under(out, _unique(out / "annotated" / f"{Path(item.source).stem}.jpg", used))
        atomic_write_image(dst, annotate(item.image, res, spec, title=item.name))
    elif kind == "video" and annotate_video:
        vid = videos.get(item.source)
        if vid is None:
            vfps = fps or float(item.meta.get("video_fps") or 25.0)
            dst = _unique(out / "annotated" / f"{Path(item.source).stem}_annotated.mp4", used)
            vid = videos[item.source] = AnnotatedVideo(path_under(out, dst), vfps)
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
    min_frames: int = DEFAULT_MIN_FRAMES,
) -> list[str]:
    """Write every table (each atomically); returns the names of those that could not be written."""
    failed: list[str] = []

    def put(key: str, name: str, write: Any) -> None:
        try:
            path = write(out / name)
        except OSError as e:
            failed.append(f"{name} ({_os_reason(e)})")
            return
        if path is not None:
            run.outputs[key] = str(path)

    cols = frame_columns(spec)
    rows = [table_row(r, spec) for r in run.records]
    put("frames_csv", "frames.csv", lambda p: write_csv(p, rows, cols))
    try:
        parquet = write_parquet(out / "frames.parquet", rows, cols, frame_column_types(spec))
    except OSError as e:
        failed.append(f"frames.parquet ({_os_reason(e)})")
    else:
        if parquet is None:
            run.notes.append("pyarrow is not installed: frames.parquet skipped (pip install pyarrow)")
        else:
            run.outputs["frames_parquet"] = str(parquet)
    if (out / "frames.jsonl").exists():
        run.outputs["frames_jsonl"] = str(out / "frames.jsonl")
    by_subject = summary_rows(
        aggregate(run.records, spec, by="subject", min_frames=min_frames), spec, by="subject"
    )
    by_session = summary_rows(
        aggregate(run.records, spec, by="session", min_frames=min_frames), spec, by="session"
    )
    put("summary_by_animal", "summary_by_animal.csv", lambda p: write_csv(p, by_subject))
    put("summary_by_session", "summary_by_session.csv", lambda p: write_csv(p, by_session))
    err_rows = [{"source": e.source, "error": e.message, "frames_read": e.frames_read} for e in run.errors]
    put("errors_csv", "errors.csv", lambda p: write_csv(p, err_rows, ["source", "error", "frames_read"]))
    sheets = {
        "frames": (cols, rows),
        "by animal": (list(by_subject[0]) if by_subject else ["animal"], by_subject),
        "by session": (list(by_session[0]) if by_session else ["session"], by_session),
        "errors": (["source", "error", "frames_read"], err_rows),
    }
    xlsx_missing = False

    def xlsx(p: Path) -> Path | None:
        nonlocal xlsx_missing
        res = write_xlsx(p, sheets)
        xlsx_missing = res is None
        return res

    put("frames_xlsx", "frames.xlsx", xlsx)
    if xlsx_missing:
        run.notes.append("openpyxl is not installed: frames.xlsx skipped (pip install openpyxl)")
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
        "verdict_rule": (
            VerdictRule(min_frames=min_frames, threshold=spec.pain_threshold).to_dict()
            if spec.aggregation == "binary" and spec.pain_threshold is not None
            else None
        ),
        "status": run.stopped or "complete",
        "frames_scored": len(run.records),
        "frames_abstained": sum(r.score is None for r in run.records),
        "inputs_failed": run.failed_sources,
        "wall_s": round(run.wall_s, 3),
        "frames_per_s": round(run.frames_per_s, 2),
        "stage_ms_per_frame": {k: round(v, 3) for k, v in run.times.per_frame_ms().items()},
        "tables_not_written": failed,
    }
    put("run_json", "run.json", lambda p: atomic_write_text(p, json.dumps(info, indent=2) + "\n"))
    return failed
