"""Trainer and validator of the grade task (ultralytics ``DetectionTrainer``/``DetectionValidator``).

Like ultralytics' pose task, they override only what differs from detection:

* :class:`GradeTrainer`: builds the :class:`~train.fused.model.GradeModel` (optionally with pretrained
  detector weights), the :class:`~train.fused.data.GradeDataset`, grade class-imbalance weights, the
  grade validator, and writes weights-only checkpoints (``RUN_DIR/best``, ``RUN_DIR/last``) beside
  ultralytics' resumable ``RUN_DIR/train/weights/last.pt``.
* :class:`GradeValidator`: NMS on the raw contract, mAP per unit, per-unit grade weighted accuracy
  (seed eq. 3) of the student on matched boxes and of the teacher's soft targets, and student–teacher
  agreement (argmax agreement, mean |expected-grade difference|, ICC(3,1) of frame scores). Its
  fitness (best-checkpoint criterion) is ``0.5 * detection fitness + 0.5 * mean grade weighted accuracy``.
"""

from __future__ import annotations

from copy import copy
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ultralytics.models.yolo.detect import DetectionTrainer, DetectionValidator
from ultralytics.utils import DEFAULT_CFG, LOGGER, nms
from ultralytics.utils.metrics import box_iou
from ultralytics.utils.torch_utils import unwrap_model

from edge.results import Detections
from edge.scales import ScaleSpec, load_scale
from edge.scoring import score_frame
from train.fused import ultra_compat
from train.fused.data import grade_class_weights, grade_dataset_class
from train.fused.model import DEFAULT_GRADE_HYP, GradeModel, load_pretrained
from train.metrics import icc, weighted_accuracy

MATCH_IOU = 0.5


def _spec_from_data(data: dict[str, Any]) -> ScaleSpec:
    if "scale" not in data:
        raise ValueError("data.yaml has no 'scale'; the grade task needs a grimace dataset")
    return load_scale(data["scale"])


