"""CLI commands: ``grimace score`` and ``grimace watch`` (imports nothing heavy at module level).

One error policy, applied here for each command: every input is scored or reported (file, what is
wrong) and skipped; only what makes the whole run impossible stops it, with ``error: ...`` and an exit
status, never a traceback (``GRIMACE_DEBUG=1`` shows them). Numeric options are checked first (finite,
in range, below a sane upper bound).

Exit status of ``score``: 0 when every input was read, 1 when some inputs failed (their names are
printed and listed in ``errors.csv``; outputs are complete for the rest), 2 when nothing could be
done (no model, bad arguments, unusable or non-empty ``--out``, no input readable), 3 when writing
the outputs failed mid-run (disk full...; what was written is valid, ``--resume`` continues), 130/143
when stopped by SIGINT/SIGTERM (the tables are written from what was scored; ``--resume`` continues).

Exit status of ``watch``: 0 when the session completed or was stopped by a signal (resumable), 1 when
the camera gave up or was lost before the session's end (the session stays resumable) or free disk
space is below the floor, 2 for bad arguments, an unusable database or output folder.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

app = typer.Typer(no_args_is_help=True)


def _quiet_opencv() -> None:
    """Keep OpenCV's and FFmpeg's own messages off the terminal; our errors name the bad file."""
    import os

    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    import cv2

    # silent: a codec's own complaint about a bad file ("TIFF_Error ...") is replaced by our message
    # naming the file and what is wrong with it
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)


def _fail(msg: str, code: int = 2) -> typer.Exit:
    """Print ``error: msg`` and return the exit to raise. Called inside an ``except`` block with
    ``GRIMACE_DEBUG`` set, it re-raises the exception being handled instead (its traceback shows)."""
    import os
    import sys

    if os.environ.get("GRIMACE_DEBUG") and sys.exc_info()[1] is not None:
        raise sys.exc_info()[1]
    typer.secho(f"error: {msg}", err=True, fg=typer.colors.RED)
    return typer.Exit(code)


def max_threads() -> int:
    """Highest ``--threads``: 4 per CPU core, at least 64 (100000 threads made ONNX Runtime hang)."""
    import os

    return max(64, 4 * (os.cpu_count() or 1))


def check_number(
    option: str,
    value: float | None,
    *,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
) -> None:
    """Refuse a numeric option that is NaN, infinite or outside ``[lo, hi]`` (``(lo, hi]`` with
    ``lo_open``); ``None`` (not given) passes.

    Raises:
        typer.Exit: After printing ``error: --option ...`` (exit status 2).
    """
    import math

    if value is None:
        return
    if not math.isfinite(value):
        raise _fail(f"{option} must be a finite number, got {value}")
    if lo is not None and (value <= lo if lo_open else value < lo):
        raise _fail(f"{option} must be {'>' if lo_open else '>='} {lo:g}, got {value:g}")
    if hi is not None and value > hi:
        raise _fail(f"{option} must be <= {hi:g}, got {value:g}")


def _check_image_limits() -> None:
    from edge.sources import ImageLimits

    try:
        ImageLimits.from_env()
    except ValueError as e:
        raise _fail(str(e)) from None


@app.command("score")
def score_cmd(
    paths: list[Path] = typer.Argument(..., help="Image/video files and folders (searched recursively)."),
    model: Path = typer.Option(..., "--model", "-m", help="ONNX model or TensorRT engine (.engine + .json)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder."),
    scale: str | None = typer.Option(
        None,
        "--scale",
        help="Scale the model must be made for (rgs, mgs, goat or a YAML file); "
        "a model made for another scale is refused.",
    ),
    fps: float | None = typer.Option(
        None,
        "--fps",
        help="Video frames per second to score (the goat seed used 1 and 3); default every frame.",
    ),
    subject_map: Path | None = typer.Option(
        None,
        "--subject-map",
        help="CSV mapping files/videos to animal ids (columns file,subject[,group,...]).",
    ),
    min_quality: float | None = typer.Option(
        None, "--min-quality", min=0.0, max=1.0, help="Frames below this quality (0-1) are not scored."
    ),
    min_frames: int = typer.Option(
        10,
        "--min-frames",
        min=1,
        help="Binary scales (goat): fewest scored frames for a per-animal verdict "
        "(painful / not painful); fewer give 'insufficient frames'.",
    ),
    conf: float = typer.Option(0.25, "--conf", min=0.0, max=1.0, help="Detection confidence threshold."),
    iou: float = typer.Option(0.45, "--iou", min=0.0, max=1.0, help="NMS IoU threshold (per unit)."),
    annotate_images: bool = typer.Option(True, "--annotate/--no-annotate", help="Write annotated images."),
    annotate_video: bool = typer.Option(
        False, "--annotate-video", help="Write an annotated video per video."
    ),
    threads: int = typer.Option(0, "--threads", min=0, help="ONNX Runtime CPU threads (0 = all cores)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    engine: str = typer.Option(
        "local", "--engine", help="local (this process) or ray (a Ray cluster; ONNX models; resumable)."
    ),
    address: str | None = typer.Option(
        None, "--address", help="--engine ray: cluster address (auto, host:6379, ray://host:10001)."
    ),
    actors: int | None = typer.Option(
        None, "--actors", min=1, help="--engine ray: model actors (default: one per CPU of the cluster)."
    ),
    gpus_per_actor: float = typer.Option(
        0.0, "--gpus-per-actor", min=0.0, help="--engine ray: GPUs per actor (> 0: ONNX Runtime CUDA)."
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="--out holds an earlier run: delete its results and start again."
    ),
    resume: bool = typer.Option(
        False, "--resume", help="--out holds an earlier run: keep it and score only the inputs not done."
    ),
) -> None:
    """Score images and videos; write per-frame CSV/XLSX/JSONL, per-animal summaries and annotations.

    Image size limits (checked from each file's header before decoding): GRIMACE_MAX_PIXELS (default
    100 megapixels) and GRIMACE_MAX_IMAGE_BYTES (default 1 GiB).
    """
    from edge.aggregate import SubjectMapError
    from edge.artifact import ArtifactError
    from edge.deps import MissingDependencyError
    from edge.live import MAX_FPS
    from edge.runner import OutputError, score_inputs
    from edge.scales import ScaleError, ScaleMismatchError

    check_number("--fps", fps, lo=0.0, lo_open=True, hi=MAX_FPS)
    check_number("--min-quality", min_quality, lo=0.0, hi=1.0)
    check_number("--conf", conf, lo=0.0, hi=1.0)
    check_number("--iou", iou, lo=0.0, hi=1.0)
    check_number("--threads", threads, lo=0, hi=max_threads())
    if overwrite and resume:
        raise _fail("--overwrite and --resume exclude each other")
    _check_image_limits()
    score = score_inputs if engine == "local" else _ray_engine(engine, address, actors, gpus_per_actor)
    _quiet_opencv()
    try:
        run = score(
            paths,
            model,
            out,
            scale=scale,
            fps=fps,
            subject_map=subject_map,
            min_quality=min_quality,
            min_frames=min_frames,
            conf=conf,
            iou=iou,
            annotate_images=annotate_images,
            annotate_video=annotate_video,
            threads=threads,
            progress=progress,
            log=lambda s: typer.echo(s, err=True),
            existing="overwrite" if overwrite else "resume" if resume else "refuse",
        )
    except OutputError as e:
        # before any input was read (exit 2), or mid-run (exit 3: what was written is valid)
        raise _fail(str(e), 3 if e.mid_run else 2) from None
    except (
        FileNotFoundError,
        ArtifactError,
        ScaleError,
        ScaleMismatchError,
        SubjectMapError,
        MissingDependencyError,
    ) as e:
        raise _fail(str(e)) from None
    n = len(run.records)
    scored = sum(r.score is not None for r in run.records)
    typer.echo(
        f"scored {scored} of {n} frame(s) ({n - scored} abstained) in {run.wall_s:.1f}s "
        f"({run.frames_per_s:.1f} frames/s; per frame: {run.times.summary()})"
    )
    typer.echo(
        f"outputs in {out}: frames.csv, frames.jsonl, summary_by_animal.csv, summary_by_session.csv"
        + (", frames.xlsx" if "frames_xlsx" in run.outputs else "")
    )
    failed = run.failed_sources
    if failed:
        typer.secho(
            f"{len(failed)} input(s) failed (see {out / 'errors.csv'}):", err=True, fg=typer.colors.YELLOW
        )
        for e in run.errors:
            typer.echo(f"  {e}", err=True)
    if run.stopped.startswith("interrupted"):
        typer.secho(
            f"{run.stopped}: tables written from the {n} frame(s) scored; rerun with --resume to continue",
            err=True,
            fg=typer.colors.YELLOW,
        )
        raise typer.Exit(143 if "SIGTERM" in run.stopped else 130)
    if failed:
        raise typer.Exit(2 if n == 0 else 1)
    if n == 0:
        raise _fail("no frames were scored")


def _ray_engine(engine: str, address: str | None, actors: int | None, gpus: float) -> Callable[..., Any]:
    """``score_inputs`` for ``--engine ray`` (:mod:`edge.scale.ray_score`; annotations not written)."""
    if engine != "ray":
        raise _fail(f"--engine must be local or ray, got {engine!r}")

    def run_on_ray(
        paths: list[Path], model: Path, out: Path, *, annotate_images: bool, existing: str, **kw: Any
    ) -> Any:
        kw.pop("annotate_video")  # the Ray engine writes no annotations (run.json notes say so)
        from edge.runner import prepare_out
        from edge.scale.ray_score import RayScoreError, score_inputs_ray

        # the local engine's --out policy: a non-empty folder needs --resume (finished inputs in
        # parts/ are skipped) or --overwrite (earlier results and parts/ removed)
        out, _notes = prepare_out(out, existing)
        if existing == "overwrite":
            shutil.rmtree(out / "parts", ignore_errors=True)

        try:
            return score_inputs_ray(
                paths, model, out, address=address, actors=actors, gpus_per_actor=gpus, **kw
            )
        except RayScoreError as e:
            raise _fail(str(e)) from None

    return run_on_ray


@app.command("watch")
def watch_cmd(
    camera: str = typer.Option(
        ...,
        "--camera",
        "-c",
        help="Camera: index (0), /dev/videoN, csi[:N] (Jetson CSI), a GStreamer pipeline, rtsp://... "
        "or a video file standing in for a camera.",
    ),
    model: Path = typer.Option(..., "--model", "-m", help="ONNX model or TensorRT engine."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (SQLite database, selected frames)."),
    scale: str | None = typer.Option(None, "--scale", help="Scale the model must be made for."),
    interval: float = typer.Option(
        90.0, "--interval", help="Seconds per protocol interval (one frame each)."
    ),
    session: float = typer.Option(900.0, "--session", help="Session length in seconds."),
    fps: float = typer.Option(2.0, "--fps", help="Frames per second taken from the camera for scoring."),
    continuous: bool = typer.Option(
        False, "--continuous", help="Store every frame's boxes; report running mean."
    ),
    min_quality: float | None = typer.Option(None, "--min-quality", min=0.0, max=1.0, help="Quality floor."),
    session_id: str | None = typer.Option(
        None,
        "--session-id",
        help="Session to create/resume (default: resume the unfinished one on this camera).",
    ),
    realtime: float = typer.Option(
        0.0,
        "--realtime",
        help="Video-file camera: play at this multiple of real speed (0 = as fast as possible).",
    ),
    drop_late: bool | None = typer.Option(
        None,
        "--drop-late/--every-frame",
        help="Newest frame wins (frames the model was too slow for are dropped and counted), or every "
        "frame is scored in turn. Default: newest wins for live cameras, every frame for a video file.",
    ),
    conf: float = typer.Option(0.25, "--conf", help="Detection confidence threshold."),
    iou: float = typer.Option(0.45, "--iou", help="NMS IoU threshold."),
    threads: int = typer.Option(0, "--threads", min=0, help="ONNX Runtime CPU threads."),
    max_retries: int | None = typer.Option(
        None, "--max-retries", help="Camera reconnect attempts in a row before giving up (default: forever)."
    ),
    quiet: bool = typer.Option(False, "--quiet", help="No live status line."),
    study: str | None = typer.Option(
        None, "--study", help="Study id (with --animal and --timepoint; created in the store when new)."
    ),
    animal: str | None = typer.Option(None, "--animal", help="Animal id in the study."),
    timepoint: str | None = typer.Option(None, "--timepoint", help="Timepoint id in the study."),
    db: str | None = typer.Option(
        None,
        "--db",
        help="Store: postgresql://user@host/database (needs the central extra) or an SQLite file "
        "(default: grimace.sqlite in --out). Images stay under --out.",
    ),
) -> None:
    """Live capture: one best frame per interval, every scored frame in the store; resumes after a crash."""
    from edge.artifact import ArtifactError
    from edge.deps import MissingDependencyError
    from edge.diskguard import DiskSpaceError
    from edge.live import watch
    from edge.scales import ScaleError, ScaleMismatchError
    from edge.storage import StoreError, check_target

    if db is not None:
        try:
            db = check_target(db, "--db")
        except StoreError as e:
            raise _fail(str(e)) from None
    check_number("--conf", conf, lo=0.0, hi=1.0)
    check_number("--iou", iou, lo=0.0, hi=1.0)
    check_number("--min-quality", min_quality, lo=0.0, hi=1.0)
    check_number("--threads", threads, lo=0, hi=max_threads())
    _quiet_opencv()
    try:
        res = watch(
            camera,
            model,
            out,
            scale=scale,
            interval_s=interval,
            session_s=session,
            fps=fps,
            continuous=continuous,
            min_quality=min_quality,
            session_id=session_id,
            realtime=realtime,
            drop_late=drop_late,
            conf=conf,
            iou=iou,
            threads=threads,
            max_retries=max_retries,
            status=not quiet,
            study=study,
            animal=animal,
            timepoint=timepoint,
            db=db,
        )
    except (
        FileNotFoundError,
        ArtifactError,
        ScaleError,
        ScaleMismatchError,
        MissingDependencyError,
        ValueError,
    ) as e:
        raise _fail(str(e)) from None
    except DiskSpaceError as e:  # exit 1 like `python -m edge.diskguard preflight`: systemd retries later
        raise _fail(str(e), 1) from None
    except StoreError as e:
        raise _fail(f"{e} (the session stays resumable: run the same command again)") from None
    score = "-" if res.session_score is None else f"{res.session_score:.3f}"
    sem = "" if res.session_sem is None else f" ± {res.session_sem:.3f} (SEM)"
    typer.echo(
        f"session {res.session_id}{' (resumed)' if res.resumed else ''}: {res.stopped or 'stopped'}; "
        f"{res.frames} frame(s) this run; {len(res.selected)} interval(s) selected; "
        f"session score {score}{sem}"
        + (
            f"; continuous mean {res.continuous_mean:.3f}"
            if continuous and res.continuous_mean is not None
            else ""
        )
    )
    typer.echo(f"database: {res.db}")
    if res.frames_dropped:
        typer.echo(
            f"{res.frames_dropped} frame(s) dropped: scoring was slower than the camera (newest frame wins)"
        )
    if res.images_skipped:
        typer.secho(
            f"{res.images_skipped} selected-frame image(s) not saved: free disk space was below "
            "GRIMACE_MIN_FREE_IMAGES (their rows have no image_path; see the images_paused events)",
            err=True,
            fg=typer.colors.YELLOW,
        )
    if res.stopped in ("camera gave up", "camera lost"):
        typer.secho(
            f"session {res.session_id} is not complete ({res.stopped}); run the same command again to resume",
            err=True,
            fg=typer.colors.YELLOW,
        )
        raise typer.Exit(1)
