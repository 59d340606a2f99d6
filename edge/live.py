"""The live capture loop behind ``grimace watch`` (RGS protocol beside the cage).

The session (default 15 min) is cut into intervals (default 1.5 min). Frames are taken from the camera
at ``fps``, scored, and every scored frame is committed to SQLite at once. Within each interval the best
frame (scored frames first, then by quality) is kept: its image is written atomically to
``selected/<session>/interval_NNN.jpg`` (plus an annotated copy) and its row in ``intervals`` is
replaced whenever a better frame arrives, so a crash loses at most the frame being processed. With
``continuous`` every frame's boxes are stored too and the running mean of all frames is reported.

Disk space: one :class:`~edge.diskguard.DiskGuard` on ``out/selected`` (thresholds from the
``GRIMACE_*`` environment, as for ``python -m edge.diskguard``) is asked before each image write. While
free space is below ``min_free_images`` no image is written, but every frame and the interval's
selection are still committed, with an empty ``image_path``; pausing and resuming are printed once
each and stored as ``images_paused`` / ``images_resumed`` events. Like ``python -m edge.diskguard
preflight`` (the systemd ``ExecStartPre``), the loop first rotates old images if needed and refuses to
start (:class:`~edge.diskguard.DiskSpaceError`) below ``min_free_start``, also when run by hand.

Restarting with the same output folder and camera resumes the unfinished session: a video file
standing in for a camera continues after its last committed frame; a live camera continues the
session clock from the last committed time. Camera loss is reconnected with backoff and logged as
events; the loop never crashes on it. SIGTERM/SIGINT stop cleanly and leave the session resumable.

A session is marked complete only when it reached its length, or a video file standing in for a
camera was read to its end. A camera that gave up, or a file that is missing, not a regular file or
cut off mid-way, leaves the session ``running`` (resumable) with a ``stopped`` event naming why, and
``grimace watch`` exits 1. Database faults (disk full, locked, corrupt, a folder where the file
should be) are :class:`~edge.storage.StoreError` messages naming the file (:mod:`edge.storage`); a
selected-frame image that cannot be written (disk full) is skipped like a low-disk pause, its row
kept. The disk guard counts the database's ``-wal``/``-journal`` as used space.

The session loop itself is :func:`record_session` (scoring passed in as a function): ``watch`` runs it
with its own :class:`~edge.predictor.Predictor`; the lab station (:mod:`edge.station.chambers`) runs
it once per chamber, all chambers sharing one batching scorer. ``--study/--animal/--timepoint`` link
the session to a study in the store (:mod:`edge.station.study`).
"""

from __future__ import annotations

import contextlib
import math
import re
import signal
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.aggregate import mean_sem
from edge.diskguard import ENV_VARS, DiskGuard, GuardConfig, human
from edge.fileio import atomic_write_image, check_safe_name, path_under
from edge.predictor import Predictor, load_model
from edge.quality import frame_quality
from edge.records import frame_columns, frame_record, record_from_sql, table_row, write_csv
from edge.report import annotate
from edge.results import FrameResult
from edge.scales import ScaleSpec
from edge.sources import CameraEvent, CameraSource, Frame, describe_camera
from edge.storage import SessionState, Store, check_target, is_postgres

MAX_SESSION_S = 7 * 24 * 3600.0
"""Longest session (a week); ``--session inf`` and the like are refused."""
MAX_FPS = 1000.0
"""Highest frame rate taken from a camera or sampled from a video (``score --fps`` too)."""


def check_watch_numbers(
    interval_s: float, session_s: float, fps: float, realtime: float = 0.0, max_retries: int | None = None
) -> None:
    """Refuse non-finite or out-of-range watch settings.

    Raises:
        ValueError: Naming the option, its value and the allowed range.
    """
    for name, v, lo, hi, lo_open in (
        ("--interval", interval_s, 0.0, MAX_SESSION_S, True),
        ("--session", session_s, 0.0, MAX_SESSION_S, True),
        ("--fps", fps, 0.0, MAX_FPS, True),
        ("--realtime", realtime, 0.0, 1000.0, False),
    ):
        if not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"{name} must be a finite number, got {v}")
        if (v <= lo if lo_open else v < lo) or v > hi:
            raise ValueError(f"{name} must be {'>' if lo_open else '>='} {lo:g} and <= {hi:g}, got {v:g}")
    if max_retries is not None and max_retries < 0:
        raise ValueError(f"--max-retries must be >= 0, got {max_retries}")