class GradeValidator(DetectionValidator):
    """Detection validation plus grade accuracy and student–teacher agreement."""

    def __init__(self, dataloader=None, save_dir=None, args=None, _callbacks=None) -> None:
        super().__init__(dataloader, save_dir, args, _callbacks)
        self.spec: ScaleSpec | None = None
        self.grade_summary: dict[str, Any] = {}

    def init_metrics(self, model: torch.nn.Module) -> None:
        """Detection metrics plus empty grade collectors."""
        super().init_metrics(model)
        self.spec = _spec_from_data(self.data)
        self._rows: list[tuple[int, int, int, np.ndarray, np.ndarray]] = []  # unit, grade, matched, p_s, soft
        self._frames: list[tuple[float | None, float | None]] = []  # (student, teacher) frame scores

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
        spec = self.spec
        nc, ng = spec.nc, spec.ng
        for si, pred in enumerate(preds):
            pb = self._prepare_batch(si, batch)
            idx = batch["batch_idx"] == si
            gt_grade = batch["grade"][idx].long().cpu().numpy() if "grade" in batch else None
            gt_soft = batch["soft"][idx].float().cpu().numpy() if "soft" in batch else None
            gcls = pb["cls"].long().cpu().numpy()
            pcls = pred["cls"].long()
            probs = pred["extra"].view(-1, nc, ng)[torch.arange(len(pcls)), pcls.clamp(0, nc - 1)]
            probs_np = probs.float().cpu().numpy()
            conf_np = pred["conf"].float().cpu().numpy()
            matched = np.full(len(gcls), -1)
            if len(gcls) and len(pcls):
                iou = box_iou(pb["bboxes"], pred["bboxes"]).cpu().numpy()
                iou[gcls[:, None] != pcls.cpu().numpy()[None, :]] = 0
                used: set[int] = set()
                for j in np.argsort(-conf_np):  # greedy, by confidence
                    cand = [
                        (iou[g, j], g) for g in range(len(gcls)) if matched[g] < 0 and iou[g, j] >= MATCH_IOU
                    ]
                    if cand and j not in used:
                        _, g = max(cand)
                        matched[g] = j
                        used.add(j)
            for g in range(len(gcls)):
                grade = -1 if gt_grade is None else int(gt_grade[g])
                soft = np.full(ng, -1.0) if gt_soft is None else gt_soft[g]
                ps = probs_np[matched[g]] if matched[g] >= 0 else np.full(ng, np.nan)
                self._rows.append((int(gcls[g]), grade, int(matched[g] >= 0), ps, soft))
            # frame scores: student from its detections, teacher from GT boxes + soft grades
            sd = Detections(
                pred["bboxes"].float().cpu().numpy().reshape(-1, 4),
                pcls.cpu().numpy().astype(np.int64),
                conf_np.astype(np.float32),
                probs_np.reshape(-1, ng).astype(np.float32),
            )
            s_score = score_frame(sd, spec).score
            t_score = None
            if gt_soft is not None and len(gcls) and np.all(gt_soft >= 0):
                td = Detections(
                    pb["bboxes"].float().cpu().numpy().reshape(-1, 4),
                    gcls.astype(np.int64),
                    np.ones(len(gcls), np.float32),
                    gt_soft.astype(np.float32),
                )
                t_score = score_frame(td, spec).score
            self._frames.append((s_score, t_score))

    def grade_metrics(self) -> dict[str, Any]:
        """Grade statistics over everything seen since :meth:`init_metrics`.

        Returns:
            dict with ``per_unit`` (unit -> dict of ``n``, ``student_wacc``, ``teacher_wacc``, ``agree``,
            ``exp_diff``), ``grade_wacc`` (mean student weighted accuracy over units with data),
            ``teacher_wacc``, ``agree``, ``exp_diff``, ``icc`` (NaN when not computable).
        """
        spec = self.spec
        levels = np.arange(spec.ng)
        per_unit: dict[str, dict[str, float]] = {}
        s_accs, t_accs, agree_all, diff_all = [], [], [], []
        for u, unit in enumerate(spec.units):
            rows = [r for r in self._rows if r[0] == u]
            hum = [(r[1], int(np.argmax(r[3]))) for r in rows if r[1] >= 0 and r[2]]
            teach = [(r[1], int(np.argmax(r[4]))) for r in rows if r[1] >= 0 and np.all(r[4] >= 0)]
            both = [(r[3], r[4]) for r in rows if r[2] and np.all(r[4] >= 0)]
            d: dict[str, float] = {"n": float(len(rows)), "matched": float(sum(r[2] for r in rows))}
            d["student_wacc"] = weighted_accuracy(*zip(*hum, strict=False)) if hum else float("nan")
            d["teacher_wacc"] = weighted_accuracy(*zip(*teach, strict=False)) if teach else float("nan")
            if both:
                ag = [np.argmax(ps) == np.argmax(pt) for ps, pt in both]
                df = [abs(float(ps @ levels) - float(pt @ levels)) for ps, pt in both]
                d["agree"], d["exp_diff"] = float(np.mean(ag)), float(np.mean(df))
                agree_all += ag
                diff_all += df
            else:
                d["agree"] = d["exp_diff"] = float("nan")
            if hum:
                s_accs.append(d["student_wacc"])
            if teach:
                t_accs.append(d["teacher_wacc"])
            per_unit[unit.name] = d
        pairs = np.array([(s, t) for s, t in self._frames if s is not None and t is not None], float)
        return {
            "per_unit": per_unit,
            "grade_wacc": float(np.mean(s_accs)) if s_accs else float("nan"),
            "teacher_wacc": float(np.mean(t_accs)) if t_accs else float("nan"),
            "agree": float(np.mean(agree_all)) if agree_all else float("nan"),
            "exp_diff": float(np.mean(diff_all)) if diff_all else float("nan"),
            "icc": icc(pairs, "3,1") if len(pairs) >= 2 else float("nan"),
            "frames_compared": len(pairs),
        }

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
        stats["fitness"] = 0.5 * float(stats.get("fitness", 0.0)) + 0.5 * (0.0 if np.isnan(gw) else gw)
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
        LOGGER.info(
            f"{'unit':>10} {'mAP50':>7} {'mAP50-95':>8} {'boxes':>6} {'matched':>7} "
            f"{'grade_wacc':>10} {'teacher':>8} {'agree':>6} {'|dE|':>6}"
        )
        for u, unit in enumerate(self.spec.units):
            d = g["per_unit"][unit.name]
            m50, m = maps.get(u, (float("nan"), float("nan")))
            LOGGER.info(
                f"{unit.name:>10} {m50:7.3f} {m:8.3f} {int(d['n']):6d} {int(d['matched']):7d} "
                f"{d['student_wacc']:10.3f} {d['teacher_wacc']:8.3f} {d['agree']:6.3f} {d['exp_diff']:6.3f}"
            )
        LOGGER.info(
            f"grade weighted accuracy (mean of units) student {g['grade_wacc']:.3f} teacher "
            f"{g['teacher_wacc']:.3f}; argmax agreement {g['agree']:.3f}; mean |expected-grade diff| "
            f"{g['exp_diff']:.3f}; ICC(3,1) frame scores {g['icc']:.3f} over {g['frames_compared']} frames"
        )


