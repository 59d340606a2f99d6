"""Validation of model grades against human graders, with animals as the unit of inference.

:func:`evaluate_grades` compares a prediction table with one or more grader tables (all keyed by image
file name) and returns a plain dict (written as ``report.json``) with, per unit and for the total score:

* classification against the graders' consensus (their mean grade rounded half up): weighted accuracy
  (rat seed equation 3) **next to the majority-class baseline** (a constant predictor of the most
  frequent consensus grade), balanced accuracy, quadratic-weighted Cohen's κ (scikit-learn), precision,
  recall and the confusion matrix. The model's value is rounded half up to a grade first (model files
  may hold mean or expected grades); the total score is classified pain / no pain at the scale's
  ``pain_threshold``;
* agreement: ICC(2,1) (two-way random, absolute agreement, single rater) of the model against the
  graders' mean as the headline, all six Shrout & Fleiss forms listed, read on Koo & Li (2016) bands
  judged on the 95% interval; the inter-grader ICC of the humans alone; and the like-for-like
  **leave-one-grader-out** comparison: for each grader, the model against the mean of the *other*
  graders next to that grader against the same mean;
* uncertainty: 95% intervals of the headline figures by a cluster bootstrap over animals
  (:func:`train.evaluation.stats.cluster_bootstrap`); Bland–Altman bias and limits of agreement of the
  total score, each with its interval;
* with ``subjects.csv`` (:func:`group_comparisons`): per group/timepoint cell the per-animal means; the
  headline between-group test on per-animal means; repeated timepoints by Wilcoxon (2) or Friedman (3+)
  on per-animal means; a mixed model (``score ~ group × timepoint + (1 | animal)``) when there are
  enough animals; image-level tests kept only as descriptive, labelled so, with a pseudoreplication
  warning whenever images outnumber animals.

Rows missing on one side (an abstained frame, an ungraded image, an image absent from a file) are
excluded pair by pair, and every exclusion is counted in the report. The inter-grader ICC uses every
image all graders graded, predicted or not; the group statistics use the predicted images. Without
``subjects.csv`` every image counts as its own animal and the report says so.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edge.scales import ScaleSpec
from train.data.format import Subject
from train.evaluation import stats
from train.evaluation.io import GradeTable
from train.metrics import confusion_matrix, precision_recall, weighted_accuracy

TOTAL = "total"
HEADLINE_ICC = "ICC2"
"""The headline agreement form: ICC(2,1), absolute agreement of single ratings."""
N_BOOT = 2000
"""Default bootstrap replicates."""


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


def kappa_quadratic(t: np.ndarray, p: np.ndarray, labels: list[int]) -> float | None:
    """Quadratic-weighted Cohen's κ (:func:`sklearn.metrics.cohen_kappa_score`); ``None`` if undefined."""
    from sklearn.metrics import cohen_kappa_score

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        k = cohen_kappa_score(t, p, labels=labels, weights="quadratic")
    return float(k) if math.isfinite(k) else None


def balanced_accuracy(t: np.ndarray, p: np.ndarray) -> float:
    """Mean recall over the classes present in ``t`` (:func:`sklearn.metrics.balanced_accuracy_score`)."""
    from sklearn.metrics import balanced_accuracy_score

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(balanced_accuracy_score(t, p))


def _class_figures(t: np.ndarray, p: np.ndarray, labels: list[int]) -> dict[str, float | None]:
    """The figures reported for a classification: WA (seed eq. 3), balanced accuracy, κ (scikit-learn)."""
    return {
        "weighted_accuracy": weighted_accuracy(t, p, labels=labels),
        "balanced_accuracy": balanced_accuracy(t, p),
        "kappa_quadratic": kappa_quadratic(t, p, labels),
    }


