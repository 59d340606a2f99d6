"""Benchmark: frames/s and per-stage times of ``grimace score`` on a video at 640.

Until the project's fused student ONNX is at hand this builds a stand-in with the same compute and
the same output contract: ultralytics' YOLOv5n (``yolov5nu.yaml``, random weights, built offline)
with ``nc * (1 + ng)`` outputs reshaped into ``x1 y1 x2 y2 | nc unit scores | nc*ng grade probs``
(``(1, 8400, 4 + nc + nc*ng)`` at 640). Pass ``--model`` to time a real exported model instead.

The video is a synthetic session from ``grimace synth`` when ``train`` is installed, else coloured
noise. Run::

    python -m bench.bench_score [--model M.onnx] [--frames 60] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def build_standin_onnx(path: Path, scale: str = "rgs", imgsz: int = 640) -> Path:
    """Export a YOLOv5n-sized model emitting the fused raw contract (random weights; timing only)."""
    import torch
    from torch import nn
    from ultralytics.nn.tasks import DetectionModel

    from edge.artifact import ModelMetadata
    from edge.scales import load_scale

    spec = load_scale(scale)
    nc, ng = spec.nc, spec.ng

    class Contract(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.det = DetectionModel("yolov5nu.yaml", nc=nc * (1 + ng), verbose=False)
            self.det.eval()
            for m in self.det.modules():
                if hasattr(m, "export"):
                    m.export = True
                    m.format = "onnx"

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.det(x)
            y = (y[0] if isinstance(y, (list, tuple)) else y).transpose(1, 2)  # (B, N, 4 + C)
            xy, wh = y[..., :2], y[..., 2:4]
            boxes = torch.cat([xy - wh / 2, xy + wh / 2], -1)
            units = y[..., 4 : 4 + nc]
            grades = torch.softmax(y[..., 4 + nc :].reshape(*y.shape[:2], nc, ng), -1).reshape(
                *y.shape[:2], nc * ng
            )
            return torch.cat([boxes, units, grades], -1)

    model = Contract().eval()
    x = torch.zeros(1, 3, imgsz, imgsz)
    with torch.no_grad():
        torch.onnx.export(
            model,
            (x,),
            str(path),
            input_names=["images"],
            output_names=["output0"],
            opset_version=17,
            dynamo=False,
        )
    import onnx

    m = onnx.load(str(path))
    meta = ModelMetadata(scale=spec.to_dict(), imgsz=(imgsz, imgsz), model_name="yolov5n-standin-random")
    onnx.helper.set_model_props(m, meta.to_onnx_props())
    onnx.save(m, str(path))
    return path


def make_video(path: Path, frames: int, fps: float = 10.0) -> Path:
    """A 640x480 session video: ``grimace synth`` when available, else coloured noise."""
    import subprocess
    import sys

    try:
        import train.synth  # noqa: F401

        out = path.parent / "synth"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "edge.cli",
                "synth",
                "--out",
                str(out),
                "--n",
                "1",
                "--video",
                "1",
                "--video-seconds",
                str(frames / fps),
                "--fps",
                str(fps),
                "--imgsz",
                "640",
                "--overwrite",
            ],
            check=True,
            capture_output=True,
        )
        return next((out / "videos").glob("*.mp4"))
    except ImportError:
        import cv2

        vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (640, 480))
        rng = np.random.default_rng(0)
        for _ in range(frames):
            vw.write(rng.integers(0, 255, (480, 640, 3), np.uint8))
        vw.release()
        return path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--video", type=Path, default=None)
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args(argv)

    from edge.runner import score_inputs

    tmp = Path(tempfile.mkdtemp(prefix="grimace-bench-"))
    t0 = time.perf_counter()
    model = args.model or build_standin_onnx(tmp / "standin.onnx")
    video = args.video or make_video(tmp / "session.mp4", args.frames)
    print(f"model {model} | video {video} | setup {time.perf_counter() - t0:.1f}s")
    run = score_inputs(
        [video], model, tmp / "out", progress=False, annotate_images=False, threads=args.threads
    )
    ms = run.times.per_frame_ms()
    print(f"\n{'frames':>8}{'wall s':>9}{'frames/s':>10}" + "".join(f"{k + ' ms':>10}" for k in ms))
    print(
        f"{len(run.records):>8}{run.wall_s:>9.2f}{run.frames_per_s:>10.2f}"
        + "".join(f"{v:>10.2f}" for v in ms.values())
    )
    print(
        json.dumps(
            {
                "frames": len(run.records),
                "frames_per_s": round(run.frames_per_s, 2),
                "stage_ms": {k: round(v, 2) for k, v in ms.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
