"""The goat seed's baseline: video frames -> VGG-16 features -> linear SVM.

Pipeline (seed ``004``, methods): frames are taken from each video at 1 or 3 frames per second
(:func:`extract_frames`, OpenCV), resized to 224 × 224, passed through the VGG-16 convolutional base
with global average pooling (a 512-dimensional vector per frame; the seed's text says 4096, which is
the size of VGG-16's fully connected layers, not of its pooled conv features), then a linear SVM
(scikit-learn ``LinearSVC`` after ``StandardScaler``) separates pain from no pain. Every frame
inherits its video's animal-level label. Evaluation uses the same schemes as ``grimace cv``.

Backbones (:class:`FeatureExtractor`):

* ``vgg16`` — torchvision VGG-16 with ImageNet weights (``VGG16_Weights.IMAGENET1K_V1``) when they
  can be loaded (downloaded once by torchvision); if not (offline), random weights with a warning —
  features from a random VGG are far weaker, so such numbers are not the seed's.
* ``tiny`` — a 3-layer random CNN (32-d features), **a test option**: it exists so the tests run the
  whole pipeline in seconds without weights; it is not a baseline anyone should report.
"""

from __future__ import annotations

import csv
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from train.evaluation.cv import Item

BACKBONES = ("vgg16", "tiny")
VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm")
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


class VideoLabelError(ValueError):
    """The labels CSV or a video is invalid; the message names the file (and line)."""


@dataclass(frozen=True)
class VideoLabel:
    """Row of the labels CSV: ``video,animal,label``."""

    video: str
    animal: str
    label: str
    line: int


def read_video_labels(path: str | Path) -> list[VideoLabel]:
    """Read ``video,animal,label`` rows (video = file name or path relative to the videos folder).

    Raises:
        VideoLabelError: Missing column, empty field or duplicate video (``file:line``).
    """
    path = Path(path)
    if not path.is_file():
        raise VideoLabelError(f"{path}: no such file")
    rows: list[VideoLabel] = []
    seen: dict[str, int] = {}
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        cols = [c.strip().lower() for c in (reader.fieldnames or [])]
        for need in ("video", "animal", "label"):
            if need not in cols:
                raise VideoLabelError(f"{path}:1: missing column {need!r} (have {reader.fieldnames})")
        for i, raw in enumerate(reader, start=2):
            row = {k.strip().lower(): (v or "").strip() for k, v in raw.items() if k}
            if not any(row.values()):
                continue
            for need in ("video", "animal", "label"):
                if not row.get(need):
                    raise VideoLabelError(f"{path}:{i}: empty {need!r}")
            if row["video"] in seen:
                raise VideoLabelError(
                    f"{path}:{i}: video {row['video']!r} listed twice (line {seen[row['video']]})"
                )
            seen[row["video"]] = i
            rows.append(VideoLabel(row["video"], row["animal"], row["label"], i))
    if not rows:
        raise VideoLabelError(f"{path}: no rows")
    return rows


def extract_frames(video: str | Path, fps: float, out_dir: str | Path, size: int | None = None) -> list[Path]:
    """Save frames of ``video`` at ``fps`` frames per second of video time as PNG files.

    Frame ``i`` of the video (at its native rate ``r``) is kept when it is the first frame at or after
    the next sampling time ``j / fps``. Existing frames in ``out_dir`` are reused.

    Args:
        video: Video file readable by OpenCV.
        fps: Sampling rate (the seed: 1 or 3).
        out_dir: Folder for ``<video stem>_<j>.png``.
        size: Resize the shorter side to this many pixels (keeps files small); ``None`` keeps size.

    Returns:
        The frame files in time order.

    Raises:
        VideoLabelError: Unreadable video or no frame.
    """
    import cv2

    video = Path(video)
    out_dir = Path(out_dir)
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    done = out_dir / f".{video.stem}_{fps:g}fps.done"
    if done.exists():
        return sorted(out_dir.glob(f"{video.stem}_f*.png"))
    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        raise VideoLabelError(f"{video}: cannot open video")
    native = cap.get(cv2.CAP_PROP_FPS) or 0.0
    if not math.isfinite(native) or native <= 0:
        warnings.warn(f"{video}: frame rate unknown, assuming 30 fps", stacklevel=2)
        native = 30.0
    out_dir.mkdir(parents=True, exist_ok=True)
    frames: list[Path] = []
    i = 0
    j = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        t = i / native
        if t + 1e-9 >= j / fps:
            if size:
                h, w = frame.shape[:2]
                s = size / min(h, w)
                frame = cv2.resize(
                    frame, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA
                )
            p = out_dir / f"{video.stem}_f{j:05d}.png"
            cv2.imwrite(str(p), frame)
            frames.append(p)
            j += 1
        i += 1
    cap.release()
    if not frames:
        raise VideoLabelError(f"{video}: no frame could be read")
    done.write_text(str(len(frames)))
    return frames


