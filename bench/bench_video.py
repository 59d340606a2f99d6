"""Benchmark: phone-video throughput of ``grimace score`` (issue 20 items 1, 2 and 6).

Makes a phone-like clip with PyAV's H.264 encoder (libx264, High profile with CABAC and B-frames,
1920x1080 at 60 fps, a keyframe every second as phone cameras write them, about 16 Mbit/s; textured
content panning across the frame so the decoder has real work), then in ONE run:

1. **Reader**: :func:`edge.runner.score_inputs` (the code behind ``grimace score``) with the demo model
   at ``--fps 1``, three ways, interleaved over ``--repeats`` rounds: *old* = the OpenCV reader, one
   frame after the other (the code before issue 20); *pyav* = the new reader without the pipeline;
   *new* = the new reader with the decode/pre-processing threads. Scored frames/s (frames over wall
   time) and the decode share (decode time over decode + pre + infer + post, per scored frame); then
   the pipelined loop alone (no output files) with the share of its time the model's thread waited
   for decoded input.
2. **Pipeline**: a folder of clips scored with the pipeline, against each stage alone on the same
   frames: decode (iterating the inputs, nothing else), pre-processing (letterbox + normalise) and
   inference + post-processing (on prepared inputs), those two timed on 20 frames and scaled to all.
   Ratio: pipelined wall time over the slowest stage alone (target <= 1.3).
3. **Decoder threads** (``--threads``): the reader alone (:func:`edge.sources.iter_video`, PyAV,
   keyframes at ``--fps``) with FFmpeg's thread types (``edge.sources.AV_THREAD_TYPE``: ``AUTO``,
   ``FRAME``, ``SLICE``, ``NONE`` = one thread), interleaved rounds: wall and CPU ms per scored frame.

Medians over the rounds; ratios are from the same run. Run::

    python -m bench.bench_video [--seconds 20] [--repeats 3] [--videos 3] [--fps 1] [--pipe-fps 1,5]
                                [--threads] [--skip-readers] [--skip-pipeline]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np


def make_phone_clip(
    path: Path,
    seconds: float = 20.0,
    fps: int = 60,
    size: tuple[int, int] = (1920, 1080),
    gop_s: float = 1.0,
    bitrate: int = 16_000_000,
    codec: str = "libx264",
) -> Path:
    """Encode a textured, panning clip like a phone's (H.264 High or HEVC Main, B-frames, a keyframe
    every ``gop_s``)."""
    import av

    w, h = size
    n = round(seconds * fps)
    rng = np.random.default_rng(0)
    import cv2

    # smooth texture (blurred noise at several scales) larger than the frame, panned and with grain
    big = rng.integers(0, 256, (h + 256, w + 4 * n // 3 + 256), np.uint8)
    tex = (
        cv2.GaussianBlur(big, (0, 0), 1.5).astype(np.float32) * 0.5
        + cv2.GaussianBlur(big, (0, 0), 6).astype(np.float32) * 1.5
        - 64
    )
    tex = np.clip(tex, 0, 255).astype(np.uint8)
    tex = cv2.cvtColor(tex, cv2.COLOR_GRAY2BGR)
    tex[..., 1] = np.roll(tex[..., 1], 37, axis=1)
    gop = max(1, round(gop_s * fps))
    opts = {"preset": "superfast", "g": str(gop), "keyint_min": str(gop), "sc_threshold": "0", "bf": "2"}
    if codec == "libx265":  # x265 takes its GOP through its own parameters
        opts = {
            "preset": "superfast",
            "x265-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=2:log-level=error",
        }
    with av.open(str(path), "w") as out:
        s = out.add_stream(codec, rate=fps, options=opts)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.bit_rate = bitrate
        for i in range(n):
            x = (4 * i) // 3
            img = tex[(i % 64) : (i % 64) + h, x : x + w]
            grain = cv2.resize(rng.integers(0, 6, (h // 4, w // 4), np.uint8), (w, h), interpolation=0)
            img = cv2.add(img, cv2.cvtColor(grain, cv2.COLOR_GRAY2BGR))
            for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="bgr24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return path


def _score(paths: list[Path], model: Path, out: Path, fps: float, reader: str, pipelined: bool) -> dict:
    from edge.runner import score_inputs

    os.environ["GRIMACE_VIDEO_READER"] = reader
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        run = score_inputs(
            paths,
            model,
            out,
            fps=fps,
            annotate_images=False,
            progress=False,
            log=lambda s: None,
            pipelined=pipelined,
        )
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        os.environ.pop("GRIMACE_VIDEO_READER", None)
    shutil.rmtree(out, ignore_errors=True)
    ms = run.times.per_frame_ms()
    work = sum(ms.get(k, 0.0) for k in ("decode", "pre", "infer", "post"))
    return {
        "frames": len(run.records),
        "errors": len(run.errors),
        "wall_s": wall,
        "cpu_s": cpu,
        "fps": len(run.records) / wall,
        "ms": ms,
        "decode_share": ms.get("decode", 0.0) / work if work else 0.0,
    }


def bench_readers(clip: Path, model: Path, work: Path, fps: float, repeats: int) -> dict[str, list[dict]]:
    """Old reader vs new reader on the same clip, interleaved rounds."""
    ways = {"old": ("opencv", False), "pyav": ("pyav", False), "new": ("pyav", True)}
    _score([clip], model, work / "warm", fps, "pyav", True)  # warm caches and the ONNX session code
    res: dict[str, list[dict]] = {k: [] for k in [*ways, "loop"]}
    for r in range(repeats):
        order = list(ways) if r % 2 == 0 else list(reversed(ways))
        for k in order:
            reader, pipe = ways[k]
            res[k].append(_score([clip], model, work / f"o_{k}", fps, reader, pipe))
        res["loop"].append(pipelined_loop(clip, model, fps))
    return res


def pipelined_loop(clip: Path, model: Path, fps: float) -> dict:
    """The pipelined scoring loop alone (``prepared_stream`` + ``Predictor.score_prepared``, no output
    files), timing how long the model's thread waits for the next decoded, prepared frame."""
    from edge.pipeline import prepared_stream
    from edge.predictor import Predictor, load_model
    from edge.quality import frame_quality
    from edge.sources import iter_inputs

    os.environ["GRIMACE_VIDEO_READER"] = "pyav"
    try:
        with load_model(model) as m:
            pred = Predictor(m, quality_fn=frame_quality)
            t0 = time.perf_counter()
            wait = 0.0
            n = 0
            stream = prepared_stream(iter_inputs([clip], fps=fps), pred.prepare)
            try:
                tw = time.perf_counter()
                for item, prepared in stream:
                    wait += time.perf_counter() - tw
                    pred.times.add("decode", item.decode_s)
                    if prepared is not None:
                        pred.score_prepared([item.image], prepared[0], [item.source], pre_s=prepared[1])
                    n += 1
                    tw = time.perf_counter()
            finally:
                stream.close()
            wall = time.perf_counter() - t0
    finally:
        os.environ.pop("GRIMACE_VIDEO_READER", None)
    return {
        "frames": n,
        "wall_s": wall,
        "fps": n / wall,
        "wait_share": wait / wall,
        "ms": pred.times.per_frame_ms(),
    }


