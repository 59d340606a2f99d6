"""The fused model: ultralytics YOLOv5 (anchor-free head) whose head also grades every box.

:class:`GradeModel` is a ``DetectionModel`` whose last layer is a
:class:`~train.fused.head.GradeDetect`; it builds the grade loss as its criterion, like ultralytics'
``PoseModel`` builds ``v8PoseLoss``. :func:`build_fused_model` is the one-call constructor.
"""

from __future__ import annotations

import os
import warnings
from copy import deepcopy
from pathlib import Path
from typing import Any

import torch
from ultralytics.nn.tasks import DetectionModel

from edge.scales import ScaleSpec, load_scale
from train.fused import ultra_compat
from train.fused.head import GradeDetect

DEFAULT_GRADE_HYP: dict[str, float] = {
    "grade_ce": 1.0,  # weight of the cross-entropy to human grades
    "grade_kd": 1.0,  # weight of the KL divergence to the teacher's soft grades
    "grade_T": 2.0,  # distillation temperature (KL is multiplied by T**2)
    "grade_cls_pw": 0.5,  # class-imbalance weight power: w[u, g] ∝ count[u, g] ** -pw (0 disables)
}


class GradeModel(DetectionModel):
    """YOLO detection model with a grade head.

    Args:
        cfg: Model dict from :func:`~train.fused.ultra_compat.grade_model_yaml` (must contain ``ng``).
        ch: Input channels.
        nc: Number of units (overrides the yaml's ``nc``; the grade mask must then still fit).
        verbose: Print the layer table.

    Attributes:
        grade_hyp: Grade-loss hyperparameters (see :data:`DEFAULT_GRADE_HYP`).
        grade_class_weights: Optional ``(nc, ng)`` tensor of class-imbalance weights for the grade loss.
    """

    def __init__(self, cfg: dict[str, Any], ch: int = 3, nc: int | None = None, verbose: bool = True) -> None:
        if not isinstance(cfg, dict):
            raise TypeError("GradeModel needs a model dict (see train.fused.ultra_compat.grade_model_yaml)")
        cfg = deepcopy(cfg)
        if nc is not None and nc != cfg["nc"]:
            raise ValueError(f"model yaml has nc={cfg['nc']} but nc={nc} was requested")
        super().__init__(ultra_compat.parse_yaml_for_ultralytics(cfg), ch=ch, nc=cfg["nc"], verbose=verbose)
        ultra_compat.swap_in_grade_head(
            self, int(cfg["ng"]), cfg.get("grade_mask"), cfg.get("grade_channels")
        )
        cfg["channels"] = ch
        self.yaml = cfg
        self.grade_hyp = dict(DEFAULT_GRADE_HYP)
        self.grade_class_weights: torch.Tensor | None = None

    @property
    def head(self) -> GradeDetect:
        """The grade head (last layer)."""
        return self.model[-1]

    def init_criterion(self) -> Any:
        """The detection loss plus the grade loss."""
        from train.fused.loss import GradeLoss

        return GradeLoss(self)

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        """Raw contract forward (eval mode): ``(B, 3, H, W)`` -> ``(B, N, 4 + nc + nc*ng)``."""
        out = self.forward(x)
        return out[0] if isinstance(out, tuple) else out


def build_fused_model(
    spec: ScaleSpec | str,
    size: str = "n",
    imgsz: int = 640,
    verbose: bool = False,
    grade_channels: int | None = None,
) -> GradeModel:
    """Build a fused YOLOv5 + grade-head model with random weights.

    Args:
        spec: Scale spec (or built-in name / YAML path); gives ``nc``, ``ng`` and the grade mask.
        size: YOLOv5 size ``n``/``s``/``m`` (``l``/``x`` also build).
        imgsz: Nominal input size (stored on the model as ``imgsz``; any multiple of 32 works).
        verbose: Print the layer table.
        grade_channels: Grade-branch width (``None``: :func:`~train.fused.head.default_grade_channels`).

    Returns:
        A :class:`GradeModel` in train mode; ``model.eval()(x)`` returns ``(raw, dict)``, and with
        ``model.head.export = True`` the raw ``(B, N, 4 + nc + nc*ng)`` tensor alone.
    """
    spec = load_scale(spec)
    size = size.removeprefix("yolov5")
    cfg = ultra_compat.grade_model_yaml(size, spec.nc, spec.ng, spec.grade_mask, grade_channels)
    model = GradeModel(cfg, verbose=verbose)
    model.names = dict(enumerate(spec.unit_names))
    model.scale_spec = spec.to_dict()
    model.imgsz = int(imgsz)
    return model


def build_plain_detector(nc: int, size: str = "n") -> DetectionModel:
    """The same ultralytics YOLOv5 size without grade heads (for FLOPs comparison / weight transfer)."""
    from ultralytics.nn.tasks import yaml_model_load

    d = deepcopy(yaml_model_load(f"yolov5{size.removeprefix('yolov5')}.yaml"))
    return DetectionModel(d, nc=nc, verbose=False)


def count_flops(model: torch.nn.Module, imgsz: int = 640) -> float:
    """Forward FLOPs (multiply-add counted as 2) of one ``imgsz``×``imgsz`` image, via torch's counter."""
    from torch.utils.flop_counter import FlopCounterMode

    p = next(model.parameters())
    x = torch.zeros(1, 3, imgsz, imgsz, device=p.device, dtype=p.dtype)
    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    model.train(was_training)
    return float(counter.get_total_flops())