def video_items(videos_dir: str | Path, labels_csv: str | Path, fps: float, work: str | Path) -> list[Item]:
    """Frames of every labelled video as :class:`Item` (subject = animal, label = video label).

    A video that is missing or unreadable is reported (warning) and skipped; the rest are used.
    """
    videos_dir = Path(videos_dir)
    rows = read_video_labels(labels_csv)
    items: list[Item] = []
    from tqdm import tqdm

    for r in tqdm(rows, desc=f"frames @ {fps:g} fps", unit="video", leave=False):
        path = Path(r.video) if Path(r.video).is_absolute() else videos_dir / r.video
        if not path.exists():
            warnings.warn(f"{labels_csv}:{r.line}: video {path} not found; skipped", stacklevel=2)
            continue
        try:
            frames = extract_frames(path, fps, Path(work) / f"frames_{fps:g}fps" / path.stem, size=256)
        except VideoLabelError as e:
            warnings.warn(f"{e}; skipped", stacklevel=2)
            continue
        for fr in frames:
            items.append(Item(f"{path.stem}/{fr.name}", fr, r.animal, r.label, {"video": str(path)}))
    if not items:
        raise VideoLabelError(f"{labels_csv}: no frames from any listed video")
    return items


# ---------------------------------------------------------------------------- feature extractor
@dataclass
class FeatureExtractor:
    """Global-average-pooled CNN features of images, cached per file.

    Attributes:
        backbone: ``vgg16`` or ``tiny`` (test option, see the module docstring).
        pretrained: Try ImageNet weights for ``vgg16``.
        image_size: Input side in pixels (224 as in the seed).
        batch_size: Images per forward pass.
        seed: Seed of the random initialisation (``tiny``, or ``vgg16`` without weights).
    """

    backbone: str = "vgg16"
    pretrained: bool = True
    image_size: int = 224
    batch_size: int = 16
    seed: int = 0
    weights_used: str = field(default="", init=False)
    _net: Any = field(default=None, init=False, repr=False)
    _cache: dict[str, np.ndarray] = field(default_factory=dict, init=False, repr=False)

    def _build(self) -> Any:
        import torch
        from torch import nn

        torch.manual_seed(self.seed)
        if self.backbone == "tiny":
            net = nn.Sequential(
                nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU(),
                nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
                nn.Conv2d(32, 32, 3, stride=2, padding=1), nn.ReLU(),
                nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            )  # fmt: skip
            self.weights_used = "random (tiny test backbone)"
        elif self.backbone == "vgg16":
            from torchvision.models import VGG16_Weights, vgg16

            model = None
            if self.pretrained:
                try:
                    model = vgg16(weights=VGG16_Weights.IMAGENET1K_V1)
                    self.weights_used = "ImageNet (VGG16_Weights.IMAGENET1K_V1)"
                except Exception as e:  # offline, blocked, corrupt cache
                    warnings.warn(
                        f"VGG-16 ImageNet weights could not be loaded ({type(e).__name__}: {e}); "
                        "using RANDOM weights — the features and the SVM results are not the seed's",
                        stacklevel=2,
                    )
            if model is None:
                model = vgg16(weights=None)
                self.weights_used = "random (ImageNet weights unavailable or not requested)"
            net = nn.Sequential(model.features, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        else:
            raise ValueError(f"unknown backbone {self.backbone!r}; expected one of {BACKBONES}")
        return net.eval()

    def _load(self, path: Path) -> np.ndarray:
        import cv2

        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            raise VideoLabelError(f"{path}: cannot read image")
        img = cv2.cvtColor(cv2.resize(img, (self.image_size, self.image_size)), cv2.COLOR_BGR2RGB)
        x = (img.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
        return x.transpose(2, 0, 1)

    def __call__(self, paths: Sequence[Path]) -> np.ndarray:
        """Features of ``paths``, float32 ``(N, D)`` (D = 512 for VGG-16, 32 for tiny)."""
        import torch
        from tqdm import tqdm

        todo = [p for p in dict.fromkeys(str(p) for p in paths) if p not in self._cache]
        if todo:
            if self._net is None:
                self._net = self._build()
            batches = range(0, len(todo), self.batch_size)
            for s in tqdm(batches, desc=f"{self.backbone} features", unit="batch", leave=False,
                          disable=len(batches) < 3):  # fmt: skip
                chunk = todo[s : s + self.batch_size]
                x = torch.from_numpy(np.stack([self._load(Path(p)) for p in chunk]))
                with torch.inference_mode():
                    f = self._net(x).numpy().astype(np.float32)
                for p, v in zip(chunk, f, strict=True):
                    self._cache[p] = v
        return np.stack([self._cache[str(p)] for p in paths])


@dataclass
class SVMTrainer:
    """Linear SVM on backbone features (the goat seed's classifier), a :class:`~train.evaluation.cv.Trainer`.

    Attributes:
        features: The feature extractor (shared across folds, so features are computed once).
        C: SVM regularisation.
        positive: Name of the positive class for the binary summary (default: ``"pain"`` if present).
    """

    features: FeatureExtractor
    C: float = 1.0
    positive: str | None = None
    name: str = "vgg16+linear-svm"
    max_iter: int = 5000

    def __post_init__(self) -> None:
        self.name = f"{self.features.backbone}+linear-svm"

    def describe(self) -> dict[str, Any]:
        """Settings shown in reports (backbone, the weights actually used, C)."""
        return {
            "backbone": self.features.backbone,
            "weights": self.features.weights_used or "not built yet",
            "image_size": self.features.image_size,
            "C": self.C,
        }

    def fit(self, train_items: Sequence[Item]) -> Any:
        """Standardise features and fit ``LinearSVC``."""
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
        from sklearn.svm import LinearSVC

        y = [str(it.label) for it in train_items]
        if len(set(y)) < 2:
            raise ValueError(f"the training side has a single class ({set(y)}); cannot fit an SVM")
        x = self.features([it.path for it in train_items])
        clf = make_pipeline(StandardScaler(), LinearSVC(C=self.C, max_iter=self.max_iter))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ConvergenceWarning on tiny sets
            clf.fit(x, y)
        return clf

    def evaluate(self, model: Any, test_items: Sequence[Item]) -> dict[str, Any]:
        """Accuracy, weighted accuracy, per-class and macro precision/recall/F1, confusion."""
        from train.metrics import confusion_matrix, precision_recall, weighted_accuracy

        y = [str(it.label) for it in test_items]
        pred = model.predict(self.features([it.path for it in test_items])).tolist()
        labels = sorted(set(model.classes_.tolist()) | set(y))
        pr = precision_recall(y, pred, labels)
        for c, d in pr["per_class"].items():
            # a class absent from this test side has no recall; one never predicted has no precision
            if d["support"] == 0:
                d["recall"] = None
            if c in pr["undefined_precision"]:
                d["precision"] = None
            if d["support"] == 0:
                d["f1"] = None
        return {
            "accuracy": pr["accuracy"],
            "weighted_accuracy": weighted_accuracy(y, pred, labels=labels),
            "precision": pr["precision_macro"],
            "recall": pr["recall_macro"],
            "f1": pr["f1_macro"],
            "per_class": pr["per_class"],
            "n_test": len(y),
            "confusion": {"labels": labels, "matrix": confusion_matrix(y, pred, labels).tolist()},
        }


def seed_tables(results: list[dict[str, Any]]) -> str:
    """Markdown tables in the goat seed's layout.

    Table A (seed Table 3): one row per scheme × fps with accuracy, precision, recall and F1 (macro
    over classes), mean ± SD over folds. Table B (seed Tables 4–6): per class precision, recall, F1.

    Args:
        results: :func:`~train.evaluation.cv.run_cv` results, each with an added ``"fps"`` key.
    """

    def pm(s: dict[str, Any] | None) -> str:
        if not s or s["mean"] is None:
            return "—"
        return f"{s['mean']:.2f} ± {s['sd']:.2f}" if s["sd"] is not None else f"{s['mean']:.2f}"

    lines = [
        "## Testing results by validation approach (goat seed Table 3 layout)",
        "",
        "| approach | FPS | folds | accuracy | precision | recall | F1 |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        s = r["summary"]
        lines.append(
            f"| {r['scheme']} | {r['fps']:g} | {r['k']} | {pm(s.get('accuracy'))} | {pm(s.get('precision'))} "
            f"| {pm(s.get('recall'))} | {pm(s.get('f1'))} |"
        )
    lines += [
        "",
        "Precision, recall and F1 in this table are macro averages over the classes.",
        "",
        "## Results separated by class (goat seed Tables 4–6 layout)",
        "",
        "| approach | FPS | class | precision | recall | F1 | support (mean) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        s = r["summary"]
        classes = sorted({k.split(".")[1] for k in s if k.startswith("per_class.")})
        for c in classes:
            sup = s.get(f"per_class.{c}.support")
            sup_s = "—" if not sup or sup["mean"] is None else f"{sup['mean']:.1f}"
            lines.append(
                f"| {r['scheme']} | {r['fps']:g} | {c} | {pm(s.get(f'per_class.{c}.precision'))} "
                f"| {pm(s.get(f'per_class.{c}.recall'))} | {pm(s.get(f'per_class.{c}.f1'))} "
                f"| {sup_s} |"
            )
    return "\n".join(lines) + "\n"
