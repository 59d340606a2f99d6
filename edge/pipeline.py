"""Stage threads for scoring: bounded prefetch, and newest-frame-wins for live capture.

:class:`Prefetch` runs an iterator (optionally mapping each item) in a thread of its own and hands the
items over through a bounded queue, so decoding and pre-processing of the next frames overlap the
model's work on the current one (FFmpeg, OpenCV and ONNX Runtime release the GIL while they work).
Chaining two gives a thread per stage::

    with Prefetch(iter_inputs(paths, fps=1), depth=4) as frames, \\
         Prefetch(frames, fn=prepare, depth=2) as prepared:
        for item in prepared: ...

The consumer sees the items in the same order and nothing else changes: an item the source yields
(a :class:`~edge.sources.Frame` or an :class:`~edge.sources.ItemError`) arrives as it is, and an
exception raised by the source arrives in the consumer at the same point of the sequence, with its
traceback. Leaving the ``with`` block (the end, an error, Ctrl-C) stops the thread: it stops taking
items, closes the source iterator in its own thread (a generator's ``finally`` runs: files and
decoders are released) and ends; the thread is a daemon, so a stuck read never keeps the process alive.

:class:`NewestWins` is the live-capture counterpart: a grabber thread reads a camera as fast as it
delivers and keeps only the newest item; one that is replaced before the consumer took it is counted
in :attr:`NewestWins.dropped`. The consumer therefore always gets the newest frame and a slow model
never builds a backlog (latency stays bounded, memory stays flat).
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

_END = object()


class _Raised:
    """An exception from the producer thread, re-raised in the consumer."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def _close(it: Any) -> None:
    close = getattr(it, "close", None)
    if close is not None:
        with contextlib.suppress(Exception):  # closing a failed source must not hide the outcome
            close()


class Prefetch:
    """Iterate ``source`` in a thread, ``depth`` items ahead of the consumer.

    Args:
        source: Any iterable (a generator is closed in the producer thread when the consumer stops).
        fn: Applied to every item in the producer thread (``None`` = the items themselves).
        depth: Most items waiting in the queue (the memory bound: ``depth`` decoded frames).
        name: Thread name (shown in stack dumps).
    """

    def __init__(
        self,
        source: Iterable[Any],
        fn: Callable[[Any], Any] | None = None,
        depth: int = 4,
        name: str = "prefetch",
    ) -> None:
        if depth < 1:
            raise ValueError(f"prefetch depth must be >= 1, got {depth}")
        self._source = source
        self._fn = fn
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._started = False
        self._done = False

    # -- producer
    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        it = iter(self._source)
        try:
            for item in it:
                if self._stop.is_set():
                    return
                out = self._fn(item) if self._fn is not None else item
                if not self._put(out):
                    return
            self._put(_END)
        except BaseException as e:  # handed to the consumer, raised there
            self._put(_Raised(e))
        finally:
            _close(it)

    # -- consumer
    def __iter__(self) -> Iterator[Any]:
        if not self._started:
            self._started = True
            self._thread.start()
        while not self._done:
            try:
                item = self._queue.get(timeout=0.1)
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    self._done = True  # stopped (closed) without an end marker
                continue
            if item is _END:
                self._done = True
                return
            if isinstance(item, _Raised):
                self._done = True
                raise item.exc
            yield item

    def close(self, timeout: float = 5.0) -> None:
        """Stop the producer and wait (at most ``timeout`` s) for it to release its source."""
        self._stop.set()
        self._done = True
        while True:  # unblock a producer waiting on a full queue
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        if self._started and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def __enter__(self) -> Prefetch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class NewestWins:
    """Read ``source`` in a grabber thread as fast as it delivers; the consumer gets the newest item.

    An item still waiting when a newer one arrives is dropped and counted. The source's own end (or
    an exception, re-raised in the consumer) ends the iteration once the last item was taken.

    Args:
        source: The capture iterator (a generator is closed in the grabber thread at the end).
        stopped: Polled by both threads; when it returns ``True`` they stop (e.g. a camera's ``closed``).
        name: Thread name.
        idle: Called in the consumer's thread about every 0.1 s while no item is there (a camera
            hands over its reconnect events meanwhile).
    """

    def __init__(
        self,
        source: Iterable[Any],
        stopped: Callable[[], bool] | None = None,
        name: str = "grabber",
        idle: Callable[[], None] | None = None,
    ) -> None:
        self._source = source
        self._stopped = stopped or (lambda: False)
        self._idle = idle
        self._cond = threading.Condition()
        self._slot: list[Any] = []  # 0 or 1 item
        self._end: Any = None  # _END or _Raised when the source finished
        self._halt = False
        self.dropped = 0
        self.delivered = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _halted(self) -> bool:
        return self._halt or self._stopped()

    def _run(self) -> None:
        it = iter(self._source)
        end: Any = _END
        try:
            for item in it:
                with self._cond:
                    if self._slot:
                        self.dropped += 1
                    self._slot[:] = [item]
                    self._cond.notify()
                if self._halted():
                    break
        except BaseException as e:
            end = _Raised(e)
        finally:
            _close(it)
            with self._cond:
                self._end = end
                self._cond.notify()

    def __iter__(self) -> Iterator[Any]:
        self._thread.start()
        while True:
            with self._cond:
                if not self._slot and self._end is None and not self._halted():
                    self._cond.wait(0.1)
                if self._slot:
                    item = self._slot.pop()
                elif self._end is not None:
                    if isinstance(self._end, _Raised):
                        raise self._end.exc
                    return
                elif self._halted():
                    return
                else:
                    item = _END  # nothing yet
            if item is _END:
                if self._idle is not None:
                    self._idle()
                continue
            self.delivered += 1
            yield item

    def close(self, timeout: float = 5.0) -> None:
        """Stop the grabber and wait (at most ``timeout`` s) for it to end."""
        self._halt = True
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        """Whether the grabber thread is still running."""
        return self._thread.is_alive()


def prepared_stream(
    items: Iterable[Any], prepare: Callable[[list[Any]], Any], depth: int = 4
) -> Iterator[tuple[Any, tuple[Any, float] | None]]:
    """The scoring pipeline's input side: a decode thread, then a pre-processing thread.

    Args:
        items: Frames and item errors (:func:`edge.sources.iter_inputs`); read in the decode thread.
        prepare: ``prepare([image]) -> network input`` (:meth:`edge.predictor.Predictor.prepare`),
            run in the pre-processing thread.
        depth: Decoded frames kept ready (the pre-processed queue holds 2 more).

    Yields:
        ``(item, (prepared, seconds) | None)``: anything that is not a frame (an
        :class:`~edge.sources.ItemError`) comes with ``None``; so does a frame whose pre-processing
        raised, for the consumer to redo it and fail exactly as it would without the pipeline.
    """
    import time

    def prep(item: Any) -> tuple[Any, tuple[Any, float] | None]:
        image = getattr(item, "image", None)
        if image is None:
            return item, None
        t0 = time.perf_counter()
        try:
            x = prepare([image])
        except Exception:  # redone (and reported as today) by the consumer
            return item, None
        return item, (x, time.perf_counter() - t0)

    with (
        Prefetch(items, depth=depth, name="grimace-decode") as decoded,
        Prefetch(decoded, fn=prep, depth=2, name="grimace-prepare") as ready,
    ):
        yield from ready
