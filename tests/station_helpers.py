"""Shared set-up of the station tests: a tiny real ONNX model (dynamic batch) and short synthetic
videos standing in for chamber cameras."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from edge.scales import RGS
from tests.tiny_onnx import build_tiny_onnx, face_image


def make_model(folder: Path, batch: int | None = None) -> Path:
    """The colour-blob model of :mod:`tests.tiny_onnx` (``batch=None``: dynamic batch axis)."""
    return build_tiny_onnx(
        folder / f"model_b{batch or 'dyn'}.onnx", RGS, imgsz=160, cell=8, box=24, batch=batch
    )


def make_video(path: Path, seconds: float, fps: int = 10, seed: int = 0) -> Path:
    """A synthetic face video whose quality and grades vary between frames."""
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (320, 240))
    for i in range(int(seconds * fps)):
        img = face_image(
            RGS,
            240,
            320,
            size=24,
            shift=(int(30 * np.sin(i / 7 + seed)), 0),
            blur=(i % 4) * 3,
            seed=seed * 1000 + i,
        )
        vw.write(img)
    vw.release()
    return path
