"""Detection precision and recall per unit as functions of the confidence threshold (rat seed Fig. 1).

Predictions are JSON lines of frame records (:mod:`edge.records`, as ``grimace score`` writes
``frames.jsonl`` and ``grimace predict --json`` writes), one per image::

    {"record_schema": 2, "Filename": "rat_001.png", ...,
     "detections": [{"xyxy": [x1, y1, x2, y2], "unit": "eye", "confidence": 0.91, ...}, ...]}

Boxes are in original-image pixels; ``unit`` is a unit name (or class index) of the scale; names must
match the dataset's image file names (folders are dropped). Records of record schema 1
(``name``/``source`` for the image, ``grimace predict --json``'s ``boxes`` list) are read through
:func:`train.evaluation.io.legacy_json_row`. Optional ``width``/``height`` save reading the image to
learn its size.

Ground truth comes from the dataset's label files. A prediction is a true positive when it overlaps
an unmatched ground-truth box of the same unit with IoU >= ``iou`` (0.5); predictions are matched in
descending confidence, so the matching at any threshold equals the matching of the boxes above it.
Precision(t) = TP(conf >= t) / predictions(conf >= t); recall(t) = TP(conf >= t) / ground-truth boxes.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from edge.boxes import greedy_match
from edge.scales import ScaleError, ScaleSpec
from train.data.format import image_to_label_path, load_dataset, read_labels
from train.evaluation.io import FILE_COLUMN, legacy_json_row, record_image_name


class DetectFileError(ValueError):
    """A prediction file is unusable; the message names the file (and line)."""


def _unit_index(v: Any, spec: ScaleSpec, where: str) -> int:
    if isinstance(v, str) and not v.lstrip("-").isdigit():
        try:
            return spec.unit_index(v)
        except ScaleError as e:
            raise DetectFileError(f"{where}: {e}") from None
    i = int(v)
    if not 0 <= i < spec.nc:
        raise DetectFileError(f"{where}: unit index {i} outside 0..{spec.nc - 1} of scale {spec.name!r}")
    return i


def parse_record(
    rec: dict[str, Any], spec: ScaleSpec, where: str
) -> tuple[str, np.ndarray, np.ndarray, np.ndarray, dict]:
    """One JSON record -> ``(image name, boxes (N,4), unit (N,), confidence (N,), extra)``.

    Raises:
        DetectFileError: Missing name, inconsistent lengths, bad box (``file:line``).
    """
    if not isinstance(rec, dict):
        raise DetectFileError(f"{where}: a record must be a JSON object")
    rec = legacy_json_row(rec, spec)
    name = record_image_name(rec)
    if not name:
        raise DetectFileError(f"{where}: no image name (key {FILE_COLUMN!r})")
    dets = rec.get("detections")
    if not isinstance(dets, list):
        raise DetectFileError(f"{where}: no 'detections' list of {{xyxy, unit, confidence}} objects")
    boxes, units, confs = [], [], []
    for d in dets:
        if not isinstance(d, dict) or not {"xyxy", "unit", "confidence"} <= set(d):
            raise DetectFileError(f"{where}: a detection must be an object with xyxy, unit and confidence")
        boxes.append(d["xyxy"])
        units.append(d["unit"])
        confs.append(d["confidence"])
    if not (len(boxes) == len(units) == len(confs)):
        raise DetectFileError(
            f"{where}: {len(boxes)} boxes, {len(units)} units, {len(confs)} confidences (must be equal)"
        )
    try:
        b = np.asarray(boxes, dtype=float).reshape(-1, 4)
        c = np.asarray(confs, dtype=float).reshape(-1)
    except (TypeError, ValueError):
        raise DetectFileError(
            f"{where}: boxes must be [x1, y1, x2, y2] numbers and confidences numbers"
        ) from None
    if not np.isfinite(b).all() or not np.isfinite(c).all():
        raise DetectFileError(f"{where}: non-finite box or confidence")
    u = np.array([_unit_index(v, spec, where) for v in units], dtype=np.int64)
    extra = {k: rec[k] for k in ("width", "height") if k in rec}
    return name, b, u, c, extra


def read_predictions(path: str | Path, spec: ScaleSpec) -> tuple[dict[str, tuple], list[str]]:
    """Read a JSON-lines prediction file.

    Bad lines are reported and skipped (the returned list holds ``file:line: reason``); a repeated
    image name merges its boxes.

    Raises:
        DetectFileError: Missing file or no valid record at all.
    """
    path = Path(path)
    if not path.is_file():
        raise DetectFileError(f"{path}: no such file")
    out: dict[str, tuple] = {}
    bad: list[str] = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{i}"
        try:
            rec = json.loads(line)
            name, b, u, c, extra = parse_record(rec, spec, where)
        except json.JSONDecodeError as e:
            bad.append(f"{where}: invalid JSON: {e.msg}")
            continue
        except DetectFileError as e:
            bad.append(str(e))
            continue
        if name in out:
            ob, ou, oc, oe = out[name]
            b, u, c, extra = np.concatenate([ob, b]), np.concatenate([ou, u]), np.concatenate([oc, c]), oe
        out[name] = (b, u, c, extra)
    if not out:
        raise DetectFileError(
            f"{path}: no valid prediction record" + (f"; first problem: {bad[0]}" if bad else "")
        )
    return out, bad


def match_image(
    pb: np.ndarray, pu: np.ndarray, pc: np.ndarray, gb: np.ndarray, gu: np.ndarray, iou: float = 0.5
) -> np.ndarray:
    """True-positive flag per prediction (:func:`edge.boxes.greedy_match`: by confidence, same unit,
    IoU >= ``iou``).

    Args:
        pb, pu, pc: Predicted boxes ``(N,4)``, units ``(N,)``, confidences ``(N,)``.
        gb, gu: Ground-truth boxes ``(M,4)`` and units ``(M,)``.

    Returns:
        bool ``(N,)``.
    """
    match, _ = greedy_match(pb, pc, gb, a_unit=pu, b_unit=gu, iou_thr=iou)
    return match >= 0


def _image_size(path: Path) -> tuple[int, int]:
    try:
        from PIL import Image

        with Image.open(path) as im:
            return im.size
    except Exception:
        import cv2

        img = cv2.imread(str(path))
        if img is None:
            raise DetectFileError(f"{path}: cannot read image to learn its size") from None
        return img.shape[1], img.shape[0]


def pr_curves(conf: np.ndarray, tp: np.ndarray, n_gt: int, thresholds: np.ndarray) -> dict[str, Any]:
    """Precision, recall and F1 at each threshold, plus AP@IoU (all-point interpolation)."""
    order = np.argsort(-conf, kind="stable")
    conf_s, tp_s = conf[order], tp[order].astype(float)
    ctp = np.cumsum(tp_s)
    prec, rec = [], []
    for t in thresholds:
        k = int(np.searchsorted(-conf_s, -t, side="right"))  # predictions with conf >= t
        prec.append(ctp[k - 1] / k if k > 0 else math.nan)
        rec.append(ctp[k - 1] / n_gt if (k > 0 and n_gt > 0) else (0.0 if n_gt > 0 else math.nan))
    p = np.array(prec)
    r = np.array(rec)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where((p + r) > 0, 2 * p * r / (p + r), 0.0)
    f1 = np.where(np.isfinite(p) & np.isfinite(r), f1, math.nan)
    ap = None
    if n_gt > 0 and conf.size:
        rc = ctp / n_gt
        pc = ctp / np.arange(1, len(ctp) + 1)
        mrec = np.concatenate([[0.0], rc, [1.0]])
        mpre = np.concatenate([[1.0], pc, [0.0]])
        mpre = np.flip(np.maximum.accumulate(np.flip(mpre)))
        idx = np.flatnonzero(mrec[1:] != mrec[:-1])
        ap = float(((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1]).sum())
    best = int(np.nanargmax(f1)) if np.isfinite(f1).any() else None
    return {
        "n_gt": int(n_gt),
        "n_pred": int(conf.size),
        "n_tp": int(tp.sum()),
        "precision": p.tolist(),
        "recall": r.tolist(),
        "f1": f1.tolist(),
        "ap": ap,
        "best_f1": None if best is None else float(f1[best]),
        "best_f1_threshold": None if best is None else float(thresholds[best]),
    }


def evaluate_detections(
    pred_path: str | Path, data: str | Path, iou: float = 0.5, splits: list[str] | None = None
) -> dict[str, Any]:
    """Precision/recall-vs-confidence per unit and for all units together.

    Args:
        pred_path: JSON-lines predictions.
        data: Dataset folder (ground truth, and the scale).
        iou: IoU needed for a match.
        splits: Dataset splits to take ground truth from (default all).

    Returns:
        The report (JSON-safe except NaN, which :func:`~train.evaluation.report.write_json` nulls).
    """
    info = load_dataset(data)
    spec = info.spec
    preds, bad = read_predictions(pred_path, spec)
    gt_images: dict[str, Path] = {}
    for split in splits or ["train", "val", "test"]:
        for img in info.images(split):
            gt_images.setdefault(img.name, img)
    names = [n for n in preds if n in gt_images]
    unknown = [n for n in preds if n not in gt_images]
    if not names:
        raise DetectFileError(
            f"{pred_path}: none of its {len(preds)} images is in dataset {info.root} (e.g. {unknown[:3]})"
        )
    confs: list[np.ndarray] = []
    tps: list[np.ndarray] = []
    units: list[np.ndarray] = []
    n_gt = np.zeros(spec.nc, dtype=int)
    label_problems: list[str] = []
    for name in names:
        pb, pu, pc, extra = preds[name]
        img = gt_images[name]
        lbl = image_to_label_path(img)
        try:
            boxes = read_labels(lbl, spec) if lbl.exists() else []
        except ValueError as e:
            label_problems.append(str(e))
            continue
        if boxes:
            w, h = (
                (extra["width"], extra["height"])
                if "width" in extra and "height" in extra
                else _image_size(img)
            )
            gb = np.array([b.xyxy(w, h) for b in boxes], dtype=float)
            gu = np.array([b.unit for b in boxes], dtype=np.int64)
        else:
            gb, gu = np.zeros((0, 4)), np.zeros((0,), np.int64)
        for u in gu:
            n_gt[u] += 1
        tps.append(match_image(pb, pu, pc, gb, gu, iou))
        confs.append(pc)
        units.append(pu)
    conf = np.concatenate(confs) if confs else np.zeros(0)
    tp = np.concatenate(tps) if tps else np.zeros(0, bool)
    unit = np.concatenate(units) if units else np.zeros(0, np.int64)
    thresholds = np.round(np.linspace(0, 1, 101), 2)
    curves = {"all": pr_curves(conf, tp, int(n_gt.sum()), thresholds)}
    for i, u in enumerate(spec.units):
        m = unit == i
        curves[u.name] = pr_curves(conf[m], tp[m], int(n_gt[i]), thresholds)
    if bad:
        warnings.warn(f"{len(bad)} bad prediction line(s) skipped; first: {bad[0]}", stacklevel=2)
    return {
        "scale": spec.to_dict(),
        "prediction": str(pred_path),
        "data": str(info.root),
        "iou": iou,
        "n_images": len(names),
        "n_prediction_images_not_in_dataset": len(unknown),
        "n_dataset_images_not_predicted": len(set(gt_images) - set(preds)),
        "skipped_lines": bad,
        "label_problems": label_problems,
        "thresholds": thresholds.tolist(),
        "curves": curves,
    }


def plot_detection(report: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """Precision–confidence and recall–confidence curves (rat seed Fig. 1 a, b) as PNGs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t = np.array(report["thresholds"])
    paths = []
    for key, title in (("precision", "Precision–confidence"), ("recall", "Recall–confidence")):
        fig, ax = plt.subplots(figsize=(5, 4), dpi=100)
        for name, c in report["curves"].items():
            y = np.array([math.nan if v is None else v for v in c[key]], dtype=float)
            if name == "all":
                ax.plot(t, y, lw=3, color="#1f3b99", label=f"all units (n={c['n_gt']})")
            else:
                ax.plot(t, y, lw=1.4, label=f"{name} (n={c['n_gt']})")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("confidence threshold")
        ax.set_ylabel(key)
        ax.set_title(f"{title} (IoU ≥ {report['iou']:g})", fontsize=10)
        ax.legend(fontsize=8)
        fig.tight_layout()
        p = out / f"{key}_confidence.png"
        fig.savefig(p)
        plt.close(fig)
        paths.append(p)
    return paths


def detection_markdown(report: dict[str, Any]) -> str:
    """Summary table: per unit ground truth, predictions, AP, best F1 and its threshold, P/R at 0.25/0.5."""
    t = report["thresholds"]
    i25, i50 = t.index(0.25), t.index(0.5)

    def f(v: float | None) -> str:
        return "—" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.3f}"

    lines = [
        f"# Detection: {report['prediction']} vs {report['data']} (IoU ≥ {report['iou']:g})",
        "",
        f"{report['n_images']} images; {report['n_prediction_images_not_in_dataset']} predicted images "
        f"not in the dataset; {len(report['skipped_lines'])} bad lines skipped.",
        "",
        "| unit | GT boxes | predictions | AP | best F1 | at conf | P@0.25 | R@0.25 | P@0.50 | R@0.50 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, c in report["curves"].items():
        lines.append(
            f"| {name} | {c['n_gt']} | {c['n_pred']} | {f(c['ap'])} | {f(c['best_f1'])} "
            f"| {f(c['best_f1_threshold'])} | {f(c['precision'][i25])} | {f(c['recall'][i25])} "
            f"| {f(c['precision'][i50])} | {f(c['recall'][i50])} |"
        )
    return "\n".join(lines) + "\n"
