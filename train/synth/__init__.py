"""Synthetic grimace data: procedural rat, mouse and goat faces whose action units change with grade.

This is test and demo material. The faces are drawings whose geometry follows the grimace scales'
descriptions; a model's accuracy on them is no evidence of its accuracy on real animals.

Public API:
    generate_dataset(out, scale="rgs", n=200, seed=0, imgsz=640, ...) -> Path
    generate_video(out_path, scale="rgs", seconds=4, fps=15, seed=0, ...) -> Path

numpy + OpenCV only (no torch).
"""

from __future__ import annotations

from train.synth.dataset import SynthReport, generate, generate_dataset
from train.synth.video import generate_video

__all__ = ["SynthReport", "generate", "generate_dataset", "generate_video"]
