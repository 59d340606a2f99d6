"""Tiny drawn RGS dataset for the teacher tests (cv2 shapes; grades change the shapes visibly).

Eyes are ellipses that narrow with orbital tightening, ears turn from round to pointed with ear
changes, the nose flattens with nose flattening. A plain background image has no face at all.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from edge.scales import RGS
from train.data.format import LabelBox, write_data_yaml, write_labels


def draw_face(
    size: int, grades: dict[str, int], rng: np.random.Generator
) -> tuple[np.ndarray, list[LabelBox]]:
    """One drawn face and its labels (RGS unit indices: eye 0, ear 1, nose 2)."""
    img = np.full((size, size, 3), rng.integers(40, 90), np.uint8)
    img = (img + rng.integers(0, 20, img.shape)).astype(np.uint8)
    s = size / 128.0
    cx, cy = size / 2 + rng.uniform(-8, 8) * s, size / 2 + rng.uniform(-4, 8) * s
    cv2.ellipse(img, (int(cx), int(cy)), (int(38 * s), int(44 * s)), 0, 0, 360, (200, 200, 210), -1)
    boxes: list[LabelBox] = []

    def add(unit: int, x1: float, y1: float, x2: float, y2: float, g: int) -> None:
        boxes.append(LabelBox(unit, (x1 + x2) / 2 / size, (y1 + y2) / 2 / size, (x2 - x1) / size,
                              (y2 - y1) / size, g))

    g_eye, g_ear, g_nose = grades["eye"], grades["ear"], grades["nose"]
    for side in (-1, 1):
        ex, ey = cx + side * 17 * s, cy - 10 * s
        ry = (7, 4, 1.5)[g_eye] * s
        cv2.ellipse(img, (int(ex), int(ey)), (int(8 * s), max(1, int(ry))), 0, 0, 360, (20, 20, 20), -1)
        add(0, ex - 11 * s, ey - 10 * s, ex + 11 * s, ey + 10 * s, g_eye)
        ax, ay = cx + side * 30 * s, cy - 40 * s
        if g_ear == 0:
            cv2.circle(img, (int(ax), int(ay)), int(14 * s), (150, 120, 200), -1)
        else:
            w = (11, 6)[g_ear - 1] * s
            pts = np.array([[ax - w, ay + 13 * s], [ax + w, ay + 13 * s], [ax, ay - 15 * s]], np.int32)
            cv2.fillPoly(img, [pts], (150, 120, 200))
        add(1, ax - 16 * s, ay - 16 * s, ax + 16 * s, ay + 16 * s, g_ear)
    nx, ny = cx, cy + 22 * s
    rh = (10, 6, 3)[g_nose] * s
    cv2.ellipse(img, (int(nx), int(ny)), (int(12 * s), max(1, int(rh))), 0, 0, 360, (90, 60, 160), -1)
    add(2, nx - 15 * s, ny - 13 * s, nx + 15 * s, ny + 13 * s, g_nose)
    return img, boxes


def make_dataset(root: Path, n: dict[str, int], size: int = 128, seed: int = 0, blank: int = 1) -> Path:
    """Write a grimace dataset with ``n[split]`` faces per split (+ ``blank`` faceless images in test)."""
    rng = np.random.default_rng(seed)
    for split, count in n.items():
        for i in range(count):
            level = i % 3  # balanced: level 0 frames are 'no pain', 1 and 2 'pain'
            jitter = rng.random() < 0.3
            grades = {
                u: int(np.clip(level + (rng.integers(-1, 2) if jitter else 0), 0, 2))
                for u in ("eye", "ear", "nose")
            }
            img, boxes = draw_face(size, grades, rng)
            name = f"{split}_{i:04d}"
            (root / "images" / split).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / "images" / split / f"{name}.png"), img)
            write_labels(root / "labels" / split / f"{name}.txt", boxes)
    for i in range(blank):
        img = np.full((size, size, 3), 60, np.uint8)
        (root / "images" / "test").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "images" / "test" / f"blank_{i}.png"), img)
        write_labels(root / "labels" / "test" / f"blank_{i}.txt", [])
    write_data_yaml(root, RGS, {s: f"images/{s}" for s in n})
    return root
