"""Trainer and validator of the grade task (ultralytics ``DetectionTrainer``/``DetectionValidator``).

Like ultralytics' pose task, they override only what differs from detection:

* :class:`GradeTrainer`: builds the :class:`~train.fused.model.GradeModel` (optionally with pretrained
  detector weights), the :class:`~train.fused.data.GradeDataset`, grade class-imbalance weights, the
  grade validator, and writes weights-only checkpoints (``RUN_DIR/best``, ``RUN_DIR/last``) beside
  ultralytics' resumable ``RUN_DIR/train/weights/last.pt``.
* :class:`GradeValidator`: NMS on the raw contract, mAP per unit, per-unit grade weighted accuracy
  (seed eq. 3) of the student on matched boxes and of the teacher's soft targets, and student–teacher
  agreement (argmax agreement, mean |expected-grade difference|, ICC(3,1) of frame scores). Its
  fitness (best-checkpoint criterion) is ``0.5 * detection fitness + 0.5 * grade term``; the grade term
  is the mean grade weighted accuracy against the human grades (``select="grades"``, the default) or,
  when distilling (``select="agreement"``), the argmax agreement with the teacher on matched boxes
  (falling back to the weighted accuracy on validation data without soft targets).
"""

from __future__ import annotations

from copy import copy
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ultralytics.models.yolo.detect import DetectionTrainer, DetectionValidator
from ultralytics.utils import DEFAULT_CFG, LOGGER, nms
from ultralytics.utils.torch_utils import unwrap_model

from edge.results import Detections
from edge.scales import ScaleSpec, load_scale
from train.fused import ultra_compat
from train.fused.checkpoint import save_checkpoint
from train.fused.config import GradeLossConfig
from train.fused.data import grade_class_weights, grade_dataset_class
from train.fused.evaluate import GradeStats, format_summary
from train.fused.model import GradeModel
from train.fused.weights import fused_checkpoint_config, load_pretrained


def _spec_from_data(data: dict[str, Any]) -> ScaleSpec:
    if "scale" not in data:
        raise ValueError("data.yaml has no 'scale'; the grade task needs a grimace dataset")
    return load_scale(data["scale"])


SELECT_RULES = ("grades", "agreement")

CONSISTENT_VIEWS: dict[str, float] = {
    "mosaic": 0.0,
    "close_mosaic": 0,
    "mixup": 0.0,
    "cutmix": 0.0,
    "copy_paste": 0.0,
    "fliplr": 0.0,
    "flipud": 0.0,
    "hsv_h": 0.0,
    "hsv_s": 0.0,
    "hsv_v": 0.0,
    "degrees": 0.0,
    "translate": 0.0,
    "scale": 0.0,
    "shear": 0.0,
    "perspective": 0.0,
    "erasing": 0.0,
}
"""ultralytics augmentation settings for ``--augment consistent``: the student sees each image as the
teacher graded it. Soft targets are computed once on the unaugmented boxes, so a flipped, recoloured or
rescaled view would be trained toward the teacher's answer for a different view; near a grade boundary
the teacher's answers for the two can differ. Use it for a final distillation phase (measured in
docs/fused-model.md: training-set agreement 0.91 with standard augmentation, 0.97 with consistent views)."""

AUGMENT_MODES = ("standard", "consistent")


def augmentation_overrides(mode: str) -> dict[str, float]:
    """ultralytics overrides for an ``--augment`` mode (``standard``: ultralytics' defaults, none)."""
    if mode not in AUGMENT_MODES:
        raise ValueError(f"augment must be one of {AUGMENT_MODES}, got {mode!r}")
    return dict(CONSISTENT_VIEWS) if mode == "consistent" else {}


OPTIMIZERS = ("auto", "SGD", "Adam", "AdamW", "NAdam", "RAdam", "RMSProp")
"""``--optimizer`` choices: ultralytics' names (``auto`` picks AdamW or SGD and its own learning rate)."""


