"""Benchmark: the lab station with two chambers at once (:mod:`edge.station.chambers`).

Measures, on video files standing in for two cameras (played as fast as they can be scored):

1. frames/s per chamber with the chambers' frames **batched** through the one predictor, and
   **unbatched** (one frame per inference call), and the speed-up. The demo model ships with a fixed
   batch of 1 (no batching possible); the benchmark also times a dynamic-batch copy of it (its
   ``Reshape`` batch dimensions 1 -> 0 and a symbolic batch axis; checked to give the same output per
   frame as the original before it is used);
2. the process's resident memory (RSS, from ``/proc/self/status``) over a long run of both chambers
   at full speed, each chamber starting its next session (a new timepoint) when one completes.

The station's web server is not part of the measured process (it adds a fixed amount of memory and
no per-frame work). Run::

    python -m bench.bench_station [--duration 600] [--video V.mp4] [--model M.onnx] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np


def rss_mb() -> float:
    """Resident set size of this process in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def dynamic_batch_copy(model: Path, out: Path) -> Path:
    """A copy of an exported model with a symbolic batch axis (Reshape batch dims 1 -> 0), refused
    unless a batch of 2 gives the same output per frame as the original."""
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    m = onnx.load(str(model))
    inits = {i.name: i for i in m.graph.initializer}
    consts = {n.output[0]: n for n in m.graph.node if n.op_type == "Constant"}
    for n in m.graph.node:
        if n.op_type != "Reshape":
            continue
        s = n.input[1]
        if s in inits:
            a = numpy_helper.to_array(inits[s]).copy()
            if a[0] == 1:
                a[0] = 0
                inits[s].CopyFrom(numpy_helper.from_array(a, s))
        elif s in consts:
            a = numpy_helper.to_array(consts[s].attribute[0].t).copy()
            if a[0] == 1:
                a[0] = 0
                consts[s].attribute[0].t.CopyFrom(numpy_helper.from_array(a))
    for v in [*m.graph.input, *m.graph.output]:
        v.type.tensor_type.shape.dim[0].dim_param = "batch"
    del m.graph.value_info[:]
    onnx.save(m, str(out))
    a = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    shape = [d if isinstance(d, int) else 1 for d in a.get_inputs()[0].shape]
    x = np.random.default_rng(0).random((2, *shape[1:]), dtype=np.float32)
    name = a.get_inputs()[0].name
    yb = b.run(None, {name: x})[0]
    for i in range(2):
        y1 = a.run(None, {name: x[i : i + 1]})[0]
        if not np.allclose(yb[i], y1[0], atol=1e-4):
            raise RuntimeError(f"{model}: the dynamic-batch copy differs from the original; not used")
    return out


def _station(model: Path, data: Path, videos: list[Path], batching: bool, threads: int):
    from edge.predictor import load_model
    from edge.station.chambers import Station

    st = Station(load_model(model, threads=threads), data, realtime=0.0, batching=batching)
    for i, v in enumerate(videos):
        st.add_chamber(f"c{i + 1}", str(v))
    return st


def _study(db: Path, seconds: float, fps: float, n: int, scale: str) -> None:
    from edge.station.study import Protocol, Study
    from edge.storage import Store

    with Store(db) as s:
        st = Study(s)
        st.add_study("bench", Protocol(scale, seconds / 10, seconds, fps))
        for i in range(n):
            st.add_animal("bench", f"A{i + 1}", group=f"g{i % 2}")
        st.add_timepoint("bench", "t0000")


def throughput(
    model: Path, videos: list[Path], batching: bool, threads: int, seconds: float, fps: float
) -> dict:
    """One session per chamber over the whole video; frames/s per chamber."""
    with tempfile.TemporaryDirectory() as tmp:
        st = _station(model, Path(tmp), videos, batching, threads)
        try:
            _study(st.db_path, seconds, fps, len(videos), st.spec.name)
            t0 = time.perf_counter()
            for i in range(len(videos)):
                st.start_session(f"c{i + 1}", "bench", f"A{i + 1}", "t0000")
            while any(c.busy for c in st.chambers.values()):
                time.sleep(0.05)
            wall = time.perf_counter() - t0
            frames = [c.result.frames if c.result else 0 for c in st.chambers.values()]
            states = [c.state for c in st.chambers.values()]
            return {
                "batching": batching,
                "max_batch": st.scorer.max_batch,
                "mean_batch": round(st.scorer.mean_batch, 2),
                "wall_s": round(wall, 2),
                "frames": frames,
                "fps_per_chamber": [round(f / wall, 2) for f in frames],
                "fps_total": round(sum(frames) / wall, 2),
                "states": states,
                "stage_ms": {k: round(v, 2) for k, v in st.predictor.times.per_frame_ms().items()},
            }
        finally:
            st.close()