class GradeTrainer(DetectionTrainer):
    """Trainer of the fused model.

    Args:
        cfg: ultralytics default config.
        overrides: ultralytics training arguments (``data``, ``epochs``, ``imgsz``, ``batch``…).
        _callbacks: ultralytics callbacks.
        size: YOLOv5 size (``n``/``s``/``m``).
        pretrained: ``"auto"``, a detector checkpoint path, or ``None`` (see ``load_pretrained``).
        grade_hyp: Grade-loss settings overriding :data:`~train.fused.model.DEFAULT_GRADE_HYP`.
        out_dir: Where weights-only checkpoints go (``out_dir/best``, ``out_dir/last``).
    """

    def __init__(
        self,
        cfg: Any = DEFAULT_CFG,
        overrides: dict[str, Any] | None = None,
        _callbacks: dict | None = None,
        *,
        size: str = "n",
        pretrained: str | None = "auto",
        grade_hyp: dict[str, float] | None = None,
        out_dir: str | Path | None = None,
    ) -> None:
        overrides = dict(overrides or {})
        overrides.setdefault("model", f"yolov5{size}-grade.yaml")
        overrides["pretrained"] = False  # pretrained weights are loaded by get_model (shape-matched)
        overrides.setdefault("plots", False)
        super().__init__(cfg, overrides, _callbacks)
        self.size = size
        self.pretrained = pretrained
        self.grade_hyp = {**DEFAULT_GRADE_HYP, **(grade_hyp or {})}
        self.out_dir = Path(out_dir) if out_dir else Path(self.save_dir).parent
        self.add_callback("on_model_save", _save_weights_only)
        self.pretrained_info = ""

    @property
    def spec(self) -> ScaleSpec:
        """The dataset's scale."""
        return _spec_from_data(self.data)

    def get_model(self, cfg: Any = None, weights: Any = None, verbose: bool = True) -> GradeModel:
        """A :class:`GradeModel` for the dataset's scale; resumed or pretrained weights loaded."""
        spec = self.spec
        if isinstance(cfg, dict) and cfg.get("head", [[None] * 3])[-1][2] == ultra_compat.GRADE_HEAD:
            model_cfg = cfg
        else:
            model_cfg = ultra_compat.grade_model_yaml(self.size, spec.nc, spec.ng, spec.grade_mask)
        model = GradeModel(model_cfg, verbose=verbose)
        model.names = dict(enumerate(spec.unit_names))
        model.scale_spec = spec.to_dict()
        model.imgsz = int(self.args.imgsz)
        if weights is not None:  # resuming: an ultralytics checkpoint of this task
            model.load(weights)
            model.grade_hyp = dict(getattr(weights, "grade_hyp", self.grade_hyp))
        else:
            self.pretrained_info = load_pretrained(model, self.pretrained, model_cfg.get("scale", self.size))
            LOGGER.info(f"fused model weights: {self.pretrained_info}")
            model.grade_hyp = dict(self.grade_hyp)
        return model

    def set_model_attributes(self) -> None:
        """Detection attributes plus grade class-imbalance weights from the training labels."""
        super().set_model_attributes()
        m = unwrap_model(self.model)
        power = float(m.grade_hyp.get("grade_cls_pw", 0.0))
        loader = getattr(self, "train_loader", None)
        if loader is not None and power > 0:
            m.grade_class_weights = torch.from_numpy(
                grade_class_weights(loader.dataset.labels, self.spec, power)
            ).to(self.device)

    def _setup_train(self) -> None:
        super()._setup_train()
        self.set_model_attributes()  # again: train_loader now exists
        m = unwrap_model(self.model)
        m.criterion = None  # rebuild with the weights
        if m.grade_class_weights is not None:
            LOGGER.info(
                f"grade class weights (unit x grade):\n{m.grade_class_weights.cpu().numpy().round(3)}"
            )

    def build_dataset(self, img_path: str, mode: str = "train", batch: int | None = None) -> Any:
        """A ``GradeDataset`` with the same settings ultralytics' ``build_yolo_dataset`` would use."""
        gs = max(int(unwrap_model(self.model).stride.max()), 32) if self.model is not None else 32
        cls = grade_dataset_class()
        return cls(
            img_path=img_path,
            imgsz=self.args.imgsz,
            batch_size=batch,
            augment=mode == "train",
            hyp=self.args,
            rect=self.args.rect or mode == "val",
            cache=self.args.cache or None,
            single_cls=False,
            stride=gs,
            pad=0.0 if mode == "train" else 0.5,
            prefix=f"{mode}: ",
            task="detect",
            classes=None,
            data=self.data,
            fraction=self.args.fraction if mode == "train" else 1.0,
            spec=self.spec,
        )

    def get_class_counts(self) -> np.ndarray:
        """Instances per unit (the label ``cls`` arrays are wide)."""
        return ultra_compat.unit_counts(self.train_loader.dataset.labels, self.data["nc"])

    def get_validator(self) -> GradeValidator:
        """The grade validator."""
        return GradeValidator(
            self.test_loader, save_dir=self.save_dir, args=copy(self.args), _callbacks=self.callbacks
        )

    def final_eval(self) -> None:
        """Skip ultralytics' re-validation of the pickled best.pt; the weights-only best is what ships."""
        return None