def flops_comparison(
    spec: ScaleSpec | str, size: str = "n", imgsz: int = 640, grade_channels: int | None = None
) -> dict[str, float]:
    """FLOPs of the fused model and of the same YOLOv5 size without grade heads.

    Args:
        spec: Scale spec (or name / YAML path).
        size: YOLOv5 size.
        imgsz: Square input size.
        grade_channels: Grade-branch width of the fused model (``None``: default width).

    Returns:
        ``{"fused": F, "plain": P, "ratio": F / P}`` (FLOPs per image).
    """
    spec = load_scale(spec)
    fused = count_flops(build_fused_model(spec, size, grade_channels=grade_channels), imgsz)
    plain = count_flops(build_plain_detector(spec.nc, size), imgsz)
    return {"fused": fused, "plain": plain, "ratio": fused / plain}


def transfer_weights(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> tuple[int, int]:
    """Copy every tensor of ``state`` whose name and shape match a tensor of ``model``.

    Returns:
        ``(copied, total)``: number of model tensors overwritten and number in the model.
    """
    own = model.state_dict()
    hits = {k: v for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    own.update({k: v.to(own[k].dtype) for k, v in hits.items()})
    model.load_state_dict(own)
    return len(hits), len(own)


def _state_from_file(path: Path) -> dict[str, torch.Tensor]:
    """State dict from ``.safetensors``, a weights-only ``.pt``, or (trusted) an ultralytics ``.pt``."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        # ultralytics checkpoints pickle the model object; only for files the user chose to trust
        from ultralytics.nn.tasks import torch_safe_load

        obj = torch_safe_load(str(path))[0]
    if isinstance(obj, dict) and ("ema" in obj or "model" in obj):
        obj = obj.get("ema") or obj.get("model")
    if isinstance(obj, torch.nn.Module):
        obj = obj.float().state_dict()
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: not a state dict or ultralytics checkpoint")
    return obj


def _detector_names(path: Path) -> list[str] | None:
    """Class names stored beside a teacher detector (``detector.json``), if any."""
    import json

    meta = path.with_suffix(".json")
    if not meta.exists():
        return None
    try:
        names = json.loads(meta.read_text()).get("names")
    except (json.JSONDecodeError, AttributeError):
        return None
    if isinstance(names, dict):
        names = [names[k] for k in sorted(names, key=int)]
    return list(names) if names else None


def fused_checkpoint_config(weights: str | Path | None) -> dict[str, Any] | None:
    """``config.json`` of a fused checkpoint (or student run folder, or its ``model.safetensors``).

    Returns:
        The config dict, or ``None`` when ``weights`` is not a fused checkpoint (``auto``, ``none``, a
        teacher run, a detector file).
    """
    if weights is None or str(weights).lower() in ("", "none", "random", "auto"):
        return None
    from train.fused.checkpoint import CONFIG, checkpoint_dir, read_config

    d = checkpoint_dir(weights)
    return read_config(d) if (d / CONFIG).exists() else None


def load_pretrained(model: GradeModel, weights: str | Path | None, size: str = "n") -> str:
    """Load pretrained detector weights into the matching layers (shape-matched intersection).

    Args:
        model: The fused model.
        weights: ``"auto"`` (COCO ``yolov5{size}u.pt`` from ultralytics when it can be had), a
            teacher run folder (its ``detector.safetensors``), a fused checkpoint folder (fine-tuning),
            a ``.safetensors``/``.pt`` detector checkpoint, or ``None``/``"none"`` for random init.
        size: Model size, for the ``"auto"`` asset name.

    Returns:
        A one-line description of what was loaded (also warned when falling back to random init).
    """
    if weights is None or str(weights).lower() in ("", "none", "random"):
        return "random init (no pretrained weights requested)"
    path: Path | None = None
    if str(weights).lower() == "auto":
        name = f"yolov5{size.removeprefix('yolov5')}u.pt"
        if os.environ.get("YOLO_OFFLINE", "").lower() in ("1", "true"):
            msg = f"YOLO_OFFLINE is set: not downloading {name}; random init"
            warnings.warn(msg, stacklevel=2)
            return msg
        try:
            from ultralytics.utils.downloads import attempt_download_asset

            path = Path(attempt_download_asset(name))
            if not path.exists():
                raise FileNotFoundError(name)
        except Exception as e:  # offline or asset missing: never fail on the network
            msg = f"could not get COCO weights {name} ({type(e).__name__}: {e}); random init"
            warnings.warn(msg, stacklevel=2)
            return msg
    else:
        from train.fused.checkpoint import checkpoint_dir

        path = Path(weights)
        if path.is_dir() and (path / "detector.safetensors").exists():  # a teacher run folder
            path = path / "detector.safetensors"
        elif path.is_dir() and (checkpoint_dir(path) / "model.safetensors").exists():
            path = checkpoint_dir(path) / "model.safetensors"  # a fused checkpoint or training run folder
        if not path.exists():
            raise FileNotFoundError(f"pretrained weights {path} do not exist")
        if path.is_dir():
            raise FileNotFoundError(
                f"{path}: a folder without weights (expected a teacher run, a fused checkpoint or "
                "training run folder, or a .safetensors/.pt file)"
            )
    state = _state_from_file(path)
    names = _detector_names(path)
    if names is not None and names != [model.names.get(i) for i in range(len(model.names))]:
        # class order differs: keep the backbone/box branch, not the class-score convolutions
        head = len(model.model) - 1
        state = {k: v for k, v in state.items() if not k.startswith(f"model.{head}.cv3.")}
    copied, total = transfer_weights(model, state)
    return f"loaded {copied}/{total} tensors from {path}"
