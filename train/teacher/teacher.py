"""The two-stage teacher: run folder, loading, inference (``Teacher``) and end-to-end training.

A teacher run folder holds everything, weights-only::

    RUN/
      manifest.json          # versions, data hash, settings, metrics, detector class -> unit map
      scale.json             # the scale spec (ScaleSpec.to_dict)
      detector.safetensors   # YOLO state dict (lowest-val-loss epoch)
      detector.json          # its architecture, class names, input size
      graders/<unit>/        # ViTForImageClassification.save_pretrained (safetensors) + preprocess.json
      pain/                  # optional whole-face binary pain ViT, same format
      work/                  # ultralytics' own training output (may be deleted)

``load_teacher(RUN)`` returns a :class:`Teacher` whose :meth:`Teacher.predict` gives
:class:`edge.results.Detections` per image (boxes in original pixels, unit index in scale order, detector
confidence, grader softmax per box) and whose :meth:`Teacher.grade_boxes` gives soft grades for given
boxes - the two calls the fused-model distillation uses.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import platform
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.results import Detections, FrameResult
from edge.scales import ScaleSpec, load_scale
from edge.scoring import score_frame
from train.teacher.detector import Detector
from train.teacher.vit import ImageClassifier, crop_box

MANIFEST = "manifest.json"
SCALE_FILE = "scale.json"
GRADERS_DIR = "graders"
PAIN_DIR = "pain"
TEACHER_FORMAT = 1


class TeacherError(RuntimeError):
    """A teacher run folder is missing, incomplete or inconsistent."""


def versions() -> dict[str, str]:
    """Versions of the libraries that shape a teacher's numbers."""
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("grimace-edge", "torch", "ultralytics", "transformers", "numpy", "opencv-python"):
        with contextlib.suppress(md.PackageNotFoundError):
            out[pkg] = md.version(pkg)
    import edge

    out.setdefault("grimace-edge", edge.__version__)
    return out


def dataset_hash(root: str | Path) -> str:
    """Hash of a dataset's ``data.yaml``, label contents and image names/sizes (16 hex digits)."""
    root = Path(root)
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if not p.is_file() or "cache" in p.suffix:
            continue
        rel = p.relative_to(root).as_posix()
        h.update(rel.encode())
        if p.suffix in (".txt", ".yaml", ".csv"):
            h.update(p.read_bytes())
        else:
            h.update(str(p.stat().st_size).encode())
    return h.hexdigest()[:16]