def bench_stages(folder: Path, model: Path, fps: float, sample: int = 20) -> dict[str, float]:
    """Each stage alone (seconds for all the frames): decode (every frame read and dropped at once, as
    holding hundreds of 1080p frames would measure memory, not decoding), then pre-processing and
    inference + post-processing timed on ``sample`` of those frames and scaled to all of them."""
    from edge.predictor import Predictor, load_model
    from edge.quality import frame_quality
    from edge.sources import Frame, iter_inputs

    kept: list[Frame] = []
    n = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for f in iter_inputs([folder], fps=fps):
        if isinstance(f, Frame):
            n += 1
            if len(kept) < sample:
                kept.append(f)
    decode, decode_cpu = time.perf_counter() - t0, time.process_time() - c0
    with load_model(model) as m:
        pred = Predictor(m, quality_fn=frame_quality)
        pred([kept[0].image])  # warm-up
        t0, c0 = time.perf_counter(), time.process_time()
        prepared = [pred.prepare([f.image]) for f in kept]
        pre = (time.perf_counter() - t0) * n / len(kept)
        pre_cpu = (time.process_time() - c0) * n / len(kept)
        t0, c0 = time.perf_counter(), time.process_time()
        for f, p in zip(kept, prepared, strict=True):
            pred.score_prepared([f.image], p, [f.source])
        infer = (time.perf_counter() - t0) * n / len(kept)
        infer_cpu = (time.process_time() - c0) * n / len(kept)
    return {
        "frames": n,
        "decode": decode,
        "pre": pre,
        "infer+post": infer,
        "cpu": decode_cpu + pre_cpu + infer_cpu,
    }


