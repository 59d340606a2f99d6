"""Stage 1 of the teacher: the YOLOv5 action-unit detector (ultralytics).

Training fine-tunes ultralytics YOLOv5 (``n``/``s``/``m``) on the dataset's unit boxes. As in the seed
paper the kept weights are those of the epoch with the **lowest total validation loss** (ultralytics
itself keeps the best "fitness", a mAP mix); a callback tracks the validation loss and snapshots the
EMA weights of that epoch. The detector is stored weights-only: ``detector.safetensors`` (state dict)
plus ``detector.json`` (the model's architecture dict, class names, input size), so loading it never
unpickles anything.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from train.data.format import DatasetInfo, image_to_label_path, read_labels

log = logging.getLogger(__name__)

SIZES = ("n", "s", "m")
DETECTOR_WEIGHTS = "detector.safetensors"
DETECTOR_META = "detector.json"


class DetectorError(RuntimeError):
    """The detector cannot be built, trained or loaded."""


# ------------------------------------------------------------------------------------- data view
def write_detector_dataset(
    ds: DatasetInfo, out: str | Path, val_fraction: float = 0.2, seed: int = 0
) -> Path:
    """Make the ultralytics view of a grimace dataset and return its ``data.yaml``.

    ultralytics reads 5-column labels only, so the grade column is dropped into a parallel label
    tree; images are symlinked (copied where links are not possible). When the dataset has no
    ``val`` split, ``val_fraction`` of the training images (chosen with ``seed``) are used.

    Args:
        ds: The loaded dataset.
        out: Folder to write (replaced if it exists).
        val_fraction: Share of train images used for validation when there is no val split.
        seed: Seed of that split.

    Returns:
        Path of the written ultralytics ``data.yaml`` (absolute ``path``, ``train``, ``val``,
        ``names``, ``nc``).
    """
    out = Path(out).resolve()
    if out.exists():
        shutil.rmtree(out)
    train = ds.images("train")
    val = ds.images("val")
    if not train:
        raise DetectorError(f"dataset {ds.root}: no training images")
    if not val:
        rng = np.random.default_rng(seed)
        idx = rng.permutation(len(train))
        n_val = max(1, round(len(train) * val_fraction))
        val = [train[i] for i in sorted(idx[:n_val])]
        train = [train[i] for i in sorted(idx[n_val:])] or val
    for split, images in (("train", train), ("val", val)):
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
        for img in images:
            dst = out / "images" / split / img.name
            try:
                os.symlink(img.resolve(), dst)
            except OSError:
                shutil.copy2(img, dst)
            lab = image_to_label_path(img)
            boxes = read_labels(lab, ds.spec) if lab.exists() else []
            (out / "labels" / split / (img.stem + ".txt")).write_text(
                "".join(f"{b.unit} {b.cx:.6f} {b.cy:.6f} {b.w:.6f} {b.h:.6f}\n" for b in boxes)
            )
    data = {
        "path": str(out),
        "train": "images/train",
        "val": "images/val",
        "nc": ds.spec.nc,
        "names": dict(enumerate(ds.spec.unit_names)),
    }
    yml = out / "data.yaml"
    yml.write_text(yaml.safe_dump(data, sort_keys=False))
    return yml


# ------------------------------------------------------------------------------ lowest val loss
@dataclass
class LowestValLoss:
    """ultralytics callback keeping the EMA weights of the epoch with the lowest validation loss.

    Register with ``model.add_callback("on_fit_epoch_end", tracker)``. ``history`` holds
    ``(epoch, total val loss)`` per validated epoch.
    """

    best_loss: float = float("inf")
    best_epoch: int = -1
    state_dict: dict[str, Any] | None = None
    model_yaml: dict[str, Any] | None = None
    history: list[tuple[int, float]] = field(default_factory=list)

    def __call__(self, trainer: Any) -> None:
        metrics = trainer.metrics or {}
        keys = [k for k in metrics if k.startswith("val/") and k.endswith("loss")]
        if not keys:  # the final re-validation of best.pt carries no losses
            return
        loss = float(sum(float(metrics[k]) for k in keys))
        epoch = int(trainer.epoch) + 1
        self.history.append((epoch, loss))
        if np.isfinite(loss) and loss < self.best_loss:
            self.best_loss, self.best_epoch = loss, epoch
            src = trainer.ema.ema if getattr(trainer, "ema", None) else trainer.model
            self.state_dict = {k: v.detach().float().cpu().clone() for k, v in src.state_dict().items()}
            self.model_yaml = copy.deepcopy(src.yaml)


# ------------------------------------------------------------------------------------ training
def _offline() -> bool:
    return os.environ.get("YOLO_OFFLINE", "").lower() in ("1", "true", "yes")


def weights_dir() -> Path:
    """The folder ultralytics keeps (and looks for) downloaded weights in (its ``weights_dir`` setting)."""
    from ultralytics.utils import SETTINGS

    return Path(SETTINGS["weights_dir"])


def find_pretrained(name: str) -> Path | None:
    """A local copy of ultralytics weights ``name`` where ultralytics itself resolves it: the current
    folder, then its ``weights_dir`` (see :func:`weights_dir`); ``None`` when there is none."""
    for p in (Path(name), weights_dir() / name):
        if p.is_file():
            return p
    return None


def first_layer_fingerprint(model: Any) -> float:
    """Sum of the first convolution's weights of a YOLO ``DetectionModel`` (a cheap identity check
    that tells pretrained from random weights; ``model.0.conv.weight``)."""
    sd = model.state_dict()
    key = next(k for k in sd if k.endswith("0.conv.weight"))
    return float(sd[key].double().sum())


class _StartWeights:
    """ultralytics ``on_train_start`` callback: fingerprint of the weights training actually starts from."""

    fingerprint: float | None = None

    def __call__(self, trainer: Any) -> None:
        self.fingerprint = first_layer_fingerprint(trainer.model)


def train_detector(
    data_yaml: str | Path,
    out_dir: str | Path,
    *,
    size: str = "s",
    epochs: int = 100,
    imgsz: int = 640,
    batch: int = 16,
    pretrained: bool = True,
    device: str | Any = "auto",
    workers: int = 0,
    mosaic: float = 1.0,
    optimizer: str = "SGD",
    init: str | Path | None = None,
    seed: int = 0,
    verbose: bool = True,
) -> dict[str, Any]:
    """Fine-tune a YOLOv5 detector and save the lowest-validation-loss epoch weights-only.

    Args:
        data_yaml: ultralytics data yaml (see :func:`write_detector_dataset`).
        out_dir: Teacher run folder; ``detector.safetensors`` and ``detector.json`` are written
            there, ultralytics' own files under ``out_dir/work/detector``.
        size: ``n``, ``s`` or ``m``.
        epochs: Training epochs (the seed used 100).
        imgsz: Training input size.
        batch: Batch size.
        pretrained: Try COCO-pretrained ``yolov5{size}u.pt`` first (falls back to random init
            from ``yolov5{size}.yaml`` with a warning when it cannot be had).
        device: ``--device`` spec (``auto``, ``cpu``, ``cuda:N``, ``mps``) or ``torch.device``; AMP on CUDA.
        workers: Data loader workers.
        mosaic: Mosaic augmentation probability (the seed used mosaic).
        init: Start from the detector of an existing teacher run folder (or its
            ``detector.safetensors``) instead of COCO/random weights, e.g. to continue training or to
            adapt the seed's detector. Layers whose shapes differ (another class count) start fresh.
        optimizer: ultralytics optimizer name (the seed used ``SGD`` with momentum; ``auto`` lets
            ultralytics choose, AdamW for short runs).
        seed: Random seed.
        verbose: ultralytics console output.

    Returns:
        Summary dict: init (weights used), init_fingerprint (:func:`first_layer_fingerprint` of the
        weights training started from), device, best_epoch, best_val_loss, history, metrics.
    """
    from ultralytics import YOLO

    from train.device import amp_enabled, resolve_device, ultralytics_device

    dev = resolve_device(device)
    if size not in SIZES:
        raise DetectorError(f"detector size must be one of {SIZES}, got {size!r}")
    out_dir = Path(out_dir).resolve()
    init_from = init
    init = f"yolov5{size}.yaml"
    model = None
    if init_from is not None:
        src = Path(init_from)
        src = src.parent if src.name == DETECTOR_WEIGHTS else src
        start = Detector.load(src, fuse=False)
        model = YOLO(init)
        model.model = start.model.train()
        model.ckpt = {"init": str(src)}  # ultralytics then seeds the trainer's model from model.model
        init = f"{src} ({DETECTOR_WEIGHTS})"
    elif pretrained:
        name = f"yolov5{size}u.pt"
        local = find_pretrained(name)
        if local is None and _offline():
            msg = (
                f"offline (YOLO_OFFLINE set) and no COCO-pretrained {name} in {weights_dir()} or the "
                f"current folder: training the detector from random init ({init}) instead - expect lower "
                f"accuracy. Copy {name} (ultralytics/assets releases on GitHub) there to use it."
            )
            warnings.warn(msg, stacklevel=2)
            log.warning(msg)
        else:
            try:
                model = YOLO(str(local) if local is not None else name)  # downloads into weights_dir
                init = str(local or find_pretrained(name) or name)
            except Exception as e:  # blocked, corrupt download or file: never fatal
                msg = (
                    f"could not load COCO-pretrained {name} ({type(e).__name__}: {e}); training the "
                    f"detector from random init ({init}) instead - expect lower accuracy"
                )
                warnings.warn(msg, stacklevel=2)
                log.warning(msg)
    if model is None:
        model = YOLO(init)
    tracker = LowestValLoss()
    model.add_callback("on_fit_epoch_end", tracker)
    start = _StartWeights()
    model.add_callback("on_train_start", start)
    work = out_dir / "work"
    model.train(
        data=str(data_yaml),
        epochs=epochs,
        imgsz=imgsz,
        batch=batch,
        device=ultralytics_device(dev),
        workers=workers,
        project=str(work),
        name="detector",
        exist_ok=True,
        plots=False,
        val=True,
        seed=seed,
        mosaic=mosaic,
        optimizer=optimizer,
        amp=amp_enabled(dev),
        verbose=verbose,
        patience=max(epochs, 1),
    )
    if tracker.state_dict is None:
        raise DetectorError("detector training produced no validated epoch (no validation loss seen)")
    names = yaml.safe_load(Path(data_yaml).read_text())["names"]
    names = [names[i] for i in sorted(names)] if isinstance(names, dict) else list(names)
    save_detector(out_dir, tracker.state_dict, tracker.model_yaml or {}, names, imgsz)
    metrics = {
        k: float(v)
        for k, v in (getattr(model.trainer, "metrics", None) or {}).items()
        if isinstance(v, (int, float, np.floating))
    }
    return {
        "init": init,
        "size": size,
        "epochs": epochs,
        "imgsz": imgsz,
        "optimizer": optimizer,
        "device": str(dev),
        "amp": amp_enabled(dev),
        "init_fingerprint": start.fingerprint,
        "best_epoch": tracker.best_epoch,
        "best_val_loss": tracker.best_loss,
        "val_loss_history": tracker.history,
        "final_metrics_of_ultralytics_best": metrics,
    }


# --------------------------------------------------------------------------------- save / load
def save_detector(
    out_dir: str | Path,
    state_dict: dict[str, Any],
    model_yaml: dict[str, Any],
    names: list[str],
    imgsz: int,
) -> None:
    """Write ``detector.safetensors`` + ``detector.json`` into ``out_dir``.

    Args:
        out_dir: Teacher run folder.
        state_dict: Detection model weights (tensors).
        model_yaml: The ultralytics model architecture dict (``model.yaml``).
        names: Detector class names in class-index order.
        imgsz: Input size used for prediction.
    """
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().float().contiguous().cpu() for k, v in state_dict.items()}
    save_file(tensors, str(out_dir / DETECTOR_WEIGHTS))
    cfg = {k: v for k, v in model_yaml.items() if k != "yaml_file"}
    cfg["nc"] = len(names)
    meta = {"model_yaml": cfg, "names": list(names), "imgsz": int(imgsz)}
    (out_dir / DETECTOR_META).write_text(json.dumps(meta, indent=1))


class Detector:
    """Weights-only YOLO detector for inference (letterbox, forward, NMS, boxes in original pixels).

    Attributes:
        names: Class names in detector class order.
        imgsz: Square letterbox size.
    """

    def __init__(self, model: Any, names: list[str], imgsz: int) -> None:
        self.model = model.eval()
        self.names = list(names)
        self.imgsz = int(imgsz)
        self.stride = int(max(model.stride)) if hasattr(model, "stride") else 32

    @property
    def device(self) -> Any:
        """The torch device the model runs on."""
        return next(self.model.parameters()).device

    @classmethod
    def load(cls, run_dir: str | Path, fuse: bool = True, device: str | Any = "cpu") -> Detector:
        """Load ``detector.safetensors`` + ``detector.json`` from a teacher run folder.

        Args:
            run_dir: The folder.
            fuse: Fold Conv+BN for inference (leave off to train the model further).
            device: Where to put the model (``--device`` spec or ``torch.device``).
        """
        from safetensors.torch import load_file
        from ultralytics.nn.tasks import DetectionModel

        from train.device import resolve_device

        run_dir = Path(run_dir)
        meta_p, w_p = run_dir / DETECTOR_META, run_dir / DETECTOR_WEIGHTS
        for p in (meta_p, w_p):
            if not p.exists():
                raise DetectorError(f"{p}: missing (is {run_dir} a teacher run folder?)")
        meta = json.loads(meta_p.read_text())
        cfg = copy.deepcopy(meta["model_yaml"])
        model = DetectionModel(cfg, nc=len(meta["names"]), verbose=False)
        state = load_file(str(w_p))
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise DetectorError(
                f"{w_p}: weights do not match the architecture in {meta_p} "
                f"(missing {missing[:5]}, unexpected {unexpected[:5]})"
            )
        model = model.float().eval()
        if fuse and hasattr(model, "fuse"):
            model = model.fuse(verbose=False)  # Conv+BN folding for inference
        return cls(model.to(resolve_device(device)), meta["names"], meta["imgsz"])

    def __call__(
        self, images: list[np.ndarray], conf: float = 0.25, iou: float = 0.45, max_det: int = 100
    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Detect units.

        Args:
            images: BGR uint8 images ``(H, W, 3)``.
            conf: Confidence threshold.
            iou: NMS IoU threshold.
            max_det: Most boxes per image.

        Returns:
            Per image ``(xyxy float32 (N, 4) in original pixels, confidence (N,), class (N,))``.
        """
        import torch
        from ultralytics.utils.nms import non_max_suppression

        from edge.postprocess import preprocess, scale_boxes

        if not images:
            return []
        x, infos = preprocess(images, self.imgsz, stride=self.stride, return_info=True)
        with torch.inference_mode():
            pred = self.model(torch.from_numpy(x).to(self.device))
        pred = pred[0] if isinstance(pred, (list, tuple)) else pred
        out = non_max_suppression(pred, conf_thres=conf, iou_thres=iou, max_det=max_det)
        results = []
        for det, info in zip(out, infos, strict=True):
            d = det.cpu().numpy()
            results.append(
                (scale_boxes(d[:, :4], info), d[:, 4].astype(np.float32), d[:, 5].astype(np.int64))
            )
        return results
