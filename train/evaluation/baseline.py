"""The goat seed's baseline: video frames -> VGG-16 features -> linear SVM.

Pipeline (seed ``004``, methods): frames are taken from each video at 1 or 3 frames per second by
the runtime's own reader (:func:`edge.sources.iter_video`, so ``--fps`` picks the same frames as
``grimace score``; :func:`extract_frames`), resized to 224 × 224, passed through the VGG-16 convolutional base
with global average pooling (a 512-dimensional vector per frame; the seed's text says 4096, which is
the size of VGG-16's fully connected layers, not of its pooled conv features), then a linear SVM
(scikit-learn ``LinearSVC`` after ``StandardScaler``) separates pain from no pain. Every frame
inherits its video's animal-level label. Evaluation uses the same schemes as ``grimace cv``, with
metrics on the pooled out-of-fold predictions and a per-animal verdict
(:mod:`edge.verdict`).

The trained SVM is saved without pickle (:func:`save_svm`): ``svm_model.npz`` holds the scaler's mean
and scale and the SVM's coefficients and intercept, ``svm_model.json`` the configuration (backbone and
weights, image size, fps, classes, verdict rule, the npz's SHA-256, provenance). :func:`load_svm` checks
both and :func:`score_videos` scores new videos with it.

Backbones (:class:`FeatureExtractor`):

* ``vgg16`` — torchvision VGG-16 with ImageNet weights (``VGG16_Weights.IMAGENET1K_V1``) when they
  can be loaded (downloaded once by torchvision); if not (offline), random weights with a warning —
  features from a random VGG are far weaker, so such numbers are not the seed's.
* ``tiny`` — a 3-layer random CNN (32-d features), **a test option**: it exists so the tests run the
  whole pipeline in seconds without weights; it is not a baseline anyone should report.
"""

from __future__ import annotations

import csv
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.sources import VIDEO_EXTS, ItemError, expand_inputs, iter_video, read_image
from edge.verdict import VerdictRule
from train.evaluation.cv import Item, classification_metrics, per_animal_classification, positive_class

BACKBONES = ("vgg16", "tiny")
SVM_FORMAT = 1
SVM_KIND = "grimace-svm-baseline"
SVM_NPZ = "svm_model.npz"
SVM_JSON = "svm_model.json"
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
    """Save the frames :func:`edge.sources.iter_video` samples at ``fps`` as PNG files.

    The sampling is the runtime's (the same frames ``grimace score --fps`` scores); frames are named
    by their index in the video (``<stem>_f<index>.png``, lossless). Existing frames are reused.

    Args:
        video: Video file.
        fps: Sampling rate (the seed: 1 or 3).
        out_dir: Folder for the PNGs.
        size: Resize the shorter side to this many pixels (keeps files small); ``None`` keeps size.

    Returns:
        The frame files in time order.

    Raises:
        VideoLabelError: Unreadable video, or no frame (a truncated video keeps the frames read).
    """
    import cv2

    video = Path(video)
    out_dir = Path(out_dir)
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    done = out_dir / f".{video.stem}_{fps:g}fps.done"
    if done.exists():
        return [out_dir / n for n in done.read_text().split()]
    out_dir.mkdir(parents=True, exist_ok=True)
    frames: list[Path] = []
    error: ItemError | None = None
    for fr in iter_video(video, fps=fps):
        if isinstance(fr, ItemError):
            error = fr
            continue
        img = fr.image
        if size:
            h, w = img.shape[:2]
            s = size / min(h, w)
            img = cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
        p = out_dir / f"{video.stem}_f{fr.index:06d}.png"
        if not cv2.imwrite(str(p), img):
            raise OSError(f"{p}: could not write frame")
        frames.append(p)
    if not frames:
        raise VideoLabelError(f"{video}: {error.message if error else 'no frame could be read'}")
    if error is not None:
        warnings.warn(f"{error}; using the {len(frames)} frame(s) read", stacklevel=2)
    done.write_text("\n".join(p.name for p in frames))
    return frames


