"""Benchmark: scored frames/s of ``grimace score --engine ray`` against the local engine, one node.

The same folder (``--videos`` copies of one session video, every frame scored) is scored by the local
runner and by the Ray engine on a local cluster started here (``ray.init(num_cpus=--cpus)``), each
configuration ``--repeats`` times into a fresh output folder (no resuming). The table gives medians of
wall time and frames/s, so the difference is the engine's overhead at one node: Ray Data planning,
actor start (each actor opens the model), moving records back to the driver, writing parts. The
cluster's own start is timed once, apart.

The model is ``--model`` or the YOLOv5n-sized stand-in of :mod:`bench.bench_score` (random weights,
the fused output contract; needs ``train``'s torch/ultralytics to build). Run::

    python -m bench.bench_ray [--model M.onnx] [--videos 4] [--frames 15] [--repeats 3] [--cpus 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any


def _median_row(name: str, runs: list[tuple[float, int]]) -> dict[str, Any]:
    walls = [w for w, _n in runs]
    fps = [n / w for w, n in runs]
    return {
        "engine": name,
        "frames": runs[0][1],
        "wall_s_median": round(statistics.median(walls), 2),
        "wall_s_min": round(min(walls), 2),
        "wall_s_max": round(max(walls), 2),
        "frames_per_s_median": round(statistics.median(fps), 2),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--videos", type=int, default=4)
    ap.add_argument("--frames", type=int, default=15)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    import ray

    from bench.bench_score import build_standin_onnx, make_video
    from edge.runner import score_inputs
    from edge.scale.ray_score import score_inputs_ray

    load_start = os.getloadavg()[0]
    started_at = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    tmp = Path(tempfile.mkdtemp(prefix="grimace-bench-ray-"))
    model = args.model or build_standin_onnx(tmp / "standin.onnx")
    src = make_video(tmp / "session.mp4", args.frames)
    inputs = tmp / "inputs"
    inputs.mkdir()
    for k in range(args.videos):
        shutil.copy(src, inputs / f"session_{k:02d}.mp4")
    quiet = {"progress": False, "log": lambda s: None}

    def local(threads: int) -> tuple[float, int]:
        out = tmp / f"local-{time.monotonic_ns()}"
        t0 = time.perf_counter()
        run = score_inputs([inputs], model, out, annotate_images=False, threads=threads, **quiet)
        return time.perf_counter() - t0, len(run.records)

    def on_ray(actors: int, threads: int) -> tuple[float, int]:
        out = tmp / f"ray-{time.monotonic_ns()}"
        t0 = time.perf_counter()
        run = score_inputs_ray([inputs], model, out, actors=actors, threads=threads, **quiet)
        return time.perf_counter() - t0, len(run.records)

    rows = []
    rows.append(_median_row(f"local, {args.cpus} threads", [local(args.cpus) for _ in range(args.repeats)]))
    rows.append(_median_row("local, 1 thread", [local(1) for _ in range(args.repeats)]))
    t0 = time.perf_counter()
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    ray_start = time.perf_counter() - t0
    try:
        rows.append(
            _median_row(
                f"ray, 1 actor × {args.cpus} threads", [on_ray(1, args.cpus) for _ in range(args.repeats)]
            )
        )
        rows.append(
            _median_row(
                f"ray, {args.cpus} actors × 1 thread", [on_ray(args.cpus, 1) for _ in range(args.repeats)]
            )
        )
    finally:
        ray.shutdown()

    load_end = os.getloadavg()[0]
    print(f"{started_at}; load average (1 min) {load_start:.2f} at the start, {load_end:.2f} at the end")
    print(f"model {model} | {args.videos} videos × {args.frames} frames | {args.repeats} repeats")
    print(f"ray.init (local cluster, {args.cpus} CPUs): {ray_start:.1f} s (not in the rows below)\n")
    print(f"| {'engine':<28} | frames | wall s (median) | min–max | frames/s (median) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r['engine']:<28} | {r['frames']} | {r['wall_s_median']:.2f} | "
            f"{r['wall_s_min']:.2f}–{r['wall_s_max']:.2f} | {r['frames_per_s_median']:.2f} |"
        )
    result = {
        "python": platform.python_version(),
        "started_at": started_at,
        "load_average_start": round(load_start, 2),
        "load_average_end": round(load_end, 2),
        "model": model.name if args.model else f"{model.name} (YOLOv5n-sized stand-in, random weights)",
        "videos": args.videos,
        "frames_per_video": args.frames,
        "repeats": args.repeats,
        "ray_init_s": round(ray_start, 2),
        "rows": rows,
    }
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    shutil.rmtree(tmp, ignore_errors=True)
    return result


if __name__ == "__main__":
    main()