def _save_weights_only(trainer: GradeTrainer) -> None:
    """Callback: weights-only ``last`` every epoch, ``best`` when fitness improved."""
    from train.fused.checkpoint import save_checkpoint

    model = trainer.ema.ema if trainer.ema else unwrap_model(trainer.model)
    grade = {}
    v = getattr(trainer, "validator", None)
    if v is not None and getattr(v, "grade_summary", None):
        grade = v.grade_summary
    meta = {
        "size": trainer.size,
        "imgsz": int(trainer.args.imgsz),
        "epoch": int(trainer.epoch) + 1,
        "fitness": None if trainer.fitness is None else float(trainer.fitness),
        "metrics": dict(trainer.metrics or {}),
        "grade_metrics": grade,
        "train_args": {
            k: (v if isinstance(v, (int, float, str, bool, type(None))) else str(v))
            for k, v in vars(trainer.args).items()
        },
        "grade_hyp": dict(getattr(model, "grade_hyp", {})),
        "pretrained": trainer.pretrained_info,
        "data": str(trainer.args.data),
    }
    save_checkpoint(model, trainer.out_dir / "last", meta)
    if (
        trainer.best_fitness is not None
        and trainer.fitness is not None
        and trainer.best_fitness == trainer.fitness
    ):
        save_checkpoint(model, trainer.out_dir / "best", meta)
