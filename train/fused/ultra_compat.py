"""Every workaround for ultralytics internals used by the grade task, in one place.

ultralytics 8.4 has no hook to register a new head type, reads only 5-column label files, and has a
few places that assume ``cls`` has one column. The grade task works around these here, and only here:

1. **Head registration.** ``parse_model`` looks layer names up in ``ultralytics.nn.tasks`` globals and
   passes channel lists only to a fixed set of head classes. :func:`parse_yaml_for_ultralytics` rewrites
   the ``GradeDetect`` row of a grade yaml into a plain ``Detect`` row; :func:`swap_in_grade_head` then
   replaces the built ``Detect`` with a :class:`~train.fused.head.GradeDetect` that reuses its box/class
   weights, strides and layer bookkeeping (``i``, ``f``, ``type``, ``np``).
2. **Model yaml.** :func:`grade_model_yaml` loads ultralytics' own ``yolov5.yaml`` (the anchor-free
   v8-style head) and swaps the head row, so the backbone/neck stay exactly ultralytics'.
3. **Per-box extra fields through augmentation.** ultralytics' transforms (Mosaic, RandomPerspective,
   MixUp, CutMix, CopyPaste, LetterBox, RandomFlip, Format) index or concatenate ``labels["cls"]`` row-wise
   wherever boxes are filtered or merged. The grade dataset stores ``cls`` as a wide ``(n, 2 + ng)`` array
   ``[unit, grade, soft_0..soft_ng-1]`` (:func:`pack_cls`) so grades and soft targets travel with their box
   through every transform; :class:`SplitGradeFields` (appended after ``Format``) splits them back into
   ``cls`` ``(n, 1)``, ``grade`` ``(n,)`` and ``soft`` ``(n, ng)``. ``Albumentations`` reshapes ``cls`` to
   one column, so :func:`strip_cls_reshaping_transforms` removes it (it is only active when the optional
   ``albumentations`` package is installed).
4. **Class counts.** ``DetectionTrainer.get_class_counts`` flattens ``cls``; :func:`unit_counts` reads the
   unit column only.
5. **NMS layout.** ultralytics' NMS wants ``(B, 4 + nc + extra, N)`` centre-size boxes; the grade head
   emits the grimace raw contract ``(B, N, 4 + nc + nc*ng)`` xyxy. :func:`contract_to_ultralytics`
   converts for the validator.
6. **Checkpoints and assets.** ultralytics ``.pt`` files pickle the model object. Without trust they
   are read by ultralytics' restricted loader (``torch_safe_load(safe_only=True)``: ``weights_only``
   plus an allow-list of its own model classes; private ``_SafeLoad.SUPPORTED`` says whether the torch
   build can do it) and anything outside the allow-list is refused before it runs
   (:func:`load_ultralytics_checkpoint`); :func:`ultralytics_state_dict` unwraps its ``ema``/``model``
   layout; :func:`download_asset` fetches a COCO asset (``yolov5nu.pt``).
7. **Trainer internals.** ultralytics calls ``set_model_attributes`` before the dataloaders exist and
   builds the criterion lazily on the first batch: :func:`rebuild_criterion` drops a criterion built
   too early. Its ``build_yolo_dataset`` cannot build another dataset class:
   :func:`build_grade_dataset` passes the same settings. :func:`is_best_epoch` and
   :func:`model_to_save` read the trainer state ultralytics' own ``save_model`` uses.
   :func:`trainer_overrides` turns off ultralytics' own pretrained loading (weights are loaded
   shape-matched by the grade trainer) and plots (the device spelling ultralytics reads is
   ``train.device.ultralytics_device``).
"""

from __future__ import annotations

from copy import deepcopy
from pathlib import Path
from typing import Any

import numpy as np
import torch

GRADE_HEAD = "GradeDetect"
SIZES = ("n", "s", "m", "l", "x")


class RestrictedLoadError(ValueError):
    """ultralytics' restricted loader refused a checkpoint (it needs globals outside the allow-list)."""


# ----------------------------------------------------------------------------------------- model yaml
def grade_model_yaml(
    size: str,
    nc: int,
    ng: int,
    grade_mask: np.ndarray | None = None,
    grade_channels: int | None = None,
) -> dict[str, Any]:
    """ultralytics' ``yolov5.yaml`` at scale ``size`` with the ``Detect`` row swapped for ``GradeDetect``.

    Args:
        size: ``n``, ``s``, ``m``, ``l`` or ``x``.
        nc: Number of units.
        ng: Grade columns per unit.
        grade_mask: Optional ``(nc, ng)`` boolean mask of valid grade levels.
        grade_channels: Width of the grade branch (``None``: the default width, see
            :func:`train.fused.head.default_grade_channels`); stored as the dict's ``grade_channels``.

    Returns:
        A model dict that :class:`~train.fused.model.GradeModel` accepts.
    """
    d = plain_model_yaml(size)
    d["scale"] = size
    d["nc"] = int(nc)
    d["ng"] = int(ng)
    d["grade_mask"] = (
        np.ones((nc, ng), bool) if grade_mask is None else np.asarray(grade_mask, bool)
    ).tolist()
    if grade_channels is not None:
        d["grade_channels"] = int(grade_channels)
    last = d["head"][-1]
    if last[2] != "Detect":
        raise RuntimeError(f"ultralytics yolov5.yaml changed: last head row is {last[2]!r}, expected Detect")
    d["head"][-1] = [last[0], last[1], GRADE_HEAD, ["nc", "ng"]]
    d["yaml_file"] = f"yolov5{size}-grade.yaml"
    return d


