"""Several chambers at once with one loaded model.

Each chamber runs its session in its own thread with :func:`edge.live.record_session` — the same
protocol clock, interval selection, crash-safe commits and camera reconnects as ``grimace watch``,
with its own store connection. Scoring goes through one :class:`BatchScorer`: a worker thread that
collects the frames the chambers are waiting on and runs them through the one
:class:`~edge.predictor.Predictor` in a single batch when the backend takes a batch (a model with a
fixed batch of 1 is run frame by frame, in the same worker, so the model is still loaded once).

:class:`Station` owns the model, the scorer and the chambers; it starts, stops and (after a crash or
restart) resumes study sessions (:mod:`edge.station.study`).
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2

from edge.live import SessionControl, Subject, WatchResult, record_session
from edge.predictor import Model, Predictor
from edge.quality import frame_quality
from edge.results import FrameResult
from edge.sources import CameraEvent, Frame
from edge.station.study import Protocol, Study, StudyError, check_id
from edge.storage import SessionState, Store


@dataclass
class _Request:
    frame: Frame
    done: threading.Event = field(default_factory=threading.Event)
    result: FrameResult | None = None
    error: BaseException | None = None


class BatchScorer:
    """Scores frames from several threads through one predictor, batching what arrives together.

    A caller's :meth:`score` blocks until its frame is scored. The worker takes every waiting frame
    (at most the predictor's batch size); when fewer than ``expected`` frames wait it lingers up to
    ``max_wait_s`` for the others, so frames of chambers running at the same rate share a batch.

    Args:
        predictor: The one predictor (its model stays loaded).
        max_wait_s: Longest wait for more frames before running a partial batch.
        batching: ``False`` scores one frame per call even when the backend takes more (the
            benchmark's unbatched baseline).
    """

    def __init__(self, predictor: Predictor, max_wait_s: float = 0.02, batching: bool = True) -> None:
        self.pred = predictor
        self.max_batch = predictor.batch_size if batching else 1
        self.max_wait_s = max_wait_s
        self.expected = 1
        self.batches = 0
        self.frames = 0
        self._pending: list[_Request] = []
        self._cv = threading.Condition()
        self._closed = False
        self._worker = threading.Thread(target=self._loop, name="grimace-scorer", daemon=True)
        self._worker.start()

    @property
    def mean_batch(self) -> float:
        """Mean frames per inference call so far."""
        return self.frames / self.batches if self.batches else 0.0

    def score(self, frame: Frame) -> FrameResult:
        """Score one frame (blocks until done).

        Raises:
            RuntimeError: The scorer is closed.
            Exception: Whatever the predictor raised for the batch.
        """
        req = _Request(frame)
        with self._cv:
            if self._closed:
                raise RuntimeError("the scorer is closed")
            self._pending.append(req)
            self._cv.notify_all()
        req.done.wait()
        if req.error is not None:
            raise req.error
        assert req.result is not None
        return req.result

    def _take(self) -> list[_Request]:
        with self._cv:
            while not self._pending and not self._closed:
                self._cv.wait(0.5)
            if self._closed and not self._pending:
                return []
            deadline = time.monotonic() + self.max_wait_s
            want = min(self.max_batch, max(1, self.expected))
            while len(self._pending) < want and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cv.wait(left)
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
            return batch

    def _loop(self) -> None:
        while True:
            batch = self._take()
            if not batch:
                return
            try:
                for r in batch:
                    self.pred.times.add("decode", r.frame.decode_s)
                results = self.pred([r.frame.image for r in batch], [r.frame.source for r in batch])
                for r, res in zip(batch, results, strict=True):
                    r.result = res
            except BaseException as e:  # handed to every waiting chamber
                for r in batch:
                    r.error = e
            self.batches += 1
            self.frames += len(batch)
            for r in batch:
                r.done.set()

    def close(self) -> None:
        """Stop the worker once the waiting frames are scored."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        self._worker.join(timeout=10)


class Chamber:
    """One chamber: its camera, the session it runs, and its live status.

    Attributes:
        id: Chamber id.
        camera: Camera string.
        state: ``idle``, ``running``, ``lost`` (camera lost, reconnecting), ``stopped``,
            ``complete``, ``gave up`` or ``error``.
        session_id: Session running or last run.
        message: Last camera event or error.
        last_score: Score of the last frame (``None`` when it abstained).
        last_quality: Quality of the last frame.
        frames: Frames scored in this run.
        preview: The last frame as JPEG bytes (refreshed at most every ``preview_every_s``).
        result: The :class:`~edge.live.WatchResult` when the session thread ended.
    """

    def __init__(self, chamber_id: str, camera: str, preview_every_s: float = 0.5) -> None:
        self.id = chamber_id
        self.camera = camera
        self.state = "idle"
        self.session_id = ""
        self.message = ""
        self.last_score: float | None = None
        self.last_quality: float | None = None
        self.last_abstained: str | None = None
        self.frames = 0
        self.preview: bytes | None = None
        self.preview_every_s = preview_every_s
        self.result: WatchResult | None = None
        self._times: collections.deque[float] = collections.deque(maxlen=20)
        self._preview_at = 0.0
        self._thread: threading.Thread | None = None
        self._control: SessionControl | None = None

    @property
    def busy(self) -> bool:
        """Whether a session thread is running."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def fps(self) -> float:
        """Frames per second over the last 20 frames."""
        t = self._times
        return (len(t) - 1) / (t[-1] - t[0]) if len(t) > 1 and t[-1] > t[0] else 0.0

    def _on_frame(self, frame: Frame, res: FrameResult, _fid: int) -> None:
        now = time.monotonic()
        self._times.append(now)
        self.frames += 1
        self.last_score, self.last_quality, self.last_abstained = res.score, res.quality, res.abstained
        if self.state == "lost":
            self.state = "running"
        if now - self._preview_at >= self.preview_every_s:
            ok, buf = cv2.imencode(".jpg", frame.image, [cv2.IMWRITE_JPEG_QUALITY, 80])
            if ok:
                self.preview = buf.tobytes()
                self._preview_at = now

    def _on_event(self, ev: CameraEvent) -> None:
        self.message = ev.message
        if ev.kind in ("lost", "retry"):
            self.state = "lost"
        elif ev.kind in ("reconnected", "opened"):
            self.state = "running"

    def status(self) -> dict[str, Any]:
        """Live status as plain values (for the chambers page)."""
        return {
            "id": self.id,
            "camera": self.camera,
            "state": self.state,
            "session_id": self.session_id,
            "message": self.message,
            "fps": round(self.fps, 2),
            "frames": self.frames,
            "last_score": self.last_score,
            "last_quality": self.last_quality,
            "last_abstained": self.last_abstained,
        }


class Station:
    """The model, the batching scorer and the chambers of one station.

    Args:
        model: The loaded model (closed by :meth:`close`).
        data: The station's data folder (``grimace.sqlite``, ``selected/``).
        realtime: For video files standing in for cameras: play at this multiple of real speed.
        conf: Detection confidence threshold.
        iou: NMS IoU threshold.
        min_quality: Frames below this quality abstain.
        batching: Batch frames of several chambers (when the backend takes a batch).
        backoff_s: First camera reconnect wait.
        max_backoff_s: Longest reconnect wait.
        opener: Camera opener passed to each :class:`~edge.sources.CameraSource` (tests: a stand-in
            for a camera that disappears).
        db: The store: an SQLite file or a ``postgresql://`` URL (default ``data/grimace.sqlite``);
            the selected frames' images stay under ``data`` either way.
    """

    def __init__(
        self,
        model: Model,
        data: str | Path,
        *,
        realtime: float = 1.0,
        conf: float = 0.25,
        iou: float = 0.45,
        min_quality: float | None = None,
        batching: bool = True,
        backoff_s: float = 0.5,
        max_backoff_s: float = 10.0,
        opener: Any = None,
        db: str | Path | None = None,
    ) -> None:
        self.model = model
        self.spec = model.spec
        self.data = Path(data)
        self.data.mkdir(parents=True, exist_ok=True)
        self.db_path: str | Path = db if db is not None else self.data / "grimace.sqlite"
        """The store's file or URL (each thread and each operation opens its own :class:`Store`)."""
        self.realtime = realtime
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        self.opener = opener
        self.predictor = Predictor(
            model, conf=conf, iou=iou, min_quality=min_quality, quality_fn=frame_quality
        )
        self.scorer = BatchScorer(self.predictor, batching=batching)
        self.chambers: dict[str, Chamber] = {}
        self._lock = threading.Lock()
        with Store(self.db_path) as store:
            for row in Study(store).chambers():
                self.chambers[row["id"]] = Chamber(row["id"], row["camera"])

    # ----------------------------------------------------------------------------- chambers
    def add_chamber(self, chamber_id: str, camera: str) -> Chamber:
        """Register (or re-point an idle) chamber.

        Raises:
            StudyError: Bad id, empty camera, or the chamber is running a session.
        """
        cid = check_id(chamber_id, "chamber")
        with self._lock:
            ch = self.chambers.get(cid)
            if ch is not None and ch.busy:
                raise StudyError(f"chamber {cid} is running a session; stop it before changing its camera")
            with Store(self.db_path) as store:
                Study(store).add_chamber(cid, camera)
            self.chambers[cid] = Chamber(cid, str(camera).strip())
            return self.chambers[cid]

    def _update_expected(self) -> None:
        self.scorer.expected = max(1, sum(c.busy for c in self.chambers.values()))

    # ----------------------------------------------------------------------------- sessions
    def start_session(self, chamber_id: str, study_id: str, animal_id: str, timepoint_id: str) -> str:
        """Start (or resume) the session of an animal at a timepoint in a chamber.

        Returns:
            The session id.

        Raises:
            StudyError: Unknown chamber/study/animal/timepoint, a busy chamber, the session running
                in another chamber, or a study made for another scale than the model's.
        """
        with self._lock:
            ch = self.chambers.get(chamber_id)
            if ch is None:
                raise StudyError(f"no chamber {chamber_id!r}")
            if ch.busy:
                raise StudyError(f"chamber {chamber_id} is already running session {ch.session_id}")
            with Store(self.db_path) as store:
                st = Study(store)
                protocol = st.check_session(study_id, animal_id, timepoint_id)
                if protocol.scale != self.spec.name:
                    raise StudyError(
                        f"study {study_id} uses scale {protocol.scale!r} but the station's model is made for "
                        f"{self.spec.name!r}"
                    )
                group = st.animal(study_id, animal_id).get("grp", "")
                session_id = st.session_id_for(study_id, animal_id, timepoint_id)
            for other in self.chambers.values():
                if other.busy and other.session_id == session_id:
                    raise StudyError(f"session {session_id} is running in chamber {other.id}")
            self._launch(ch, session_id, study_id, animal_id, timepoint_id, group, protocol)
            return session_id

    def _launch(
        self,
        ch: Chamber,
        session_id: str,
        study_id: str,
        animal_id: str,
        timepoint_id: str,
        group: str,
        protocol: Protocol,
    ) -> None:
        control = SessionControl()

        def on_open(store: Store, state: SessionState) -> None:
            Study(store).link_session(state.session_id, study_id, animal_id, timepoint_id, ch.id, protocol)

        subject = Subject(animal_id, group, timepoint_id, on_open)

        def run() -> None:
            try:
                with Store(self.db_path) as store:
                    ch.result = record_session(
                        store,
                        ch.camera,
                        self.scorer.score,
                        self.spec,
                        self.data,
                        session_id=session_id,
                        model_name=str(self.model.path),
                        interval_s=protocol.interval_s,
                        session_s=protocol.duration_s,
                        fps=protocol.fps,
                        realtime=self.realtime,
                        backoff_s=self.backoff_s,
                        max_backoff_s=self.max_backoff_s,
                        max_retries=None,
                        status=False,
                        control=control,
                        subject=subject,
                        on_frame=ch._on_frame,
                        on_event=ch._on_event,
                        opener=self.opener,
                    )
                r = ch.result
                ch.state = (
                    "complete" if r.complete else ("gave up" if r.stopped == "camera gave up" else "stopped")
                )
                ch.message = r.stopped
            except Exception as e:  # shown on the chambers page; the session stays resumable
                ch.state, ch.message = "error", f"{type(e).__name__}: {e}"
            finally:
                self._update_expected()

        ch.session_id, ch.state, ch.message, ch.frames, ch.result = session_id, "running", "", 0, None
        ch._control = control
        ch._thread = threading.Thread(target=run, name=f"chamber-{ch.id}", daemon=True)
        ch._thread.start()
        self._update_expected()

    def stop_session(self, chamber_id: str, why: str = "stopped by operator", wait_s: float = 30.0) -> None:
        """Stop a chamber's session (left resumable, not complete) and wait for its thread.

        Raises:
            StudyError: No such chamber.
        """
        ch = self.chambers.get(chamber_id)
        if ch is None:
            raise StudyError(f"no chamber {chamber_id!r}")
        if ch._control is not None:
            ch._control.stop(why)
        if ch._thread is not None:
            ch._thread.join(timeout=wait_s)
        if ch.session_id and why == "stopped by operator":
            with Store(self.db_path) as store:
                Study(store).set_wanted(ch.session_id, "stop")
        self._update_expected()

    def resume(self) -> list[str]:
        """Resume every study session that was running when the station stopped (crash, power cut,
        restart), each in its chamber; returns their ids."""
        with Store(self.db_path) as store:
            st = Study(store)
            todo = [
                (r, st.protocol(r["study_id"]), st.animal(r["study_id"], r["animal_id"]).get("grp", ""))
                for r in st.resumable()
            ]
        resumed = []
        with self._lock:
            for r, protocol, group in todo:
                ch = self.chambers.get(r["chamber_id"])
                if ch is None or ch.busy:
                    continue
                self._launch(
                    ch, r["session_id"], r["study_id"], r["animal_id"], r["timepoint_id"], group, protocol
                )
                resumed.append(r["session_id"])
        return resumed

    def close(self) -> None:
        """Stop every chamber (sessions stay resumable), the scorer and the model."""
        for ch in list(self.chambers.values()):
            if ch.busy and ch._control is not None:
                ch._control.stop("station shut down")
        for ch in list(self.chambers.values()):
            if ch._thread is not None:
                ch._thread.join(timeout=30)
        self.scorer.close()
        with contextlib.suppress(Exception):
            self.model.close()