def check_camera(camera: str) -> str:
    """The camera's kind (:func:`edge.sources.describe_camera`); a video file standing in for a camera
    must exist and be a regular file.

    Raises:
        FileNotFoundError: No such file (and not a camera spec).
        ValueError: A folder, FIFO or device where a video file was meant.
    """
    kind = describe_camera(camera)[0]
    if kind == "file":
        cam = Path(camera)
        if not cam.exists():
            raise FileNotFoundError(
                f"camera {camera!r}: no such file, and not a camera index, /dev/videoN, csi[:N], a "
                "GStreamer pipeline or a URL"
            )
        if not cam.is_file():
            raise ValueError(f"camera {camera!r}: not a regular file (a folder, FIFO or device)")
    return kind


@dataclass
class WatchResult:
    """Outcome of a :func:`watch` run.

    Attributes:
        session_id: The session.
        resumed: Whether an earlier run's session was continued.
        frames: Frames scored in this run.
        complete: Whether the session reached its end (duration or end of file).
        stopped: Why the loop ended (``complete``, ``complete (end of video file)``, ``camera gave up``,
            ``signal ...``).
        selected: Interval index -> frame index of the selected frame (whole session).
        session_score: Mean score of the selected frames.
        session_sem: Its SEM.
        continuous_mean: Mean score over every scored frame of the session.
        db: The store: the SQLite path, or the PostgreSQL URL with its password hidden.
        events: Camera events of this run.
        images_skipped: Selected frames of this run whose images were not written (low disk space).
        frames_dropped: Frames due at ``fps`` that the camera delivered while the model was still busy
            (the newest frame wins; see :class:`~edge.sources.CameraSource`).
        latency_s: Seconds from capture to committed row of this run's frames (the last 100,000).
    """

    session_id: str
    resumed: bool
    frames: int = 0
    complete: bool = False
    stopped: str = ""
    selected: dict[int, int] = field(default_factory=dict)
    session_score: float | None = None
    session_sem: float | None = None
    continuous_mean: float | None = None
    db: str = ""
    events: list[CameraEvent] = field(default_factory=list)
    images_skipped: int = 0
    frames_dropped: int = 0
    latency_s: deque[float] = field(default_factory=lambda: deque(maxlen=100_000))


def _slug(text: str) -> str:
    s = re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")
    return s[-40:] or "camera"


def _rank(scored: bool, quality: float | None) -> float:
    """Selection rank: any scored frame beats an abstained one; then quality."""
    return (1.0 if scored else 0.0) + (quality or 0.0) / 2.0


