"""End-to-end teacher training: detector, one grader per unit, optional whole-face pain ViT.

Splits: the detector trains on ``train`` and selects its epoch on ``val`` (a share of ``train``
when absent). Graders and the pain ViT train on ``train`` images and select their epoch on a
selection set: ``val`` when the dataset also has ``test``, otherwise a seeded 15 % of the training
images. Held-out metrics are computed on ``test`` (or ``val`` when there is no ``test``), never on
images used for fitting or for epoch selection.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from train.data.format import load_dataset
from train.metrics import classification_report
from train.teacher.data import collect_crops, collect_frames
from train.teacher.detector import train_detector, write_detector_dataset
from train.teacher.teacher import dataset_hash, save_teacher_parts, versions
from train.teacher.vit import DEFAULT_VIT, ImageClassifier, Preprocess, build_vit, train_classifier

RECIPES: dict[str, dict[str, Any]] = {
    "seed": {
        "vit": DEFAULT_VIT, "vit_size": None, "epochs_vit": 20, "vit_batch": 16, "lr": 0.01,
        "vit_optimizer": "sgd", "weight_decay": None, "augment": 0.5, "class_weighting": "inverse",
        "sampler": "shuffle", "label_smoothing": 0.0, "select": "val_loss", "grey": False,
        "standardize": False, "margin": 0.1,
    },
    "scratch": {
        "vit": "small", "vit_size": None, "epochs_vit": 60, "vit_batch": 32, "lr": 0.001,
        "vit_optimizer": "adamw", "weight_decay": 0.05, "augment": 0.5, "class_weighting": "none",
        "sampler": "shuffle", "label_smoothing": 0.1, "select": "val_wacc", "grey": True,
        "standardize": True, "margin": 0.1,
    },
}
"""ViT training recipes. ``seed``: the published method (fine-tune ImageNet-21k ViT-Base/16 at 224
with SGD, inverse-frequency weighted cross-entropy, lowest-validation-loss epoch). ``scratch``: for
randomly initialised ViTs (no pretrained backbone, e.g. offline): a 4-layer ViT at 32x32, AdamW with
warmup + cosine, label smoothing, unweighted loss, grey standardised crops, the epoch with the best
validation weighted accuracy. See docs/teacher.md for why."""


def resolve_recipe(recipe: str, **overrides: Any) -> dict[str, Any]:
    """A recipe's ViT settings with the non-``None`` ``overrides`` applied.

    Raises:
        ValueError: Unknown recipe or setting name.
    """
    if recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {sorted(RECIPES)}, got {recipe!r}")
    out = dict(RECIPES[recipe])
    unknown = set(overrides) - set(out)
    if unknown:
        raise ValueError(f"unknown recipe setting(s) {sorted(unknown)}")
    out.update({k: v for k, v in overrides.items() if v is not None})
    return out


def _splits(ds: Any, seed: int, select_fraction: float) -> tuple[list[Path], list[Path], list[Path], str]:
    train = ds.images("train")
    val, test = ds.images("val"), ds.images("test")
    rng = np.random.default_rng(seed)
    if test:
        held, held_name = test, "test"
    elif val:
        held, held_name = val, "val"
        val = []
    else:
        idx = rng.permutation(len(train))
        n = max(1, round(len(train) * 0.2))
        held, held_name = [train[i] for i in sorted(idx[:n])], "20% of train (no val/test split)"
        train = [train[i] for i in sorted(idx[n:])]
    if val:
        select = val
    else:
        idx = rng.permutation(len(train))
        n = max(1, round(len(train) * select_fraction)) if len(train) > 1 else 0
        select = [train[i] for i in sorted(idx[:n])]
        train = [train[i] for i in sorted(idx[n:])] or select
    return train, select, held, held_name


def _copy_detector(src: Path, out: Path) -> dict[str, Any]:
    """Copy a run's detector files into ``out``; return its training summary (from its manifest)."""
    import json
    import shutil

    from train.teacher.detector import DETECTOR_META, DETECTOR_WEIGHTS, Detector

    Detector.load(src)  # fail early with a clear message if it is not a usable detector
    if src.resolve() != out.resolve():
        for f in (DETECTOR_WEIGHTS, DETECTOR_META):
            shutil.copy2(src / f, out / f)
    man = src / "manifest.json"
    summary = json.loads(man.read_text()).get("metrics", {}).get("detector", {}) if man.exists() else {}
    return {**summary, "reused_from": str(src.resolve()), "seconds": float(summary.get("seconds", 0.0))}


