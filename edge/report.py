"""Annotated images and videos: boxes with unit, grade and confidence, and the frame score.

Tables are written by :mod:`edge.records` (the one frame record and its writers).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from edge.results import FrameResult
from edge.scales import ScaleSpec

PALETTE_BGR = [(60, 60, 230), (60, 200, 60), (230, 120, 40), (40, 200, 230), (200, 60, 200), (200, 200, 60)]


def annotate(image: np.ndarray, result: FrameResult, spec: ScaleSpec, title: str = "") -> np.ndarray:
    """Draw boxes (unit, argmax grade, confidence; selected boxes thick) and the frame score.

    Args:
        image: BGR uint8 frame (not modified).
        result: Its scoring.
        spec: The scale.
        title: Text for the banner (e.g. the file name).

    Returns:
        A new annotated BGR image.
    """
    out = image.copy()
    h, w = out.shape[:2]
    fs = max(0.4, min(w, h) / 900)
    th = max(1, round(fs * 2))
    d = result.detections
    sel = set(result.selected.tolist())
    arg = d.argmax_grade
    exp = d.expected_grade
    for i in range(len(d)):
        u = int(d.unit[i])
        colour = PALETTE_BGR[u % len(PALETTE_BGR)]
        x1, y1, x2, y2 = (round(float(v)) for v in d.xyxy[i])
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, th * (2 if i in sel else 1))
        unit = spec.units[u]
        grade = unit.grade_names[int(arg[i])] if unit.grade_names else str(int(arg[i]))
        label = f"{unit.name} {grade} ({exp[i]:.2f}) {d.confidence[i]:.2f}"
        (tw, tth), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, fs, 1)
        ty = max(y1, tth + 4)
        cv2.rectangle(out, (x1, ty - tth - 4), (x1 + tw + 2, ty), colour, -1)
        cv2.putText(
            out, label, (x1 + 1, ty - 3), cv2.FONT_HERSHEY_SIMPLEX, fs, (255, 255, 255), 1, cv2.LINE_AA
        )
    if result.scored:
        banner = f"{spec.score_name} {result.score:.2f}"
    else:
        banner = f"not scored: {result.abstained}"
    if result.quality is not None:
        banner += f" | quality {result.quality:.2f}"
    if title:
        banner = f"{title} | {banner}"
    (tw, tth), _ = cv2.getTextSize(banner, cv2.FONT_HERSHEY_SIMPLEX, fs, 1)
    cv2.rectangle(out, (0, 0), (min(w, tw + 8), tth + 10), (0, 0, 0), -1)
    cv2.putText(out, banner, (4, tth + 4), cv2.FONT_HERSHEY_SIMPLEX, fs, (255, 255, 255), 1, cv2.LINE_AA)
    return out


class AnnotatedVideo:
    """Writes annotated frames to an MP4 (``mp4v``); frame size fixed by the first frame."""

    def __init__(self, path: str | Path, fps: float) -> None:
        self.path = Path(path)
        self.fps = max(float(fps), 0.1)
        self._w: cv2.VideoWriter | None = None
        self._size: tuple[int, int] | None = None

    def write(self, frame: np.ndarray) -> None:
        """Add a frame (resized to the first frame's size if it differs)."""
        if self._w is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._size = (frame.shape[1], frame.shape[0])
            self._w = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, self._size)
            if not self._w.isOpened():
                raise OSError(f"{self.path}: cannot open a video writer (mp4v)")
        if (frame.shape[1], frame.shape[0]) != self._size:
            frame = cv2.resize(frame, self._size)
        self._w.write(frame)

    def close(self) -> None:
        """Finish the file."""
        if self._w is not None:
            self._w.release()
            self._w = None