def watch(
    camera: str,
    model: str | Path,
    out: str | Path,
    *,
    scale: str | None = None,
    interval_s: float = 90.0,
    session_s: float = 900.0,
    fps: float = 2.0,
    continuous: bool = False,
    min_quality: float | None = None,
    session_id: str | None = None,
    realtime: float = 0.0,
    conf: float = 0.25,
    iou: float = 0.45,
    threads: int = 0,
    backoff_s: float = 0.5,
    max_backoff_s: float = 30.0,
    max_retries: int | None = None,
    status: bool = True,
    stream: Any = None,
    guard: DiskGuard | None = None,
    study: str | None = None,
    animal: str | None = None,
    timepoint: str | None = None,
    drop_late: bool | None = None,
    db: str | Path | None = None,
) -> WatchResult:
    """Run (or resume) a live scoring session.

    Args:
        camera: Camera index, ``/dev/videoN``, ``csi[:N]``, GStreamer pipeline, RTSP URL or video file.
        model: ONNX model or TensorRT engine.
        out: Output folder (``grimace.sqlite``, ``selected/``, ``session_<id>.csv``).
        scale: Scale the model must be made for.
        interval_s: Protocol interval (one selected frame each).
        session_s: Session length; the loop ends when the session clock reaches it.
        fps: Frames per second taken from the camera for scoring.
        continuous: Also store every frame's boxes and report the mean of all frames.
        min_quality: Frames below this quality abstain (and are never selected over scored frames).
        session_id: Session to create or resume; default: resume the unfinished session on this
            camera in ``out``, else start a new one.
        realtime: For a video file: play at this multiple of its speed (0 = as fast as possible).
        conf: Detection confidence threshold.
        iou: NMS IoU threshold.
        threads: ONNX Runtime threads.
        backoff_s: First reconnect wait after camera loss.
        max_backoff_s: Longest reconnect wait.
        max_retries: Reconnect attempts in a row before giving up (``None`` = forever).
        status: Print a live status line.
        stream: Where the status line and disk-space warnings go (default stderr).
        guard: Disk-space guard asked before each image write; default: one on ``out/selected`` (so
            rotation deletes only selected-frame images, never other images kept in ``out``) with
            :meth:`GuardConfig.from_env` thresholds.
        study: Study of the session (with ``animal`` and ``timepoint``; :mod:`edge.station.study`):
            the session is linked to the animal at the timepoint, its frame records carry animal,
            group and timepoint, and its id defaults to ``<study>-<animal>-<timepoint>``. A study
            not in the store yet is created with this run's protocol settings (and the animal and
            timepoint added); in an existing study the animal and timepoint must exist.
        animal: Animal id (with ``study``).
        timepoint: Timepoint id (with ``study``).
        drop_late: Newest frame wins (see :class:`~edge.sources.CameraSource`): ``None`` = live cameras
            only; ``True`` with a video file and ``realtime`` makes the file behave like a camera.
        db: The store: an SQLite file or a ``postgresql://`` URL (:class:`~edge.storage.Store`);
            default ``out/grimace.sqlite``. Images and the session CSV stay under ``out``.

    Returns:
        The :class:`WatchResult`.

    Raises:
        StoreError: The store cannot be opened or written (:mod:`edge.storage`).
        ValueError: Bad interval/session, unusable disk-guard settings in the environment, or bad
            study/animal/timepoint ids (:class:`edge.station.study.StudyError`).
        DiskSpaceError: Free space on ``out``'s file system is below the guard's ``min_free_start``
            (after rotating old selected-frame images); nothing is opened or written.
    """
    check_watch_numbers(interval_s, session_s, fps, realtime, max_retries)
    if session_id is not None:
        check_safe_name(session_id, "--session-id")  # it names selected/<id>/ and session_<id>.csv
    check_camera(camera)
    if (study, animal, timepoint) != (None, None, None) and None in (study, animal, timepoint):
        raise ValueError("--study, --animal and --timepoint go together: give all three or none")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder")
    out.mkdir(parents=True, exist_ok=True)
    db_path = check_target(db) if db is not None else out / "grimace.sqlite"
    if guard is None:
        try:  # rotates only images it wrote; counts the database's journal as used
            local_dbs = [] if is_postgres(db_path) else [db_path]
            guard = DiskGuard(out / "selected", GuardConfig.from_env(), databases=local_dbs)
        except ValueError as e:
            raise ValueError(f"disk-guard settings ({', '.join(ENV_VARS.values())}): {e}") from None
    guard.check_start()  # as `python -m edge.diskguard preflight`: rotate if needed, refuse below the floor
    stream = stream or sys.stderr

    def notice(msg: str) -> None:
        stream.write(f"\n[database] {msg}\n")
        stream.flush()

    control = SessionControl()

    def _on_signal(signum: int, _frame: Any) -> None:
        control.stop(f"signal {signal.Signals(signum).name}")  # also ends a reconnect wait

    old_handlers = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError):  # not the main thread: no handlers
            old_handlers[sig] = signal.signal(sig, _on_signal)

    try:
        with load_model(model, scale=scale, threads=threads) as m, Store(db_path, notify=notice) as store:
            subject = None
            if study is not None:
                from edge.station.study import Protocol, study_subject

                protocol = Protocol(m.spec.name, interval_s, session_s, fps)
                chamber = _slug(str(camera)).strip("-") or "camera"
                subject, sid = study_subject(store, study, animal, timepoint, chamber, protocol)
                session_id = session_id or sid
            if session_id is None:
                rows = store.db.execute(
                    "SELECT id FROM sessions WHERE status='running' AND source=? ORDER BY started_at DESC",
                    (str(camera),),
                ).fetchall()
                session_id = rows[0][0] if rows else f"{time.strftime('%Y%m%d-%H%M%S')}-{_slug(str(camera))}"
            check_safe_name(session_id, "session id")
            pred = Predictor(m, conf=conf, iou=iou, min_quality=min_quality, quality_fn=frame_quality)

            def score(frame: Frame) -> FrameResult:
                pred.times.add("decode", frame.decode_s)
                return pred([frame.image], [frame.source])[0]

            return record_session(
                store,
                camera,
                score,
                m.spec,
                out,
                session_id=session_id,
                model_name=str(m.path),
                interval_s=interval_s,
                session_s=session_s,
                fps=fps,
                continuous=continuous,
                realtime=realtime,
                backoff_s=backoff_s,
                max_backoff_s=max_backoff_s,
                max_retries=max_retries,
                status=status,
                stream=stream,
                guard=guard,
                control=control,
                subject=subject,
                drop_late=drop_late,
            )
    finally:
        for sig, h in old_handlers.items():
            signal.signal(sig, h)