def plain_model_yaml(size: str) -> dict[str, Any]:
    """ultralytics' own ``yolov5{size}.yaml`` model dict (a copy), without grade heads."""
    from ultralytics.nn.tasks import yaml_model_load

    if size not in SIZES:
        raise ValueError(f"unknown YOLOv5 size {size!r}; expected one of {SIZES}")
    return deepcopy(yaml_model_load(f"yolov5{size}.yaml"))


def is_grade_yaml(cfg: Any) -> bool:
    """Whether ``cfg`` is a grade model dict (its last head row is ``GradeDetect``)."""
    try:
        return isinstance(cfg, dict) and cfg["head"][-1][2] == GRADE_HEAD
    except (KeyError, IndexError, TypeError):
        return False


def init_grade_model(model: torch.nn.Module, cfg: dict[str, Any], ch: int, verbose: bool) -> None:
    """Build a grade model in place: ``DetectionModel.__init__`` on the plain yaml, then the head swap.

    ``parse_model`` cannot build ``GradeDetect`` (section 1 above), so the ``DetectionModel`` is built
    from :func:`parse_yaml_for_ultralytics`, its ``Detect`` replaced by :func:`swap_in_grade_head`, and
    ``model.yaml`` set back to the grade dict (ultralytics stored the rewritten one).

    Args:
        model: A ``GradeModel`` whose ``__init__`` is running (``DetectionModel`` not initialised yet).
        cfg: Grade model dict (copied by the caller); ``channels`` is set on it.
        ch: Input channels.
        verbose: Print the layer table.
    """
    from ultralytics.nn.tasks import DetectionModel

    DetectionModel.__init__(model, parse_yaml_for_ultralytics(cfg), ch=ch, nc=cfg["nc"], verbose=verbose)
    swap_in_grade_head(model, int(cfg["ng"]), cfg.get("grade_mask"), cfg.get("grade_channels"))
    cfg["channels"] = ch
    model.yaml = cfg


def parse_yaml_for_ultralytics(cfg: dict[str, Any]) -> dict[str, Any]:
    """Copy of a grade yaml whose ``GradeDetect`` row is a plain ``Detect`` row ``parse_model`` can build."""
    d = deepcopy(cfg)
    last = d["head"][-1]
    if last[2] != GRADE_HEAD:
        raise ValueError(f"model yaml's last head row must be {GRADE_HEAD}, got {last[2]!r}")
    d["head"][-1] = [last[0], last[1], "Detect", ["nc"]]
    return d


def swap_in_grade_head(
    model: torch.nn.Module, ng: int, grade_mask: Any, grade_channels: int | None = None
) -> None:
    """Replace ``model.model[-1]`` (a built ``Detect``) by a ``GradeDetect`` sharing its weights.

    Args:
        model: A ``DetectionModel`` built from :func:`parse_yaml_for_ultralytics` output.
        ng: Grade columns per unit.
        grade_mask: ``(nc, ng)`` boolean mask.
        grade_channels: Grade-branch width (``None``: default width).
    """
    from ultralytics.nn.modules import Detect
    from ultralytics.utils.torch_utils import initialize_weights

    from train.fused.head import GradeDetect

    old = model.model[-1]
    if type(old) is not Detect:
        raise TypeError(f"expected a Detect head to swap, got {type(old).__name__}")
    ch = [int(seq[0].conv.in_channels) for seq in old.cv2]
    new = GradeDetect(
        old.nc, ng, old.reg_max, False, ch, grade_mask=grade_mask, grade_channels=grade_channels
    )
    missing, unexpected = new.load_state_dict(old.state_dict(), strict=False)
    if unexpected or any(not k.startswith(("cv4.", "grade_mask")) for k in missing):
        raise RuntimeError(f"head swap mismatch: missing={missing} unexpected={unexpected}")
    new.stride = old.stride.clone()
    new.inplace = getattr(old, "inplace", True)
    new.i, new.f, new.type = old.i, old.f, "train.fused.head.GradeDetect"
    new.np = sum(p.numel() for p in new.parameters())
    initialize_weights(new.cv4)  # the BN eps/momentum ultralytics gives every model
    new.grade_bias_init()
    model.model[-1] = new