def optimizer_overrides(
    optimizer: str = "auto", lr0: float | None = None, warmup_epochs: float = 3.0
) -> dict[str, str | float]:
    """ultralytics overrides for the optimizer, initial learning rate and warm-up.

    Args:
        optimizer: One of :data:`OPTIMIZERS`.
        lr0: Initial learning rate; ``None`` keeps ultralytics' default. Not allowed with ``auto``,
            which sets its own (it would be ignored silently).
        warmup_epochs: Epochs of linear warm-up (``0``: none, e.g. for a short low-rate last phase).

    Raises:
        ValueError: Unknown optimizer, ``lr0`` with ``auto``, or a negative value.
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")
    if lr0 is not None and optimizer == "auto":
        raise ValueError("a learning rate needs a named optimizer ('auto' picks its own)")
    if (lr0 is not None and lr0 <= 0) or warmup_epochs < 0:
        raise ValueError(f"learning rate must be > 0 and warm-up epochs >= 0 (got {lr0}, {warmup_epochs})")
    over: dict[str, str | float] = {"optimizer": optimizer, "warmup_epochs": float(warmup_epochs)}
    if lr0 is not None:
        over["lr0"] = float(lr0)
    return over


class GradeValidator(DetectionValidator):
    """Detection validation plus grade accuracy and student–teacher agreement."""

    def __init__(self, dataloader=None, save_dir=None, args=None, _callbacks=None) -> None:
        super().__init__(dataloader, save_dir, args, _callbacks)
        self.spec: ScaleSpec | None = None
        self.grade_summary: dict[str, Any] = {}
        self.select = "grades"  # grade term of the fitness (SELECT_RULES); set by the trainer

    def init_metrics(self, model: torch.nn.Module) -> None:
        """Detection metrics plus empty grade collectors."""
        super().init_metrics(model)
        self.spec = _spec_from_data(self.data)
        self.grade_stats = GradeStats(self.spec)

    def postprocess(self, preds: Any) -> list[dict[str, torch.Tensor]]:
        """NMS on the raw contract; ``extra`` is the kept box's ``nc*ng`` grade probabilities."""
        raw = preds[0] if isinstance(preds, (list, tuple)) else preds
        outputs = nms.non_max_suppression(
            ultra_compat.contract_to_ultralytics(raw),
            self.args.conf,
            self.args.iou,
            nc=self.nc,
            multi_label=False,
            agnostic=self.args.single_cls or self.args.agnostic_nms,
            max_det=self.args.max_det,
        )
        return [{"bboxes": x[:, :4], "conf": x[:, 4], "cls": x[:, 5], "extra": x[:, 6:]} for x in outputs]

    def update_metrics(self, preds: list[dict[str, torch.Tensor]], batch: dict[str, Any]) -> None:
        """Detection stats plus grade rows of matched ground-truth boxes and frame scores."""
        super().update_metrics(preds, batch)
        nc, ng = self.spec.nc, self.spec.ng
        for si, pred in enumerate(preds):
            pb = self._prepare_batch(si, batch)
            idx = batch["batch_idx"] == si
            pcls = pred["cls"].long()
            probs = pred["extra"].view(-1, nc, ng)[torch.arange(len(pcls)), pcls.clamp(0, nc - 1)]
            student = Detections(
                pred["bboxes"].float().cpu().numpy().reshape(-1, 4),
                pcls.cpu().numpy().astype(np.int64),
                pred["conf"].float().cpu().numpy(),
                probs.float().cpu().numpy().reshape(-1, ng),
            )
            self.grade_stats.add_image(
                pb["bboxes"].float().cpu().numpy().reshape(-1, 4),
                pb["cls"].long().cpu().numpy(),
                batch["grade"][idx].long().cpu().numpy() if "grade" in batch else None,
                batch["soft"][idx].float().cpu().numpy() if "soft" in batch else None,
                student,
            )

    def grade_metrics(self) -> dict[str, Any]:
        """Grade statistics since :meth:`init_metrics` (see ``GradeStats.summary``)."""
        return self.grade_stats.summary()

    def get_stats(self) -> dict[str, Any]:
        """Detection stats + grade metrics; ``fitness`` includes the grade weighted accuracy."""
        stats = super().get_stats()
        g = self.grade_metrics()
        self.grade_summary = g
        gw = g["grade_wacc"]
        stats["metrics/grade_wacc"] = gw
        stats["metrics/teacher_wacc"] = g["teacher_wacc"]
        stats["metrics/agree"] = g["agree"]
        stats["metrics/exp_diff"] = g["exp_diff"]
        stats["metrics/icc"] = g["icc"]
        term = gw
        if self.select == "agreement" and not np.isnan(g["agree"]):
            term = g["agree"]
        stats["fitness"] = 0.5 * float(stats.get("fitness", 0.0)) + 0.5 * (0.0 if np.isnan(term) else term)
        return stats

    def print_results(self) -> None:
        """Detection table, then per-unit mAP and grade metrics."""
        super().print_results()
        g = self.grade_summary or self.grade_metrics()
        box = self.metrics.box
        maps = {
            int(c): (float(box.ap50[i]), float(box.ap[i].mean()))
            for i, c in enumerate(self.metrics.ap_class_index)
        }
        for line in format_summary(g, maps):
            LOGGER.info(line)


