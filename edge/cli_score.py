"""CLI commands: ``grimace score`` and ``grimace watch`` (imports nothing heavy at module level).

Exit status of ``score``: 0 when every input was read, 1 when some inputs failed (their names are
printed and listed in ``errors.csv``; outputs are complete for the rest), 2 when nothing could be
done (no model, bad arguments, no input readable).
"""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True)


def _quiet_opencv() -> None:
    """Keep OpenCV's and FFmpeg's own warnings off the terminal; our errors name the bad file."""
    import os

    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    import cv2

    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


def _fail(msg: str, code: int = 2) -> typer.Exit:
    typer.secho(f"error: {msg}", err=True, fg=typer.colors.RED)
    return typer.Exit(code)


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
    conf: float = typer.Option(0.25, "--conf", min=0.0, max=1.0, help="Detection confidence threshold."),
    iou: float = typer.Option(0.45, "--iou", min=0.0, max=1.0, help="NMS IoU threshold (per unit)."),
    annotate_images: bool = typer.Option(True, "--annotate/--no-annotate", help="Write annotated images."),
    annotate_video: bool = typer.Option(
        False, "--annotate-video", help="Write an annotated video per video."
    ),
    threads: int = typer.Option(0, "--threads", min=0, help="ONNX Runtime CPU threads (0 = all cores)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Score images and videos; write per-frame CSV/XLSX/JSONL, per-animal summaries and annotations."""
    from edge.aggregate import SubjectMapError
    from edge.artifact import ArtifactError
    from edge.deps import MissingDependencyError
    from edge.runner import score_inputs
    from edge.scales import ScaleError, ScaleMismatchError

    if fps is not None and fps <= 0:
        raise _fail(f"--fps must be > 0, got {fps}")
    _quiet_opencv()
    try:
        run = score_inputs(
            paths,
            model,
            out,
            scale=scale,
            fps=fps,
            subject_map=subject_map,
            min_quality=min_quality,
            conf=conf,
            iou=iou,
            annotate_images=annotate_images,
            annotate_video=annotate_video,
            threads=threads,
            progress=progress,
            log=lambda s: typer.echo(s, err=True),
        )
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
        raise typer.Exit(2 if n == 0 else 1)
    if n == 0:
        raise _fail("no frames were scored")


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
    conf: float = typer.Option(0.25, "--conf", help="Detection confidence threshold."),
    iou: float = typer.Option(0.45, "--iou", help="NMS IoU threshold."),
    threads: int = typer.Option(0, "--threads", min=0, help="ONNX Runtime CPU threads."),
    max_retries: int | None = typer.Option(
        None, "--max-retries", help="Camera reconnect attempts in a row before giving up (default: forever)."
    ),
    quiet: bool = typer.Option(False, "--quiet", help="No live status line."),
) -> None:
    """Live capture: one best frame per interval, every scored frame in SQLite; resumes after a crash."""
    from edge.artifact import ArtifactError
    from edge.deps import MissingDependencyError
    from edge.diskguard import DiskSpaceError
    from edge.live import watch
    from edge.scales import ScaleError, ScaleMismatchError

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
            conf=conf,
            iou=iou,
            threads=threads,
            max_retries=max_retries,
            status=not quiet,
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
    if res.stopped == "camera gave up":
        raise typer.Exit(1)
