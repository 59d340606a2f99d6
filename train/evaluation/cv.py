"""Cross-validation runner with a pluggable trainer.

A trainer is anything with ``fit(train_items) -> model`` and ``evaluate(model, test_items) -> dict``
(:class:`Trainer`). :func:`run_cv` builds the folds of a scheme (:mod:`train.evaluation.splits`),
calls the trainer on every fold, and summarises every numeric metric as mean ± SD over folds
(sample SD, ``ddof=1``; ``None`` with one fold). Nested metric dicts are flattened with dots
(``per_class.pain.f1``).

Trainers shipped here:

* :class:`train.evaluation.baseline.SVMTrainer` — features (VGG-16 or a tiny test backbone) + linear
  SVM, in process (the one the tests run).
* :class:`StudentTrainer` — the fused student, trained per fold in a subprocess
  (``python -m edge.cli train student --data FOLD_DIR ...``) on a fold dataset made of symlinks.
"""

from __future__ import annotations

import math
import shlex
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from edge.scales import ScaleSpec
from train.data.format import (
    LabelError,
    Subject,
    image_to_label_path,
    load_dataset,
    read_labels,
    read_subjects,
    write_data_yaml,
    write_subjects,
)
from train.evaluation.splits import SUBJECT_SCHEMES, Fold, make_folds


@dataclass(frozen=True)
class Item:
    """One sample (image or video frame).

    Attributes:
        key: Unique name (image file name).
        path: Image file.
        subject: Animal id (the unit of subject-wise splitting).
        label: Class label for classification baselines (e.g. ``"pain"``), or ``None``.
        meta: Anything else (group, timepoint, source video, label file).
    """

    key: str
    path: Path
    subject: str
    label: str | None = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


@runtime_checkable
class Trainer(Protocol):
    """What :func:`run_cv` needs from a model family.

    A trainer that also has ``predict(model, items) -> list[dict]`` (one record per item) and
    ``metrics(items, records) -> dict`` gets its metrics computed on the *pooled* out-of-fold
    predictions (the ``cross_val_predict`` pattern) besides per fold; ``per_animal(items, records)``
    adds the per-animal table. ``evaluate`` is then ``metrics(items, predict(model, items))``.
    """

    name: str

    def fit(self, train_items: Sequence[Item]) -> Any:
        """Train on the training side of a fold and return the model."""
        ...

    def evaluate(self, model: Any, test_items: Sequence[Item]) -> dict[str, Any]:
        """Metrics of ``model`` on the test side (numbers, possibly nested dicts)."""
        ...


def classification_metrics(
    y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str] | None = None
) -> dict[str, Any]:
    """Accuracy, weighted accuracy (rat seed eq. 3), balanced accuracy, κ, macro and per-class
    precision/recall/F1, the majority-class baseline and the confusion matrix of string labels.

    A class absent from ``y_true`` has no recall (``None``); one never predicted has no precision
    (``None``); macro averages are over the classes present in ``y_true``.
    """
    from train.evaluation.grades import balanced_accuracy, kappa_quadratic
    from train.metrics import confusion_matrix, precision_recall, weighted_accuracy

    y = [str(v) for v in y_true]
    p = [str(v) for v in y_pred]
    labels = sorted(set(labels or []) | set(y) | set(p))
    pr = precision_recall(y, p, labels)
    for c, d in pr["per_class"].items():
        if d["support"] == 0:
            d["recall"] = None
            d["f1"] = None
        if c in pr["undefined_precision"]:
            d["precision"] = None
    idx = {c: i for i, c in enumerate(labels)}
    ti = np.array([idx[v] for v in y])
    pi = np.array([idx[v] for v in p])
    counts = {c: y.count(c) for c in labels}
    maj = max(labels, key=lambda c: (counts[c], -labels.index(c)))
    return {
        "accuracy": pr["accuracy"],
        "weighted_accuracy": weighted_accuracy(y, p, labels=labels),
        "balanced_accuracy": balanced_accuracy(ti, pi),
        "kappa": kappa_quadratic(ti, pi, list(range(len(labels)))) if len(labels) > 1 else None,
        "precision": pr["precision_macro"],
        "recall": pr["recall_macro"],
        "f1": pr["f1_macro"],
        "per_class": pr["per_class"],
        "n_test": len(y),
        "baseline": {
            "rule": "always the most frequent true class",
            "class": maj,
            "accuracy": counts[maj] / len(y),
            "weighted_accuracy": weighted_accuracy(y, [maj] * len(y), labels=labels),
        },
        "confusion": {"labels": labels, "matrix": confusion_matrix(y, p, labels).tolist()},
    }