@dataclass
class SessionControl:
    """Stops a running :func:`record_session` from another thread or a signal handler.

    Attributes:
        why: Why the session was stopped (empty while running).
        source: The camera being read (closed by :meth:`stop`, which also ends a reconnect wait).
    """

    why: str = ""
    source: CameraSource | None = None

    def stop(self, why: str) -> None:
        """Ask the session loop to stop after the frame being processed (left resumable)."""
        self.why = why
        if self.source is not None:
            self.source.closed = True


@dataclass
class Subject:
    """Who is in front of the camera (the study fields of every frame record of the session).

    Attributes:
        animal: Animal id (column ``animal``).
        group: Treatment group.
        timepoint: Timepoint.
        on_open: Called with ``(store, session_state)`` right after the session is opened or resumed
            (the station links the session to its study there).
    """

    animal: str = ""
    group: str = ""
    timepoint: str = ""
    on_open: Callable[[Store, SessionState], None] | None = None


def record_session(
    store: Store,
    camera: str,
    score: Callable[[Frame], FrameResult],
    spec: ScaleSpec,
    out: str | Path,
    *,
    session_id: str,
    model_name: str,
    interval_s: float,
    session_s: float,
    fps: float,
    continuous: bool = False,
    realtime: float = 0.0,
    backoff_s: float = 0.5,
    max_backoff_s: float = 30.0,
    max_retries: int | None = None,
    status: bool = True,
    stream: Any = None,
    guard: DiskGuard | None = None,
    control: SessionControl | None = None,
    subject: Subject | None = None,
    on_frame: Callable[[Frame, FrameResult, int], None] | None = None,
    on_event: Callable[[CameraEvent], None] | None = None,
    opener: Callable[[Any, int], Any] | None = None,
    drop_late: bool | None = None,
) -> WatchResult:
    """Create or resume one session and run it: the protocol clock, interval selection, crash-safe
    commits and camera reconnects of :func:`watch`, with scoring left to the caller (``watch`` runs
    its own :class:`~edge.predictor.Predictor`; the station shares one batching scorer between
    chambers, :mod:`edge.station.chambers`).

    Args:
        store: The open store (used from this thread only).
        camera: Camera string (see :func:`watch`).
        score: ``f(frame) -> FrameResult`` for one captured frame.
        spec: The model's scale.
        out: Output folder (``selected/<session>/``, ``session_<id>.csv``).
        session_id: Session to create or resume.
        model_name: Stored with a new session.
        interval_s: Protocol interval.
        session_s: Session length.
        fps: Frames per second taken from the camera.
        continuous: Store every frame's boxes.
        realtime: For a video file: play at this multiple of its speed.
        backoff_s: First reconnect wait.
        max_backoff_s: Longest reconnect wait.
        max_retries: Reconnect attempts in a row before giving up (``None`` = forever).
        status: Print a live status line.
        stream: Where the status line and disk warnings go (default stderr).
        guard: Disk-space guard (default: one on ``out/selected`` from the environment).
        control: Lets another thread stop the loop (default: a private one).
        subject: Animal, group and timepoint of the frame records; its ``on_open`` hook.
        on_frame: Called with ``(frame, result, frame_row_id)`` after each committed frame.
        on_event: Called with each camera event after it is stored.
        opener: Camera opener for :class:`~edge.sources.CameraSource` (tests: a flaky stand-in).
        drop_late: Newest frame wins (:class:`~edge.sources.CameraSource`; ``None`` = live cameras only).

    Returns:
        The :class:`WatchResult`.
    """
    out = Path(out)
    if guard is None:
        dbs = [store.path] if store.path is not None else []
        guard = DiskGuard(out / "selected", GuardConfig.from_env(), databases=dbs)
    stream = stream or sys.stderr
    control = control or SessionControl()
    subject = subject or Subject()
    kind = describe_camera(camera)[0]
    n_intervals = math.ceil(session_s / interval_s - 1e-9)
    state = store.open_session(
        session_id,
        source=str(camera),
        model=model_name,
        scale=spec.name,
        interval_s=interval_s,
        duration_s=session_s,
    )
    if subject.on_open is not None:
        subject.on_open(store, state)
    result = WatchResult(session_id, state.resumed, db=store.location)
    if state.status == "complete":
        result.complete, result.stopped = True, "already complete"
        _finish(store, result, session_id, out, spec, subject)
        return result
    sel_dir = path_under(out, "selected", session_id)
    best = {  # committed selections, ranked like new frames
        int(r["interval_index"]): (_rank(r["score"] is not None, r["quality"]), int(r["frame_id"]))
        for r in store.intervals(session_id)
    }
    index_offset = 0 if kind == "file" else state.last_frame_index + 1
    time_offset = 0.0 if kind == "file" else state.last_t_s

    def _on_event(ev: CameraEvent) -> None:
        result.events.append(ev)
        store.event(session_id, ev.time_s, f"camera_{ev.kind}", ev.message)
        if on_event is not None:
            on_event(ev)
        if status and ev.kind not in ("opened", "ended"):
            stream.write(f"\n[camera] {ev.message}\n")
            stream.flush()

    src = CameraSource(
        camera,
        fps=fps,
        realtime=realtime,
        start_frame=state.last_frame_index + 1 if kind == "file" else 0,
        time_offset_s=time_offset,
        backoff_s=backoff_s,
        max_backoff_s=max_backoff_s,
        max_retries=max_retries,
        on_event=_on_event,
        opener=opener,
        drop_late=drop_late,
    )
    control.source = src
    if control.why:  # stopped before the camera opened
        src.closed = True
    t_run = time.perf_counter()
    tty = bool(getattr(stream, "isatty", lambda: False)())
    status_state: dict[str, Any] = {"at": 0.0, "interval": None}
    last_t = state.last_t_s
    last_interval = int(last_t // interval_s) if state.n_frames else -1
    disk = {"paused": False}

    def images_allowed(t: float) -> bool:
        """Ask the guard; print and store an event when saving pauses or resumes."""
        allowed = guard.images_allowed()
        if allowed == disk["paused"]:  # state changed
            disk["paused"] = not allowed
            free = "?" if guard.last_free is None else human(guard.last_free)
            floor = human(guard.thresholds.min_free_images)
            if allowed:
                what, msg = "images_resumed", f"{free} free again (>= {floor}): saving images resumed"
            else:
                what, msg = (
                    "images_paused",
                    f"only {free} free on the disk of {out} (below {floor}, "
                    f"{ENV_VARS['min_free_images']}): selected-frame images are NOT saved until "
                    "space comes back; scores are still written to the database",
                )
            store.event(session_id, t, what, msg)
            stream.write(f"\n[disk] {'WARNING: ' if not allowed else ''}{msg}\n")
            stream.flush()
        return allowed

    with src:
        for frame in src:
            if control.why:
                break
            t = frame.time_s
            if t >= session_s:
                result.complete, result.stopped = True, "complete"
                break
            k = int(t // interval_s)
            if k != last_interval and last_interval >= 0:
                store.finalize_interval(session_id, last_interval)
            last_interval = k
            res = score(frame)
            fidx = frame.index + index_offset
            rec = frame_record(
                res,
                spec,
                name=f"{session_id}@{fidx:06d}",
                source=frame.source,
                index=fidx,
                time_s=t,
                session=session_id,
                subject=subject.animal,
                group=subject.group,
                timepoint=subject.timepoint,
            )
            fid = store.add_frame(
                session_id,
                frame_index=fidx,
                t_s=t,
                interval_index=k,
                result=res,
                record=rec,
                store_detections=continuous,
                wall_time=frame.meta.get("wall_time"),
            )
            result.frames += 1
            _note_latency(result, frame.meta)
            last_t = t
            rank = _rank(res.scored, res.quality)
            if k not in best or rank > best[k][0]:
                path = sel_dir / f"interval_{k:03d}.jpg"
                annotated = sel_dir / f"interval_{k:03d}_annotated.jpg"
                written = False
                if images_allowed(t):
                    try:
                        atomic_write_image(path, frame.image)
                        atomic_write_image(
                            annotated,
                            annotate(
                                frame.image, res, spec, title=f"interval {k + 1}/{n_intervals} t={t:.1f}s"
                            ),
                        )
                        written = True
                    except OSError as e:  # disk full between two guard checks, I/O error
                        msg = (
                            f"cannot write {e.filename or path}: {e.strerror or e}; the frame's "
                            "row is kept without an image"
                        )
                        store.event(session_id, t, "image_write_failed", msg)
                        stream.write(f"\n[disk] WARNING: {msg}\n")
                        stream.flush()
                if written:
                    store.set_interval_best(session_id, k, fid, res, str(path))
                else:  # low disk: the row is committed without an image
                    store.set_interval_best(session_id, k, fid, res, None)
                    result.images_skipped += 1
                    for stale in (path, annotated):  # an earlier frame's image, no longer selected
                        with contextlib.suppress(FileNotFoundError):
                            stale.unlink()
                best[k] = (rank, fid)
            if on_frame is not None:
                on_frame(frame, res, fid)
            if status:
                now = time.perf_counter()
                new_interval = k != status_state["interval"]
                if (tty and now - status_state["at"] >= 0.25) or new_interval:
                    el = now - t_run
                    sc = "-" if res.score is None else f"{res.score:.2f}"
                    q = "-" if res.quality is None else f"{res.quality:.2f}"
                    line = (
                        f"[{session_id}] t={t:6.1f}/{session_s:.0f}s interval {k + 1}/{n_intervals} "
                        f"frames {result.frames} ({result.frames / max(el, 1e-9):.1f}/s) "
                        f"score {sc} quality {q} selected {len(best)}"
                    )
                    stream.write(f"\r{line}   " if tty else f"{line}\n")
                    stream.flush()
                    status_state.update(at=now, interval=k)
        else:
            # a file read to its end completes the session; a file that is cut off mid-way ("lost")
            # or a camera that gave up does not: the session stays resumable
            lost = [e for e in src.events if e.kind == "gave_up" or (kind == "file" and e.kind == "lost")]
            ended = [e for e in src.events if e.kind == "ended"]
            if lost:
                result.stopped = "camera gave up" if lost[-1].kind == "gave_up" else "camera lost"
                store.event(
                    session_id, last_t, "stopped", f"{result.stopped}: {lost[-1].message} (resumable)"
                )
            elif ended:
                result.complete, result.stopped = True, "complete (end of video file)"
            else:
                result.stopped = "camera gave up"
        if control.why:
            result.stopped = control.why
    if status and tty:
        stream.write("\n")
    _note_dropped(store, session_id, last_t, result, src.frames_dropped)
    if result.complete:
        store.complete(session_id, last_t)
    _finish(store, result, session_id, out, spec, subject)
    result.events = list(src.events)
    return result


def _note_latency(result: WatchResult, meta: dict[str, Any]) -> None:
    """Capture-to-commit latency of the frame just committed."""
    captured = meta.get("captured")
    if captured is not None:
        result.latency_s.append(time.monotonic() - float(captured))


def _note_dropped(store: Store, session_id: str, t: float, result: WatchResult, dropped: int) -> None:
    """Dropped frames of this run into ``result`` and, when any, a ``frames_dropped`` event."""
    result.frames_dropped = dropped
    if dropped:
        store.event(
            session_id,
            t,
            "frames_dropped",
            f"{dropped} frame(s) due at the sampling rate were dropped: scoring was slower than the camera",
        )


def _finish(
    store: Store, result: WatchResult, session_id: str, out: Path, spec: Any, subject: Subject | None = None
) -> None:
    """Session figures into ``result`` and ``session_<id>.csv``: the selected frame of each interval as
    a frame record row (:mod:`edge.records`), then ``interval``, ``final`` and ``image``."""
    intervals = store.intervals(session_id)
    frames = store.frames(session_id)
    source = str(store.session_row(session_id).get("source", ""))
    result.selected = {int(r["interval_index"]): int(r["frame_index"]) for r in intervals}
    result.session_score, result.session_sem = mean_sem(
        r["score"] for r in intervals if r["score"] is not None
    )
    result.continuous_mean = mean_sem(r["score"] for r in frames if r["score"] is not None)[0]
    by_id = {int(r["id"]): r for r in frames}
    rows = []
    for r in intervals:
        frame = by_id[int(r["frame_id"])]
        rec = record_from_sql(
            frame,
            spec,
            name=f"{session_id}@{int(frame['frame_index']):06d}",
            source=source,
            session=session_id,
            subject=subject.animal if subject else "",
            group=subject.group if subject else "",
            timepoint=subject.timepoint if subject else "",
        )
        rows.append(
            {
                **table_row(rec, spec),
                "interval": r["interval_index"] + 1,
                "final": r["final"],
                "image": r["image_path"],
            }
        )
    write_csv(out / f"session_{session_id}.csv", rows, [*frame_columns(spec), "interval", "final", "image"])
