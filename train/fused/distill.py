"""Distillation data: the teacher's soft grades written beside the labels, so training never runs it.

``annotate(teacher, data_dir, out_dir, unlabelled=..., conf=0.5)`` copies a grimace dataset to
``out_dir`` and adds, for every split:

* ``soft/<split>/<stem>.txt`` — one line per label line (same order): the teacher's grade distribution
  for that box (``teacher.grade_boxes`` on the labelled box), or ``-`` when the teacher has no grader
  for the unit. See :mod:`train.fused.data` for the format.
* for each unlabelled image or sampled video frame: the image under ``images/train/`` named
  ``unl_<stem>.png`` (images) or ``unl_<stem>_<frame>.png`` (video frames; a repeated name gets a
  ``_2``, ``_3``… suffix), a label file with the teacher's boxes of confidence ``>= conf``
  (grade ``-1``: no human grade) and a soft file with the teacher's grade distributions.

Unlabelled inputs are read by ``edge.sources`` (the one input reader): folders are expanded the same way
and videos sampled at ``fps`` frames per second of video time, so ``--fps`` picks the same frames as
``grimace score``. Unreadable inputs are reported in :attr:`DistillReport.skipped`.

``data.yaml`` is rewritten with the same scale plus a ``distill`` block (teacher run, threshold,
device, counts).
The teacher is any object with ``spec``, ``predict(images_bgr) -> list[Detections]`` and
``grade_boxes(image_bgr, boxes_xyxy, units) -> (N, ng)`` — e.g. ``train.teacher.load_teacher(run)``.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
from tqdm import tqdm

from edge.results import Detections
from edge.scales import ScaleSpec
from edge.sources import Frame, ItemError, SourceError, iter_inputs, read_image
from train.data.format import (
    LabelBox,
    image_to_label_path,
    load_dataset,
    read_labels,
    write_data_yaml,
    write_labels,
)
from train.fused.data import image_to_soft_path, write_soft


class TeacherLike(Protocol):
    """What distillation needs from a teacher."""

    spec: ScaleSpec

    def predict(self, images: list[np.ndarray]) -> list[Detections]: ...

    def grade_boxes(self, image: np.ndarray, boxes_xyxy: np.ndarray, units: np.ndarray) -> np.ndarray: ...


@dataclass
class DistillReport:
    """What :func:`annotate` wrote."""

    labelled_images: int = 0
    labelled_boxes: int = 0
    soft_boxes: int = 0
    unlabelled_frames: int = 0
    pseudo_boxes: int = 0
    skipped: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _soft_rows(probs: np.ndarray, spec: ScaleSpec, units: np.ndarray) -> list[np.ndarray | None]:
    """Teacher rows -> soft rows (None where NaN / invalid), masked levels forced to 0, renormalised."""
    rows: list[np.ndarray | None] = []
    mask = spec.grade_mask
    for p, u in zip(np.asarray(probs, np.float64).reshape(len(units), spec.ng), units, strict=False):
        if not np.all(np.isfinite(p)) or np.any(p < 0):
            rows.append(None)
            continue
        q = np.where(mask[int(u)], p, 0.0)
        s = q.sum()
        rows.append(q / s if s > 0 else None)
    return rows


def iter_unlabelled(
    paths: list[Path], fps: float = 1.0, skipped: list[str] | None = None
) -> Iterator[tuple[str, np.ndarray]]:
    """Yield ``(name, bgr_image)`` for every image and sampled video frame under ``paths``.

    Frames come from ``edge.sources.iter_inputs`` (videos sampled at ``fps`` per second of video
    time, as ``grimace score`` samples them). Names are ``<stem>`` for images and
    ``<stem>_<frame index:06d>`` for video frames, made unique with a ``_2``, ``_3``… suffix.

    Args:
        paths: Image files, folders and videos.
        fps: Frames per second of video time (``> 0``).
        skipped: Receives ``"<file>: <what is wrong>"`` for each unreadable input.
    """
    used: dict[str, int] = {}
    for item in iter_inputs(paths, fps=fps):
        if isinstance(item, ItemError):
            if skipped is not None:
                skipped.append(str(item))
            continue
        frame: Frame = item
        stem = Path(frame.source).stem
        name = stem if frame.meta.get("kind") == "image" else f"{stem}_{frame.index:06d}"
        used[name] = used.get(name, 0) + 1
        yield (name if used[name] == 1 else f"{name}_{used[name]}"), frame.image


def place_teacher(teacher: Any, device: Any, explicit: bool = True) -> tuple[Any, str]:
    """Put the teacher on ``device`` when it can move (``teacher.to(device)``).

    Args:
        teacher: The teacher.
        device: The resolved torch device.
        explicit: The user named the device (not ``auto``): a teacher that cannot move there is an
            error instead of a note and the CPU.

    Returns:
        ``(device used, note)``; ``note`` is empty unless the teacher stayed on the CPU.

    Raises:
        ValueError: ``explicit`` and the teacher cannot run on ``device``.
    """
    import torch

    device = torch.device(device)
    mover = getattr(teacher, "to", None)
    if callable(mover):
        mover(device)
        return device, ""
    if device.type == "cpu":
        return device, ""
    msg = f"this teacher ({type(teacher).__name__}) has no .to(device) and runs on the CPU only"
    if explicit:
        raise ValueError(f"--device {device}: {msg}; use --device cpu or auto")
    return torch.device("cpu"), f"{msg} (auto picked {device})"


def annotate(
    teacher: TeacherLike,
    data_dir: str | Path,
    out_dir: str | Path,
    unlabelled: list[str | Path] | None = None,
    conf: float = 0.5,
    fps: float = 1.0,
    teacher_name: str = "",
    device: Any = "cpu",
) -> DistillReport:
    """Write a distillation dataset (see module docstring).

    Args:
        teacher: Object with ``spec``, ``predict`` and ``grade_boxes``.
        data_dir: Source grimace dataset (``data.yaml``).
        out_dir: Output dataset folder (must not be ``data_dir``).
        unlabelled: Image files, folders or videos to pseudo-label.
        conf: Teacher confidence threshold for pseudo-label boxes.
        fps: Frames per second of video time sampled from videos (``> 0``).
        teacher_name: Recorded in ``data.yaml`` (e.g. the teacher run folder).
        device: Where the teacher runs (recorded in ``data.yaml``; placing it is the caller's job).

    Returns:
        A :class:`DistillReport`.
    """
    from train.device import describe_device

    if not (fps > 0 and np.isfinite(fps)):
        raise ValueError(f"fps must be a finite number > 0, got {fps}")
    info = load_dataset(data_dir)
    spec = info.spec
    spec.check_compatible(teacher.spec, what="teacher")
    out = Path(out_dir)
    if out.resolve() == info.root.resolve():
        raise ValueError("--out must differ from --data (the source dataset is not modified)")
    rep = DistillReport()
    splits: dict[str, str] = {}
    for split, folder in info.splits.items():
        splits[split] = f"images/{split}"
        for img_path in tqdm(info.images(split), desc=f"distill {split}", unit="img"):
            rel = img_path.relative_to(folder)
            dst_img = out / "images" / split / rel
            dst_img.parent.mkdir(parents=True, exist_ok=True)
            try:
                lp = image_to_label_path(img_path)
                boxes = read_labels(lp, spec) if lp.exists() else []
                img = read_image(img_path)
            except (ValueError, SourceError) as e:
                rep.skipped.append(str(e))
                continue
            shutil.copy2(img_path, dst_img)
            write_labels(image_to_label_path(dst_img), boxes)
            h, w = img.shape[:2]
            units = np.array([b.unit for b in boxes], np.int64)
            xyxy = np.array(
                [
                    [(b.cx - b.w / 2) * w, (b.cy - b.h / 2) * h, (b.cx + b.w / 2) * w, (b.cy + b.h / 2) * h]
                    for b in boxes
                ],
                np.float32,
            ).reshape(-1, 4)
            probs = teacher.grade_boxes(img, xyxy, units) if len(boxes) else np.zeros((0, spec.ng))
            rows = _soft_rows(probs, spec, units)
            write_soft(image_to_soft_path(dst_img), [r if r is not None else None for r in rows])
            rep.labelled_images += 1
            rep.labelled_boxes += len(boxes)
            rep.soft_boxes += sum(r is not None for r in rows)
    if unlabelled:
        splits.setdefault("train", "images/train")
        frames = iter_unlabelled([Path(p) for p in unlabelled], fps, rep.skipped)
        for name, img in tqdm(frames, desc="pseudo-label", unit="frame"):
            det = teacher.predict([img])[0]
            keep = det.confidence >= conf
            det = det[np.flatnonzero(keep)]
            h, w = img.shape[:2]
            rows = _soft_rows(det.grade_probs, spec, det.unit)
            boxes, soft = [], []
            for b, u, r in zip(det.xyxy, det.unit, rows, strict=False):
                x1, y1, x2, y2 = np.clip(b, 0, [w, h, w, h])
                if x2 <= x1 or y2 <= y1:
                    continue
                boxes.append(
                    LabelBox(
                        int(u), (x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h, grade=None
                    )
                )
                soft.append(r)
            dst = out / "images" / "train" / f"unl_{name}.png"
            dst.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(dst), img)
            write_labels(image_to_label_path(dst), boxes)
            write_soft(image_to_soft_path(dst), soft)
            rep.unlabelled_frames += 1
            rep.pseudo_boxes += len(boxes)
            rep.soft_boxes += sum(r is not None for r in soft)
    extra = {
        k: v
        for k, v in info.raw.items()
        if k not in ("path", "train", "val", "test", "nc", "names", "scale", "grimace_format")
    }
    extra["distill"] = {"teacher": teacher_name, "conf": conf, "fps": fps, **rep.to_dict()}
    extra["distill"]["device"] = {  # plain types for YAML (torch's version string is a str subclass)
        k: v if v is None or type(v) in (bool, int, float) else str(v)
        for k, v in describe_device(device).items()
    }
    extra["distill"]["skipped"] = len(rep.skipped)
    write_data_yaml(out, spec, splits, extra)
    if info.subjects_csv.exists():
        shutil.copy2(info.subjects_csv, out / "subjects.csv")
    return rep