def figures_from_confusion(cm: np.ndarray) -> dict[str, float | None]:
    """The same three figures as :func:`_class_figures`, from a confusion matrix, in plain numpy.

    Used inside the bootstrap, where thousands of replicates make scikit-learn's input checks the
    bottleneck; a test checks that both give the same numbers.

    Args:
        cm: Counts ``(C, C)``, rows = reference, columns = model, classes in label order.
    """
    cm = np.asarray(cm, dtype=float)
    n = cm.sum()
    if n == 0:
        return {"weighted_accuracy": None, "balanced_accuracy": None, "kappa_quadratic": None}
    support = cm.sum(axis=1)
    pred = cm.sum(axis=0)
    tp = np.diag(cm)
    acc_c = (n - support - pred + 2 * tp) / n  # (TP + TN) / N per class
    wa = float((support * acc_c).sum() / support.sum())
    present = support > 0
    ba = float((tp[present] / support[present]).mean())
    c = cm.shape[0]
    i, j = np.meshgrid(np.arange(c), np.arange(c), indexing="ij")
    w = (i - j) ** 2 / max((c - 1) ** 2, 1)
    expected = np.outer(support, pred) / n
    den = (w * expected).sum()
    kappa = float(1 - (w * cm).sum() / den) if den > 0 else None
    return {"weighted_accuracy": wa, "balanced_accuracy": ba, "kappa_quadratic": kappa}


