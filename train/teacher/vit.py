"""Stage 2 of the teacher: ViT image classifiers (one grader per unit, plus the whole-face pain ViT).

Everything here is plain ``transformers.ViTForImageClassification``:

* :func:`build_vit` resolves a backbone by name or path - a Hugging Face model id (pretrained when it
  can be had, otherwise random init from its architecture with a warning), a local folder saved with
  ``save_pretrained``, a ``config.json`` file, ``small`` (from-scratch default) or ``tiny`` (a 2-layer,
  32-wide ViT for tests).
* :func:`train_classifier` trains on in-memory RGB images ``(N, S, S, 3)``: SGD + momentum or AdamW
  with warmup + cosine, optionally class-weighted / label-smoothed cross-entropy or grade-balanced
  sampling, keeping the epoch with the lowest validation loss (the seed's rule) or the highest
  validation weighted accuracy.
* :class:`ImageClassifier` wraps a trained model with its preprocessing and runs batched inference.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

log = logging.getLogger(__name__)

DEFAULT_VIT = "google/vit-base-patch16-224-in21k"
PREPROCESS_FILE = "preprocess.json"
TINY_VIT = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "image_size": 32,
    "patch_size": 8,
}
"""The ``tiny`` backbone: small enough to train in seconds on a CPU (tests, smoke runs)."""
SMALL_VIT = {
    "hidden_size": 96,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "intermediate_size": 192,
    "image_size": 32,
    "patch_size": 4,
}
"""The ``small`` backbone (4 layers, 96 wide, 4x4 patches at 32x32 = 64 tokens): the default for
from-scratch training on a few hundred crops; one to two minutes per grader on a 2-core CPU. On the
synthetic data it generalised to new animals at least as well as 8x8 patches at 64x64 (same cost)."""
PRESETS = {"tiny": TINY_VIT, "small": SMALL_VIT}

# ViT-Base/16 at 224 (the seed's backbone); transformers' ViTConfig defaults are exactly this.
_KNOWN_OFFLINE = {DEFAULT_VIT: {}, "google/vit-base-patch16-224": {}}


class VitError(RuntimeError):
    """A ViT backbone cannot be resolved or loaded."""


def _hub_reachable(timeout: float = 3.0) -> bool:
    flags = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    if any(os.environ.get(k, "").lower() in ("1", "true", "yes") for k in flags):
        return False
    try:
        with socket.create_connection(("huggingface.co", 443), timeout=timeout):
            return True
    except OSError:
        return False


def hf_cache_dir() -> Path:
    """Where Hugging Face keeps downloaded models (``HF_HUB_CACHE``, by default ``HF_HOME/hub``)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _warn(msg: str) -> None:
    warnings.warn(msg, stacklevel=3)
    log.warning(msg)


