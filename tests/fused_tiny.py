"""Tiny hand-made grimace dataset and teacher for the fused-model tests (no downloads, seconds to make).

Each image is a grey face with units drawn as filled ellipses; a unit's grade sets its brightness,
so grades are visible to a detector. :class:`TinyTeacher` implements the teacher interface
(``spec``, ``predict``, ``grade_boxes``) by reading that brightness back.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from edge.results import Detections
from edge.scales import RGS, ScaleSpec
from train.data.format import LabelBox, write_data_yaml, write_labels

UNIT_COLORS = [(200, 80, 80), (80, 200, 80), (80, 80, 200), (200, 200, 80)]


def make_tiny_dataset(
    root: Path,
    n_train: int = 8,
    n_val: int = 4,
    size: int = 96,
    seed: int = 0,
    spec: ScaleSpec = RGS,
    unlabelled: int = 0,
) -> Path:
    """Write a tiny dataset (``images/{train,val}``, ``labels/...``, ``data.yaml``); returns ``root``."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val), ("unlabelled", unlabelled)):
        for k in range(n):
            img = np.full((size, size, 3), 110, np.uint8)
            boxes = []
            for u in range(spec.nc):
                g = int(rng.integers(0, spec.units[u].grades))
                w, h = rng.uniform(0.15, 0.25, 2)
                cx = 0.15 + 0.7 * (u % 2) + rng.uniform(-0.05, 0.05)
                cy = 0.2 + 0.6 * (u // 2) + rng.uniform(-0.05, 0.05)
                color = tuple(int(c * (0.5 + 0.25 * g)) for c in UNIT_COLORS[u % 4])
                cv2.ellipse(
                    img,
                    (int(cx * size), int(cy * size)),
                    (int(w * size / 2), int(h * size / 2)),
                    0,
                    0,
                    360,
                    color,
                    -1,
                )
                boxes.append(LabelBox(u, cx, cy, w, h, grade=g if (k + u) % 4 != 3 else None))
            d = "train" if split == "unlabelled" else split
            if split == "unlabelled":
                out = root / "unlabelled" / f"u{k:03d}.png"
                out.parent.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(out), img)
                continue
            ip = root / "images" / d / f"{split}{k:03d}.png"
            ip.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(ip), img)
            write_labels(root / "labels" / d / f"{split}{k:03d}.txt", boxes)
    blank = root / "images" / "train" / "blank.png"  # a background image (no boxes, empty label file)
    cv2.imwrite(str(blank), np.full((size, size, 3), 110, np.uint8))
    write_labels(root / "labels" / "train" / "blank.txt", [])
    write_data_yaml(root, spec, {"train": "images/train", "val": "images/val"})
    return root


class TinyTeacher:
    """A teacher for tests: boxes by colour, grades by brightness (soft, not one-hot)."""

    def __init__(self, spec: ScaleSpec = RGS) -> None:
        self.spec = spec

    def _grade_probs(self, crop: np.ndarray, unit: int) -> np.ndarray:
        base = np.array(UNIT_COLORS[unit % 4], float)
        c = crop.reshape(-1, 3).astype(float)
        c = c[np.abs(c - 110).sum(1) > 30]
        level = 0.0 if c.size == 0 else float((c.mean(0) / base).mean())
        g = np.clip((level - 0.5) / 0.25, 0, self.spec.units[unit].grades - 1)
        n = self.spec.units[unit].grades
        logits = -((np.arange(n) - g) ** 2) * 4.0
        p = np.exp(logits - logits.max())
        out = np.zeros(self.spec.ng, np.float32)
        out[:n] = p / p.sum()
        return out

    def predict(self, images: list[np.ndarray]) -> list[Detections]:
        """Boxes from colour masks (one per unit colour present)."""
        res = []
        for img in images:
            xyxy, unit, conf, probs = [], [], [], []
            for u in range(self.spec.nc):
                base = np.array(UNIT_COLORS[u % 4], float)
                norm = base / np.linalg.norm(base)
                pix = img.astype(float)
                cos = (pix @ norm) / (np.linalg.norm(pix, axis=2) + 1e-6)
                mask = (cos > 0.97) & (np.abs(pix - 110).sum(2) > 30)
                ys, xs = np.nonzero(mask)
                if len(xs) < 5:
                    continue
                b = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
                xyxy.append(b)
                unit.append(u)
                conf.append(0.9)
                probs.append(self._grade_probs(img[b[1] : b[3], b[0] : b[2]], u))
            n = len(unit)
            res.append(
                Detections(
                    np.array(xyxy, np.float32).reshape(n, 4),
                    np.array(unit, np.int64),
                    np.array(conf, np.float32),
                    np.array(probs, np.float32).reshape(n, self.spec.ng),
                )
            )
        return res

    def grade_boxes(self, image: np.ndarray, boxes_xyxy: np.ndarray, units: np.ndarray) -> np.ndarray:
        """``(N, ng)`` soft grades of the given boxes."""
        out = []
        for b, u in zip(np.asarray(boxes_xyxy).astype(int), units, strict=False):
            out.append(self._grade_probs(image[max(b[1], 0) : b[3], max(b[0], 0) : b[2]], int(u)))
        return np.array(out, np.float32).reshape(len(out), self.spec.ng)