@dataclass
class Teacher:
    """A loaded two-stage teacher.

    Attributes:
        spec: The scale; ``Detections.unit`` indexes ``spec.units``.
        detector: The YOLO unit detector.
        graders: One classifier per unit name (units without a grader are not reported).
        pain: Optional whole-face pain classifier (class 1 = pain).
        manifest: The run's manifest.
        run_dir: Folder it was loaded from.
    """

    spec: ScaleSpec
    detector: Detector
    graders: dict[str, ImageClassifier]
    pain: ImageClassifier | None = None
    manifest: dict[str, Any] = field(default_factory=dict)
    run_dir: Path | None = None

    def __post_init__(self) -> None:
        unknown = [n for n in self.detector.names if n not in self.spec.unit_names]
        if unknown:
            raise TeacherError(
                f"detector classes {unknown} are not units of scale {self.spec.name!r} "
                f"({self.spec.unit_names})"
            )
        self.det_to_unit = np.array([self.spec.unit_index(n) for n in self.detector.names], np.int64)
        for name, g in self.graders.items():
            u = self.spec.unit(name)
            if g.num_labels != u.grades:
                raise TeacherError(
                    f"grader {name!r} has {g.num_labels} classes but unit {name!r} of scale "
                    f"{self.spec.name!r} has {u.grades} grades"
                )
        if self.pain is not None and self.pain.prep.region == "box":
            raise TeacherError("the pain classifier must look at the face or the whole image, not a unit box")
        self.graded_units = np.array(
            [i for i, u in enumerate(self.spec.units) if u.name in self.graders], np.int64
        )
        ungraded = [n for n in self.detector.names if n not in self.graders]
        if ungraded:
            warnings.warn(
                f"teacher has no grader for detected unit(s) {ungraded}; their boxes are dropped",
                stacklevel=3,
            )

    @property
    def device(self) -> Any:
        """The torch device the detector (and the graders) run on."""
        return self.detector.device

    # ---------------------------------------------------------------------------------- grading
    def has_grader(self, unit: int | str) -> bool:
        """Whether a unit (index or name) has a grader."""
        return self.spec.unit(unit).name in self.graders

    def _grade_groups(self, crops: list[np.ndarray], units: np.ndarray, batch: int) -> np.ndarray:
        out = np.full((len(crops), self.spec.ng), np.nan, np.float32)
        for u in np.unique(units):
            name = self.spec.units[int(u)].name
            g = self.graders.get(name)
            if g is None:
                continue
            idx = np.flatnonzero(units == u)
            probs = g.probs([crops[i] for i in idx], batch=batch)
            out[idx] = 0.0
            out[idx, : probs.shape[1]] = probs
        return out

    def grade_boxes(
        self,
        image: np.ndarray,
        boxes_xyxy: np.ndarray,
        units: Sequence[int] | Sequence[str] | np.ndarray,
        batch: int = 64,
    ) -> np.ndarray:
        """Soft grades for given boxes (e.g. labelled boxes, for distillation).

        Args:
            image: BGR uint8 ``(H, W, 3)``.
            boxes_xyxy: ``(N, 4)`` box corners in ``image`` pixels.
            units: Unit of each box, scale indices or names, ``(N,)``.
            batch: Grader batch size.

        Returns:
            float32 ``(N, spec.ng)``: the grader's softmax over the unit's grade levels (levels beyond
            a unit's grade count are 0). Rows of units without a grader are NaN (check
            :meth:`has_grader`).
        """
        boxes = np.asarray(boxes_xyxy, np.float32).reshape(-1, 4)
        u = np.array([self.spec.unit_index(x) if isinstance(x, str) else int(x) for x in units], np.int64)
        if len(u) != len(boxes):
            raise ValueError(f"grade_boxes: {len(boxes)} boxes but {len(u)} units")
        if len(u) and (u.min() < 0 or u.max() >= self.spec.nc):
            raise ValueError(f"grade_boxes: unit indices must lie in 0..{self.spec.nc - 1}")
        margins = {n: g.prep.margin for n, g in self.graders.items()}
        crops = [
            crop_box(image, b, margins.get(self.spec.units[int(k)].name, 0.0))
            for b, k in zip(boxes, u, strict=True)
        ]
        return self._grade_groups(crops, u, batch)

    # -------------------------------------------------------------------------------- detection
    def predict(
        self,
        images: list[np.ndarray],
        conf: float = 0.25,
        iou: float = 0.45,
        det_batch: int = 8,
        grade_batch: int = 64,
    ) -> list[Detections]:
        """Detect units and grade every box.

        Args:
            images: BGR uint8 images ``(H, W, 3)``.
            conf: Detector confidence threshold.
            iou: NMS IoU threshold.
            det_batch: Images per detector forward pass.
            grade_batch: Crops per grader forward pass (crops of all images are batched together).

        Returns:
            One :class:`Detections` per image: ``xyxy`` in original pixels, ``unit`` in scale order,
            detector ``confidence``, ``grade_probs`` ``(N, spec.ng)`` = grader softmax.
        """
        raw: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        for i in range(0, len(images), det_batch):
            raw.extend(self.detector(images[i : i + det_batch], conf=conf, iou=iou))
        crops: list[np.ndarray] = []
        units: list[int] = []
        owner: list[tuple[int, int]] = []
        kept: list[np.ndarray] = []
        for k, (xyxy, _c, cls) in enumerate(raw):
            unit = self.det_to_unit[cls] if len(cls) else np.zeros((0,), np.int64)
            keep = np.flatnonzero(np.isin(unit, self.graded_units))
            kept.append(keep)
            for j in keep:
                name = self.spec.units[int(unit[j])].name
                crops.append(crop_box(images[k], xyxy[j], self.graders[name].prep.margin))
                units.append(int(unit[j]))
                owner.append((k, j))
        probs = (
            self._grade_groups(crops, np.asarray(units, np.int64), grade_batch)
            if crops
            else np.zeros((0, self.spec.ng), np.float32)
        )
        out: list[Detections] = []
        pos = 0
        for (xyxy, c, cls), keep in zip(raw, kept, strict=True):
            n = len(keep)
            unit = self.det_to_unit[cls[keep]] if n else np.zeros((0,), np.int64)
            out.append(Detections(xyxy[keep], unit, c[keep], probs[pos : pos + n]))
            pos += n
        return out

    def score(
        self,
        images: list[np.ndarray],
        conf: float = 0.25,
        min_units: int = 1,
        sources: list[str] | None = None,
    ) -> list[FrameResult]:
        """:meth:`predict` then :func:`edge.scoring.score_frame` per image."""
        dets = self.predict(images, conf=conf)
        srcs = sources or [""] * len(images)
        return [
            score_frame(d, self.spec, min_units=min_units, source=s) for d, s in zip(dets, srcs, strict=True)
        ]

    def pain_probability(
        self, images: list[np.ndarray], boxes: list[np.ndarray] | None = None
    ) -> np.ndarray | None:
        """Whole-face pain probability per image, or ``None`` without a pain classifier.

        Args:
            images: BGR frames.
            boxes: Per frame, the ``(N, 4)`` unit boxes that locate the face (e.g. ``Detections.xyxy``
                from :meth:`predict`); detected here when not given. Unused by a classifier of whole
                frames (``region`` ``image``).

        Returns:
            float32 ``(len(images),)``; NaN for a frame in which no unit (so no face) was found.
        """
        from train.teacher.pain import crop_square, pain_region

        if self.pain is None:
            return None
        if boxes is None and self.pain.prep.region == "face":
            boxes = [d.xyxy for d in self.predict(images)]
        out = np.full(len(images), np.nan, np.float32)
        crops, idx = [], []
        for i, im in enumerate(images):
            region = pain_region(self.pain, im, None if boxes is None else boxes[i])
            if region is not None:
                crops.append(crop_square(im, region))
                idx.append(i)
        if crops:
            out[idx] = self.pain.probs(crops)[:, 1]
        return out


