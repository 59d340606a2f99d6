"""The fused model: ultralytics YOLOv5 (anchor-free head) whose head also grades every box.

:class:`GradeModel` is a ``DetectionModel`` whose last layer is a
:class:`~train.fused.head.GradeDetect`; it builds the grade loss as its criterion, like ultralytics'
``PoseModel`` builds ``v8PoseLoss``. :func:`build_fused_model` is the one-call constructor.
"""

from __future__ import annotations

from copy import deepcopy
from typing import Any

import torch
from ultralytics.nn.tasks import DetectionModel

from edge.scales import ScaleSpec, load_scale
from train.fused import ultra_compat
from train.fused.config import GradeLossConfig
from train.fused.head import GradeDetect
from train.fused.loss import GradeLoss


class GradeModel(DetectionModel):
    """YOLO detection model with a grade head.

    Args:
        cfg: Model dict from :func:`~train.fused.ultra_compat.grade_model_yaml` (must contain ``ng``).
        ch: Input channels.
        nc: Number of units (overrides the yaml's ``nc``; the grade mask must then still fit).
        verbose: Print the layer table.

    Attributes:
        grade_config: Grade-loss settings (:class:`~train.fused.config.GradeLossConfig`).
        grade_class_weights: Optional ``(nc, ng)`` tensor of class-imbalance weights for the grade loss.
    """

    def __init__(self, cfg: dict[str, Any], ch: int = 3, nc: int | None = None, verbose: bool = True) -> None:
        if not isinstance(cfg, dict):
            raise TypeError("GradeModel needs a model dict (see train.fused.ultra_compat.grade_model_yaml)")
        cfg = deepcopy(cfg)
        if nc is not None and nc != cfg["nc"]:
            raise ValueError(f"model yaml has nc={cfg['nc']} but nc={nc} was requested")
        ultra_compat.init_grade_model(self, cfg, ch, verbose)  # DetectionModel.__init__ + head swap
        self.grade_config = GradeLossConfig()
        self.grade_class_weights: torch.Tensor | None = None

    @property
    def head(self) -> GradeDetect:
        """The grade head (last layer)."""
        return self.model[-1]

    def init_criterion(self) -> GradeLoss:
        """The detection loss plus the grade loss."""
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
    return DetectionModel(ultra_compat.plain_model_yaml(size.removeprefix("yolov5")), nc=nc, verbose=False)


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
