"""Grade dataset: grimace labels (with grades) and teacher soft targets through ultralytics' pipeline.

Soft-target format (written by ``grimace distill annotate``)
-------------------------------------------------------------
Beside ``labels/<split>/<stem>.txt`` lives ``soft/<split>/<stem>.txt`` (same rule as images → labels,
with ``soft`` in place of ``labels``). It has **one line per label line, in the same order**: ``ng``
space-separated probabilities of the teacher's grade distribution for that box (levels a unit does not
have are 0; the valid levels sum to 1), or the single token ``-`` when the box has no soft target. A
label file without a soft file simply has no soft targets. ``ng`` is the scale's ``ng``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edge.scales import ScaleSpec
from train.data.format import LabelError, image_to_label_path, read_labels
from train.fused import ultra_compat

NO_SOFT = "-"


def image_to_soft_path(image: str | Path) -> Path:
    """``.../images/<split>/x.png`` -> ``.../soft/<split>/x.txt``."""
    return image_to_label_path(image, folder="soft")


def write_soft(path: str | Path, soft: np.ndarray | list[np.ndarray | None]) -> None:
    """Write a soft-target file: one line per box, ``ng`` probabilities or ``-``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for row in soft:
        if row is None or np.any(np.asarray(row) < 0):
            lines.append(NO_SOFT)
        else:
            lines.append(" ".join(f"{float(v):.6f}" for v in np.asarray(row).ravel()))
    path.write_text("".join(line + "\n" for line in lines))


def read_soft(path: str | Path, ng: int, n_boxes: int) -> np.ndarray:
    """Read a soft-target file into ``(n_boxes, ng)``; rows without a target are -1.

    Raises:
        LabelError: Wrong line count or a malformed line (message names ``file:line``).
    """
    path = Path(path)
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    if len(lines) != n_boxes:
        raise LabelError(f"{path}: {len(lines)} soft-target lines but the label file has {n_boxes} boxes")
    out = np.full((n_boxes, ng), -1.0, np.float32)
    for i, ln in enumerate(lines):
        if ln.strip() == NO_SOFT:
            continue
        try:
            vals = np.array([float(v) for v in ln.split()], np.float32)
        except ValueError:
            raise LabelError(f"{path}:{i + 1}: not numbers: {ln!r}") from None
        if vals.size != ng or np.any(vals < 0) or not 0.99 <= vals.sum() <= 1.01:
            raise LabelError(f"{path}:{i + 1}: expected {ng} probabilities summing to 1, got {ln!r}")
        out[i] = vals
    return out


def load_grade_labels(
    image: str | Path, spec: ScaleSpec
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Boxes, units, grades and soft targets of one image.

    Returns:
        ``bboxes (n, 4)`` normalised cx cy w h, ``units (n,)``, ``grades (n,)`` (-1 ungraded),
        ``soft (n, ng)`` (-1 rows where none). A missing label file means no boxes.
    """
    lp = image_to_label_path(image)
    boxes = read_labels(lp, spec) if lp.exists() else []
    n = len(boxes)
    bboxes = np.array([[b.cx, b.cy, b.w, b.h] for b in boxes], np.float32).reshape(n, 4)
    units = np.array([b.unit for b in boxes], np.float32)
    grades = np.array([-1 if b.grade is None else b.grade for b in boxes], np.float32)
    sp = image_to_soft_path(image)
    soft = read_soft(sp, spec.ng, n) if sp.exists() else np.full((n, spec.ng), -1.0, np.float32)
    return bboxes, units, grades, soft


def _grade_dataset_class() -> type:
    """Build the ``YOLODataset`` subclass lazily (ultralytics imported only when training)."""
    from PIL import Image
    from ultralytics.data.dataset import YOLODataset

    class GradeDataset(YOLODataset):
        """``YOLODataset`` reading grimace labels + soft targets; yields ``grade`` and ``soft`` per box.

        Args:
            spec: The dataset's scale.
            *args, **kwargs: As for ``YOLODataset``.
        """

        def __init__(self, *args: Any, spec: ScaleSpec, **kwargs: Any) -> None:
            self.spec = spec
            super().__init__(*args, **kwargs)

        def get_labels(self) -> list[dict[str, Any]]:
            """Labels from grimace label files (6 columns) and soft files; no ultralytics cache."""
            labels = []
            for f in self.im_files:
                bboxes, units, grades, soft = load_grade_labels(f, self.spec)
                with Image.open(f) as im:
                    w, h = im.size
                labels.append(
                    {
                        "im_file": f,
                        "shape": (h, w),
                        "cls": ultra_compat.pack_cls(units, grades, soft),
                        "bboxes": bboxes,
                        "segments": [],
                        "keypoints": None,
                        "normalized": True,
                        "bbox_format": "xywh",
                    }
                )
            if not labels:
                raise LabelError(f"no images found for {self.img_path}")
            return labels

        def build_transforms(self, hyp: Any = None) -> Any:
            """ultralytics' transforms, minus cls-flattening ones, plus the grade-field split."""
            t = ultra_compat.strip_cls_reshaping_transforms(super().build_transforms(hyp))
            t.append(ultra_compat.SplitGradeFields(self.spec.ng))
            return t

        @staticmethod
        def collate_fn(batch: list[dict]) -> dict:
            """ultralytics collate plus ``grade``/``soft`` concatenation."""
            return ultra_compat.collate_grade_fields(batch, YOLODataset.collate_fn(batch))

    return GradeDataset


_CLASS: type | None = None


def grade_dataset_class() -> type:
    """The ``GradeDataset`` class (a ``YOLODataset`` subclass)."""
    global _CLASS
    if _CLASS is None:
        _CLASS = _grade_dataset_class()
    return _CLASS


def grade_class_weights(labels: list[dict[str, Any]], spec: ScaleSpec, power: float = 0.5) -> np.ndarray:
    """Class-imbalance weights ``(nc, ng)`` for the grade loss: ``count[u, g] ** -power``.

    Counts combine human grades and teacher argmax on boxes without a human grade. Within each unit
    the weights are normalised to mean 1 over that unit's levels that occur; missing levels get 1.
    """
    counts = np.zeros((spec.nc, spec.ng), np.float64)
    for lb in labels:
        c = np.asarray(lb["cls"])
        if c.size == 0:
            continue
        for row in c.reshape(len(c), -1):
            u, g = int(row[0]), int(row[1])
            if g < 0 and row.shape[0] > 2 and np.all(row[2:] >= 0):
                g = int(np.argmax(row[2:]))
            if g >= 0:
                counts[u, g] += 1
    w = np.ones_like(counts)
    if power <= 0:
        return w.astype(np.float32)
    for u in range(spec.nc):
        present = (counts[u] > 0) & spec.grade_mask[u]
        if present.any():
            wu = counts[u, present] ** -power
            w[u, present] = wu / wu.mean()
    return w.astype(np.float32)
