"""Teacher training data cut from a grimace dataset: unit crops with grades, and frame-level pain labels."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from edge.scales import ScaleSpec
from train.data.format import LabelBox, LabelError, image_to_label_path, read_labels
from train.teacher.vit import Preprocess, crop_box

NO_PAIN_MAX = 0.33
PAIN_MIN = 1.0


@dataclass
class CropSet:
    """Graded crops of one unit.

    Attributes:
        images: RGB uint8 ``(N, S, S, 3)``.
        grades: int64 ``(N,)``.
        sources: Image path of each crop.
    """

    images: np.ndarray
    grades: np.ndarray
    sources: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.grades)


def frame_rgs(boxes: list[LabelBox], spec: ScaleSpec) -> float | None:
    """Frame score from labelled grades: mean over units of the unit's mean grade (graded boxes only).

    Returns:
        The score, or ``None`` when no box is graded.
    """
    means = []
    for i in range(spec.nc):
        g = [b.grade for b in boxes if b.unit == i and b.grade is not None]
        if g:
            means.append(float(np.mean(g)))
    return float(np.mean(means)) if means else None


def pain_label(rgs: float | None, no_pain_max: float = NO_PAIN_MAX, pain_min: float = PAIN_MIN) -> int | None:
    """The seed's binary label: RGS <= 0.33 -> 0 (no pain), RGS >= 1 -> 1 (pain), else ``None``."""
    if rgs is None:
        return None
    if rgs <= no_pain_max + 1e-9:
        return 0
    if rgs >= pain_min - 1e-9:
        return 1
    return None


def _read(img_path: Path, spec: ScaleSpec, errors: list[str]) -> tuple[np.ndarray, list[LabelBox]] | None:
    img = cv2.imread(str(img_path), cv2.IMREAD_COLOR)
    if img is None:
        errors.append(f"{img_path}: cannot read image (skipped)")
        return None
    lab = image_to_label_path(img_path)
    try:
        boxes = read_labels(lab, spec) if lab.exists() else []
    except LabelError as e:
        errors.append(f"{e} (image skipped)")
        return None
    return img, boxes


def collect_crops(
    images: list[Path], spec: ScaleSpec, prep: Preprocess, desc: str = "crops"
) -> tuple[dict[str, CropSet], list[str]]:
    """Cut every graded labelled box (with ``prep.margin`` context) and resize it.

    Args:
        images: Image paths (labels found by the ultralytics path rule).
        spec: Dataset scale.
        prep: Crop size and margin.
        desc: Progress label.

    Returns:
        ``({unit name: CropSet}, errors)``; units without graded boxes are absent; unreadable
        images and bad label files are reported in ``errors`` and skipped.
    """
    acc: dict[int, tuple[list[np.ndarray], list[int], list[str]]] = {}
    errors: list[str] = []
    for p in tqdm(images, desc=desc, leave=False, disable=None):
        got = _read(p, spec, errors)
        if got is None:
            continue
        img, boxes = got
        h, w = img.shape[:2]
        for b in boxes:
            if b.grade is None:
                continue
            crop = crop_box(img, b.xyxy(w, h), prep.margin)
            ims, gs, srcs = acc.setdefault(b.unit, ([], [], []))
            ims.append(prep.resize(crop))
            gs.append(b.grade)
            srcs.append(str(p))
    out = {}
    for u, (ims, gs, srcs) in sorted(acc.items()):
        out[spec.units[u].name] = CropSet(np.stack(ims), np.asarray(gs, np.int64), srcs)
    return out, errors


def collect_frames(
    images: list[Path], spec: ScaleSpec, prep: Preprocess, desc: str = "frames"
) -> tuple[CropSet, list[str]]:
    """Frames with the seed's binary pain label (frames between the thresholds excluded).

    With ``prep.region == "face"`` each frame is cut to the square around its labelled unit boxes
    (:func:`train.teacher.pain.face_square` with ``prep.margin``), as the pain classifier sees it at
    inference; otherwise the whole frame is used.

    Returns:
        ``(CropSet with grades 0/1, errors)``.
    """
    from train.teacher.pain import crop_square, face_square

    ims, ys, srcs = [], [], []
    errors: list[str] = []
    for p in tqdm(images, desc=desc, leave=False, disable=None):
        got = _read(p, spec, errors)
        if got is None:
            continue
        img, boxes = got
        y = pain_label(frame_rgs(boxes, spec))
        if y is None:
            continue
        if prep.region == "face":
            h, w = img.shape[:2]
            square = face_square(np.array([b.xyxy(w, h) for b in boxes]), prep.margin)
            if square is None:
                continue
            img = crop_square(img, square)
        ims.append(prep.resize(img))
        ys.append(y)
        srcs.append(str(p))
    size = prep.size
    arr = np.stack(ims) if ims else np.zeros((0, size, size, 3), np.uint8)
    return CropSet(arr, np.asarray(ys, np.int64), srcs), errors