def positive_class(labels: Sequence[str], positive: str | None = None) -> str:
    """The class a verdict calls positive: ``positive`` if given, else ``pain`` if present, else the last."""
    labs = sorted({str(x) for x in labels})
    if positive is not None:
        return positive
    return "pain" if "pain" in labs else labs[-1]


def per_animal_classification(
    items: Sequence[Item], predicted: Sequence[str], positive: str, rule: Any
) -> dict[str, Any]:
    """Per-animal verdicts from out-of-fold frame predictions (the goat clinic's question).

    The frame's pain value is 1 when it is predicted ``positive``, else 0; the animal's verdict follows
    ``rule`` (:class:`~edge.verdict.VerdictRule`); its true class is the majority label of
    its items.

    Returns:
        ``{"rule", "positive", "rows": [...], "summary": {...}}``.
    """
    from collections import Counter

    from edge.verdict import NOT_PAINFUL, PAINFUL, animal_verdicts, verdict_summary

    truth_label: dict[str, str] = {}
    per: dict[str, Counter[str]] = {}
    for it in items:
        per.setdefault(it.subject, Counter())[str(it.label)] += 1
    for a, c in per.items():
        truth_label[a] = c.most_common(1)[0][0]
    truth = {a: PAINFUL if lab == positive else NOT_PAINFUL for a, lab in truth_label.items()}
    values = [1.0 if str(p) == positive else 0.0 for p in predicted]
    rows = animal_verdicts([it.subject for it in items], values, rule, truth)
    for r in rows:
        r["true_label"] = truth_label[r["animal"]]
    return {
        "rule": rule.to_dict(),
        "positive": positive,
        "rows": rows,
        "summary": verdict_summary(rows),
    }