class GradeTrainer(DetectionTrainer):
    """Trainer of the fused model.

    Args:
        cfg: ultralytics default config.
        overrides: ultralytics training arguments (``data``, ``epochs``, ``imgsz``, ``batch``…).
        _callbacks: ultralytics callbacks.
        size: YOLOv5 size (``n``/``s``/``m``).
        pretrained: ``"auto"``, a detector checkpoint path, or ``None`` (see
            :func:`~train.fused.weights.load_pretrained`).
        grade_config: Grade-loss settings (default :class:`~train.fused.config.GradeLossConfig()`).
        out_dir: Where weights-only checkpoints go (``out_dir/best``, ``out_dir/last``).
        select: Grade term of the best-checkpoint fitness: ``grades`` (weighted accuracy against
            the human grades) or ``agreement`` (argmax agreement with the teacher; for distillation).
        grade_channels: Grade-branch width; ``None`` takes the width of a fused checkpoint given as
            ``pretrained`` (fine-tuning keeps its head), else the default
            (:func:`~train.fused.head.default_grade_channels`).
        trust_pickle: Allow unrestricted unpickling of a ``.pt`` given as ``pretrained`` (it may run
            code; without it such a file is refused).
    """

    def __init__(
        self,
        cfg: Any = DEFAULT_CFG,
        overrides: dict[str, Any] | None = None,
        _callbacks: dict | None = None,
        *,
        size: str = "n",
        pretrained: str | None = "auto",
        grade_config: GradeLossConfig | None = None,
        out_dir: str | Path | None = None,
        select: str = "grades",
        grade_channels: int | None = None,
        trust_pickle: bool = False,
    ) -> None:
        if select not in SELECT_RULES:
            raise ValueError(f"select must be one of {SELECT_RULES}, got {select!r}")
        super().__init__(cfg, ultra_compat.trainer_overrides(overrides, size), _callbacks)
        self.size = size
        self.pretrained = pretrained
        self.trust_pickle = trust_pickle
        self.grade_config = grade_config or GradeLossConfig()
        self.out_dir = Path(out_dir) if out_dir else Path(self.save_dir).parent
        self.select = select
        self.grade_channels = grade_channels
        self.add_callback("on_model_save", _save_weights_only)
        self.pretrained_info = ""

    @property
    def spec(self) -> ScaleSpec:
        """The dataset's scale."""
        return _spec_from_data(self.data)

    def get_model(self, cfg: Any = None, weights: Any = None, verbose: bool = True) -> GradeModel:
        """A :class:`GradeModel` for the dataset's scale; resumed or pretrained weights loaded."""
        spec = self.spec
        if ultra_compat.is_grade_yaml(cfg):
            model_cfg = cfg
        else:
            width = resolve_grade_channels(self.grade_channels, self.pretrained)
            model_cfg = ultra_compat.grade_model_yaml(self.size, spec.nc, spec.ng, spec.grade_mask, width)
        model = GradeModel(model_cfg, verbose=verbose)
        model.names = dict(enumerate(spec.unit_names))
        model.scale_spec = spec.to_dict()
        model.imgsz = int(self.args.imgsz)
        if weights is not None:  # resuming: an ultralytics checkpoint of this task
            model.load(weights)
            model.grade_config = resumed_grade_config(weights, self.grade_config)
        else:
            self.pretrained_info = load_pretrained(
                model, self.pretrained, model_cfg.get("scale", self.size), trust_pickle=self.trust_pickle
            )
            LOGGER.info(f"fused model weights: {self.pretrained_info}")
            model.grade_config = self.grade_config
        return model

    def set_model_attributes(self) -> None:
        """Detection attributes plus grade class-imbalance weights from the training labels."""
        super().set_model_attributes()
        m = unwrap_model(self.model)
        power = m.grade_config.cls_pw
        loader = getattr(self, "train_loader", None)
        if loader is not None and power > 0:
            m.grade_class_weights = torch.from_numpy(
                grade_class_weights(loader.dataset.labels, self.spec, power)
            ).to(self.device)

    def _setup_train(self) -> None:
        super()._setup_train()
        self.set_model_attributes()  # again: train_loader now exists
        m = unwrap_model(self.model)
        ultra_compat.rebuild_criterion(m)  # with the class weights
        if m.grade_class_weights is not None:
            LOGGER.info(
                f"grade class weights (unit x grade):\n{m.grade_class_weights.cpu().numpy().round(3)}"
            )

    def build_dataset(self, img_path: str, mode: str = "train", batch: int | None = None) -> Any:
        """A ``GradeDataset`` with the same settings ultralytics' ``build_yolo_dataset`` would use."""
        gs = max(int(unwrap_model(self.model).stride.max()), 32) if self.model is not None else 32
        return ultra_compat.build_grade_dataset(
            grade_dataset_class(), self.args, img_path, mode, batch, self.data, gs, spec=self.spec
        )

    def get_class_counts(self) -> np.ndarray:
        """Instances per unit (the label ``cls`` arrays are wide)."""
        return ultra_compat.unit_counts(self.train_loader.dataset.labels, self.data["nc"])

    def get_validator(self) -> GradeValidator:
        """The grade validator."""
        v = GradeValidator(
            self.test_loader, save_dir=self.save_dir, args=copy(self.args), _callbacks=self.callbacks
        )
        v.select = self.select
        return v

    def final_eval(self) -> None:
        """Skip ultralytics' re-validation of the pickled best.pt; the weights-only best is what ships."""
        return None