def build_vit(
    name_or_path: str,
    num_labels: int,
    id2label: dict[int, str] | None = None,
    image_size: int | None = None,
) -> tuple[Any, str]:
    """Build a ``ViTForImageClassification`` with a fresh ``num_labels`` head.

    Args:
        name_or_path: ``tiny`` / ``small`` (presets, random init), a local folder
            (``save_pretrained`` output or containing a ``config.json``), a ``.json`` config file,
            or a Hugging Face model id.
        num_labels: Classes of the new head.
        id2label: Optional class names.
        image_size: Input size for randomly initialised backbones (pretrained weights keep theirs).

    Returns:
        ``(model, init)`` where ``init`` says what the weights were initialised from.
    """
    from transformers import ViTConfig, ViTForImageClassification

    labels = id2label or {i: str(i) for i in range(num_labels)}
    kw: dict[str, Any] = {
        "num_labels": num_labels,
        "id2label": labels,
        "label2id": {v: k for k, v in labels.items()},
    }
    size_kw = {"image_size": int(image_size)} if image_size else {}
    if name_or_path in PRESETS:
        cfg = ViTConfig(**{**PRESETS[name_or_path], **size_kw}, **kw)
        return ViTForImageClassification(cfg), f"random init ({name_or_path} config)"
    path = Path(name_or_path)
    if path.suffix == ".json" and path.is_file():
        cfg = ViTConfig.from_json_file(str(path))
        for k, v in {**kw, **size_kw}.items():
            setattr(cfg, k, v)
        return ViTForImageClassification(cfg), f"random init (config {path})"
    if path.is_dir():
        has_weights = any(path.glob("*.safetensors")) or any(path.glob("*.bin"))
        if has_weights:
            model = ViTForImageClassification.from_pretrained(str(path), ignore_mismatched_sizes=True, **kw)
            return model, f"pretrained ({path})"
        if (path / "config.json").exists():
            cfg = ViTConfig.from_pretrained(str(path), **kw, **size_kw)
            return ViTForImageClassification(cfg), f"random init (config {path})"
        raise VitError(f"{path}: folder has neither a config.json nor weights")
    if path.exists():
        raise VitError(f"{path}: expected a folder or a .json config, 'tiny', or a Hugging Face model id")
    if _hub_reachable():
        try:
            model = ViTForImageClassification.from_pretrained(
                name_or_path, ignore_mismatched_sizes=True, **kw
            )
            return model, f"pretrained ({name_or_path})"
        except Exception as e:  # network trouble mid-download, missing repo...
            reason = f"{type(e).__name__}: {str(e)[:200]}"
    else:
        # offline: the Hugging Face cache (HF_HOME/hub, where an earlier download put it) still counts
        try:
            model = ViTForImageClassification.from_pretrained(
                name_or_path, ignore_mismatched_sizes=True, local_files_only=True, **kw
            )
            return model, f"pretrained ({name_or_path}, from the local Hugging Face cache)"
        except (OSError, ValueError):
            reason = (
                f"offline (Hugging Face hub not reachable or HF_HUB_OFFLINE set) and not in the local "
                f"Hugging Face cache {hf_cache_dir()}"
            )
    if name_or_path in _KNOWN_OFFLINE:
        _warn(
            f"could not get pretrained {name_or_path!r} ({reason}); using its architecture "
            "(ViT-Base/16, 224) with RANDOM weights - expect much lower accuracy. Download it once "
            f"online (it is cached), or pass --vit with a folder saved by save_pretrained"
        )
        cfg = ViTConfig(**{**_KNOWN_OFFLINE[name_or_path], **size_kw}, **kw)
        return ViTForImageClassification(cfg), (f"random init ({name_or_path} architecture, offline)")
    raise VitError(
        f"cannot load ViT {name_or_path!r} ({reason}); pass 'tiny', a local folder or a config.json"
    )


# ---------------------------------------------------------------------------------- preprocessing
REGIONS = ("box", "face", "image")


@dataclass
class Preprocess:
    """Image preprocessing of a classifier: resize to ``size`` (square), RGB, ``(x/255 - mean) / std``.

    With ``grey`` the image is converted to grey (replicated to 3 channels) first, so a grader cannot
    key on fur colour; with ``standardize`` each image is scaled to zero mean and unit variance
    instead of the fixed ``mean``/``std`` (invariance to fur brightness and lighting). Both help
    when few animals are in the training data; pretrained backbones keep their own normalisation.

    ``region`` says what the classifier looks at: ``box`` (a unit box with ``margin`` of context: the
    graders), ``face`` (the square around all of a frame's unit boxes with ``margin`` of context: the
    pain classifier, :func:`train.teacher.pain.face_square`) or ``image`` (the whole frame, as the
    seed's close-up photographs; classifiers saved before ``region`` existed).
    """

    size: int
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    margin: float = 0.1
    grey: bool = False
    standardize: bool = False
    region: str = "box"

    def __post_init__(self) -> None:
        if self.region not in REGIONS:
            raise ValueError(f"preprocess region must be one of {REGIONS}, got {self.region!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "size": self.size,
            "mean": list(self.mean),
            "std": list(self.std),
            "margin": self.margin,
            "grey": self.grey,
            "standardize": self.standardize,
            "region": self.region,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], default_region: str = "box") -> Preprocess:
        """Inverse of :meth:`to_dict` (``default_region`` for files written before ``region``)."""
        return cls(
            int(d["size"]),
            tuple(d["mean"]),
            tuple(d["std"]),
            float(d.get("margin", 0.1)),
            bool(d.get("grey", False)),
            bool(d.get("standardize", False)),
            str(d.get("region", default_region)),
        )

    def resize(self, bgr: np.ndarray) -> np.ndarray:
        """BGR image (any size) -> RGB uint8 ``(size, size, 3)``."""
        if bgr.size == 0:
            raise ValueError("empty crop")
        interp = cv2.INTER_AREA if min(bgr.shape[:2]) > self.size else cv2.INTER_LINEAR
        out = cv2.resize(bgr, (self.size, self.size), interpolation=interp)
        if self.grey:
            return np.repeat(cv2.cvtColor(out, cv2.COLOR_BGR2GRAY)[:, :, None], 3, axis=2)
        return out[:, :, ::-1].copy()

    def to_tensor(self, rgb: np.ndarray) -> Any:
        """RGB uint8 ``(N, S, S, 3)`` -> normalised float tensor ``(N, 3, S, S)``."""
        import torch

        x = torch.from_numpy(np.ascontiguousarray(rgb)).float().div_(255.0).permute(0, 3, 1, 2)
        if self.standardize:
            m = x.mean(dim=(1, 2, 3), keepdim=True)
            s = x.std(dim=(1, 2, 3), keepdim=True).clamp_min(1e-3)
            return (x - m) / s
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        return (x - mean) / std


