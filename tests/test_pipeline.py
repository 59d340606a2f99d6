"""edge.pipeline: prefetch runs ahead in its own thread (bounded), keeps order, hands the source's
errors to the consumer, stops (and closes the source) on close/Ctrl-C; newest-frame-wins drops and
counts; the pipelined `score` gives the same records and errors as frame-by-frame scoring."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.pipeline import NewestWins, Prefetch, prepared_stream
from edge.sources import Frame, ItemError


class Source:
    """A generator source that records what it produced, in which thread, and whether it was closed."""

    def __init__(self, n: int, fail_at: int | None = None) -> None:
        self.n, self.fail_at = n, fail_at
        self.produced = 0
        self.threads: set[str] = set()
        self.closed_in: str | None = None

    def __iter__(self) -> Iterator[int]:
        try:
            for i in range(self.n):
                self.threads.add(threading.current_thread().name)
                if i == self.fail_at:
                    raise OSError(f"disk read failed at item {i}")
                self.produced += 1
                yield i
        finally:
            self.closed_in = threading.current_thread().name


def _wait(cond: object, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():  # type: ignore[operator]
            return True
        time.sleep(0.005)
    return False


def test_prefetch_runs_ahead_in_its_thread_bounded_and_in_order() -> None:
    src = Source(50)
    got = []
    with Prefetch(iter(src), depth=3, name="t-decode") as items:
        for i in items:
            if i == 0:
                # while the consumer holds item 0 the producer fills the queue: 3 queued + 1 in hand
                assert _wait(lambda: src.produced >= 4), "the producer did not run ahead"
                time.sleep(0.05)
                assert src.produced <= 3 + 2, "the queue is not bounded"
            got.append(i)
    assert got == list(range(50))
    assert src.threads == {"t-decode"}
    assert src.closed_in == "t-decode"


def test_producer_errors_reach_the_consumer_at_the_same_point() -> None:
    src = Source(10, fail_at=4)
    got = []
    with pytest.raises(OSError, match="disk read failed at item 4") as e, Prefetch(iter(src)) as items:
        got.extend(items)
    assert got == [0, 1, 2, 3]
    assert any(fr.name == "__iter__" for fr in e.traceback)  # the source's own traceback


def test_leaving_early_stops_the_thread_and_closes_the_source() -> None:
    src = Source(10_000)
    p = Prefetch(iter(src), depth=2)
    with pytest.raises(KeyboardInterrupt), p:
        for i in p:
            if i == 3:
                raise KeyboardInterrupt  # as Ctrl-C in the consumer
    assert not p._thread.is_alive()
    assert src.closed_in is not None and src.produced < 10
    with pytest.raises(ValueError, match="depth"):
        Prefetch([], depth=0)


def test_prepared_stream_passes_item_errors_and_failed_preparation() -> None:
    img = np.zeros((8, 8, 3), np.uint8)
    items = [Frame(img, "a.png"), ItemError("b.png", "empty file (0 bytes)"), Frame(img.copy(), "bad.png")]

    def prepare(images: list[np.ndarray]) -> str:
        if images[0] is items[2].image:
            raise ValueError("cannot letterbox")
        return f"prepared {images[0].shape}"

    out = list(prepared_stream(iter(items), prepare))
    assert [o[0] for o in out] == items
    assert out[0][1] is not None and out[0][1][0] == "prepared (8, 8, 3)" and out[0][1][1] >= 0
    assert out[1][1] is None  # an item error passes untouched
    assert out[2][1] is None  # the consumer redoes it and fails as without the pipeline


def test_ctrl_c_stops_a_pipelined_loop(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import itertools, sys, time
        from edge.pipeline import prepared_stream
        from edge.sources import Frame
        import numpy as np

        def endless():
            try:
                for i in itertools.count():
                    yield Frame(np.zeros((4, 4, 3), np.uint8), "cam", i)
            finally:
                print("source closed", flush=True)

        stream = prepared_stream(endless(), lambda imgs: imgs[0].sum())
        try:
            for n, (item, prep) in enumerate(stream):
                if n == 5:
                    print("running", flush=True)
                time.sleep(0.01)
        except KeyboardInterrupt:
            stream.close()
            print("interrupted", flush=True)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "running"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert out.split() == ["source", "closed", "interrupted"]


def test_newest_wins_drops_and_counts() -> None:
    produced = 200

    def camera() -> Iterator[int]:
        for i in range(produced):
            time.sleep(0.0005)
            yield i

    grab = NewestWins(camera())
    got = []
    for i in grab:
        got.append(i)
        time.sleep(0.01)  # a slow model
    assert got[-1] == produced - 1  # the newest frame wins
    assert got == sorted(set(got))
    assert grab.dropped > 0 and grab.delivered == len(got) and grab.dropped + grab.delivered == produced


def test_newest_wins_source_error_and_stop() -> None:
    src = Source(5, fail_at=2)
    with pytest.raises(OSError, match="item 2"):
        list(NewestWins(iter(src)))
    stop = threading.Event()
    endless = Source(10**9)
    grab = NewestWins(iter(endless), stopped=stop.is_set)
    for i in grab:
        if i > 3:
            stop.set()
    grab.close()
    assert not grab.alive and endless.closed_in is not None


def test_pipelined_score_matches_frame_by_frame_scoring(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from edge.predictor import Predictor, load_model
    from edge.quality import frame_quality
    from edge.runner import score_inputs
    from edge.scales import RGS
    from edge.sources import iter_inputs
    from tests.tiny_onnx import build_tiny_onnx, face_image

    model = build_tiny_onnx(tmp_path / "m.onnx", RGS, imgsz=160, cell=8, box=24)
    d = tmp_path / "in"
    d.mkdir()
    for k in range(2):
        vw = cv2.VideoWriter(str(d / f"v{k}.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10, (320, 240))
        for i in range(30):
            vw.write(face_image(RGS, 240, 320, size=24, shift=(int(10 * np.sin(i / 3 + k)), 0), seed=i))
        vw.release()
    cv2.imwrite(str(d / "a.png"), face_image(RGS, 240, 320, size=24))
    (d / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    (d / "empty.png").write_bytes(b"")
    run = score_inputs([d], model, tmp_path / "out", fps=5, progress=False, log=lambda s: None)
    with load_model(model) as m:
        pred = Predictor(m, quality_fn=frame_quality)
        ref = [
            (it.source, it.index, pred([it.image], [it.source])[0])
            for it in iter_inputs([d], fps=5)
            if not isinstance(it, ItemError)
        ]
    ref_errors = [(e.source, e.message) for e in iter_inputs([d], fps=5) if isinstance(e, ItemError)]
    assert [(e.source, e.message) for e in run.errors] == ref_errors
    assert {Path(s).name for s, _ in ref_errors} == {"broken.mp4", "empty.png"}
    assert len(run.records) == len(ref) == 1 + 2 * 15
    for rec, (source, index, res) in zip(run.records, ref, strict=True):
        assert (rec.source, rec.index) == (source, index)
        assert rec.score == res.score
    assert run.times.frames == len(ref) and run.times.seconds["pre"] > 0
