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
    """What :func:`run_cv` needs from a model family."""

    name: str

    def fit(self, train_items: Sequence[Item]) -> Any:
        """Train on the training side of a fold and return the model."""
        ...

    def evaluate(self, model: Any, test_items: Sequence[Item]) -> dict[str, Any]:
        """Metrics of ``model`` on the test side (numbers, possibly nested dicts)."""
        ...


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
        ``{"scheme", "k", "seed", "trainer", "n_items", "n_subjects", "subject_leakage_checked",
        "folds": [{"fold", "n_train", "n_test", "train_subjects", "test_subjects", "seconds",
        "metrics"}], "summary": {metric: {mean, sd, min, max, n_folds}}}``.
    """
    subjects = [it.subject for it in items]
    labels = [it.label for it in items] if all(it.label is not None for it in items) else None
    folds: list[Fold] = make_folds(scheme, subjects, labels, k=k, seed=seed, test_fraction=test_fraction)
    rows = []
    for i, f in enumerate(folds, start=1):
        tr = [items[j] for j in f.train]
        te = [items[j] for j in f.test]
        t0 = time.perf_counter()
        model = trainer.fit(tr)
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
    return {
        "scheme": scheme,
        "k": len(folds),
        "seed": seed,
        "trainer": trainer.name,
        "trainer_info": describe() if callable(describe) else {},
        "n_items": len(items),
        "n_subjects": len(set(subjects)),
        "subject_leakage_checked": scheme in SUBJECT_SCHEMES,
        "folds": rows,
        "summary": summarise([r["metrics"] for r in rows]),
    }


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() and abs(v) >= 1 else f"{v:.3f}"


def _pm(s: dict[str, Any]) -> str:
    if s["mean"] is None:
        return "—"
    return f"{s['mean']:.3f} ± {s['sd']:.3f}" if s["sd"] is not None else f"{s['mean']:.3f}"


def cv_markdown(result: dict[str, Any], metrics: Sequence[str] | None = None) -> str:
    """Per-fold table and mean ± SD table in Markdown."""
    summ = result["summary"]
    keys = list(metrics) if metrics else [k for k in summ if not k.startswith("confusion")]
    keys = [k for k in keys if k in summ]
    lines = [
        f"# Cross-validation: {result['scheme']} ({result['k']} folds), trainer {result['trainer']}",
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

    def evaluate(self, model: dict[str, Any], test_items: Sequence[Item]) -> dict[str, Any]:
        """Predict the held-out images and score them against their labelled grades."""
        from train.evaluation.grades import classify, round_half_up
        from train.evaluation.io import read_grade_file
        from train.evaluation.stats import icc

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
        out: dict[str, Any] = {"n_test": len(test_items)}
        truth_total = []
        boxes_of = {}
        for it in test_items:
            lbl = it.meta.get("labels")
            boxes_of[it.key] = read_labels(lbl, self.spec) if lbl and Path(lbl).exists() else []
        for ui, unit in enumerate(self.spec.units):
            t_vals, m_vals = [], []
            for it in test_items:
                g = [b.grade for b in boxes_of[it.key] if b.unit == ui and b.grade is not None]
                j = idx.get(it.key)
                t_vals.append(float(np.mean(g)) if g else math.nan)
                m_vals.append(
                    pred.units[unit.name][j] if (j is not None and unit.name in pred.units) else math.nan
                )
            t = np.clip(round_half_up(np.array(t_vals)), 0, unit.grades - 1)
            m = np.clip(round_half_up(np.array(m_vals)), 0, unit.grades - 1)
            c = classify(m, t, list(range(unit.grades)))
            keep = ("n", "weighted_accuracy", "precision_weighted", "recall_weighted")
            out[unit.name] = {key: c[key] for key in keep if key in c}
            truth_total.append(t_vals)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # images with no graded box: NaN
            tt = np.nanmean(np.array(truth_total, dtype=float), axis=0)
        mm = np.array([pred.total[idx[it.key]] if it.key in idx else math.nan for it in test_items])
        r = icc(np.stack([mm, tt], axis=1))
        out["total_icc1"] = r["forms"]["ICC1"]["icc"] if r["forms"]["ICC1"] else None
        out["n_abstained"] = int((~np.isfinite(mm)).sum())
        return out
