"""Validation of model grades against human graders: the rat seed paper's analysis.

:func:`evaluate_grades` compares a prediction table with one or more grader tables (all keyed by image
file name) and returns a plain dict (written as ``report.json``) with, per unit and for the total score:

* classification against the graders' consensus (their mean grade rounded half up): weighted accuracy
  (seed equation 3), precision and recall (macro and support-weighted, per class) and the confusion
  matrix; the model's value is rounded half up to a grade first (model files may hold mean or
  expected grades). The total score is classified as pain / no pain at the scale's ``pain_threshold``;
* ICC of the model against the graders' mean (all six Shrout & Fleiss forms, the seed's ICC(1,1)
  first) and the inter-grader ICC of the humans alone, each with its 95% CI and Landis–Koch label;
* with ``subjects.csv``: per group (group, or group/timepoint) mean ± SEM of the total score for model
  and humans, Wilcoxon signed-rank of model vs human per group, Kruskal–Wallis across groups for model
  and humans separately, and timepoint comparisons within each group (paired Wilcoxon over subjects
  seen at both timepoints, else Mann–Whitney).

Rows missing on one side (an abstained frame, an ungraded image, an image absent from a file) are
excluded pair by pair, and every exclusion is counted in the report. The inter-grader ICC uses every
image all graders graded, predicted or not; the group statistics use the predicted images.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import numpy as np

from edge.scales import ScaleSpec
from train.data.format import Subject
from train.evaluation import stats
from train.evaluation.io import GradeTable
from train.metrics import confusion_matrix, precision_recall, weighted_accuracy

TOTAL = "total"


def round_half_up(x: np.ndarray) -> np.ndarray:
    """Round to the nearest integer with halves going up (1.5 -> 2), NaN kept."""
    return np.floor(np.asarray(x, dtype=float) + 0.5)


def _align(table: GradeTable, images: list[str], key: str | None) -> np.ndarray:
    idx = table.index()
    src = table.total if key is None else table.units.get(key)
    out = np.full(len(images), np.nan)
    if src is None:
        return out
    for i, name in enumerate(images):
        j = idx.get(name)
        if j is not None:
            out[i] = src[j]
    return out


def _nanmean_rows(h: np.ndarray) -> np.ndarray:
    ok = np.isfinite(h)
    cnt = ok.sum(axis=1)
    s = np.where(ok, h, 0.0).sum(axis=1)
    return np.where(cnt > 0, s / np.maximum(cnt, 1), np.nan)


def classify(
    model: np.ndarray, reference: np.ndarray, labels: list[int], names: list[str] | None = None
) -> dict[str, Any]:
    """Weighted accuracy, precision/recall and confusion matrix of two class arrays (NaN pairs dropped).

    Args:
        model: Model classes ``(N,)`` (float, NaN = missing).
        reference: Reference classes ``(N,)``.
        labels: Class values in order.
        names: Display names of the classes.
    """
    keep = np.isfinite(model) & np.isfinite(reference)
    out: dict[str, Any] = {
        "n": int(keep.sum()),
        "n_excluded": int((~keep).sum()),
        "labels": labels,
        "label_names": names or [str(v) for v in labels],
    }
    if not keep.any():
        out["error"] = "no image has both a model and a reference grade"
        return out
    t = reference[keep].astype(int)
    p = model[keep].astype(int)
    out["weighted_accuracy"] = weighted_accuracy(t, p, labels=labels)
    pr = precision_recall(t, p, labels)
    out.update({k: pr[k] for k in pr if k != "labels"})
    out["confusion"] = confusion_matrix(t, p, labels).tolist()
    return out


def _unit_block(
    model: np.ndarray,
    humans: np.ndarray,
    labels: list[int],
    label_names: list[str],
    to_class: Any,
) -> dict[str, Any]:
    """Everything reported for one unit (or the total), from aligned arrays.

    ``n_model_missing`` counts rows without a model value: abstained frames and images only the
    graders have.
    """
    hmean = _nanmean_rows(humans)
    block: dict[str, Any] = {
        "n_images": len(model),
        "n_model_missing": int((~np.isfinite(model)).sum()),
        "n_human_missing": int((~np.isfinite(hmean)).sum()),
        "model": stats.describe(model),
        "human_mean": stats.describe(hmean),
    }
    block["classification"] = classify(to_class(model), to_class(hmean), labels, label_names)
    block["classification_per_grader"] = [
        {
            k: v
            for k, v in classify(to_class(model), to_class(humans[:, g]), labels, label_names).items()
            if k in ("n", "n_excluded", "weighted_accuracy", "precision_weighted", "recall_weighted", "error")
        }
        for g in range(humans.shape[1])
    ]
    block["icc_model_vs_human_mean"] = stats.icc(np.stack([model, hmean], axis=1))
    if humans.shape[1] >= 2:
        block["icc_graders"] = stats.icc(humans)
    else:
        block["icc_graders"] = None
    return block


def _group_key(s: Subject) -> str:
    if s.group and s.timepoint:
        return f"{s.group}/{s.timepoint}"
    return s.group or s.timepoint or "(none)"


def group_comparisons(
    images: list[str],
    model: np.ndarray,
    human: np.ndarray,
    subjects: dict[str, Subject],
) -> dict[str, Any]:
    """The seed's Figs. 4–5 statistics on the total score.

    Args:
        images: Image names ``(N,)``.
        model: Model total score ``(N,)``.
        human: Graders' mean total score ``(N,)``.
        subjects: ``subjects.csv`` rows keyed by image name.
    """
    keys: list[str | None] = []
    rank: dict[str, tuple[int, int]] = {}
    g_first: dict[str, int] = {}
    t_first: dict[str, int] = {}
    for name in images:
        s = subjects.get(name)
        keys.append(_group_key(s) if s else None)
        if s:
            g_first.setdefault(s.group, len(g_first))
            t_first.setdefault(s.timepoint, len(t_first))
            rank.setdefault(_group_key(s), (g_first[s.group], t_first[s.timepoint]))
    # groups in order of first appearance, timepoints within a group likewise (control, day1, month1)
    order = sorted(dict.fromkeys(k for k in keys if k is not None), key=lambda k: rank[k])
    karr = np.array([k if k is not None else "" for k in keys], dtype=object)
    out: dict[str, Any] = {
        "n_without_subject": int(sum(k is None for k in keys)),
        "groups": {},
        "kruskal_model": None,
        "kruskal_human": None,
        "timepoints": [],
    }
    for g in order:
        m = model[karr == g]
        h = human[karr == g]
        out["groups"][g] = {
            "model": stats.describe(m),
            "human": stats.describe(h),
            "wilcoxon_model_vs_human": stats.wilcoxon_paired(m, h),
        }
    out["kruskal_model"] = stats.kruskal({g: model[karr == g] for g in order})
    out["kruskal_human"] = stats.kruskal({g: human[karr == g] for g in order})

    # timepoints within each group: the seed's day-1 vs month-1 comparison
    by_group: dict[str, list[str]] = {}
    for name in images:
        s = subjects.get(name)
        if s and s.timepoint:
            tps = by_group.setdefault(s.group, [])
            if s.timepoint not in tps:
                tps.append(s.timepoint)
    for group, tps in by_group.items():
        for t1, t2 in itertools.combinations(tps, 2):
            entry: dict[str, Any] = {"group": group, "timepoints": [t1, t2]}
            for who, values in (("model", model), ("human", human)):
                entry[who] = _timepoint_test(images, values, subjects, group, t1, t2)
            out["timepoints"].append(entry)
    return out


def _timepoint_test(
    images: list[str], values: np.ndarray, subjects: dict[str, Subject], group: str, t1: str, t2: str
) -> dict[str, Any]:
    per: dict[str, dict[str, list[float]]] = {t1: {}, t2: {}}
    for name, v in zip(images, values, strict=True):
        s = subjects.get(name)
        if s is None or s.group != group or s.timepoint not in per or not math.isfinite(v):
            continue
        per[s.timepoint].setdefault(s.subject, []).append(float(v))
    shared = sorted(set(per[t1]) & set(per[t2]))
    a_all = np.array([v for vs in per[t1].values() for v in vs])
    b_all = np.array([v for vs in per[t2].values() for v in vs])
    res: dict[str, Any] = {
        "mean": [float(a_all.mean()) if a_all.size else None, float(b_all.mean()) if b_all.size else None],
        "sem": [stats.sem(a_all), stats.sem(b_all)],
    }
    res["images_mann_whitney"] = stats.mann_whitney(a_all, b_all)
    if len(shared) >= 2:
        a = np.array([np.mean(per[t1][s]) for s in shared])
        b = np.array([np.mean(per[t2][s]) for s in shared])
        res.update(stats.wilcoxon_paired(a, b))
        res["pairing"] = f"per-subject means of {len(shared)} subjects seen at both timepoints"
    else:
        res.update(stats.mann_whitney(a_all, b_all))
        res["pairing"] = "unpaired images (fewer than 2 subjects seen at both timepoints)"
    return res


def evaluate_grades(
    pred: GradeTable,
    humans: list[GradeTable],
    spec: ScaleSpec,
    subjects: dict[str, Subject] | None = None,
) -> dict[str, Any]:
    """Compare a model's grades with human graders (see the module docstring).

    Args:
        pred: The model's table (rows define the images evaluated).
        humans: One table per grader.
        spec: The scale.
        subjects: ``subjects.csv`` rows keyed by image name, for the group statistics.

    Returns:
        The report as plain JSON-safe data.
    """
    if not humans:
        raise ValueError("at least one grader file is needed")
    images = list(pred.images)
    n = len(images)
    hsets = [set(h.images) for h in humans]
    # rows: the predicted images, then images only graders graded (they count for the graders' own
    # ICC; every comparison with the model excludes them pairwise, as the model has no value there)
    in_pred = set(images)
    extra = list(dict.fromkeys(x for h in humans for x in h.images if x not in in_pred))
    rows = images + extra
    report: dict[str, Any] = {
        "scale": spec.to_dict(),
        "inputs": {
            "prediction": str(pred.path),
            "graders": [str(h.path) for h in humans],
            "n_graders": len(humans),
        },
        "counts": {
            "images_in_prediction": n,
            "images_in_graders": [len(h.images) for h in humans],
            "prediction_images_missing_in_grader": [sum(name not in s for name in images) for s in hsets],
            "grader_images_missing_in_prediction": [len(s - set(images)) for s in hsets],
        },
        "units": {},
    }
    for unit in spec.units:
        if unit.name not in pred.units and not any(unit.name in h.units for h in humans):
            continue
        top = unit.grades - 1
        m = _align(pred, rows, unit.name)
        h = np.stack([_align(t, rows, unit.name) for t in humans], axis=1)
        labels = list(range(unit.grades))
        names = list(unit.grade_names) or [str(v) for v in labels]

        def to_class(x: np.ndarray, top: int = top) -> np.ndarray:
            return np.clip(round_half_up(x), 0, top)

        block = _unit_block(m, h, labels, names, to_class)
        block["label"] = unit.label
        block["in_prediction"] = unit.name in pred.units
        report["units"][unit.name] = block

    m_tot = _align(pred, rows, None)
    h_tot = np.stack([_align(t, rows, None) for t in humans], axis=1)
    thr = spec.pain_threshold

    def total_class(x: np.ndarray) -> np.ndarray:
        if thr is None:
            return np.full(x.shape, np.nan)
        return np.where(np.isfinite(x), (x >= thr).astype(float), np.nan)

    total = _unit_block(m_tot, h_tot, [0, 1], ["no pain", "pain"], total_class)
    total["label"] = f"{spec.score_name} score"
    total["pain_threshold"] = thr
    if thr is None:
        total["classification"] = {"error": f"scale {spec.name!r} has no pain_threshold"}
    report["total"] = total

    if subjects is not None:
        # groups on the predicted images only, so model and graders are compared on one image set
        report["groups"] = group_comparisons(images, m_tot[:n], _nanmean_rows(h_tot[:n]), subjects)
    return report


def load_inputs(
    pred_csv: str | Path,
    human_csvs: list[str | Path],
    spec: ScaleSpec,
) -> tuple[GradeTable, list[GradeTable]]:
    """Read the prediction table (CSV, or JSON lines from ``grimace predict --json``) and the grader
    CSVs (grader grades must be whole numbers)."""
    from train.evaluation.io import read_grade_csv, read_grade_file

    pred = read_grade_file(pred_csv, spec)
    humans = [read_grade_csv(p, spec, integer_grades=True) for p in human_csvs]
    return pred, humans