def video_items(videos_dir: str | Path, labels_csv: str | Path, fps: float, work: str | Path) -> list[Item]:
    """Frames of every labelled video as :class:`Item` (subject = animal, label = video label).

    Frames are sampled by :func:`edge.sources.iter_video` (:func:`extract_frames`). A video that is
    missing or unreadable is reported (warning) and skipped; the rest are used. Videos in the folder
    that the CSV does not list are reported too. A relative name may not leave the videos folder.

    Raises:
        VideoLabelError: Bad CSV, a name that leaves the folder, or no frames at all.
    """
    videos_dir = Path(videos_dir)
    rows = read_video_labels(labels_csv)
    items: list[Item] = []
    from tqdm import tqdm

    listed = {Path(r.video).name for r in rows}
    found, _ = expand_inputs([videos_dir]) if videos_dir.is_dir() else ([], [])
    unlisted = sorted(f.name for f in found if f.suffix.lower() in VIDEO_EXTS and f.name not in listed)
    if unlisted:
        warnings.warn(
            f"{videos_dir}: {len(unlisted)} video(s) not in {labels_csv} are not used, e.g. {unlisted[0]}",
            stacklevel=2,
        )
    root = videos_dir.resolve()
    for r in tqdm(rows, desc=f"frames @ {fps:g} fps", unit="video", leave=False):
        path = Path(r.video) if Path(r.video).is_absolute() else videos_dir / r.video
        if not Path(r.video).is_absolute() and not path.resolve().is_relative_to(root):
            raise VideoLabelError(f"{labels_csv}:{r.line}: video {r.video!r} points outside {videos_dir}")
        if not path.exists():
            warnings.warn(f"{labels_csv}:{r.line}: video {path} not found; skipped", stacklevel=2)
            continue
        try:
            frames = extract_frames(path, fps, Path(work) / f"frames_{fps:g}fps" / path.stem, size=256)
        except VideoLabelError as e:
            warnings.warn(f"{e}; skipped", stacklevel=2)
            continue
        for fr in frames:
            items.append(
                Item(f"{path.stem}/{fr.name}", fr, r.animal, r.label, {"video": str(path), "frame": fr.stem})
            )
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
        device: ``auto`` (CUDA if available, else CPU), or a torch device (``cpu``, ``cuda:0``).
    """

    backbone: str = "vgg16"
    pretrained: bool = True
    image_size: int = 224
    batch_size: int = 16
    seed: int = 0
    device: str = "auto"
    weights_used: str = field(default="", init=False)
    device_used: str = field(default="", init=False)
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
        self.device_used = resolve_device(self.device)
        return net.eval().to(self.device_used)

    def _prep(self, img: np.ndarray) -> np.ndarray:
        """BGR uint8 ``(H, W, 3)`` -> normalised float32 ``(3, S, S)``."""
        import cv2

        img = cv2.cvtColor(cv2.resize(img, (self.image_size, self.image_size)), cv2.COLOR_BGR2RGB)
        x = (img.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
        return x.transpose(2, 0, 1)

    def _load(self, path: Path) -> np.ndarray:
        from edge.sources import SourceError

        try:
            return self._prep(read_image(path))
        except SourceError as e:
            raise VideoLabelError(str(e)) from None

    def _forward(self, x: np.ndarray) -> np.ndarray:
        import torch

        if self._net is None:
            self._net = self._build()
        with torch.inference_mode():
            return self._net(torch.from_numpy(x).to(self.device_used)).float().cpu().numpy()

    def images(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Features of decoded BGR images (not cached), float32 ``(N, D)``."""
        out = [
            self._forward(np.stack([self._prep(im) for im in images[s : s + self.batch_size]]))
            for s in range(0, len(images), self.batch_size)
        ]
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)

    def __call__(self, paths: Sequence[Path]) -> np.ndarray:
        """Features of image files (read by :func:`edge.sources.read_image`, cached), float32 ``(N, D)``
        (D = 512 for VGG-16, 32 for tiny)."""
        from tqdm import tqdm

        todo = [p for p in dict.fromkeys(str(p) for p in paths) if p not in self._cache]
        if todo:
            batches = range(0, len(todo), self.batch_size)
            for s in tqdm(batches, desc=f"{self.backbone} features", unit="batch", leave=False,
                          disable=len(batches) < 3):  # fmt: skip
                chunk = todo[s : s + self.batch_size]
                f = self._forward(np.stack([self._load(Path(p)) for p in chunk]))
                for p, v in zip(chunk, f, strict=True):
                    self._cache[p] = v
        return np.stack([self._cache[str(p)] for p in paths])