def crop_box(image: np.ndarray, xyxy: np.ndarray | list[float], margin: float = 0.1) -> np.ndarray:
    """Cut a box with ``margin`` (fraction of the box size on each side) of context, clipped to the image.

    Args:
        image: ``(H, W, 3)``.
        xyxy: Box corners in pixels.
        margin: Context on each side as a fraction of the box width/height.

    Returns:
        The crop (at least 1x1 pixel).
    """
    h, w = image.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in xyxy)
    mx, my = (x2 - x1) * margin, (y2 - y1) * margin
    a = int(np.clip(np.floor(x1 - mx), 0, w - 1))
    b = int(np.clip(np.floor(y1 - my), 0, h - 1))
    c = int(np.clip(np.ceil(x2 + mx), a + 1, w))
    d = int(np.clip(np.ceil(y2 + my), b + 1, h))
    return image[b:d, a:c]


# ------------------------------------------------------------------------------------- training
CLASS_WEIGHTINGS = ("inverse", "sqrt", "none")
SAMPLERS = ("shuffle", "balanced")
SELECT_RULES = ("val_loss", "val_wacc")


def class_weights(y: np.ndarray, n_classes: int, mode: str = "inverse") -> np.ndarray:
    """Cross-entropy class weights, shape ``(C,)`` (0 for classes absent from ``y``).

    Args:
        y: Training labels ``(N,)``.
        n_classes: Number of classes.
        mode: ``inverse`` = ``N / (C_present * N_c)`` (balanced); ``sqrt`` = its square root
            (milder); ``none`` = 1 for every present class.
    """
    if mode not in CLASS_WEIGHTINGS:
        raise ValueError(f"class weighting must be one of {CLASS_WEIGHTINGS}, got {mode!r}")
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    present = counts > 0
    w = np.zeros(n_classes, np.float64)
    w[present] = counts.sum() / (present.sum() * counts[present])
    if mode == "sqrt":
        w = np.sqrt(w)
    elif mode == "none":
        w = present.astype(np.float64)
    return w.astype(np.float32)


def augment(
    batch: np.ndarray, rng: np.random.Generator, flip: bool = True, strength: float = 1.0
) -> np.ndarray:
    """Cheap photometric + geometric augmentation of RGB uint8 images ``(N, S, S, 3)``.

    Random horizontal flip, RGB channel permutation and grey conversion (so a grader cannot key on
    one animal's fur colour), brightness/contrast jitter, and a shift of up to 10 % of the side.
    ``strength`` 0 returns the batch unchanged.
    """
    if strength <= 0:
        return batch
    out = batch.astype(np.float32)
    n, s = len(out), out.shape[1]
    for i in range(n):
        im = out[i]
        if flip and rng.random() < 0.5:
            im = im[:, ::-1]
        if rng.random() < 0.5 * strength:
            im = im[:, :, rng.permutation(3)]
        if rng.random() < 0.2 * strength:
            im = np.repeat(im.mean(axis=2, keepdims=True), 3, axis=2)
        c = 1 + rng.uniform(-0.3, 0.3) * strength
        b = rng.uniform(-25, 25) * strength
        im = (im - im.mean()) * c + im.mean() + b
        m = round(0.1 * s * strength)
        if m:
            dy, dx = (int(v) for v in rng.integers(-m, m + 1, 2))
            im = np.roll(im, (dy, dx), axis=(0, 1))
        out[i] = im
    return out.clip(0, 255).astype(np.uint8)