def bench_threads(clip: Path, fps: float, repeats: int) -> dict[str, list[tuple[float, float]]]:
    """The PyAV reader alone with each FFmpeg thread type: ``(wall, CPU)`` ms per scored frame, rounds
    interleaved (forward, then backward)."""
    import edge.sources as sources

    kinds = ["AUTO", "FRAME", "SLICE", "NONE"]
    res: dict[str, list[tuple[float, float]]] = {k: [] for k in kinds}
    saved = sources.AV_THREAD_TYPE
    try:
        for r in range(repeats + 1):  # round 0 warms the page cache and is not kept
            for k in kinds if r % 2 else reversed(kinds):
                sources.AV_THREAD_TYPE = k
                t0, c0 = time.perf_counter(), time.process_time()
                frames = sources.iter_video(clip, fps=fps, reader="pyav")
                n = sum(isinstance(f, sources.Frame) for f in frames)
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                if r:
                    res[k].append((wall * 1000 / n, cpu * 1000 / n))
    finally:
        sources.AV_THREAD_TYPE = saved
    return res


def _print_threads(res: dict[str, list[tuple[float, float]]], a: argparse.Namespace) -> None:
    print(
        f"\n## decoder threads, PyAV reader alone, --fps {a.fps:g} "
        f"(medians of {a.repeats} interleaved rounds)"
    )
    print("| thread type | wall ms/scored frame | CPU ms/scored frame | rounds (wall ms) |")
    print("|---|---:|---:|---|")
    for k, rows in res.items():
        wall = statistics.median(w for w, _ in rows)
        cpu = statistics.median(c for _, c in rows)
        print(f"| {k} | {wall:.1f} | {cpu:.1f} | " + ", ".join(f"{w:.1f}" for w, _ in rows) + " |")


def _med(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def _machine() -> str:
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        cpu = platform.processor() or "?"
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    return f"{cpu}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}; uptime: {load}"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="Clip length (s).")
    ap.add_argument("--repeats", type=int, default=3, help="Rounds (each scores the clip three ways).")
    ap.add_argument("--fps", type=float, default=1.0, help="Sampling rate of the reader comparison.")
    ap.add_argument("--videos", type=int, default=3, help="Clips in the folder of the pipeline part.")
    ap.add_argument("--pipe-fps", default="1,5", help="Sampling rates of the pipeline part (comma list).")
    ap.add_argument("--skip-readers", action="store_true", help="Only the pipeline part.")
    ap.add_argument("--skip-pipeline", action="store_true", help="Only the reader part.")
    ap.add_argument("--threads", action="store_true", help="Also A/B the decoder's thread types.")
    ap.add_argument(
        "--codec",
        choices=("libx264", "libx265"),
        default="libx264",
        help="Encoder of the clip: H.264 (default) or HEVC, as iPhones record by default.",
    )
    ap.add_argument("--model", type=Path, default=None, help="ONNX model (default: the demo model).")
    ap.add_argument("--workdir", type=Path, default=None, help="Keep the clips here (reused when present).")
    a = ap.parse_args(argv)
    from edge.demo import DEMO_MODEL

    model = a.model or DEMO_MODEL
    work = a.workdir or Path(tempfile.mkdtemp(prefix="bench_video_"))
    work.mkdir(parents=True, exist_ok=True)
    tag = {"libx264": "", "libx265": "_hevc"}[a.codec]
    clip = work / f"phone_1080p60_{a.seconds:g}s{tag}.mp4"
    if not clip.exists():
        t0 = time.perf_counter()
        make_phone_clip(clip, a.seconds, codec=a.codec)
        print(f"made {clip.name} in {time.perf_counter() - t0:.0f} s ({clip.stat().st_size / 2**20:.1f} MiB)")
    print(f"# machine: {_machine()}")
    print(f"# date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; model: {model.name}")

    if not a.skip_readers:
        _print_readers(bench_readers(clip, model, work, a.fps, a.repeats), a)
    if not a.skip_pipeline:
        _print_pipeline(clip, model, work, a)
    if a.threads:
        _print_threads(bench_threads(clip, a.fps, a.repeats), a)
    print(f"\n# end: {_machine()}")