def resolve_grade_channels(explicit: int | None, pretrained: str | Path | None) -> int | None:
    """Grade-branch width of a new training run.

    Args:
        explicit: ``--grade-channels`` (wins when given).
        pretrained: ``--weights``; a fused checkpoint keeps its own width so that fine-tuning loads
            its grade branch (checkpoints that predate the setting have the default width).

    Returns:
        The width, or ``None`` for the default width (:func:`~train.fused.head.default_grade_channels`).
    """
    if explicit is not None:
        return int(explicit)
    ckpt = fused_checkpoint_config(pretrained)
    return None if ckpt is None else ckpt.get("grade_channels")


def resumed_grade_config(weights: Any, default: GradeLossConfig) -> GradeLossConfig:
    """The grade-loss settings of a model unpickled from ultralytics' ``last.pt``.

    Models pickled before the dataclass carry a ``grade_hyp`` dict (same keys as the stored form).
    """
    cfg = getattr(weights, "grade_config", None)
    if isinstance(cfg, GradeLossConfig):
        return cfg
    legacy = getattr(weights, "grade_hyp", None)
    return GradeLossConfig.from_dict(legacy) if isinstance(legacy, dict) else default


def _save_weights_only(trainer: GradeTrainer) -> None:
    """Callback: weights-only ``last`` every epoch, ``best`` when fitness improved."""
    model = ultra_compat.model_to_save(trainer)
    grade = {}
    v = getattr(trainer, "validator", None)
    if v is not None and getattr(v, "grade_summary", None):
        grade = v.grade_summary
    meta = {
        "size": trainer.size,
        "imgsz": int(trainer.args.imgsz),
        "epoch": int(trainer.epoch) + 1,
        "fitness": None if trainer.fitness is None else float(trainer.fitness),
        "select": trainer.select,
        "metrics": dict(trainer.metrics or {}),
        "grade_metrics": grade,
        "train_args": {
            k: (v if isinstance(v, (int, float, str, bool, type(None))) else str(v))
            for k, v in vars(trainer.args).items()
        },
        "pretrained": trainer.pretrained_info,
        "device": str(trainer.device),
        "data": str(trainer.args.data),
    }
    save_checkpoint(model, trainer.out_dir / "last", meta)  # writes the model's grade_hyp
    if ultra_compat.is_best_epoch(trainer):
        save_checkpoint(model, trainer.out_dir / "best", meta)
