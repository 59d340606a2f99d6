"""``make demo``: the real edge pipeline on embedded defaults (``python -m edge.demo``).

What it runs, with no arguments:

1. the demo model ``edge/assets/demo_model.onnx``: a small fused student (YOLOv5n + grade head)
   trained by the project's own pipeline on **synthetic** rat faces and exported to ONNX (recipe in
   ``docs/edge-runtime.md``). It is for demonstration only and says nothing about real animals;
2. a synthetic session video: ``edge/assets/demo_session.mp4`` when shipped, otherwise rendered on the
   fly with ``grimace synth`` (needs the ``train`` package);
3. ``grimace score`` on the video at 2 frames/s (per-frame CSV/XLSX/JSONL, summaries, annotated video);
4. ``grimace watch`` with the video standing in for a camera: the RGS protocol (10 intervals, one
   selected frame each) compressed into the video's length, stored in SQLite.

It prints where everything went, frames/s, the per-stage times and the total run time.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import time
from pathlib import Path

ASSETS = Path(__file__).resolve().parent / "assets"
DEMO_MODEL = ASSETS / "demo_model.onnx"
DEMO_VIDEO = ASSETS / "demo_session.mp4"

RECIPE = """\
The demo model is made by the project's own pipeline (synthetic data, CPU, about 20 minutes):
  grimace synth --out data/demo --scale rgs --n 800 --imgsz 320 --seed 0
  grimace train student --data data/demo --arch yolov5n --weights none --imgsz 320 \\
      --epochs 30 --out runs/demo
  grimace convert onnx runs/demo/best --out edge/assets/demo_model.onnx --imgsz 320
See docs/edge-runtime.md ("Demo")."""


def _synth_video(folder: Path, seconds: float, fps: float, seed: int) -> Path:
    """Render a synthetic session video with ``grimace synth`` in a subprocess (needs ``train``)."""
    if importlib.util.find_spec("train") is None or importlib.util.find_spec("train.synth") is None:
        raise RuntimeError(
            f"no demo video: {DEMO_VIDEO} is not shipped and the synthetic generator (`train` package) is "
            "not installed; pass --video FILE or install grimace-edge[train]"
        )
    cmd = [
        sys.executable,
        "-m",
        "edge.cli",
        "synth",
        "--out",
        str(folder),
        "--scale",
        "rgs",
        "--n",
        "1",
        "--video",
        "1",
        "--video-seconds",
        str(seconds),
        "--fps",
        str(fps),
        "--imgsz",
        "640",
        "--seed",
        str(seed),
        "--overwrite",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"grimace synth failed ({r.returncode}):\n{r.stderr[-2000:]}")
    videos = sorted((folder / "videos").glob("*.mp4"))
    if not videos:
        raise RuntimeError(f"grimace synth wrote no video under {folder / 'videos'}")
    return videos[0]


def main(argv: list[str] | None = None, prog: str = "python -m edge.demo") -> int:
    """Run the demo (also ``grimace demo``); returns the process exit status."""
    ap = argparse.ArgumentParser(prog=prog, description="grimace-edge demo (synthetic data).")
    ap.add_argument("--model", type=Path, default=DEMO_MODEL, help="ONNX model (default: the demo model)")
    ap.add_argument(
        "--video", type=Path, default=None, help="session video (default: shipped or synthesised)"
    )
    ap.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default: demo_out)")
    ap.add_argument("--seconds", type=float, default=30.0, help="length of a synthesised video")
    ap.add_argument("--fps", type=float, default=2.0, help="frames per second scored")
    ap.add_argument("--seed", type=int, default=7, help="seed of a synthesised video")
    try:
        args = ap.parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2): argparse has printed why
        return int(e.code or 0)

    import os

    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    t0 = time.perf_counter()
    if not args.model.is_file():
        print(f"error: demo model not found: {args.model}\n\n{RECIPE}", file=sys.stderr)
        return 2
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    if args.video is not None:
        video = args.video
    elif DEMO_VIDEO.is_file():
        video = DEMO_VIDEO
    else:
        print(f"rendering a {args.seconds:.0f} s synthetic session video with `grimace synth` ...")
        try:
            video = _synth_video(out / "synth", args.seconds, 10.0, args.seed)
        except RuntimeError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2

    from edge.live import watch
    from edge.predictor import load_model
    from edge.runner import score_inputs
    from edge.sources import video_info

    with load_model(args.model) as m:
        meta = m.meta
    info = video_info(video)
    print(f"model  {args.model} ({meta.model_name or 'fused'}, scale {meta.spec.name}, input {meta.imgsz})")
    print(f"video  {video} ({info['duration_s']:.1f} s at {info['fps']:.0f} fps)")
    print("NOTE: demo model and video are synthetic; the scores say nothing about real animals.\n")

    print(f"[1/2] grimace score {video.name} --fps {args.fps} --annotate-video")
    run = score_inputs([video], args.model, out / "score", fps=args.fps, annotate_video=True, progress=True)
    scored = [r for r in run.records if r.score is not None]
    print(
        f"      {len(run.records)} frames, {len(scored)} scored, {run.frames_per_s:.1f} frames/s; "
        f"per frame: {run.times.summary()}"
    )
    if scored:
        mean = sum(r.score for r in scored) / len(scored)
        print(f"      mean {meta.spec.score_name} over scored frames: {mean:.2f}")
    if run.errors:
        for e in run.errors:
            print(f"      error: {e}")

    session = max(info["duration_s"], 1.0)
    interval = session / 10
    print(
        f"\n[2/2] grimace watch --camera {video.name} --interval {interval:.1f} --session {session:.1f} "
        "(RGS protocol compressed: 10 intervals)"
    )
    res = watch(
        str(video),
        args.model,
        out / "watch",
        interval_s=interval,
        session_s=session,
        fps=args.fps,
        status=False,
    )
    score = "-" if res.session_score is None else f"{res.session_score:.2f}"
    print(
        f"      session {res.session_id}: {res.stopped}; {len(res.selected)} interval frame(s) selected; "
        f"session score {score}"
    )
    print(f"      SQLite: {res.db}; selected frames: {out / 'watch' / 'selected' / res.session_id}")
    print(f"\noutputs in {out.resolve()}; demo run time {time.perf_counter() - t0:.1f} s")
    return 0 if not run.errors else 1


if __name__ == "__main__":
    sys.exit(main())