def _model_device(model: Any) -> Any:
    """The device a torch module's parameters live on."""
    return next(model.parameters()).device


def _autocast(device: Any) -> Any:
    """fp16 autocast on CUDA (AMP), a no-op context elsewhere."""
    import contextlib

    import torch

    from train.device import amp_enabled

    return torch.autocast("cuda", dtype=torch.float16) if amp_enabled(device) else contextlib.nullcontext()


def _validate(model: Any, x: Any, y: Any, weight: Any, batch: int) -> tuple[float, float]:
    """Weighted validation cross-entropy and weighted accuracy (seed's equation 3) of ``(M, 3, S, S)``
    (``x``, ``y`` on the CPU; batches are moved to the model's device)."""
    import torch

    from train.metrics import weighted_accuracy

    model.eval()
    dev = _model_device(model)
    weight = weight.to(dev)
    total, n, preds = 0.0, 0, []
    with torch.inference_mode():
        for i in range(0, len(y), batch):
            yb = y[i : i + batch].to(dev)
            with _autocast(dev):
                logits = model(pixel_values=x[i : i + batch].to(dev)).logits
            logits = logits.float()
            loss = torch.nn.functional.cross_entropy(logits, yb, weight=weight, reduction="sum")
            total += float(loss)
            n += len(yb)
            preds.append(logits.argmax(1).cpu())
    labels = list(range(int(model.config.num_labels)))
    wacc = weighted_accuracy(y.numpy(), torch.cat(preds).numpy(), labels) if n else float("nan")
    return total / max(n, 1), wacc


def warmup_cosine(steps: int, warmup: float) -> Any:
    """Learning-rate factor per step: linear warm-up over ``warmup`` of the steps, then cosine to 0.

    Valid for any ``steps >= 1`` (``OneCycleLR`` divides by zero when the warm-up is one step long).
    """
    n_warm = min(max(1, round(steps * min(max(warmup, 0.0), 0.5))), steps)

    def factor(step: int) -> float:
        if step < n_warm:
            return (step + 1) / n_warm
        rest = max(1, steps - n_warm)
        return 0.5 * (1.0 + math.cos(math.pi * min(step - n_warm, rest) / rest))

    return factor