def _print_readers(res: dict[str, list[dict]], a: argparse.Namespace) -> None:
    codec = {"libx264": "H.264", "libx265": "HEVC"}[a.codec]
    print(f"\n## 1080p60 {codec}, {a.seconds:g} s, --fps {a.fps:g}: medians of {a.repeats} rounds")
    print(
        "| reader | frames | scored frames/s | wall ms/frame | decode ms/frame | pre | infer | post "
        "| decode share of work | decode / wall per frame |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for k, rows in res.items():
        if k == "loop":
            continue
        ms = {
            s: statistics.median(r["ms"].get(s, 0.0) for r in rows)
            for s in ("decode", "pre", "infer", "post")
        }
        wall_ms = 1000 / _med(rows, "fps")
        print(
            f"| {k} | {rows[0]['frames']} | {_med(rows, 'fps'):.2f} | {wall_ms:.1f} | {ms['decode']:.1f} | "
            f"{ms['pre']:.1f} | {ms['infer']:.1f} | {ms['post']:.1f} | "
            f"{100 * _med(rows, 'decode_share'):.0f}% | {100 * ms['decode'] / wall_ms:.0f}% |"
        )
    loop = res["loop"]
    print(
        f"\npipelined loop alone (no output files): {_med(loop, 'fps'):.2f} scored frames/s; the model's "
        f"thread waited for decoded input {100 * _med(loop, 'wait_share'):.0f}% of the time "
        "(decode and pre-processing run in their threads meanwhile)"
    )
    ratio = [n["fps"] / o["fps"] for n, o in zip(res["new"], res["old"], strict=True)]
    print(
        f"\nnew / old scored frames/s: median {statistics.median(ratio):.2f}x (rounds: "
        + ", ".join(f"{x:.2f}" for x in ratio)
        + ")"
    )


def _print_pipeline(clip: Path, model: Path, work: Path, a: argparse.Namespace) -> None:
    folder = work / "folder"
    folder.mkdir(exist_ok=True)
    for k in range(a.videos):
        dst = folder / f"clip{k}.mp4"
        if not dst.exists():
            shutil.copyfile(clip, dst)  # copies, not links: the reader keeps a file reached twice once
    print(f"\n## folder of {a.videos} clips: pipelined `score` vs each stage alone (medians of {a.repeats})")
    print(
        "| --fps | frames | decode alone s | pre alone s | infer+post alone s | sequential s | pipelined s "
        "| pipelined / slowest stage | CPU s of the stages alone | CPU s pipelined |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for fps in (float(x) for x in a.pipe_fps.split(",") if x.strip()):
        stages, seq, pipe = [], [], []
        for _ in range(a.repeats):
            stages.append(bench_stages(folder, model, fps))
            seq.append(_score([folder], model, work / "o_seq", fps, "pyav", False))
            pipe.append(_score([folder], model, work / "o_pipe", fps, "pyav", True))
        st = {k: statistics.median(s[k] for s in stages) for k in ("decode", "pre", "infer+post")}
        slow = max(st.values())
        ratios = [
            p["wall_s"] / max(s["decode"], s["pre"], s["infer+post"])
            for p, s in zip(pipe, stages, strict=True)
        ]
        print(
            f"| {fps:g} | {stages[0]['frames']} | {st['decode']:.2f} | {st['pre']:.2f} | "
            f"{st['infer+post']:.2f} | "
            f"{_med(seq, 'wall_s'):.2f} | {_med(pipe, 'wall_s'):.2f} | {statistics.median(ratios):.2f} "
            f"(slowest: {max(st, key=st.get)}, {slow:.2f} s) | {_med(stages, 'cpu'):.2f} "
            f"| {_med(pipe, 'cpu_s'):.2f} |"
        )


if __name__ == "__main__":
    main()