def resolve_device(device: str = "auto") -> str:
    """``auto`` -> ``cuda`` if torch sees a GPU, else ``cpu``; anything else is checked and returned.

    Raises:
        ValueError: A CUDA device asked for where torch sees none.
    """
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: torch sees no CUDA GPU here; use --device cpu or auto")
    torch.device(device)  # raises on a malformed name
    return device


@dataclass
class SVMTrainer:
    """Linear SVM on backbone features (the goat seed's classifier), a :class:`~train.evaluation.cv.Trainer`.

    Attributes:
        features: The feature extractor (shared across folds, so features are computed once).
        C: SVM regularisation.
        positive: Name of the positive class for verdicts (default ``"pain"`` if present, else the
            last class in sorted order).
        rule: The per-animal verdict rule.
    """

    features: FeatureExtractor
    C: float = 1.0
    positive: str | None = None
    rule: VerdictRule = field(default_factory=VerdictRule)
    name: str = "vgg16+linear-svm"
    max_iter: int = 5000
    classes: list[str] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self.name = f"{self.features.backbone}+linear-svm"

    def describe(self) -> dict[str, Any]:
        """Settings shown in reports (backbone, the weights actually used, device, C)."""
        return {
            "backbone": self.features.backbone,
            "weights": self.features.weights_used or "not built yet",
            "device": self.features.device_used or self.features.device,
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
        self.classes = sorted(set(self.classes) | set(y))
        x = self.features([it.path for it in train_items])
        clf = make_pipeline(StandardScaler(), LinearSVC(C=self.C, max_iter=self.max_iter))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ConvergenceWarning on tiny sets
            clf.fit(x, y)
        return clf

    def predict(self, model: Any, test_items: Sequence[Item]) -> list[dict[str, Any]]:
        """One record per item: ``{"pred": class, "decision": signed distance (binary) or None}``."""
        x = self.features([it.path for it in test_items])
        pred = model.predict(x).tolist()
        dec = model.decision_function(x)
        dec_l = dec.tolist() if dec.ndim == 1 else [None] * len(pred)
        return [{"pred": str(p), "decision": d} for p, d in zip(pred, dec_l, strict=True)]

    def metrics(self, items: Sequence[Item], recs: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """:func:`~train.evaluation.cv.classification_metrics` of the items' labels vs the records."""
        return classification_metrics(
            [str(it.label) for it in items], [r["pred"] for r in recs], labels=self.classes
        )

    def per_animal(self, items: Sequence[Item], recs: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Per-animal verdicts (:func:`~train.evaluation.cv.per_animal_classification`)."""
        pos = positive_class([str(it.label) for it in items] + [r["pred"] for r in recs], self.positive)
        return per_animal_classification(items, [r["pred"] for r in recs], pos, self.rule)

    def evaluate(self, model: Any, test_items: Sequence[Item]) -> dict[str, Any]:
        """Accuracy, weighted and balanced accuracy, κ, per-class and macro precision/recall/F1, confusion."""
        return self.metrics(test_items, self.predict(model, test_items))


# ----------------------------------------------------------------------------- saved SVM (no pickle)
@dataclass
class SavedSVM:
    """A trained SVM baseline loaded from ``svm_model.npz`` + ``svm_model.json``.

    Attributes:
        mean: Scaler mean ``(D,)``.
        scale: Scaler scale ``(D,)``.
        coef: SVM weights ``(1, D)`` (binary) or ``(C, D)``.
        intercept: ``(1,)`` or ``(C,)``.
        classes: Class names ``(C,)`` in scikit-learn order.
        config: The JSON sidecar (backbone, weights, image size, fps, rule, provenance...).
    """

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray
    classes: list[str]
    config: dict[str, Any]

    def decision(self, x: np.ndarray) -> np.ndarray:
        """Decision values ``(N,)`` (binary: > 0 means ``classes[1]``) or ``(N, C)``."""
        z = (np.asarray(x, dtype=np.float64) - self.mean) / self.scale
        d = z @ self.coef.T + self.intercept
        return d[:, 0] if d.shape[1] == 1 else d

    def predict(self, x: np.ndarray) -> list[str]:
        """Class names of feature rows ``(N, D)``."""
        d = self.decision(x)
        idx = (d > 0).astype(int) if d.ndim == 1 else d.argmax(axis=1)
        return [self.classes[i] for i in idx]

    @property
    def rule(self) -> VerdictRule:
        """The verdict rule it was saved with."""
        r = self.config["rule"]
        return VerdictRule(min_frames=int(r["min_frames"]), threshold=float(r["threshold"]))

    def feature_extractor(self, device: str = "auto", batch_size: int = 16) -> FeatureExtractor:
        """The feature extractor it was trained with (same backbone, weights request, size, seed)."""
        c = self.config
        return FeatureExtractor(
            backbone=c["backbone"],
            pretrained=bool(c["pretrained"]),
            image_size=int(c["image_size"]),
            seed=int(c["seed"]),
            batch_size=batch_size,
            device=device,
        )


def save_svm(
    out_dir: str | Path,
    model: Any,
    trainer: SVMTrainer,
    fps: float,
    positive: str,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Save a fitted ``StandardScaler`` + ``LinearSVC`` pipeline as npz arrays and a JSON config.

    Returns:
        The JSON path.
    """
    import json

    from train.evaluation.provenance import sha256_file
    from train.evaluation.report import jsonable

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    scaler, svm = model.named_steps["standardscaler"], model.named_steps["linearsvc"]
    npz = out / SVM_NPZ
    np.savez(
        npz,
        mean=scaler.mean_.astype(np.float64),
        scale=scaler.scale_.astype(np.float64),
        coef=svm.coef_.astype(np.float64),
        intercept=svm.intercept_.astype(np.float64),
        classes=np.array([str(c) for c in svm.classes_], dtype=str),
    )
    fx = trainer.features
    config = {
        "kind": SVM_KIND,
        "format": SVM_FORMAT,
        "scale": "goat",
        "backbone": fx.backbone,
        "pretrained": fx.pretrained,
        "weights": fx.weights_used,
        "image_size": fx.image_size,
        "seed": fx.seed,
        "feature_dim": int(scaler.mean_.shape[0]),
        "fps": fps,
        "C": trainer.C,
        "classes": [str(c) for c in svm.classes_],
        "positive": positive,
        "rule": trainer.rule.to_dict(),
        "npz_sha256": sha256_file(npz),
        **(extra or {}),
    }
    path = out / SVM_JSON
    path.write_text(json.dumps(jsonable(config), indent=1))
    return path


def load_svm(model_dir: str | Path) -> SavedSVM:
    """Load a saved SVM (``model_dir`` or its ``svm_model.json``), checking kind, format and hash.

    Raises:
        VideoLabelError: Missing file, wrong kind/format, or the npz does not match its recorded hash.
    """
    import json

    from train.evaluation.provenance import sha256_file

    p = Path(model_dir)
    js = p if p.suffix == ".json" else p / SVM_JSON
    if not js.is_file():
        raise VideoLabelError(f"{js}: no saved SVM here (expected {SVM_JSON} and {SVM_NPZ})")
    try:
        config = json.loads(js.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise VideoLabelError(f"{js}: not a readable SVM config: {e}") from None
    if config.get("kind") != SVM_KIND:
        raise VideoLabelError(f"{js}: kind {config.get('kind')!r}, expected {SVM_KIND!r}")
    if config.get("format") != SVM_FORMAT:
        raise VideoLabelError(
            f"{js}: format {config.get('format')!r}; this version reads format {SVM_FORMAT}"
        )
    npz = js.parent / SVM_NPZ
    if not npz.is_file():
        raise VideoLabelError(f"{npz}: missing (the arrays of {js.name})")
    if sha256_file(npz) != config.get("npz_sha256"):
        raise VideoLabelError(
            f"{npz}: SHA-256 differs from the one in {js.name}; the files do not belong together"
        )
    with np.load(npz, allow_pickle=False) as z:
        arrays = {k: z[k] for k in ("mean", "scale", "coef", "intercept", "classes")}
    return SavedSVM(
        mean=arrays["mean"],
        scale=arrays["scale"],
        coef=arrays["coef"],
        intercept=arrays["intercept"],
        classes=[str(c) for c in arrays["classes"].tolist()],
        config=config,
    )


def score_videos(
    saved: SavedSVM,
    inputs: Sequence[str | Path],
    fps: float | None = None,
    animals: dict[str, str] | None = None,
    truth: dict[str, str] | None = None,
    device: str = "auto",
    rule: VerdictRule | None = None,
    batch_size: int = 16,
) -> dict[str, Any]:
    """Score new videos (or frame images) with a saved SVM and give each animal a verdict.

    Inputs are expanded and decoded by :func:`edge.sources.iter_inputs` at ``fps`` (default: the
    rate the SVM was trained at), so the frames are the ones ``grimace score --fps`` would score.

    Args:
        saved: The loaded SVM.
        inputs: Video files, image files or folders.
        fps: Sampling rate.
        animals: Video file name -> animal id (default: the video's stem is the animal).
        truth: Animal -> true class name (e.g. ``pain``), for the ``correct`` column and accuracy.
        device: Torch device for the features.
        rule: Verdict rule (default: the one saved with the model).
        batch_size: Frames per forward pass.

    Returns:
        ``{"frames": [{"source", "frame", "time_s", "animal", "pred", "decision"}], "per_animal":
        {"rule", "positive", "rows", "summary"}, "errors": [str], "weights", "device"}``.

    Raises:
        VideoLabelError: The features do not match the model (different weights or dimension).
    """
    from edge.sources import iter_inputs
    from edge.verdict import animal_verdicts, verdict_summary

    fx = saved.feature_extractor(device=device, batch_size=batch_size)
    rule = rule or saved.rule
    fps = float(fps or saved.config["fps"])
    pos = saved.config["positive"]
    frames: list[dict[str, Any]] = []
    errors: list[str] = []
    buf: list[tuple[Any, np.ndarray]] = []

    def flush() -> None:
        if not buf:
            return
        f = fx.images([im for _, im in buf])
        if f.shape[1] != saved.mean.shape[0]:
            raise VideoLabelError(
                f"features have {f.shape[1]} values, the SVM expects {saved.mean.shape[0]} "
                f"(backbone {saved.config['backbone']})"
            )
        pred = saved.predict(f)
        dec = saved.decision(f)
        for (fr, _), p, d in zip(buf, pred, dec.tolist(), strict=True):
            name = Path(fr.source).name
            frames.append(
                {
                    "source": fr.source,
                    "frame": fr.index,
                    "time_s": fr.time_s,
                    "animal": (animals or {}).get(name, Path(fr.source).stem),
                    "pred": p,
                    "decision": d if not isinstance(d, list) else None,
                }
            )
        buf.clear()

    for fr in iter_inputs([str(p) for p in inputs], fps=fps):
        if isinstance(fr, ItemError):
            errors.append(str(fr))
            continue
        buf.append((fr, fr.image))
        if len(buf) >= batch_size:
            flush()
    flush()
    if fx.weights_used and saved.config.get("weights") and fx.weights_used != saved.config["weights"]:
        raise VideoLabelError(
            f"the SVM was trained on features from {saved.config['weights']!r} but this run has "
            f"{fx.weights_used!r}; its scores would be meaningless"
        )
    from edge.verdict import NOT_PAINFUL, PAINFUL

    verdict_truth = {a: PAINFUL if lab == pos else NOT_PAINFUL for a, lab in (truth or {}).items()} or None
    rows = animal_verdicts(
        [f["animal"] for f in frames], [1.0 if f["pred"] == pos else 0.0 for f in frames], rule, verdict_truth
    )
    return {
        "frames": frames,
        "per_animal": {
            "rule": rule.to_dict(),
            "positive": pos,
            "rows": rows,
            "summary": verdict_summary(rows),
        },
        "errors": errors,
        "weights": fx.weights_used,
        "device": fx.device_used,
        "fps": fps,
    }


def seed_tables(results: list[dict[str, Any]]) -> str:
    """Markdown tables in the goat seed's layout, with the pooled out-of-fold figures first.

    Table A (seed Table 3): one row per scheme × fps with accuracy, precision, recall and F1 (macro
    over classes) on the pooled out-of-fold predictions, the per-animal accuracy of the verdicts, and
    beside them the seed's mean ± SD over folds. Table B (seed Tables 4–6): per class, pooled.

    Args:
        results: :func:`~train.evaluation.cv.run_cv` results, each with an added ``"fps"`` key.
    """

    def pm(s: dict[str, Any] | None) -> str:
        if not s or s["mean"] is None:
            return "—"
        return f"{s['mean']:.2f} ± {s['sd']:.2f}" if s["sd"] is not None else f"{s['mean']:.2f}"

    def v(x: Any) -> str:
        return "—" if x is None else f"{x:.2f}"

    lines = [
        "## Testing results by validation approach (goat seed Table 3 layout)",
        "",
        "| approach | FPS | folds | accuracy | balanced accuracy | precision | recall | F1 "
        "| per-animal accuracy | accuracy over folds (mean ± SD) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        p = r.get("pooled") or {}
        s = r["summary"]
        pa = ((r.get("per_animal") or {}).get("summary") or {}).get("animal_accuracy")
        lines.append(
            f"| {r['scheme']} | {r['fps']:g} | {r['k']} | {v(p.get('accuracy'))} "
            f"| {v(p.get('balanced_accuracy'))} | {v(p.get('precision'))} | {v(p.get('recall'))} "
            f"| {v(p.get('f1'))} | {v(pa)} "
            f"| {pm(s.get('accuracy'))} |"
        )
    lines += [
        "",
        "Accuracy, precision, recall and F1 are computed once on the pooled out-of-fold predictions "
        "(every frame predicted by a model that did not see it); precision, recall and F1 are macro "
        "averages over the classes. The last column is the seed's mean ± SD over folds, for comparison "
        "only: with subject-wise folds many folds hold one class, and their per-fold precision is "
        "degenerate. Per-animal accuracy: the share of animals with a verdict whose verdict is right.",
        "",
        "## Results separated by class (goat seed Tables 4–6 layout)",
        "",
        "| approach | FPS | class | precision | recall | F1 | support |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for c, d in ((r.get("pooled") or {}).get("per_class") or {}).items():
            lines.append(
                f"| {r['scheme']} | {r['fps']:g} | {c} | {v(d['precision'])} | {v(d['recall'])} "
                f"| {v(d['f1'])} | {d['support']} |"
            )
    return "\n".join(lines) + "\n"