def train_classifier(
    model: Any,
    prep: Preprocess,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    *,
    epochs: int = 20,
    batch: int = 16,
    lr: float = 0.01,
    momentum: float = 0.9,
    flip: bool = True,
    augment_strength: float = 1.0,
    optimizer: str = "sgd",
    class_weighting: str = "inverse",
    sampler: str = "shuffle",
    label_smoothing: float = 0.0,
    weight_decay: float | None = None,
    warmup: float = 0.1,
    select: str = "val_loss",
    seed: int = 0,
    desc: str = "vit",
    device: str | Any = "cpu",
) -> dict[str, Any]:
    """Fine-tune a classifier; the model ends with the weights of its lowest-validation-loss epoch.

    Loss: cross-entropy with class weights from the training labels (``class_weighting``). The
    validation loss used for selection is weighted the same way but from the *validation* labels'
    own frequencies, so a selection set with another grade mix (e.g. other animals) does not reward
    a model for predicting that set's majority grade. Optimiser: SGD with momentum (or AdamW) and a
    one-cycle cosine learning-rate schedule.

    Args:
        model: ``ViTForImageClassification``.
        prep: Its preprocessing.
        x_train: RGB uint8 ``(N, S, S, 3)`` with ``S == prep.size``.
        y_train: int ``(N,)``.
        x_val: RGB uint8 ``(M, S, S, 3)``; when empty, the training set is used for selection.
        y_val: int ``(M,)``.
        epochs: Epochs (the seed used 20).
        batch: Batch size.
        lr: Initial learning rate.
        momentum: SGD momentum.
        flip: Random horizontal flips of training images.
        augment_strength: Strength of the other augmentations (:func:`augment`; 0 = none).
        optimizer: ``sgd`` (with ``momentum``, the seed's choice for fine-tuning pretrained ViTs) or
            ``adamw`` (trains randomly initialised ViTs far better).
        class_weighting: Cross-entropy class weights (:func:`class_weights`).
        sampler: ``shuffle`` (each crop once per epoch) or ``balanced`` (each epoch draws as many
            crops with replacement, every grade equally likely; combine with ``class_weighting``
            ``none`` so rare grades are not up-weighted twice).
        label_smoothing: Cross-entropy label smoothing (0 = none).
        weight_decay: Optimiser weight decay; default 1e-4 (SGD) or 0.05 (AdamW).
        warmup: Share of the steps spent warming the learning rate up (then cosine decay).
        select: Which epoch to keep: ``val_loss`` (lowest validation loss, the seed's rule) or
            ``val_wacc`` (highest validation weighted accuracy, the seed's equation 3; ties go to the
            lower validation loss).
        seed: Random seed.
        desc: Progress-bar label.
        device: Torch device (a ``--device`` spec or ``torch.device``); the model is moved there and
            stays there. On CUDA the forward passes run under fp16 autocast with a gradient scaler (AMP).

    Returns:
        ``{"best_epoch", "best_val_loss", "best_val_wacc", "select", "history":
        [(epoch, train_loss, val_loss, val_wacc)], "class_weights", "device", "amp"}``.
    """
    import torch

    from train.device import amp_enabled, resolve_device

    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    if select not in SELECT_RULES:
        raise ValueError(f"select must be one of {SELECT_RULES}, got {select!r}")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    n_classes = int(model.config.num_labels)
    if len(y_train) == 0:
        raise ValueError(f"{desc}: no training samples")
    if len(y_val) == 0:
        x_val, y_val = x_train, y_train
    y_train = np.asarray(y_train, dtype=np.int64)
    dev = resolve_device(device)
    amp = amp_enabled(dev)
    model.to(dev)
    w = torch.from_numpy(class_weights(y_train, n_classes, class_weighting))
    w_dev = w.to(dev)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    wv = torch.from_numpy(class_weights(np.asarray(y_val), n_classes, class_weighting))
    xv = prep.to_tensor(x_val)
    yv = torch.from_numpy(np.asarray(y_val, dtype=np.int64))
    if optimizer == "sgd":
        wd = 1e-4 if weight_decay is None else weight_decay
        opt: Any = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=wd)
    elif optimizer == "adamw":
        wd = 0.05 if weight_decay is None else weight_decay
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd)
    else:
        raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {optimizer!r}")
    steps = max(1, epochs * int(np.ceil(len(y_train) / batch)))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(steps, warmup))
    # balanced sampling: P(crop) proportional to 1 / count of its grade
    counts = np.bincount(y_train, minlength=n_classes).astype(np.float64)
    p_sample = 1.0 / counts[y_train]
    p_sample /= p_sample.sum()
    best_key: tuple[float, float] = (float("-inf"), float("-inf"))
    best = {"epoch": -1, "val_loss": float("inf"), "val_wacc": float("nan")}
    best_state: dict[str, Any] | None = None
    history = []
    bar = tqdm(range(1, epochs + 1), desc=desc, leave=False, disable=None)
    for ep in bar:
        model.train()
        if sampler == "balanced":
            order = rng.choice(len(y_train), size=len(y_train), replace=True, p=p_sample)
        else:
            order = rng.permutation(len(y_train))
        run, seen = 0.0, 0
        for i in range(0, len(order), batch):
            idx = order[i : i + batch]
            imgs = augment(x_train[idx], rng, flip=flip, strength=augment_strength)
            if flip and augment_strength <= 0:
                f = rng.random(len(idx)) < 0.5
                imgs = imgs.copy()
                imgs[f] = imgs[f, :, ::-1]
            xb = prep.to_tensor(imgs).to(dev, non_blocking=True)
            yb = torch.from_numpy(y_train[idx]).to(dev, non_blocking=True)
            with _autocast(dev):
                logits = model(pixel_values=xb).logits
            loss = torch.nn.functional.cross_entropy(
                logits.float(), yb, weight=w_dev, label_smoothing=label_smoothing
            )
            opt.zero_grad()
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(opt)
            scaler.update()
            sched.step()
            run += loss.item() * len(idx)
            seen += len(idx)
        vl, vw = _validate(model, xv, yv, wv, max(batch, 64))
        history.append((ep, run / max(seen, 1), vl, vw))
        bar.set_postfix(train=f"{run / max(seen, 1):.3f}", val=f"{vl:.3f}", wacc=f"{vw:.3f}")
        key = (-vl, 0.0) if select == "val_loss" else (vw, -vl)
        if key > best_key:
            best_key = key
            best = {"epoch": ep, "val_loss": vl, "val_wacc": vw}
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return {
        "best_epoch": best["epoch"],
        "best_val_loss": best["val_loss"],
        "best_val_wacc": best["val_wacc"],
        "select": select,
        "history": history,
        "class_weights": w.tolist(),
        "device": str(dev),
        "amp": amp,
    }


