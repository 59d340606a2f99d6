"""Grade statistics of a student against human grades and the teacher (numpy; no torch).

:class:`GradeStats` accumulates, per image, the ground-truth boxes (unit, human grade, optional teacher
soft target) and the student's detections; each ground-truth box is matched to the most confident
student box of the same unit with IoU ≥ 0.5 (greedy by confidence, one-to-one). The teacher's grade
distribution of a box is either its soft target (the teacher grading the ground-truth box) or, when
teacher detections are given, the teacher's own detection matched the same way.

:func:`evaluate_checkpoint` runs a fused checkpoint on a dataset split (the PyTorch predict path, i.e.
the edge pre/post-processing) and returns the summary; ``grimace train evaluate`` prints it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edge.boxes import greedy_match
from edge.results import Detections
from edge.scales import ScaleSpec
from edge.scoring import score_frame
from train.metrics import icc, weighted_accuracy

MATCH_IOU = 0.5


def match_boxes(
    gt_xyxy: np.ndarray, gt_unit: np.ndarray, det: Detections, iou_thr: float = MATCH_IOU
) -> np.ndarray:
    """Index of the detection matched to each ground-truth box (-1 if none); same unit, IoU ≥ thr."""
    matched = np.full(len(gt_unit), -1, np.int64)
    m, _ = greedy_match(det.xyxy, det.confidence, gt_xyxy, a_unit=det.unit, b_unit=gt_unit, iou_thr=iou_thr)
    hit = np.flatnonzero(m >= 0)
    matched[m[hit]] = hit
    return matched


class GradeStats:
    """Accumulates grade rows and frame scores; :meth:`summary` computes the statistics.

    Args:
        spec: The scale.
    """

    def __init__(self, spec: ScaleSpec) -> None:
        self.spec = spec
        self.rows: list[tuple[int, int, bool, np.ndarray, np.ndarray]] = []
        self.frames: list[tuple[float | None, float | None]] = []

    def add_image(
        self,
        gt_xyxy: np.ndarray,
        gt_unit: np.ndarray,
        gt_grade: np.ndarray | None,
        gt_soft: np.ndarray | None,
        student: Detections,
        teacher: Detections | None = None,
    ) -> None:
        """Add one image.

        Args:
            gt_xyxy: ``(n, 4)`` ground-truth boxes (same pixel frame as the detections).
            gt_unit: ``(n,)`` units.
            gt_grade: ``(n,)`` human grades (-1 ungraded) or None.
            gt_soft: ``(n, ng)`` teacher soft targets (rows with negatives = none) or None.
            student: The student's detections (after NMS).
            teacher: Optional teacher detections; when given they replace the soft targets.
        """
        ng = self.spec.ng
        n = len(gt_unit)
        gt_unit = np.asarray(gt_unit, np.int64)
        grades = np.full(n, -1) if gt_grade is None else np.asarray(gt_grade, np.int64)
        soft = np.full((n, ng), -1.0) if gt_soft is None else np.asarray(gt_soft, np.float64).reshape(n, ng)
        ms = match_boxes(gt_xyxy, gt_unit, student)
        if teacher is not None:
            mt = match_boxes(gt_xyxy, gt_unit, teacher)
            soft = np.array([teacher.grade_probs[j] if j >= 0 else np.full(ng, -1.0) for j in mt]).reshape(
                n, ng
            )
        for g in range(n):
            ps = student.grade_probs[ms[g]].astype(np.float64) if ms[g] >= 0 else np.full(ng, np.nan)
            self.rows.append((int(gt_unit[g]), int(grades[g]), bool(ms[g] >= 0), ps, soft[g]))
        s_score = score_frame(student, self.spec).score
        if teacher is not None:
            t_score = score_frame(teacher, self.spec).score
        elif n and np.all(soft >= 0):
            t_score = score_frame(
                Detections(gt_xyxy, gt_unit, np.ones(n, np.float32), soft.astype(np.float32)), self.spec
            ).score
        else:
            t_score = None
        self.frames.append((s_score, t_score))

    def summary(self) -> dict[str, Any]:
        """Per-unit and overall grade statistics.

        Returns:
            ``per_unit`` (unit name -> ``n``, ``matched``, ``student_wacc``, ``teacher_wacc``, ``agree``,
            ``exp_diff``), ``grade_wacc`` and ``teacher_wacc`` (means over units with data), ``agree``
            (share of matched boxes with the same argmax grade), ``exp_diff`` (mean |expected-grade
            difference|), ``icc`` (ICC(3,1) of student vs teacher frame scores), ``frames_compared``,
            ``recall`` (matched / ground-truth boxes). NaN where there is no data.
        """
        levels = np.arange(self.spec.ng)
        per_unit: dict[str, dict[str, float]] = {}
        s_accs, t_accs, agree_all, diff_all = [], [], [], []
        nan = float("nan")
        for u, unit in enumerate(self.spec.units):
            rows = [r for r in self.rows if r[0] == u]
            hum = [(r[1], int(np.argmax(r[3]))) for r in rows if r[1] >= 0 and r[2]]
            teach = [(r[1], int(np.argmax(r[4]))) for r in rows if r[1] >= 0 and np.all(r[4] >= 0)]
            both = [(r[3], r[4]) for r in rows if r[2] and np.all(r[4] >= 0)]
            d: dict[str, float] = {"n": float(len(rows)), "matched": float(sum(r[2] for r in rows))}
            d["student_wacc"] = weighted_accuracy(*zip(*hum, strict=True)) if hum else nan
            d["teacher_wacc"] = weighted_accuracy(*zip(*teach, strict=True)) if teach else nan
            if both:
                ag = [int(np.argmax(ps) == np.argmax(pt)) for ps, pt in both]
                df = [abs(float(ps @ levels) - float(pt @ levels)) for ps, pt in both]
                d["agree"], d["exp_diff"] = float(np.mean(ag)), float(np.mean(df))
                agree_all += ag
                diff_all += df
            else:
                d["agree"] = d["exp_diff"] = nan
            if hum:
                s_accs.append(d["student_wacc"])
            if teach:
                t_accs.append(d["teacher_wacc"])
            per_unit[unit.name] = d
        pairs = np.array([(s, t) for s, t in self.frames if s is not None and t is not None], float)
        n_gt = len(self.rows)
        return {
            "per_unit": per_unit,
            "grade_wacc": float(np.mean(s_accs)) if s_accs else nan,
            "teacher_wacc": float(np.mean(t_accs)) if t_accs else nan,
            "agree": float(np.mean(agree_all)) if agree_all else nan,
            "exp_diff": float(np.mean(diff_all)) if diff_all else nan,
            "icc": icc(pairs, "3,1") if len(pairs) >= 2 else nan,
            "frames_compared": len(pairs),
            "recall": sum(r[2] for r in self.rows) / n_gt if n_gt else nan,
        }


def format_summary(
    g: dict[str, Any], maps: dict[int, tuple[float, float]] | None = None, spec: ScaleSpec | None = None
) -> list[str]:
    """Printable lines: a per-unit table and an overall line."""
    lines = [
        f"{'unit':>10} {'mAP50':>7} {'mAP50-95':>8} {'boxes':>6} {'matched':>7} "
        f"{'grade_wacc':>10} {'teacher':>8} {'agree':>6} {'|dE|':>6}"
    ]
    names = list(g["per_unit"])
    for u, name in enumerate(names):
        d = g["per_unit"][name]
        m50, m = (maps or {}).get(u, (float("nan"), float("nan")))
        lines.append(
            f"{name:>10} {m50:7.3f} {m:8.3f} {int(d['n']):6d} {int(d['matched']):7d} "
            f"{d['student_wacc']:10.3f} {d['teacher_wacc']:8.3f} {d['agree']:6.3f} {d['exp_diff']:6.3f}"
        )
    lines.append(
        f"grade weighted accuracy (mean of units) student {g['grade_wacc']:.3f} teacher "
        f"{g['teacher_wacc']:.3f}; argmax agreement {g['agree']:.3f}; mean |expected-grade diff| "
        f"{g['exp_diff']:.3f}; ICC(3,1) frame scores {g['icc']:.3f} over {g['frames_compared']} frames"
    )
    return lines


def evaluate_checkpoint(
    ckpt: str | Path,
    data: str | Path,
    split: str = "test",
    conf: float = 0.25,
    iou: float = 0.45,
    teacher: Any | None = None,
    batch: int = 8,
    device: Any = "cpu",
) -> dict[str, Any]:
    """Grade statistics of a fused checkpoint on one split of a (distilled) dataset.

    Args:
        ckpt: Fused checkpoint folder.
        data: Dataset folder; soft targets (``soft/``) are the teacher reference when present.
        split: ``train``/``val``/``test``.
        conf: Student unit-score threshold.
        iou: NMS IoU.
        teacher: Optional teacher object (``predict``): its own detections become the reference.
        batch: Images per forward pass.
        device: Torch device the student runs on.

    Returns:
        :meth:`GradeStats.summary` plus ``images`` (evaluated), ``split`` and ``skipped``
        (``"<file>: <what is wrong>"`` for each image that could not be read; it is left out).
    """
    from tqdm import tqdm

    from edge.predictor import Predictor
    from edge.sources import SourceError, read_image
    from train.data.format import load_dataset
    from train.fused.backend import load_torch_model
    from train.fused.data import load_grade_labels

    m = load_torch_model(ckpt, device=device)
    spec = m.spec
    pred = Predictor(m, conf=conf, iou=iou, batch=batch)
    info = load_dataset(data, expect_scale=spec)
    images = info.images(split)
    if not images:
        raise ValueError(f"{info.root}: split {split!r} has no images")
    stats = GradeStats(spec)
    skipped: list[str] = []
    evaluated = 0
    for i in tqdm(range(0, len(images), batch), desc=f"evaluate {split}", unit="batch"):
        paths, imgs = [], []
        for p in images[i : i + batch]:
            try:
                imgs.append(read_image(p))
                paths.append(p)
            except SourceError as e:
                skipped.append(str(e))
        if not imgs:
            continue
        evaluated += len(imgs)
        res = pred(imgs, [str(p) for p in paths])
        tdets = teacher.predict(imgs) if teacher is not None else [None] * len(imgs)
        for p, im, r, td in zip(paths, imgs, res, tdets, strict=True):
            bxywh, units, grades, soft = load_grade_labels(p, spec)
            h, w = im.shape[:2]
            xyxy = np.c_[
                (bxywh[:, 0] - bxywh[:, 2] / 2) * w,
                (bxywh[:, 1] - bxywh[:, 3] / 2) * h,
                (bxywh[:, 0] + bxywh[:, 2] / 2) * w,
                (bxywh[:, 1] + bxywh[:, 3] / 2) * h,
            ]
            stats.add_image(xyxy, units.astype(np.int64), grades, soft, r.detections, td)
    out = stats.summary()
    out["images"] = evaluated
    out["split"] = split
    out["skipped"] = skipped
    return out