def train_teacher(
    data: str | Path,
    out: str | Path,
    *,
    detector: str = "s",
    vit: str | None = None,
    epochs_det: int = 100,
    epochs_vit: int | None = None,
    imgsz: int = 640,
    vit_size: int | None = None,
    det_batch: int = 16,
    det_optimizer: str = "SGD",
    det_init: str | Path | None = None,
    reuse_detector: str | Path | None = None,
    recipe: str = "scratch",
    vit_batch: int | None = None,
    lr: float | None = None,
    momentum: float = 0.9,
    vit_optimizer: str | None = None,
    weight_decay: float | None = None,
    augment: float | None = None,
    class_weighting: str | None = None,
    sampler: str | None = None,
    label_smoothing: float | None = None,
    select: str | None = None,
    grey: bool | None = None,
    standardize: bool | None = None,
    margin: float | None = None,
    pain: bool = True,
    pretrained: bool = True,
    select_fraction: float = 0.15,
    seed: int = 0,
    verbose: bool = True,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train the whole teacher and write its run folder.

    Args:
        data: Grimace dataset folder (with ``data.yaml``).
        out: Run folder to write.
        detector: YOLOv5 size ``n``/``s``/``m``.
        vit: ViT backbone (see :func:`train.teacher.vit.build_vit`).
        epochs_det: Detector epochs.
        epochs_vit: Epochs per ViT.
        imgsz: Detector input size.
        vit_size: ViT input size for randomly initialised backbones (pretrained ones keep theirs).
        det_batch: Detector batch size.
        det_optimizer: Detector optimiser (ultralytics name; the seed used SGD with momentum).
        det_init: Start the detector from an existing teacher run's detector.
        reuse_detector: Skip detector training and copy the detector of this teacher run folder
            (e.g. to retrain only the graders); its training summary is carried over.
        recipe: ViT training recipe, ``scratch`` (default) or ``seed`` (:data:`RECIPES`); every
            ViT setting below left ``None`` takes the recipe's value.
        vit_batch: ViT batch size.
        lr: ViT peak learning rate.
        momentum: SGD momentum.
        vit_optimizer: ``sgd`` (the seed) or ``adamw`` (better for randomly initialised ViTs).
        weight_decay: ViT weight decay (``None`` in the recipe: the optimiser's default).
        augment: ViT training augmentation strength (0 = flips only).
        class_weighting: ``inverse``, ``sqrt`` or ``none`` cross-entropy class weights.
        sampler: ``shuffle`` or ``balanced`` (grade-balanced sampling with replacement).
        label_smoothing: Cross-entropy label smoothing.
        select: ViT epoch selection: ``val_loss`` or ``val_wacc`` (validation weighted accuracy).
        grey: Grade grey-level crops (no fur colour).
        standardize: Per-image standardisation instead of the fixed mean/std.
        margin: Context margin around unit boxes, fraction of box size per side.
        pain: Also train the whole-face binary pain ViT.
        pretrained: Try pretrained detector/backbone weights first.
        select_fraction: Share of training images used for ViT epoch selection when there is no
            separate val split.
        seed: Random seed.
        verbose: Detector (ultralytics) console output.
        echo: Where progress lines go.

    Returns:
        The manifest dict (also written to ``out/manifest.json``).
    """
    t0 = time.perf_counter()
    rs = resolve_recipe(
        recipe, vit=vit, vit_size=vit_size, epochs_vit=epochs_vit, vit_batch=vit_batch, lr=lr,
        vit_optimizer=vit_optimizer, weight_decay=weight_decay, augment=augment,
        class_weighting=class_weighting, sampler=sampler, label_smoothing=label_smoothing,
        select=select, grey=grey, standardize=standardize, margin=margin,
    )
    vit, vit_size, epochs_vit, vit_batch = rs["vit"], rs["vit_size"], rs["epochs_vit"], rs["vit_batch"]
    grey, standardize, margin = rs["grey"], rs["standardize"], rs["margin"]
    fit_kw = {
        "epochs": epochs_vit, "batch": vit_batch, "lr": rs["lr"], "momentum": momentum,
        "optimizer": rs["vit_optimizer"], "weight_decay": rs["weight_decay"],
        "augment_strength": rs["augment"], "class_weighting": rs["class_weighting"],
        "sampler": rs["sampler"], "label_smoothing": rs["label_smoothing"], "select": rs["select"],
        "seed": seed,
    }
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    ds = load_dataset(data)
    spec = ds.spec
    train_imgs, select_imgs, held_imgs, held_name = _splits(ds, seed, select_fraction)
    echo(
        f"dataset {ds.root} (scale {spec.name}): {len(train_imgs)} train / {len(select_imgs)} "
        f"selection / {len(held_imgs)} held-out ({held_name}) images"
    )

    # ---------------------------------------------------------------- stage 1: detector
    t = time.perf_counter()
    if reuse_detector is not None:
        src = Path(reuse_detector)
        echo(f"[1/3] detector: reusing the detector of {src}")
        det_summary = _copy_detector(src, out)
    else:
        echo(f"[1/3] detector: YOLOv5{detector}, {epochs_det} epochs at imgsz {imgsz}")
        det_yaml = write_detector_dataset(ds, out / "work" / "det_data", seed=seed)
        det_summary = train_detector(
            det_yaml, out, size=detector, epochs=epochs_det, imgsz=imgsz, batch=det_batch,
            optimizer=det_optimizer, init=det_init, pretrained=pretrained, seed=seed, verbose=verbose,
        )
        det_summary["seconds"] = time.perf_counter() - t
    echo(
        f"      detector init {det_summary.get('init', '?')}; lowest val loss "
        f"{det_summary.get('best_val_loss', float('nan')):.4f} at epoch {det_summary.get('best_epoch', '?')} "
        f"({det_summary['seconds']:.0f} s)"
    )

    # ---------------------------------------------------------------- stage 2: graders
    echo(
        f"[2/3] graders: recipe {recipe!r}, ViT {vit!r}, {epochs_vit} epochs each, "
        f"{rs['vit_optimizer']} lr {rs['lr']}, loss weights {rs['class_weighting']}, "
        f"sampler {rs['sampler']}, label smoothing {rs['label_smoothing']}, selection {rs['select']}"
    )
    graders: dict[str, ImageClassifier] = {}
    grader_metrics: dict[str, Any] = {}
    t = time.perf_counter()
    probe, vit_init = build_vit(vit, 2, image_size=vit_size)
    size = int(probe.config.image_size)
    del probe
    if size != 224 and vit != "tiny":
        echo(f"      note: ViT input size {size} (the seed used 224)")
    prep = Preprocess(size=size, margin=margin, grey=grey, standardize=standardize)
    crops_tr, errs = collect_crops(train_imgs, spec, prep, "train crops")
    crops_sel, e2 = collect_crops(select_imgs, spec, prep, "selection crops")
    crops_ho, e3 = collect_crops(held_imgs, spec, prep, "held-out crops")
    for e in errs + e2 + e3:
        echo(f"      skipped: {e}")
    for name, tr in crops_tr.items():
        unit = spec.unit(name)
        labels = dict(enumerate(unit.grade_names)) if unit.grade_names else None
        model, vit_init = build_vit(vit, unit.grades, labels, image_size=vit_size)
        sel = crops_sel.get(name)
        sel_x = sel.images if sel is not None else tr.images[:0]
        sel_y = sel.grades if sel is not None else tr.grades[:0]
        hist = train_classifier(
            model, prep, tr.images, tr.grades, sel_x, sel_y, desc=f"grader {name}", **fit_kw
        )
        clf = ImageClassifier(model, prep)
        graders[name] = clf
        echo(
            f"      {name}: {len(tr)} train / {len(sel_y)} selection crops; kept epoch "
            f"{hist['best_epoch']}/{epochs_vit} ({rs['select']}): val loss {hist['best_val_loss']:.4f}, "
            f"val weighted acc {hist['best_val_wacc']:.3f}"
        )
        m: dict[str, Any] = {
            "n_train": len(tr), "n_select": len(sel_y), "train_class_counts":
            np.bincount(tr.grades, minlength=unit.grades).tolist(), **hist,
        }
        ho = crops_ho.get(name)
        if ho is not None and len(ho):
            pred = clf.probs_rgb(ho.images).argmax(1)
            rep = classification_report(ho.grades, pred, unit.grades, majority_of=tr.grades)
            m["held_out"] = rep.to_dict()
            echo(rep.format(f"      {name:>9s} ({unit.label}) held-out"))
        else:
            echo(f"      {name}: no held-out crops")
        grader_metrics[name] = m
    vit_seconds = time.perf_counter() - t

    # ---------------------------------------------------------------- stage 3: pain ViT
    pain_clf: ImageClassifier | None = None
    pain_metrics: dict[str, Any] = {}
    if pain:
        echo("[3/3] whole-face pain ViT (RGS <= 0.33 no pain, >= 1 pain)")
        t = time.perf_counter()
        fprep = Preprocess(size=size, margin=0.0, grey=grey, standardize=standardize)
        f_tr, _ = collect_frames(train_imgs, spec, fprep, "train frames")
        f_sel, _ = collect_frames(select_imgs, spec, fprep, "selection frames")
        f_ho, _ = collect_frames(held_imgs, spec, fprep, "held-out frames")
        counts = np.bincount(f_tr.grades, minlength=2)
        if len(f_tr) < 2 or (counts == 0).any():
            echo(f"      skipped: training frames per class (no pain, pain) = {counts.tolist()}")
            pain_metrics = {"skipped": f"class counts {counts.tolist()}"}
        else:
            model, _ = build_vit(vit, 2, {0: "no pain", 1: "pain"}, image_size=vit_size)
            hist = train_classifier(
                model, fprep, f_tr.images, f_tr.grades, f_sel.images, f_sel.grades, desc="pain", **fit_kw
            )
            pain_clf = ImageClassifier(model, fprep)
            pain_metrics = {"n_train": len(f_tr), "train_class_counts": counts.tolist(), **hist}
            if len(f_ho):
                pred = pain_clf.probs_rgb(f_ho.images).argmax(1)
                rep = classification_report(f_ho.grades, pred, 2, majority_of=f_tr.grades)
                pain_metrics["held_out"] = rep.to_dict()
                echo(rep.format("           pain held-out"))
        pain_metrics["seconds"] = time.perf_counter() - t

    total = time.perf_counter() - t0
    if reuse_detector is not None:  # the detector settings are those of the run it came from
        detector = det_summary.get("size", detector)
        epochs_det = det_summary.get("epochs", epochs_det)
        imgsz = det_summary.get("imgsz", imgsz)
    manifest = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": versions(),
        "data": {"path": str(ds.root.resolve()), "hash": dataset_hash(ds.root), "held_out": held_name},
        "settings": {
            "detector": detector, "vit": vit, "vit_init": vit_init, "epochs_det": epochs_det,
            "epochs_vit": epochs_vit, "imgsz": imgsz, "vit_size": size, "recipe": recipe,
            "vit_batch": vit_batch, "lr": rs["lr"], "momentum": momentum,
            "vit_optimizer": rs["vit_optimizer"], "weight_decay": rs["weight_decay"],
            "augment": rs["augment"], "class_weighting": rs["class_weighting"],
            "sampler": rs["sampler"], "label_smoothing": rs["label_smoothing"], "select": rs["select"],
            "grey": grey, "standardize": standardize,
            "margin": margin, "seed": seed,
        },
        "metrics": {
            "detector": det_summary,
            "graders": grader_metrics,
            "pain": pain_metrics,
            "seconds": {"detector": det_summary["seconds"], "graders": vit_seconds, "total": total},
        },
    }
    save_teacher_parts(out, spec, graders, pain_clf, manifest)
    echo(f"teacher written to {out} in {total:.0f} s")
    return manifest