# ------------------------------------------------------------------------------------ inference
def _quiet_transformers() -> None:
    """No per-file progress bars from transformers when saving/loading small folders."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


class ImageClassifier:
    """A trained ViT classifier with its preprocessing; batched probabilities.

    Attributes:
        model: ``ViTForImageClassification`` in eval mode.
        prep: Its :class:`Preprocess`.
    """

    def __init__(self, model: Any, prep: Preprocess) -> None:
        self.model = model.eval()
        self.prep = prep

    @property
    def num_labels(self) -> int:
        """Number of classes."""
        return int(self.model.config.num_labels)

    def probs_rgb(self, rgb: np.ndarray, batch: int = 64) -> np.ndarray:
        """Softmax probabilities of preprocessed-size RGB images.

        Args:
            rgb: uint8 ``(N, S, S, 3)``.
            batch: Inference batch size.

        Returns:
            float32 ``(N, num_labels)``.
        """
        import torch

        out = np.zeros((len(rgb), self.num_labels), np.float32)
        dev = _model_device(self.model)
        with torch.inference_mode():
            for i in range(0, len(rgb), batch):
                x = self.prep.to_tensor(rgb[i : i + batch]).to(dev)
                with _autocast(dev):
                    logits = self.model(pixel_values=x).logits
                out[i : i + batch] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
        return out

    @property
    def device(self) -> Any:
        """The torch device the model runs on."""
        return _model_device(self.model)

    def to(self, device: str | Any) -> ImageClassifier:
        """Move the model to a device (a ``--device`` spec or ``torch.device``); returns ``self``."""
        from train.device import resolve_device

        self.model.to(resolve_device(device))
        return self

    def probs(self, bgr_images: list[np.ndarray], batch: int = 64) -> np.ndarray:
        """Softmax probabilities of BGR images of any size, ``(N, num_labels)``."""
        if not bgr_images:
            return np.zeros((0, self.num_labels), np.float32)
        return self.probs_rgb(np.stack([self.prep.resize(im) for im in bgr_images]), batch)

    def save(self, folder: str | Path, extra: dict[str, Any] | None = None) -> None:
        """``save_pretrained`` (safetensors) + ``preprocess.json``."""
        _quiet_transformers()
        folder = Path(folder)
        self.model.save_pretrained(str(folder))
        (folder / PREPROCESS_FILE).write_text(json.dumps({**self.prep.to_dict(), **(extra or {})}, indent=1))

    @classmethod
    def load(
        cls, folder: str | Path, default_region: str = "box", device: str | Any = "cpu"
    ) -> ImageClassifier:
        """Load a folder written by :meth:`save` (``default_region`` for folders saved before
        :attr:`Preprocess.region` existed) onto ``device``."""
        from transformers import ViTForImageClassification

        _quiet_transformers()
        folder = Path(folder)
        if not (folder / "config.json").exists():
            raise VitError(f"{folder}: no config.json (not a saved classifier)")
        model = ViTForImageClassification.from_pretrained(str(folder))
        pp = folder / PREPROCESS_FILE
        if pp.exists():
            prep = Preprocess.from_dict(json.loads(pp.read_text()), default_region)
        else:
            prep = Preprocess(int(model.config.image_size), region=default_region)
        return cls(model, prep).to(device)