def memory_run(
    model: Path, videos: list[Path], threads: int, duration: float, seconds: float, fps: float
) -> dict:
    """Both chambers at full speed for ``duration`` seconds, back-to-back sessions; RSS samples."""
    with tempfile.TemporaryDirectory() as tmp:
        st = _station(model, Path(tmp), videos, True, threads)
        from edge.station.study import Study
        from edge.storage import Store

        samples: list[tuple[float, float]] = []
        sessions = 0
        try:
            _study(st.db_path, seconds, fps, len(videos), st.spec.name)
            k = 0
            t0 = time.perf_counter()
            next_sample = 0.0
            frames0 = 0
            while True:
                now = time.perf_counter() - t0
                for i, c in enumerate(st.chambers.values()):
                    if not c.busy and now < duration:
                        k += 1
                        tp = f"t{k:04d}"
                        with Store(st.db_path) as s:
                            Study(s).add_timepoint("bench", tp)
                        if c.result is not None:
                            frames0 += c.result.frames
                        st.start_session(c.id, "bench", f"A{i + 1}", tp)
                        sessions += 1
                if now >= next_sample:
                    samples.append((round(now, 1), round(rss_mb(), 1)))
                    next_sample += 10.0
                if now >= duration and not any(c.busy for c in st.chambers.values()):
                    break
                time.sleep(0.05)
            wall = time.perf_counter() - t0
            frames = frames0 + sum(c.result.frames for c in st.chambers.values() if c.result)
        finally:
            st.close()
    rss = [r for _, r in samples]
    warm = [r for t, r in samples if t >= 60] or rss
    ts = np.array([t for t, _ in samples if t >= 60] or [t for t, _ in samples], float)
    slope = float(np.polyfit(ts, np.array(warm), 1)[0] * 60) if len(warm) >= 3 else float("nan")
    return {
        "duration_s": round(wall, 1),
        "sessions": sessions,
        "frames": frames,
        "fps_total": round(frames / wall, 2),
        "rss_first_mb": rss[0],
        "rss_after_60s_mb": warm[0],
        "rss_max_mb": max(rss),
        "rss_end_mb": rss[-1],
        "rss_slope_after_60s_mb_per_min": round(slope, 3),
        "samples": samples,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print a Markdown table; returns the exit status."""
    from edge.demo import DEMO_MODEL, DEMO_VIDEO, _synth_video
    from edge.sources import video_info

    ap = argparse.ArgumentParser(prog="python -m bench.bench_station", description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=DEMO_MODEL)
    ap.add_argument("--video", type=Path, default=None, help="video standing in for both cameras")
    ap.add_argument("--duration", type=float, default=600.0, help="seconds of the memory run (default 600)")
    ap.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads")
    ap.add_argument(
        "--repeats", type=int, default=2, help="interleaved repeats of the batched/unbatched runs"
    )
    ap.add_argument("--json", type=Path, default=None, help="also write the figures as JSON")
    args = ap.parse_args(argv)
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    with tempfile.TemporaryDirectory() as tmp:
        tmp_p = Path(tmp)
        video = args.video or (
            DEMO_VIDEO if DEMO_VIDEO.is_file() else _synth_video(tmp_p / "synth", 20.0, 10.0, 3)
        )
        info = video_info(video)
        seconds, vfps = float(info["duration_s"]), float(info["fps"])
        videos = [video, video]
        dyn = dynamic_batch_copy(args.model, tmp_p / "model_dynamic_batch.onnx")
        res: dict = {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPU(s), {platform.platform()}",
            "uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
            "model": str(args.model),
            "video": f"{video.name} ({seconds:.1f} s at {vfps:.0f} fps)",
            "threads": args.threads,
        }
        res["fixed_batch1"] = throughput(args.model, videos, True, args.threads, seconds, vfps)
        # interleaved repeats, best of each: the machine's other load changes between runs
        runs: dict[str, list[dict]] = {"dynamic_unbatched": [], "dynamic_batched": []}
        for _ in range(args.repeats):
            runs["dynamic_unbatched"].append(throughput(dyn, videos, False, args.threads, seconds, vfps))
            runs["dynamic_batched"].append(throughput(dyn, videos, True, args.threads, seconds, vfps))
        for key, rs in runs.items():
            res[key] = max(rs, key=lambda r: r["fps_total"])
            res[key]["all_fps_total"] = [r["fps_total"] for r in rs]
        res["speedup"] = round(res["dynamic_batched"]["fps_total"] / res["dynamic_unbatched"]["fps_total"], 3)
        res["memory"] = memory_run(dyn, videos, args.threads, args.duration, seconds, vfps)
    print(f"date {res['date']}; {res['machine']}; uptime: {res['uptime']}")
    print(f"model {res['model']}; video {res['video']}; ORT threads {res['threads']}\n")
    print("| run | frames per inference call | frames/s per chamber | frames/s total |")
    print("|---|---|---|---|")
    for key, label in (
        ("fixed_batch1", "demo model (fixed batch 1)"),
        ("dynamic_unbatched", "dynamic-batch copy, unbatched"),
        ("dynamic_batched", "dynamic-batch copy, batched"),
    ):
        r = res[key]
        per = " / ".join(map(str, r["fps_per_chamber"]))
        print(
            f"| {label} | {r['mean_batch']} | {per} | {r['fps_total']} "
            f"(runs: {r.get('all_fps_total', '-')}) |"
        )
    print(f"\nbatch speed-up (dynamic copy, batched vs unbatched): {res['speedup']}x")
    m = res["memory"]
    print(
        f"memory run: {m['duration_s']} s, {m['sessions']} sessions, {m['frames']} frames "
        f"({m['fps_total']}/s); "
        f"RSS first {m['rss_first_mb']} MiB, after 60 s {m['rss_after_60s_mb']}, max {m['rss_max_mb']}, "
        f"end {m['rss_end_mb']}; slope after 60 s {m['rss_slope_after_60s_mb_per_min']} MiB/min"
    )
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