def classify(
    model: np.ndarray, reference: np.ndarray, labels: list[int], names: list[str] | None = None
) -> dict[str, Any]:
    """Classification figures of two class arrays (NaN pairs dropped), each beside its baseline.

    ``baseline`` is the majority-class predictor: it always answers the most frequent reference
    class (ties: the lower class). A model that does not beat it on weighted accuracy has learnt
    nothing a constant could not do; ``beats_baseline`` says whether it does.

    Args:
        model: Model classes ``(N,)`` (float, NaN = missing).
        reference: Reference classes ``(N,)``.
        labels: Class values in order.
        names: Display names of the classes.

    Returns:
        ``{"n", "n_excluded", "labels", "label_names", "weighted_accuracy", "balanced_accuracy",
        "kappa_quadratic", "accuracy", precision/recall (macro, weighted, per class), "confusion",
        "baseline": {"class", "class_name", "weighted_accuracy", "balanced_accuracy",
        "kappa_quadratic", "accuracy"}, "beats_baseline"}`` or ``{"error"}`` with no pair.
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
    out.update(_class_figures(t, p, labels))
    pr = precision_recall(t, p, labels)
    out.update({k: pr[k] for k in pr if k != "labels"})
    out["confusion"] = confusion_matrix(t, p, labels).tolist()
    counts = np.array([(t == lab).sum() for lab in labels])
    maj = labels[int(np.argmax(counts))]
    const = np.full_like(t, maj)
    out["baseline"] = {
        "rule": "always the most frequent reference class",
        "class": maj,
        "class_name": out["label_names"][labels.index(maj)],
        **_class_figures(t, const, labels),
        "accuracy": float((t == maj).mean()),
    }
    out["beats_baseline"] = bool(out["weighted_accuracy"] > out["baseline"]["weighted_accuracy"] + 1e-12)
    return out


def leave_one_grader_out(
    model: np.ndarray, humans: np.ndarray, labels: list[int], to_class: Callable[[np.ndarray], np.ndarray]
) -> dict[str, Any] | None:
    """Like-for-like comparison: model vs the other graders' mean, next to each grader vs the same mean.

    For every grader ``g`` the reference is the mean of the *other* graders; the model and grader
    ``g`` are both compared with it (κ and weighted accuracy on classes, ICC(2,1) on the values). The
    model grades as well as a trained person when its figures are within the graders' range.

    Args:
        model: Model values ``(N,)``.
        humans: Grader values ``(N, G)``.
        labels: Class values.
        to_class: Values -> classes.

    Returns:
        ``{"rows": [{"grader", "n", "grader_vs_rest": {...}, "model_vs_rest": {...}}], "mean": {...}}``;
        ``None`` with fewer than 2 graders.
    """
    g_n = humans.shape[1]
    if g_n < 2:
        return None
    rows = []
    for g in range(g_n):
        rest = _nanmean_rows(np.delete(humans, g, axis=1))
        entry: dict[str, Any] = {"grader": g + 1}
        keep = np.isfinite(model) & np.isfinite(humans[:, g]) & np.isfinite(rest)
        entry["n"] = int(keep.sum())
        for who, vals in (("grader_vs_rest", humans[:, g]), ("model_vs_rest", model)):
            if keep.sum() < 2:
                entry[who] = {"kappa_quadratic": None, "weighted_accuracy": None, "icc2": None}
                continue
            t = to_class(rest[keep]).astype(int)
            p = to_class(vals[keep]).astype(int)
            entry[who] = {
                "kappa_quadratic": kappa_quadratic(t, p, labels),
                "weighted_accuracy": weighted_accuracy(t, p, labels=labels),
                "icc2": stats._finite(stats.icc21(np.stack([vals[keep], rest[keep]], axis=1))),
            }
        rows.append(entry)
    mean: dict[str, dict[str, float | None]] = {}
    for who in ("grader_vs_rest", "model_vs_rest"):
        mean[who] = {}
        for key in ("kappa_quadratic", "weighted_accuracy", "icc2"):
            v = [r[who][key] for r in rows if r[who][key] is not None]
            mean[who][key] = float(np.mean(v)) if v else None
    return {"rows": rows, "mean": mean}


def _unit_block(
    model: np.ndarray,
    humans: np.ndarray,
    labels: list[int],
    label_names: list[str],
    to_class: Callable[[np.ndarray], np.ndarray],
    clusters: np.ndarray,
    n_boot: int,
    seed: int,
    with_bland_altman: bool = False,
) -> dict[str, Any]:
    """Everything reported for one unit (or the total), from aligned arrays.

    ``n_model_missing`` counts rows without a model value: abstained frames and images only the
    graders have. ``clusters`` is the animal of each row (the bootstrap resamples them).
    """
    hmean = _nanmean_rows(humans)
    block: dict[str, Any] = {
        "n_images": len(model),
        "n_model_missing": int((~np.isfinite(model)).sum()),
        "n_human_missing": int((~np.isfinite(hmean)).sum()),
        "model": stats.describe(model),
        "human_mean": stats.describe(hmean),
    }
    mc, hc = to_class(model), to_class(hmean)
    block["classification"] = classify(mc, hc, labels, label_names)
    block["classification_per_grader"] = [
        {
            k: v
            for k, v in classify(mc, to_class(humans[:, g]), labels, label_names).items()
            if k in ("n", "n_excluded", "weighted_accuracy", "kappa_quadratic", "balanced_accuracy", "error")
        }
        for g in range(humans.shape[1])
    ]
    block["leave_one_grader_out"] = leave_one_grader_out(model, humans, labels, to_class)
    block["icc_model_vs_human_mean"] = stats.icc(np.stack([model, hmean], axis=1))
    block["icc_graders"] = stats.icc(humans) if humans.shape[1] >= 2 else None

    pair = np.isfinite(model) & np.isfinite(hmean)
    idx = np.flatnonzero(pair)
    if idx.size:
        m_p, h_p, c_p = model[idx], hmean[idx], clusters[idx]
        mc_p, hc_p = mc[idx], hc[idx]
        ok_c = np.isfinite(mc_p) & np.isfinite(hc_p)
        n_lab = len(labels)
        # class index per pair (labels are 0..C-1 here), -1 where a class is missing
        code = np.where(ok_c, np.nan_to_num(hc_p) * n_lab + np.nan_to_num(mc_p), -1).astype(int)

        def figures(rows: np.ndarray) -> dict[str, float | None]:
            out: dict[str, float | None] = {"icc2": stats.icc21(np.stack([m_p[rows], h_p[rows]], axis=1))}
            cc = code[rows]
            cm = np.bincount(cc[cc >= 0], minlength=n_lab * n_lab).reshape(n_lab, n_lab)
            out.update(figures_from_confusion(cm))
            if with_bland_altman:
                ba = stats.bland_altman(m_p[rows], h_p[rows])
                out["ba_bias"] = ba["bias"]
                out["ba_loa_lower"], out["ba_loa_upper"] = ba["loa"]
            return out

        boot = stats.cluster_bootstrap(c_p, figures, n_boot=n_boot, seed=seed)
        block["bootstrap"] = boot
        f2 = block["icc_model_vs_human_mean"]["forms"].get(HEADLINE_ICC)
        ci_b = boot["figures"]["icc2"]["ci95"]
        block["headline_icc"] = {
            "form": HEADLINE_ICC,
            "description": stats.ICC_FORMS[HEADLINE_ICC],
            "icc": f2["icc"] if f2 else None,
            "ci95_bootstrap": ci_b,
            "ci95_f": f2["ci95"] if f2 else [None, None],
            "koo_li": stats.koo_li(ci_b),
            "n_animals": boot["n_clusters"],
        }
        if with_bland_altman:
            ba = stats.bland_altman(m_p, h_p)
            bf = boot["figures"]
            ba["ci95"] = {
                "bias": bf["ba_bias"]["ci95"],
                "loa_lower": bf["ba_loa_lower"]["ci95"],
                "loa_upper": bf["ba_loa_upper"]["ci95"],
            }
            ba["mean_of_pair"] = ((m_p + h_p) / 2).tolist()
            ba["difference"] = (m_p - h_p).tolist()
            ba["animal"] = [str(c) for c in c_p]
            block["bland_altman"] = ba
    else:
        block["bootstrap"] = None
        block["headline_icc"] = None
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
    min_mixed_animals: int = stats.MIN_MIXED_ANIMALS,
) -> dict[str, Any]:
    """Group statistics on the total score with animals, not images, as the unit of inference.

    Cells are ``group/timepoint`` (the seed's Figs. 4–5). For each cell the per-animal means of
    model and graders. Tests:

    * headline — Kruskal–Wallis across cells on per-animal means (one value per animal per cell);
      and per timepoint, across the groups seen at it;
    * model vs graders within a cell — Wilcoxon signed-rank over animals (per-animal means paired);
    * repeated timepoints within a group — over animals seen at every timepoint: Wilcoxon for two,
      Friedman for three or more;
    * mixed model ``score ~ group × timepoint + (1 | animal)`` on all images (statsmodels) with at
      least ``min_mixed_animals`` animals;
    * image-level Kruskal–Wallis / Mann–Whitney, labelled *descriptive*, never the headline.

    Args:
        images: Image names ``(N,)``.
        model: Model total score ``(N,)``.
        human: Graders' mean total score ``(N,)``.
        subjects: ``subjects.csv`` rows keyed by image name.
        min_mixed_animals: Fewest animals for the mixed model.
    """
    subj = [subjects.get(name) for name in images]
    rank: dict[str, tuple[int, int]] = {}
    g_first: dict[str, int] = {}
    t_first: dict[str, int] = {}
    for s in subj:
        if s:
            g_first.setdefault(s.group, len(g_first))
            t_first.setdefault(s.timepoint, len(t_first))
            rank.setdefault(_group_key(s), (g_first[s.group], t_first[s.timepoint]))
    keys = [_group_key(s) if s else None for s in subj]
    # groups in order of first appearance, timepoints within a group likewise (control, day1, month1)
    order = sorted(dict.fromkeys(k for k in keys if k is not None), key=lambda k: rank[k])
    has = np.array([s is not None for s in subj])
    karr = np.array([k or "" for k in keys], dtype=object)
    animal = np.array([s.subject if s else "" for s in subj], dtype=object)
    group = np.array([s.group if s else "" for s in subj], dtype=object)
    tpoint = np.array([s.timepoint if s else "" for s in subj], dtype=object)
    ok_m = has & np.isfinite(model)
    n_img = int(ok_m.sum())
    n_anim = len(set(animal[ok_m].tolist()))
    out: dict[str, Any] = {
        "n_without_subject": int((~has).sum()),
        "n_images": n_img,
        "n_animals": n_anim,
        "unit_of_inference": "animal (per-animal mean of its images in each cell)",
        "pseudoreplication_warning": stats.pseudoreplication_warning(n_img, n_anim),
        "cells": {},
        "headline": {},
        "by_timepoint": [],
        "repeated": [],
        "mixed_model": {},
        "descriptive_image_level": {},
    }
    per_cell: dict[str, dict[str, dict[str, float]]] = {}
    for g in order:
        sel = karr == g
        cell: dict[str, Any] = {"n_images": int((sel & ok_m).sum())}
        vals: dict[str, dict[str, float]] = {}
        for who, v in (("model", model), ("human", human)):
            ids, means, counts = stats.per_animal_means(v[sel], animal[sel])
            cell[who] = stats.describe(means)
            for a, m, c in zip(ids, means.tolist(), counts.tolist(), strict=True):
                vals.setdefault(a, {})[who] = m
                vals[a][f"n_{who}"] = c
        ids = list(vals)
        cell["n_animals"] = len(ids)
        cell["animals"] = [{"animal": a, **vals[a]} for a in ids]
        mm = np.array([vals[a].get("model", math.nan) for a in ids])
        hh = np.array([vals[a].get("human", math.nan) for a in ids])
        cell["wilcoxon_model_vs_human"] = stats.wilcoxon_paired(mm, hh)
        cell["wilcoxon_model_vs_human"]["unit"] = "animals"
        cell["images"] = {"model": stats.describe(model[sel]), "human": stats.describe(human[sel])}
        out["cells"][g] = cell
        per_cell[g] = vals

    repeated_animals = sorted(a for a, n in _count(a for g in order for a in per_cell[g]).items() if n > 1)
    for who in ("model", "human"):
        samples = {g: np.array([v[who] for v in per_cell[g].values() if who in v]) for g in order}
        kw = stats.kruskal(samples)
        kw["unit"] = "animals"
        kw["note"] = (
            f"{len(repeated_animals)} animal(s) appear in more than one cell; Kruskal–Wallis assumes "
            "independent samples, so read it with the repeated-measures tests and the mixed model"
            if repeated_animals
            else "each animal appears in one cell"
        )
        out["headline"][who] = kw
        img = stats.kruskal({g: model[karr == g] if who == "model" else human[karr == g] for g in order})
        img["unit"] = "images (descriptive: pseudoreplicated when images outnumber animals)"
        out["descriptive_image_level"][f"kruskal_{who}"] = img

    # between groups at each timepoint: every animal once
    tps = list(dict.fromkeys(s.timepoint for s in subj if s))
    for tp in tps:
        groups_here = list(dict.fromkeys(s.group for s in subj if s and s.timepoint == tp))
        if len(groups_here) < 2:
            continue
        entry: dict[str, Any] = {"timepoint": tp or "(none)", "groups": groups_here}
        for who, v in (("model", model), ("human", human)):
            samples = {}
            for g in groups_here:
                sel = (tpoint == tp) & (group == g) & has
                samples[g] = stats.per_animal_means(v[sel], animal[sel])[1]
            two = len(samples) == 2
            entry[who] = stats.mann_whitney(*samples.values()) if two else stats.kruskal(samples)
            entry[who]["unit"] = "animals"
        out["by_timepoint"].append(entry)

    # repeated timepoints within each group, over animals seen at every timepoint of that group
    for g in dict.fromkeys(s.group for s in subj if s):
        g_tps = list(dict.fromkeys(s.timepoint for s in subj if s and s.group == g and s.timepoint))
        if len(g_tps) < 2:
            continue
        entry = {"group": g, "timepoints": g_tps}
        for who, v in (("model", model), ("human", human)):
            means: dict[str, dict[str, float]] = {}
            for tp in g_tps:
                sel = (group == g) & (tpoint == tp) & has
                ids, m, _ = stats.per_animal_means(v[sel], animal[sel])
                means[tp] = dict(zip(ids, m.tolist(), strict=True))
            shared = sorted(set.intersection(*(set(means[tp]) for tp in g_tps)))
            table = np.array([[means[tp][a] for tp in g_tps] for a in shared])
            table = table.reshape(len(shared), len(g_tps))
            if len(g_tps) == 2:
                res = stats.wilcoxon_paired(table[:, 0], table[:, 1])
            else:
                res = stats.friedman(table, g_tps)
            res["unit"] = "animals"
            res["pairing"] = f"per-animal means of {len(shared)} animal(s) seen at every timepoint"
            res["mean"] = [float(table[:, j].mean()) if len(shared) else None for j in range(len(g_tps))]
            res["pairwise"] = (
                [
                    {"timepoints": [g_tps[i], g_tps[j]], **stats.wilcoxon_paired(table[:, i], table[:, j])}
                    for i, j in itertools.combinations(range(len(g_tps)), 2)
                ]
                if len(g_tps) > 2
                else []
            )
            a_img = v[(group == g) & (tpoint == g_tps[0]) & has]
            b_img = v[(group == g) & (tpoint == g_tps[-1]) & has]
            res["descriptive_images_mann_whitney"] = {
                **stats.mann_whitney(a_img, b_img),
                "unit": "images (descriptive)",
                "timepoints": [g_tps[0], g_tps[-1]],
            }
            entry[who] = res
        out["repeated"].append(entry)

    for who, v in (("model", model), ("human", human)):
        out["mixed_model"][who] = stats.mixed_model(
            v[has], group[has], tpoint[has], animal[has], min_animals=min_mixed_animals
        )
    return out


def _count(items: Any) -> dict[str, int]:
    c: dict[str, int] = {}
    for x in items:
        c[x] = c.get(x, 0) + 1
    return c


def evaluate_grades(
    pred: GradeTable,
    humans: list[GradeTable],
    spec: ScaleSpec,
    subjects: dict[str, Subject] | None = None,
    n_boot: int = N_BOOT,
    seed: int = 0,
    min_mixed_animals: int = stats.MIN_MIXED_ANIMALS,
) -> dict[str, Any]:
    """Compare a model's grades with human graders (see the module docstring).

    Args:
        pred: The model's table (rows define the images evaluated).
        humans: One table per grader.
        spec: The scale.
        subjects: ``subjects.csv`` rows keyed by image name: animals for the bootstrap and the group
            statistics. Without it every image is its own animal (and the report says so).
        n_boot: Bootstrap replicates.
        seed: Bootstrap seed.
        min_mixed_animals: Fewest animals for the mixed model.

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
    subjects = subjects or {}
    clusters = np.array([subjects[r].subject if r in subjects else f"image:{r}" for r in rows], dtype=object)
    n_with = sum(r in subjects for r in images)
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
        "animals": {
            "n_animals": len(set(clusters[:n].tolist())),
            "n_images": n,
            "images_with_subject": n_with,
            "source": "subjects.csv" if subjects else "none: every image counted as its own animal",
        },
        "bootstrap": {"n_boot": n_boot, "seed": seed, "unit": "animal"},
        "warnings": [],
        "units": {},
    }
    if not subjects:
        report["warnings"].append(
            "no subjects.csv: every image is treated as its own animal; if images repeat animals the "
            "intervals are too narrow (pass --groups subjects.csv)"
        )
    elif n_with < n:
        report["warnings"].append(f"{n - n_with} predicted image(s) have no row in subjects.csv")
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

        block = _unit_block(m, h, labels, names, to_class, clusters, n_boot, seed)
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

    total = _unit_block(
        m_tot, h_tot, [0, 1], ["no pain", "pain"], total_class, clusters, n_boot, seed, with_bland_altman=True
    )
    total["label"] = f"{spec.score_name} score"
    total["pain_threshold"] = thr
    if thr is None:
        total["classification"] = {"error": f"scale {spec.name!r} has no pain_threshold"}
    hm = _nanmean_rows(h_tot[:n])
    ids, mm, cnt = stats.per_animal_means(np.where(np.isfinite(hm), m_tot[:n], np.nan), clusters[:n])
    _, hh, _ = stats.per_animal_means(np.where(np.isfinite(m_tot[:n]), hm, np.nan), clusters[:n])
    total["per_animal"] = [
        {"animal": a, "model": x, "human": y, "n_images": int(c)}
        for a, x, y, c in zip(ids, mm.tolist(), hh.tolist(), cnt.tolist(), strict=True)
    ]
    report["total"] = total
    for label, b in [*((b["label"], b) for b in report["units"].values()), (total["label"], total)]:
        c = b["classification"]
        if "baseline" in c and not c["beats_baseline"]:
            report["warnings"].append(
                f"{label}: weighted accuracy {c['weighted_accuracy']:.3f} does not beat the majority-class "
                f"baseline {c['baseline']['weighted_accuracy']:.3f} (always {c['baseline']['class_name']!r})"
            )

    if subjects:
        # groups on the predicted images only, so model and graders are compared on one image set
        report["groups"] = group_comparisons(
            images, m_tot[:n], hm, subjects, min_mixed_animals=min_mixed_animals
        )
        pw = report["groups"]["pseudoreplication_warning"]
        if pw:
            report["warnings"].append(pw)
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