# --------------------------------------------------------------------------------- per-box extra fields
def pack_cls(units: np.ndarray, grades: np.ndarray, soft: np.ndarray) -> np.ndarray:
    """Wide ``cls`` array that ultralytics' transforms carry row-by-row with the boxes.

    Args:
        units: ``(n,)`` unit indices.
        grades: ``(n,)`` human grades, -1 where ungraded.
        soft: ``(n, ng)`` teacher probabilities, all -1 on rows without a soft target.

    Returns:
        ``(n, 2 + ng)`` float32 ``[unit, grade, soft...]``.
    """
    n = len(units)
    soft = np.asarray(soft, np.float32)
    ng = soft.shape[-1] if soft.ndim == 2 else (soft.size // n if n else 0)
    return np.concatenate(
        [
            np.asarray(units, np.float32).reshape(n, 1),
            np.asarray(grades, np.float32).reshape(n, 1),
            soft.reshape(n, ng),
        ],
        axis=1,
    )


class SplitGradeFields:
    """Transform appended after ``Format``: wide ``cls`` -> ``cls`` (n,1), ``grade`` (n,), ``soft`` (n,ng)."""

    def __init__(self, ng: int) -> None:
        self.ng = ng

    def __call__(self, labels: dict[str, Any]) -> dict[str, Any]:
        cls = labels["cls"]
        if cls.ndim != 2 or cls.shape[0] == 0:
            n = 0 if cls.ndim != 2 else cls.shape[0]
            labels["cls"] = torch.zeros(n, 1)
            labels["grade"] = torch.zeros(n)
            labels["soft"] = torch.zeros(n, self.ng)
            return labels
        if cls.shape[1] != 2 + self.ng:
            raise RuntimeError(f"grade dataset: cls has {cls.shape[1]} columns, expected {2 + self.ng}")
        labels["cls"] = cls[:, :1].contiguous()
        labels["grade"] = cls[:, 1].contiguous()
        labels["soft"] = cls[:, 2:].contiguous()
        return labels


def strip_cls_reshaping_transforms(compose: Any) -> Any:
    """Remove transforms that flatten ``cls`` to one column (``Albumentations``) from a ``Compose``."""
    from ultralytics.data.augment import Albumentations, Compose

    def keep(t: Any) -> bool:
        return not isinstance(t, Albumentations)

    def walk(c: Any) -> Any:
        if isinstance(c, Compose):
            c.transforms = [walk(t) for t in c.transforms if keep(t)]
        for attr in ("pre_transform",):
            sub = getattr(c, attr, None)
            if isinstance(sub, Compose):
                walk(sub)
        return c

    return walk(compose)


def collate_grade_fields(batch: list[dict[str, Any]], collated: dict[str, Any]) -> dict[str, Any]:
    """Concatenate the per-box ``grade``/``soft`` fields that ultralytics' collate leaves as tuples."""
    for k in ("grade", "soft"):
        if k in batch[0]:
            collated[k] = torch.cat([b[k] for b in batch], 0)
    return collated


def unit_counts(labels: list[dict[str, Any]], nc: int) -> np.ndarray:
    """Instances per unit from dataset labels whose ``cls`` may be wide."""
    units = [np.asarray(lb["cls"]).reshape(len(lb["cls"]), -1)[:, 0] for lb in labels if len(lb["cls"])]
    allu = np.concatenate(units).astype(int) if units else np.zeros(0, int)
    return np.bincount(allu, minlength=nc).astype(np.float32)


# ------------------------------------------------------------------------------------------- NMS layout
def contract_to_ultralytics(raw: torch.Tensor) -> torch.Tensor:
    """``(B, N, 4 + C)`` xyxy contract -> ``(B, 4 + C, N)`` centre-size layout of ultralytics' NMS."""
    xy = (raw[..., 0:2] + raw[..., 2:4]) / 2
    wh = raw[..., 2:4] - raw[..., 0:2]
    return torch.cat((xy, wh, raw[..., 4:]), -1).permute(0, 2, 1)


# ------------------------------------------------------------------------------ checkpoints and assets
def restricted_load_supported() -> bool:
    """Whether ultralytics' restricted (allow-list) loader works with this torch build."""
    from ultralytics.nn.tasks import _SafeLoad

    return bool(_SafeLoad.SUPPORTED)


def checkpoint_globals(path: str | Path) -> list[str]:
    """Python globals a ``torch.save`` archive references (read from the pickle, nothing executed)."""
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except Exception:  # not a zip archive (legacy format) or unreadable: no list
        return []


def load_ultralytics_checkpoint(path: str | Path, trust_pickle: bool = False) -> Any:
    """Load an ultralytics ``.pt`` checkpoint.

    Args:
        path: An existing ``.pt`` file.
        trust_pickle: Unpickle without restriction (may run code the file carries). Otherwise only
            tensors and ultralytics' allow-listed model classes are rebuilt.

    Returns:
        The unpickled checkpoint (a dict for ultralytics checkpoints).

    Raises:
        RestrictedLoadError: The restricted loader refused the file, or cannot run on this torch build
            (in which case nothing is loaded rather than unpickling without restriction).
    """
    from ultralytics.nn.tasks import torch_safe_load

    if trust_pickle:
        return torch_safe_load(str(path), safe_only=False)[0]
    if not restricted_load_supported():
        raise RestrictedLoadError(f"torch {torch.__version__} cannot do ultralytics' restricted load")
    try:
        return torch_safe_load(str(path), safe_only=True)[0]
    except TypeError as e:  # ultralytics reports a refused global and a damaged file as TypeError
        raise RestrictedLoadError(str(e).replace("ERROR ❌️ ", "")) from None


def ultralytics_state_dict(obj: Any) -> Any:
    """The float state dict inside an ultralytics checkpoint dict (``ema`` first, then ``model``).

    Anything else (a plain state dict) is returned unchanged.
    """
    if isinstance(obj, dict) and ("ema" in obj or "model" in obj):
        obj = obj.get("ema") or obj.get("model")
    if isinstance(obj, torch.nn.Module):
        obj = obj.float().state_dict()
    return obj


def download_asset(name: str) -> Path:
    """Path of an ultralytics release asset (``yolov5nu.pt``), downloaded when missing.

    Raises:
        FileNotFoundError: The asset could not be had.
    """
    from ultralytics.utils.downloads import attempt_download_asset

    path = Path(attempt_download_asset(name))
    if not path.exists():
        raise FileNotFoundError(name)
    return path


# ------------------------------------------------------------------------------------ trainer internals
def trainer_overrides(overrides: dict[str, Any] | None, size: str) -> dict[str, Any]:
    """Overrides for ``DetectionTrainer`` of the grade task.

    ``model`` names the grade yaml (ultralytics only records it), ``pretrained=False`` stops ultralytics
    loading weights itself (the grade trainer loads them shape-matched), plots are off unless asked.
    """
    over = dict(overrides or {})
    over.setdefault("model", f"yolov5{size}-grade.yaml")
    over["pretrained"] = False
    over.setdefault("plots", False)
    return over


def rebuild_criterion(model: torch.nn.Module) -> None:
    """Drop a criterion built before the trainer knew everything (ultralytics rebuilds it lazily)."""
    model.criterion = None


def model_to_save(trainer: Any) -> torch.nn.Module:
    """The model ultralytics' ``save_model`` writes: the EMA when there is one, else the model."""
    from ultralytics.utils.torch_utils import unwrap_model

    return trainer.ema.ema if trainer.ema else unwrap_model(trainer.model)


def is_best_epoch(trainer: Any) -> bool:
    """Whether this epoch's fitness is the best so far (the rule ultralytics writes ``best.pt`` by)."""
    return (
        trainer.best_fitness is not None
        and trainer.fitness is not None
        and trainer.best_fitness == trainer.fitness
    )


def build_grade_dataset(
    dataset_class: type,
    args: Any,
    img_path: str,
    mode: str,
    batch: int | None,
    data: dict[str, Any],
    stride: int,
    **extra: Any,
) -> Any:
    """A grade dataset with the settings ultralytics' ``build_yolo_dataset`` gives a ``YOLODataset``.

    The same keyword arguments (a test compares them with ultralytics'), except ``single_cls``,
    ``classes`` and ``task``, which the grade task fixes.

    Args:
        dataset_class: The ``YOLODataset`` subclass (``train.fused.data.grade_dataset_class()``).
        args: The trainer's ultralytics arguments.
        img_path: Image folder.
        mode: ``train`` or ``val``.
        batch: Batch size (for ``rect``).
        data: The dataset dict.
        stride: Grid size (largest model stride, at least 32).
        **extra: Passed on (``spec``).
    """
    from ultralytics.data.utils import get_split_fraction
    from ultralytics.utils import colorstr

    return dataset_class(
        img_path=img_path,
        imgsz=args.imgsz,
        batch_size=batch,
        augment=mode == "train",
        hyp=args,
        rect=args.rect or mode == "val",
        cache=args.cache or None,
        single_cls=False,  # the grade task needs the units: never one class
        stride=stride,
        pad=0.0 if mode == "train" else 0.5,
        prefix=colorstr(f"{mode}: "),
        task="detect",
        classes=None,  # every unit (grade labels refer to all of them)
        data=data,
        fraction=1.0
        if data.get("complete")
        else get_split_fraction(args.fraction, "train" if mode == "train" else args.split),
        **extra,
    )