def flatten(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a nested dict with dotted keys (bools, strings, lists dropped)."""
    out: dict[str, float] = {}
    for k, v in metrics.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        elif isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool):
            out[key] = float(v)
    return out


def summarise(fold_metrics: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Mean ± SD over folds of every numeric metric (NaN/None values are skipped and counted)."""
    flat = [flatten(m) for m in fold_metrics]
    keys = list(dict.fromkeys(k for f in flat for k in f))
    out: dict[str, dict[str, Any]] = {}
    for k in keys:
        vals = np.array([f.get(k, math.nan) for f in flat], dtype=float)
        ok = vals[np.isfinite(vals)]
        out[k] = {
            "mean": float(ok.mean()) if ok.size else None,
            "sd": float(ok.std(ddof=1)) if ok.size > 1 else None,
            "min": float(ok.min()) if ok.size else None,
            "max": float(ok.max()) if ok.size else None,
            "n_folds": int(ok.size),
        }
    return out


def run_cv(
    items: Sequence[Item],
    trainer: Trainer,
    scheme: str,
    k: int = 5,
    seed: int = 0,
    test_fraction: float = 0.2,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train and evaluate ``trainer`` on every fold of ``scheme``.

    Args:
        items: All samples.
        trainer: The model family (:class:`Trainer`).
        scheme: ``split``, ``kfold``, ``subject-kfold`` or ``loso``.
        k: Folds for ``kfold``/``subject-kfold``.
        seed: Split seed.
        test_fraction: Test share for ``split``.
        progress: Called with a line of text per fold.

    Returns:
        ``{"scheme", "splitter", "k", "seed", "trainer", "n_items", "n_subjects",
        "subject_leakage_checked", "folds": [{"fold", "n_train", "n_test", "train_subjects",
        "test_subjects", "seconds", "metrics"}], "summary": {metric: {mean, sd, min, max, n_folds}},
        "pooled": metrics on all out-of-fold predictions (or ``None``), "per_animal": per-animal
        table (or ``None``), "oof": one row per tested item}``. The pooled figures are the headline:
        a per-fold mean over single-class folds (LOSO) averages undefined or degenerate figures.
    """
    subjects = [it.subject for it in items]
    labels = [it.label for it in items] if all(it.label is not None for it in items) else None
    folds: list[Fold] = make_folds(scheme, subjects, labels, k=k, seed=seed, test_fraction=test_fraction)
    pooling = callable(getattr(trainer, "predict", None)) and callable(getattr(trainer, "metrics", None))
    rows = []
    oof_items: list[Item] = []
    oof_recs: list[dict[str, Any]] = []
    oof_fold: list[str] = []
    for i, f in enumerate(folds, start=1):
        tr = [items[j] for j in f.train]
        te = [items[j] for j in f.test]
        t0 = time.perf_counter()
        model = trainer.fit(tr)
        if pooling:
            recs = trainer.predict(model, te)  # type: ignore[attr-defined]
            metrics = trainer.metrics(te, recs)  # type: ignore[attr-defined]
            oof_items += te
            oof_recs += recs
            oof_fold += [f.name] * len(te)
        else:
            metrics = trainer.evaluate(model, te)
        dt = time.perf_counter() - t0
        rows.append(
            {
                "fold": f.name,
                "n_train": len(tr),
                "n_test": len(te),
                "train_subjects": sorted({it.subject for it in tr}),
                "test_subjects": sorted({it.subject for it in te}),
                "seconds": dt,
                "metrics": metrics,
            }
        )
        if progress:
            acc = flatten(metrics).get("accuracy")
            progress(
                f"[{i}/{len(folds)}] {f.name}: train {len(tr)}, test {len(te)}"
                + (f", accuracy {acc:.3f}" if acc is not None else "")
                + f" ({dt:.1f} s)"
            )
    describe = getattr(trainer, "describe", None)
    out: dict[str, Any] = {
        "scheme": scheme,
        "splitter": folds[0].splitter if folds else "",
        "k": len(folds),
        "seed": seed,
        "trainer": trainer.name,
        "trainer_info": describe() if callable(describe) else {},
        "n_items": len(items),
        "n_subjects": len(set(subjects)),
        "subject_leakage_checked": scheme in SUBJECT_SCHEMES,
        "folds": rows,
        "summary": summarise([r["metrics"] for r in rows]),
        "pooled": None,
        "per_animal": None,
        "oof": [],
    }
    if pooling and oof_items:
        out["pooled"] = trainer.metrics(oof_items, oof_recs)  # type: ignore[attr-defined]
        out["pooled"]["n_items"] = len(oof_items)
        out["pooled"]["n_subjects"] = len({it.subject for it in oof_items})
        per_animal = getattr(trainer, "per_animal", None)
        if callable(per_animal):
            out["per_animal"] = per_animal(oof_items, oof_recs)
        out["oof"] = [
            {"key": it.key, "animal": it.subject, "label": it.label, "fold": fo, **rec}
            for it, rec, fo in zip(oof_items, oof_recs, oof_fold, strict=True)
        ]
    return out


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() and abs(v) >= 1 else f"{v:.3f}"


def _pm(s: dict[str, Any]) -> str:
    if s["mean"] is None:
        return "—"
    return f"{s['mean']:.3f} ± {s['sd']:.3f}" if s["sd"] is not None else f"{s['mean']:.3f}"


def _cell(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def pooled_markdown(pooled: dict[str, Any]) -> list[str]:
    """Markdown lines of the pooled out-of-fold metrics, per class and the confusion matrix."""
    flat = flatten({k: v for k, v in pooled.items() if k not in ("confusion", "per_class")})
    lines = ["| metric | pooled |", "|---|---|"]
    lines += [f"| {k} | {_cell(v)} |" for k, v in flat.items()]
    lines += ["", "| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    for c, d in pooled.get("per_class", {}).items():
        lines.append(
            f"| {c} | {_cell(d['precision'])} | {_cell(d['recall'])} | {_cell(d['f1'])} | {d['support']} |"
        )
    cm = pooled.get("confusion")
    if cm:
        lines += [
            "",
            "| true \\ predicted | " + " | ".join(cm["labels"]) + " |",
            "|---" * (len(cm["labels"]) + 1) + "|",
        ]
        lines += [
            f"| {lab} | " + " | ".join(str(x) for x in row) + " |"
            for lab, row in zip(cm["labels"], cm["matrix"], strict=True)
        ]
    return lines


def per_animal_markdown(per_animal: dict[str, Any]) -> list[str]:
    """Markdown lines of the per-animal verdict table and its summary (or model vs labels per animal)."""
    if "summary" not in per_animal:
        lines = ["| animal | images | model mean score | labelled mean score |", "|---|---|---|---|"]
        for r in per_animal["rows"]:
            lines.append(f"| {r['animal']} | {r['n_images']} | {_cell(r['model'])} | {_cell(r['labels'])} |")
        return lines
    s = per_animal["summary"]
    lines = [
        f"Rule: {per_animal['rule']['rule']} (positive class {per_animal['positive']!r}).",
        "",
        f"{s['n_animals']} animals: {s['n_painful']} painful, {s['n_not_painful']} not painful, "
        f"{s['n_insufficient']} insufficient frames"
        + (
            f"; per-animal accuracy {s['animal_accuracy']:.3f} over {s['n_judged']} animals with a verdict."
            if "animal_accuracy" in s
            else "."
        ),
        "",
        "| animal | true class | frames | share called painful | verdict | correct |",
        "|---|---|---|---|---|---|",
    ]
    for r in per_animal["rows"]:
        lines.append(
            f"| {r['animal']} | {r['true_label']} | {r['n_scored']} | {_cell(r['mean_pain'])} "
            f"| {r['verdict']} | {_cell(r.get('correct'))} |"
        )
    return lines


def cv_markdown(result: dict[str, Any], metrics: Sequence[str] | None = None) -> str:
    """Pooled out-of-fold metrics, the per-animal table, then mean ± SD and the per-fold table."""
    summ = result["summary"]
    keys = list(metrics) if metrics else [k for k in summ if not k.startswith("confusion")]
    keys = [k for k in keys if k in summ]
    lines = [
        f"# Cross-validation: {result['scheme']} ({result['k']} folds, {result.get('splitter', '')}), "
        f"trainer {result['trainer']}",
        "",
        f"{result['n_items']} items from {result['n_subjects']} subjects, seed {result['seed']}"
        + "".join(f"; {k}: {v}" for k, v in result.get("trainer_info", {}).items())
        + ". "
        + (
            "No subject is on both sides of any fold (checked)."
            if result["subject_leakage_checked"]
            else "Item-level scheme: frames of one subject can be on both sides (as in the goat seed)."
        ),
        "",
    ]
    if result.get("pooled"):
        lines += [
            "## Pooled out-of-fold metrics (headline)",
            "",
            "Every item is predicted once by the model that did not see it; the metrics are computed once "
            "on all these predictions (scikit-learn's `cross_val_predict` pattern). Per-fold means below "
            "average figures of small, often single-class folds and are shown only beside these.",
            "",
            *pooled_markdown(result["pooled"]),
            "",
        ]
    if result.get("per_animal"):
        lines += ["## Per animal", "", *per_animal_markdown(result["per_animal"]), ""]
    lines += [
        "## Mean ± SD over folds",
        "",
        "| metric | mean ± SD | min | max | folds |",
        "|---|---|---|---|---|",
    ]
    for k in keys:
        s = summ[k]
        lo = "—" if s["min"] is None else f"{s['min']:.3f}"
        hi = "—" if s["max"] is None else f"{s['max']:.3f}"
        lines.append(f"| {k} | {_pm(s)} | {lo} | {hi} | {s['n_folds']} |")
    short = [k for k in keys if "." not in k][:8]
    lines += ["", "## Per fold", "", "| fold | train | test | test subjects | " + " | ".join(short) + " |"]
    lines.append("|" + "---|" * (4 + len(short)))
    for r in result["folds"]:
        flat = flatten(r["metrics"])
        subj = ", ".join(r["test_subjects"][:6]) + (" …" if len(r["test_subjects"]) > 6 else "")
        vals = " | ".join("—" if k not in flat else _num(flat[k]) for k in short)
        lines.append(f"| {r['fold']} | {r['n_train']} | {r['n_test']} | {subj} | {vals} |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------- dataset items
def image_target(spec: ScaleSpec, boxes: list[Any]) -> str | None:
    """Image-level class from its graded boxes: the binary grade name, else pain / no pain.

    For a binary scale the class is the grade name of the best-graded box (``"pain"``/``"no pain"``);
    otherwise the frame score (mean of unit mean grades, the scale's rule) at ``pain_threshold``.
    Returns ``None`` when no box is graded.
    """
    graded = [b for b in boxes if b.grade is not None and b.unit < spec.nc]
    if not graded:
        return None
    if spec.aggregation == "binary":
        unit = spec.units[0]
        g = max(b.grade for b in graded)
        return unit.grade_names[g] if unit.grade_names else str(g)
    per_unit: dict[int, list[int]] = {}
    for b in graded:
        per_unit.setdefault(b.unit, []).append(b.grade)
    score = float(np.mean([np.mean(v) for v in per_unit.values()]))
    thr = spec.pain_threshold if spec.pain_threshold is not None else spec.max_grade.max() / 2
    return "pain" if score >= thr else "no pain"


def dataset_items(
    root: str | Path, target: str = "pain", require_subjects: bool = True
) -> tuple[list[Item], Any]:
    """Items of every split of a grimace dataset, with subjects from ``subjects.csv``.

    Args:
        root: Dataset folder (``data.yaml``).
        target: ``pain`` (image class from its graded boxes, :func:`image_target`), ``group`` (the
            ``group`` column of subjects.csv) or ``none``.
        require_subjects: Error if an image has no ``subjects.csv`` row (needed for subject schemes);
            otherwise such an image is its own subject.

    Returns:
        ``(items, DatasetInfo)``. Images whose label file is unreadable are skipped with a warning
        listed in ``info.raw["_skipped"]``.

    Raises:
        LabelError: No images, missing subjects.csv rows (names the file and the first images).
    """
    info = load_dataset(root)
    subjects: dict[str, Subject] = {}
    if info.subjects_csv.exists():
        subjects = read_subjects(info.subjects_csv)
    elif require_subjects:
        raise LabelError(f"{info.subjects_csv}: no subjects.csv; subject-wise schemes need one")
    seen: set[str] = set()
    items: list[Item] = []
    missing: list[str] = []
    skipped: list[str] = []
    for split in ("train", "val", "test"):
        for img in info.images(split):
            if img.name in seen:
                continue
            seen.add(img.name)
            s = subjects.get(img.name)
            if s is None:
                missing.append(img.name)
                s = Subject(img.name, img.stem)
            label: str | None = None
            lbl_path = image_to_label_path(img)
            if target == "pain":
                try:
                    boxes = read_labels(lbl_path, info.spec) if lbl_path.exists() else []
                except LabelError as e:
                    skipped.append(str(e))
                    continue
                label = image_target(info.spec, boxes)
                if label is None:
                    skipped.append(f"{lbl_path}: no graded box; image left out")
                    continue
            elif target == "group":
                label = s.group or None
            elif target != "none":
                raise ValueError(f"unknown target {target!r}; expected pain, group or none")
            items.append(
                Item(img.name, img, s.subject, label,
                     {"group": s.group, "timepoint": s.timepoint, "split": split, "labels": lbl_path})
            )  # fmt: skip
    if missing and require_subjects:
        raise LabelError(
            f"{info.subjects_csv}: {len(missing)} image(s) have no row, e.g. {', '.join(missing[:3])}"
        )
    if not items:
        raise LabelError(f"{info.root}: no usable images")
    info.raw["_skipped"] = skipped
    return items, info


# ------------------------------------------------------------------------------ fused student
def write_fold_dataset(
    out: str | Path, spec: ScaleSpec, train: Sequence[Item], test: Sequence[Item], copy: bool = False
) -> Path:
    """A grimace dataset for one fold: ``images/train`` = training side, ``images/val`` = test side.

    Images and label files are symlinked (or copied with ``copy=True``); ``subjects.csv`` and
    ``data.yaml`` (with the scale) are written. An existing folder is replaced.

    Returns:
        The fold dataset root.
    """
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    rows = []
    for split, side in (("train", train), ("val", test)):
        for it in side:
            for kind, src in (("images", it.path), ("labels", it.meta.get("labels"))):
                if src is None or not Path(src).exists():
                    continue
                dst = out / kind / split / Path(src).name
                dst.parent.mkdir(parents=True, exist_ok=True)
                if copy:
                    shutil.copy2(src, dst)
                else:
                    dst.symlink_to(Path(src).resolve())
            rows.append(Subject(it.key, it.subject, it.meta.get("group", ""), it.meta.get("timepoint", "")))
    (out / "labels" / "train").mkdir(parents=True, exist_ok=True)
    (out / "labels" / "val").mkdir(parents=True, exist_ok=True)
    write_subjects(out / "subjects.csv", rows)
    write_data_yaml(out, spec, {"train": "images/train", "val": "images/val"})
    return out


def inner_validation_split(
    items: Sequence[Item], fraction: float = 0.2, seed: int = 0
) -> tuple[list[Item], list[Item]]:
    """Split a fold's training side into train / validation by subject (at least one subject each).

    With a single subject the items themselves are split (validation then shares that animal).
    """
    subs = sorted({it.subject for it in items})
    rng = np.random.default_rng(seed)
    if len(subs) >= 2:
        n_val = min(max(1, round(len(subs) * fraction)), len(subs) - 1)
        val_subs = set(rng.permutation(subs)[:n_val].tolist())
        return [it for it in items if it.subject not in val_subs], [
            it for it in items if it.subject in val_subs
        ]
    idx = rng.permutation(len(items))
    n_val = max(1, round(len(items) * fraction)) if len(items) > 1 else 0
    val = set(idx[:n_val].tolist())
    return [it for i, it in enumerate(items) if i not in val], [it for i, it in enumerate(items) if i in val]


@dataclass
class StudentTrainer:
    """The fused student trained per fold by subprocess, evaluated on the held-out images.

    ``fit`` writes a fold dataset (:func:`write_fold_dataset`) whose ``val`` split is a subject-wise
    share (``val_fraction``) of the *training* side (:func:`inner_validation_split`) — the held-out
    test animals are never seen, not even for choosing the best epoch — and runs ``train_cmd``; ``evaluate``
    runs ``predict_cmd`` on the test images and compares the CSV it writes with the ground-truth
    grades from the label files (weighted accuracy per unit, frame-score ICC(1,1) against the labels).
    Placeholders ``{data}``, ``{out}``, ``{weights}``, ``{source}``, ``{pred}`` (also ``{csv}``),
    ``{python}`` are filled in. The defaults follow the fused engineer's CLI as of writing
    (``train student --data --out`` writes ``OUT/best/``; ``predict IMAGES --model --out X.jsonl`` writes
    frame records with ``unit_scores``); the prediction file may be CSV or JSON lines.
    ``extra_args`` (what follows ``--`` on the ``grimace cv`` command line) are appended to the
    training command.

    Attributes:
        spec: The dataset's scale.
        work: Folder for fold datasets and runs.
        extra_args: More options for the training command.
        train_cmd: Training command template.
        predict_cmd: Prediction command template.
        weights_glob: Glob (under the run folder) that finds the trained weights.
    """

    spec: ScaleSpec
    work: Path
    extra_args: list[str] = field(default_factory=list)
    train_cmd: str = "{python} -m edge.cli train student --data {data} --out {out}"
    predict_cmd: str = "{python} -m edge.cli predict {source} --model {weights} --out {pred}"
    weights_glob: str = "best"
    pred_file: str = "pred.jsonl"
    val_fraction: float = 0.2
    name: str = "student"
    _n: int = 0

    def _run(self, cmd: list[str], log: Path) -> None:
        with log.open("w") as fh:
            proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, check=False)
        if proc.returncode != 0:
            tail = log.read_text()[-2000:]
            raise RuntimeError(f"command failed ({proc.returncode}): {shlex.join(cmd)}\n{log}:\n{tail}")

    def fit(self, train_items: Sequence[Item]) -> dict[str, Any]:
        """Write the fold dataset (train side only is trained on) and train; returns run paths."""
        self._n += 1
        fold_dir = self.work.resolve() / f"fold{self._n:02d}"
        inner_train, inner_val = inner_validation_split(train_items, self.val_fraction, seed=self._n)
        data = write_fold_dataset(fold_dir / "data", self.spec, inner_train, inner_val)
        run = fold_dir / "run"
        cmd = shlex.split(self.train_cmd.format(python=sys.executable, data=data, out=run)) + list(
            self.extra_args
        )
        self._run(cmd, fold_dir / "train.log")
        found = sorted(run.glob(self.weights_glob))
        if not found:
            raise RuntimeError(f"training finished but no weights matching {self.weights_glob!r} under {run}")
        return {"fold_dir": fold_dir, "weights": found[0]}

    def predict(self, model: dict[str, Any], test_items: Sequence[Item]) -> list[dict[str, Any]]:
        """Predict the held-out images: one record ``{"total", "units": {unit: value}}`` per item."""
        from train.evaluation.io import read_grade_file

        fold_dir = Path(model["fold_dir"])
        src = fold_dir / "test_images"
        src.mkdir(parents=True, exist_ok=True)
        for it in test_items:
            dst = src / it.path.name
            if not dst.exists():
                dst.symlink_to(it.path.resolve())
        pred_path = fold_dir / self.pred_file
        cmd = shlex.split(
            self.predict_cmd.format(
                python=sys.executable, weights=model["weights"], source=src, pred=pred_path, csv=pred_path
            )
        )
        self._run(cmd, fold_dir / "predict.log")
        pred = read_grade_file(pred_path, self.spec)
        idx = pred.index()
        recs = []
        for it in test_items:
            j = idx.get(it.key)
            units = {
                u.name: (float(pred.units[u.name][j]) if j is not None and u.name in pred.units else math.nan)
                for u in self.spec.units
            }
            recs.append({"total": float(pred.total[j]) if j is not None else math.nan, "units": units})
        return recs

    def _truth(self, items: Sequence[Item]) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Labelled mean grade per unit ``(N,)`` and the labelled frame score ``(N,)`` (NaN = ungraded)."""
        boxes_of = {}
        for it in items:
            lbl = it.meta.get("labels")
            boxes_of[it.key] = read_labels(lbl, self.spec) if lbl and Path(lbl).exists() else []
        per_unit = {}
        for ui, unit in enumerate(self.spec.units):
            vals = []
            for it in items:
                g = [b.grade for b in boxes_of[it.key] if b.unit == ui and b.grade is not None]
                vals.append(float(np.mean(g)) if g else math.nan)
            per_unit[unit.name] = np.array(vals)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # images with no graded box: NaN
            total = np.nanmean(np.stack(list(per_unit.values())), axis=0)
        return per_unit, total

    def metrics(self, items: Sequence[Item], recs: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Weighted accuracy per unit and the frame score's ICC(1,1)/ICC(2,1) against the labels."""
        from train.evaluation.grades import classify, round_half_up
        from train.evaluation.stats import icc

        truth_units, truth_total = self._truth(items)
        out: dict[str, Any] = {"n_test": len(items)}
        for unit in self.spec.units:
            t = np.clip(round_half_up(truth_units[unit.name]), 0, unit.grades - 1)
            m = np.clip(
                round_half_up(np.array([r["units"][unit.name] for r in recs], float)), 0, unit.grades - 1
            )
            c = classify(m, t, list(range(unit.grades)))
            keep = ("n", "weighted_accuracy", "kappa_quadratic", "balanced_accuracy")
            out[unit.name] = {key: c[key] for key in keep if key in c}
            if "baseline" in c:
                out[unit.name]["baseline_weighted_accuracy"] = c["baseline"]["weighted_accuracy"]
        mm = np.array([r["total"] for r in recs], dtype=float)
        r = icc(np.stack([mm, truth_total], axis=1))
        for form, key in (("ICC1", "total_icc1"), ("ICC2", "total_icc2")):
            out[key] = r["forms"][form]["icc"] if r["forms"][form] else None
        out["n_abstained"] = int((~np.isfinite(mm)).sum())
        return out

    def per_animal(self, items: Sequence[Item], recs: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Per-animal mean frame score of the model and of the labels (out of fold)."""
        from train.evaluation.stats import per_animal_means

        _, truth_total = self._truth(items)
        mm = np.array([r["total"] for r in recs], dtype=float)
        animals = np.array([it.subject for it in items], dtype=object)
        ids, m, n = per_animal_means(np.where(np.isfinite(truth_total), mm, np.nan), animals)
        _, t, _ = per_animal_means(np.where(np.isfinite(mm), truth_total, np.nan), animals)
        rows = [
            {"animal": a, "model": x, "labels": y, "n_images": int(c)}
            for a, x, y, c in zip(ids, m.tolist(), t.tolist(), n.tolist(), strict=True)
        ]
        return {"rows": rows, "n_animals": len(rows)}

    def evaluate(self, model: dict[str, Any], test_items: Sequence[Item]) -> dict[str, Any]:
        """Predict the held-out images and score them against their labelled grades."""
        return self.metrics(test_items, self.predict(model, test_items))
