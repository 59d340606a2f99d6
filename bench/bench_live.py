"""Benchmark: live latency of ``grimace watch`` from capture to committed row, and memory over the run.

A video file stands in for the camera and plays at real speed (``realtime=1``) with newest-frame-wins
on (``drop_late=True``), so it behaves as a camera does: frames arrive on the camera's clock whether the
model is ready or not. The clip is made by PyAV's H.264 encoder (textured, panning; default 1280x720 at
30 fps, a keyframe every second) and looped by remuxing (no re-encoding) to the run's length.

Measured: per committed frame the seconds from capture (the grabber read it) to its row committed in
SQLite (``WatchResult.latency_s``), as p50/p90/p99/max over the run and over its first and last thirds
(a backlog would show as latency growing); frames committed and dropped; the process's RSS sampled every
second (after warm-up, peak, end, and the slope of a least-squares line: flat memory is ~0 MiB/min).
Run::

    python -m bench.bench_live [--minutes 10] [--fps 2] [--size 1280x720] [--rate 30]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def loop_clip(src: Path, dst: Path, seconds: float) -> Path:
    """Repeat ``src`` to at least ``seconds`` long by remuxing its packets with shifted timestamps."""
    import av

    with av.open(str(src)) as probe:
        s = probe.streams.video[0]
        pts = sorted(p.pts for p in probe.demux(s) if p.size and p.pts is not None)
        tb = float(s.time_base)
    step = pts[1] - pts[0] if len(pts) > 1 else 1
    span = pts[-1] - pts[0] + step
    loops = max(1, int(np.ceil(seconds / (span * tb))))
    with av.open(str(dst), "w") as out:
        so = None
        for k in range(loops):
            with av.open(str(src)) as inp:
                si = inp.streams.video[0]
                if so is None:
                    so = out.add_stream_from_template(si)
                for p in inp.demux(si):
                    if not p.size:
                        continue
                    p.pts = p.pts + k * span if p.pts is not None else None
                    p.dts = p.dts + k * span if p.dts is not None else None
                    p.stream = so
                    out.mux(p)
    return dst


def rss_mib() -> float:
    """Resident set size of this process (MiB)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q)) if xs else float("nan")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="Length of the run (real time).")
    ap.add_argument("--fps", type=float, default=2.0, help="Frames per second scored (watch --fps).")
    ap.add_argument("--size", default="1280x720", help="Camera frame size WxH.")
    ap.add_argument("--rate", type=int, default=30, help="Camera frames per second.")
    ap.add_argument("--interval", type=float, default=90.0, help="Protocol interval (s).")
    ap.add_argument("--clip-seconds", type=float, default=20.0, help="Length of the clip that is looped.")
    ap.add_argument("--model", type=Path, default=None, help="ONNX model (default: the demo model).")
    ap.add_argument("--workdir", type=Path, default=None, help="Keep the clips here (reused when present).")
    a = ap.parse_args(argv)
    from bench.bench_video import _machine, make_phone_clip
    from edge.demo import DEMO_MODEL
    from edge.live import watch

    model = a.model or DEMO_MODEL
    w, h = (int(v) for v in a.size.lower().split("x"))
    seconds = a.minutes * 60.0
    work = a.workdir or Path(tempfile.mkdtemp(prefix="bench_live_"))
    work.mkdir(parents=True, exist_ok=True)
    base = work / f"cam_{w}x{h}_{a.rate}_{a.clip_seconds:g}s.mp4"
    if not base.exists():
        make_phone_clip(base, a.clip_seconds, fps=a.rate, size=(w, h), bitrate=4_000_000)
    clip = work / f"cam_{w}x{h}_{a.rate}_{seconds:g}s.mp4"
    if not clip.exists():
        loop_clip(base, clip, seconds + 5.0)
    print(f"# machine: {_machine()}")
    print(f"# date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; model: {model.name}")
    print(f"# camera: {clip.name} ({w}x{h} at {a.rate} fps H.264) at real speed; scoring at {a.fps:g} fps")

    samples: list[tuple[float, float]] = []
    done = threading.Event()
    t0 = time.monotonic()

    def sample() -> None:
        while not done.wait(1.0):
            samples.append((time.monotonic() - t0, rss_mib()))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out = work / f"out_{int(time.time())}"
    res = watch(
        str(clip),
        model,
        out,
        interval_s=a.interval,
        session_s=seconds,
        fps=a.fps,
        realtime=1.0,
        drop_late=True,
        status=False,
    )
    wall = time.monotonic() - t0
    done.set()
    sampler.join()

    lat = [x * 1000 for x in res.latency_s]
    third = max(1, len(lat) // 3)
    print(f"\n## live latency, capture -> committed row ({wall / 60:.1f} min run, {res.stopped})")
    print("| part | frames | p50 ms | p90 ms | p99 ms | max ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, xs in (("whole run", lat), ("first third", lat[:third]), ("last third", lat[-third:])):
        print(
            f"| {name} | {len(xs)} | {_pct(xs, 50):.1f} | {_pct(xs, 90):.1f} | {_pct(xs, 99):.1f} | "
            f"{max(xs) if xs else float('nan'):.1f} |"
        )
    due = res.frames + res.frames_dropped
    print(
        f"\nframes committed {res.frames}, dropped {res.frames_dropped} of {due} due "
        f"({100 * res.frames_dropped / max(due, 1):.1f}%); {res.frames / wall:.2f} committed/s"
    )
    warm = [(t, m) for t, m in samples if t >= min(30.0, 0.1 * wall)]
    if len(warm) >= 2:
        ts, ms = np.array([t for t, _ in warm]), np.array([m for _, m in warm])
        slope = float(np.polyfit(ts / 60.0, ms, 1)[0])
        print("\n## memory (RSS, sampled every second)")
        print("| after warm-up MiB | peak MiB | end MiB | slope MiB/min | samples |")
        print("|---:|---:|---:|---:|---:|")
        print(f"| {ms[0]:.1f} | {ms.max():.1f} | {ms[-1]:.1f} | {slope:+.2f} | {len(samples)} |")
    else:
        print("\n(run too short for a memory trend)")
    print(f"\nlatency median {statistics.median(lat):.1f} ms" if lat else "no frames committed")


if __name__ == "__main__":
    main()