# -------------------------------------------------------------------------------- save / load
def save_teacher_parts(
    run_dir: str | Path,
    spec: ScaleSpec,
    graders: dict[str, ImageClassifier],
    pain: ImageClassifier | None,
    manifest: dict[str, Any],
) -> None:
    """Write scale, graders, pain classifier and manifest (the detector is written by its trainer)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / SCALE_FILE).write_text(json.dumps(spec.to_dict(), indent=1))
    for name, g in graders.items():
        g.save(run_dir / GRADERS_DIR / name, extra={"unit": name})
    if pain is not None:
        pain.save(run_dir / PAIN_DIR, extra={"task": "binary pain (1 = pain)"})
    manifest = {
        "format": TEACHER_FORMAT,
        "kind": "grimace-teacher",
        "scale": spec.name,
        "scale_fingerprint": spec.fingerprint,
        "graders": sorted(graders),
        "has_pain": pain is not None,
        **manifest,
    }
    (run_dir / MANIFEST).write_text(json.dumps(manifest, indent=1, default=_json_default))


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def load_teacher(
    run_dir: str | Path, expect_scale: ScaleSpec | str | None = None, device: str | Any = "auto"
) -> Teacher:
    """Load a teacher run folder.

    Args:
        run_dir: Folder written by ``grimace teacher train`` or ``import-seed``.
        expect_scale: If given, raise :class:`edge.scales.ScaleMismatchError` unless the teacher was
            made for this scale.
        device: Where the detector, graders and pain classifier run (``--device`` spec: ``auto`` =
            CUDA when available, else MPS, else CPU; or a ``torch.device``).

    Raises:
        TeacherError: Missing manifest, scale or graders (the message names the path).
        train.device.DeviceError: The device is not available.
    """
    from train.device import resolve_device

    dev = resolve_device(device)
    run_dir = Path(run_dir)
    man_p = run_dir / MANIFEST
    if not man_p.exists():
        raise TeacherError(f"{man_p}: missing - is {run_dir} a teacher run folder?")
    manifest = json.loads(man_p.read_text())
    if manifest.get("kind") != "grimace-teacher":
        raise TeacherError(f"{man_p}: not a grimace teacher manifest")
    scale_p = run_dir / SCALE_FILE
    if not scale_p.exists():
        raise TeacherError(f"{scale_p}: missing scale spec")
    spec = ScaleSpec.from_dict(json.loads(scale_p.read_text()), source=str(scale_p))
    if expect_scale is not None:
        load_scale(expect_scale).check_compatible(spec, what=f"teacher {run_dir}")
    detector = Detector.load(run_dir, device=dev)
    graders = {}
    for name in manifest.get("graders", []):
        folder = run_dir / GRADERS_DIR / name
        if not folder.exists():
            raise TeacherError(f"{folder}: grader listed in the manifest is missing")
        graders[name] = ImageClassifier.load(folder, device=dev)
    pain = ImageClassifier.load(run_dir / PAIN_DIR, "image", device=dev) if manifest.get("has_pain") else None
    return Teacher(spec, detector, graders, pain, manifest, run_dir)


def timed(fn: Callable[..., Any], *a: Any, **kw: Any) -> tuple[Any, float]:
    """``(fn(*a, **kw), seconds)``."""
    t = time.perf_counter()
    r = fn(*a, **kw)
    return r, time.perf_counter() - t
