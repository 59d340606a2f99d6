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
from train.teacher.pain import FACE_MARGIN
from train.teacher.teacher import dataset_hash, save_teacher_parts, versions
from train.teacher.vit import DEFAULT_VIT, ImageClassifier, Preprocess, build_vit, train_classifier

RECIPES: dict[str, dict[str, Any]] = {
    "seed": {
        "vit": DEFAULT_VIT,
        "vit_size": None,
        "epochs_vit": 20,
        "vit_batch": 16,
        "lr": 0.01,
        "vit_optimizer": "sgd",
        "weight_decay": None,
        "augment": 0.5,
        "class_weighting": "inverse",
        "sampler": "shuffle",
        "label_smoothing": 0.0,
        "select": "val_loss",
        "grey": False,
        "standardize": False,
        "margin": 0.1,
        "shared_epochs": 0,
    },
    "scratch": {
        "vit": "small",
        "vit_size": None,
        "epochs_vit": 60,
        "vit_batch": 32,
        "lr": 0.001,
        "vit_optimizer": "adamw",
        "weight_decay": 0.05,
        "augment": 0.5,
        "class_weighting": "none",
        "sampler": "shuffle",
        "label_smoothing": 0.1,
        "select": "val_wacc",
        "grey": True,
        "standardize": True,
        "margin": 0.1,
        "shared_epochs": 40,
    },
}
"""ViT training recipes. ``seed``: the published method (fine-tune ImageNet-21k ViT-Base/16 at 224
with SGD, inverse-frequency weighted cross-entropy, lowest-validation-loss epoch). ``scratch``: for
randomly initialised ViTs (no pretrained backbone, e.g. offline): a 4-layer ViT at 32x32, AdamW with
warmup + cosine, label smoothing, unweighted loss, grey standardised crops, the epoch with the best
validation weighted accuracy, and every grader starting from a *shared backbone* first trained on the
crops of all units together (``shared_epochs``; :func:`train_shared_backbone`). See docs/teacher.md
for why."""


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


def _copy_graders(
    src: Path, spec: Any, held_imgs: list[Path], echo: Callable[[str], None]
) -> tuple[dict[str, ImageClassifier], dict[str, Any], str]:
    """Load the graders of teacher run ``src`` for scale ``spec``; ``(graders, metrics, init)``.

    Raises:
        TeacherError: ``src`` is not a teacher run, has no graders, or a grader's unit is not a unit
            of ``spec`` with the same number of grade levels.
    """
    import json

    from train.teacher.teacher import GRADERS_DIR, MANIFEST, TeacherError

    man_p = src / MANIFEST
    if not man_p.exists():
        raise TeacherError(f"{man_p}: missing - --graders-from needs a teacher run folder (e.g. import-seed)")
    names = json.loads(man_p.read_text()).get("graders", [])
    if not names:
        raise TeacherError(f"{man_p}: that teacher run has no graders")
    graders: dict[str, ImageClassifier] = {}
    metrics: dict[str, Any] = {}
    for name in names:
        if name not in spec.unit_names:
            raise TeacherError(
                f"{src}: grader {name!r} is not a unit of scale {spec.name!r} {spec.unit_names}"
            )
        clf = ImageClassifier.load(src / GRADERS_DIR / name)
        if clf.num_labels != spec.unit(name).grades:
            raise TeacherError(
                f"{src}: grader {name!r} has {clf.num_labels} grades but scale {spec.name!r} has "
                f"{spec.unit(name).grades}"
            )
        graders[name] = clf
        metrics[name] = {"copied_from": str(src.resolve())}
    echo(f"[2/3] graders: copied {sorted(graders)} from {src} (not trained)")
    for name, clf in graders.items():
        ho, _ = collect_crops(held_imgs, spec, clf.prep, f"held-out crops ({name})")
        c = ho.get(name)
        if c is not None and len(c):
            pred = clf.probs_rgb(c.images).argmax(1)
            rep = classification_report(c.grades, pred, spec.unit(name).grades)
            metrics[name]["held_out"] = rep.to_dict()
            echo(rep.format(f"      {name:>9s} held-out"))
        else:
            echo(f"      {name}: no graded held-out boxes (boxes-only data): no grader metrics")
    return graders, metrics, f"copied from {src}"


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


def train_shared_backbone(
    vit: str,
    vit_size: int | None,
    prep: Preprocess,
    spec: Any,
    crops_train: dict[str, Any],
    crops_select: dict[str, Any],
    fit_kw: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train one ViT on the crops of all units at once; its encoder initialises every grader.

    A randomly initialised ViT learns little from the few hundred crops of one unit (the nose or
    whisker grader of a small study), but the units share what matters - edges, lines, their
    angles and spacing at the crop's scale - and together they have several times more crops. The
    shared model classifies a crop into one ``(unit, grade)`` class (e.g. 12 classes for RGS:
    ``eye:0 .. whiskers:2``), so it must learn every unit's grade cues; its classifier head is then
    dropped and each grader fine-tunes the encoder on its own unit. In-domain pretraining of this
    kind uses only the training crops (no other data).

    Args:
        vit: Backbone name/path (:func:`build_vit`; a random-init architecture).
        vit_size: Input size for random-init backbones.
        prep: Crop preprocessing (the graders').
        spec: The scale.
        crops_train: Unit name -> training ``CropSet``.
        crops_select: Unit name -> selection ``CropSet`` (may lack units).
        fit_kw: :func:`train_classifier` keyword arguments (``epochs`` is the shared stage's).

    Returns:
        ``(encoder state dict without the classifier head, metrics)``.
    """
    names = list(crops_train)
    offsets, labels = {}, {}
    for name in names:
        offsets[name] = len(labels)
        for g in range(spec.unit(name).grades):
            labels[len(labels)] = f"{name}:{g}"
    model, _ = build_vit(vit, len(labels), labels, image_size=vit_size)

    def stack(sets: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        xs = [sets[n].images for n in names if n in sets and len(sets[n])]
        ys = [sets[n].grades + offsets[n] for n in names if n in sets and len(sets[n])]
        if not xs:
            return np.zeros((0, prep.size, prep.size, 3), np.uint8), np.zeros((0,), np.int64)
        return np.concatenate(xs), np.concatenate(ys)

    x_tr, y_tr = stack(crops_train)
    x_sel, y_sel = stack(crops_select)
    hist = train_classifier(model, prep, x_tr, y_tr, x_sel, y_sel, desc="shared backbone", **fit_kw)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("classifier.")}
    metrics = {
        "units": names,
        "classes": len(labels),
        "n_train": len(y_tr),
        "n_select": len(y_sel),
        **{k: v for k, v in hist.items() if k != "class_weights"},
    }
    return state, metrics


def _load_backbone(model: Any, state: dict[str, Any], what: str) -> None:
    """Load a shared encoder into a fresh classifier; only the classifier head may stay new."""
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatch
        raise RuntimeError(f"{what}: shared backbone does not fit the model ({str(e)[:300]})") from e
    bad = [k for k in missing if not k.startswith("classifier.")] + list(unexpected)
    if bad:
        raise RuntimeError(f"{what}: shared backbone does not fit the model ({bad[:4]} ...)")


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
    graders_from: str | Path | None = None,
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
    shared_epochs: int | None = None,
    pain: bool = True,
    pretrained: bool = True,
    select_fraction: float = 0.15,
    seed: int = 0,
    device: str | Any = "auto",
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
        graders_from: Skip grader training and copy the graders of this teacher run folder (e.g. the
            seed's released graders after ``teacher import-seed``): the boxes-only path, for a lab
            whose dataset has boxes but no grades. Their units must be units of the dataset's scale
            with the same grade levels; held-out metrics are computed on graded held-out boxes if any.
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
        shared_epochs: Epochs of the shared backbone that initialises every grader
            (:func:`train_shared_backbone`); 0 = each grader starts from the backbone's own init.
            Used only when the backbone is randomly initialised.
        pain: Also train the whole-face binary pain ViT.
        pretrained: Try pretrained detector/backbone weights first.
        select_fraction: Share of training images used for ViT epoch selection when there is no
            separate val split.
        seed: Random seed.
        device: Where every model trains: ``auto`` (CUDA when available, else MPS, else CPU),
            ``cpu``, ``cuda:N``, ``mps`` (:func:`train.device.resolve_device`). On CUDA the detector
            and every ViT train with mixed precision (AMP). Recorded in the manifest.
        verbose: Detector (ultralytics) console output.
        echo: Where progress lines go.

    Returns:
        The manifest dict (also written to ``out/manifest.json``).

    Raises:
        train.device.DeviceError: The device is malformed or not available.
    """
    from train.device import describe_device, resolve_device

    dev = resolve_device(device)
    if graders_from is not None:
        from train.teacher.teacher import MANIFEST, TeacherError

        if not (Path(graders_from) / MANIFEST).is_file():  # refused before any training starts
            raise TeacherError(
                f"{Path(graders_from) / MANIFEST}: missing - --graders-from needs a teacher run folder "
                "(e.g. import-seed)"
            )
    t0 = time.perf_counter()
    rs = resolve_recipe(
        recipe,
        vit=vit,
        vit_size=vit_size,
        epochs_vit=epochs_vit,
        vit_batch=vit_batch,
        lr=lr,
        vit_optimizer=vit_optimizer,
        weight_decay=weight_decay,
        augment=augment,
        class_weighting=class_weighting,
        sampler=sampler,
        label_smoothing=label_smoothing,
        select=select,
        grey=grey,
        standardize=standardize,
        margin=margin,
        shared_epochs=shared_epochs,
    )
    vit, vit_size, epochs_vit, vit_batch = rs["vit"], rs["vit_size"], rs["epochs_vit"], rs["vit_batch"]
    grey, standardize, margin = rs["grey"], rs["standardize"], rs["margin"]
    fit_kw = {
        "epochs": epochs_vit,
        "batch": vit_batch,
        "lr": rs["lr"],
        "momentum": momentum,
        "optimizer": rs["vit_optimizer"],
        "weight_decay": rs["weight_decay"],
        "augment_strength": rs["augment"],
        "class_weighting": rs["class_weighting"],
        "sampler": rs["sampler"],
        "label_smoothing": rs["label_smoothing"],
        "select": rs["select"],
        "seed": seed,
        "device": dev,
    }
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    ds = load_dataset(data)
    spec = ds.spec
    train_imgs, select_imgs, held_imgs, held_name = _splits(ds, seed, select_fraction)
    device_info = describe_device(dev)
    echo(f"device {device_info['device']} ({device_info['name']}){', AMP' if device_info['amp'] else ''}")
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
            det_yaml,
            out,
            size=detector,
            epochs=epochs_det,
            imgsz=imgsz,
            batch=det_batch,
            optimizer=det_optimizer,
            init=det_init,
            pretrained=pretrained,
            seed=seed,
            verbose=verbose,
            device=dev,
        )
        det_summary["seconds"] = time.perf_counter() - t
    echo(
        f"      detector init {det_summary.get('init', '?')}; lowest val loss "
        f"{det_summary.get('best_val_loss', float('nan')):.4f} at epoch {det_summary.get('best_epoch', '?')} "
        f"({det_summary['seconds']:.0f} s)"
    )

    # ---------------------------------------------------------------- stage 2: graders
    n_shared = int(rs["shared_epochs"] or 0)
    if graders_from is not None:
        t = time.perf_counter()
        graders, grader_metrics, vit_init = _copy_graders(Path(graders_from), spec, held_imgs, echo)
        size = int(next(iter(graders.values())).prep.size)
        backbone: dict[str, Any] | None = None
        shared_metrics: dict[str, Any] = {"skipped": "graders copied"}
        n_shared = 0
    else:
        echo(
            f"[2/3] graders: recipe {recipe!r}, ViT {vit!r}, {epochs_vit} epochs each, "
            f"{rs['vit_optimizer']} lr {rs['lr']}, loss weights {rs['class_weighting']}, "
            f"sampler {rs['sampler']}, label smoothing {rs['label_smoothing']}, selection {rs['select']}"
        )
        graders = {}
        grader_metrics = {}
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
        backbone = None
        shared_metrics = {}
        if n_shared > 0 and vit_init.startswith("random init") and len(crops_tr) > 1:
            ts = time.perf_counter()
            echo(
                f"      shared backbone: one ViT on the crops of all {len(crops_tr)} units "
                f"({sum(len(c) for c in crops_tr.values())} crops, unit x grade classes), {n_shared} epochs"
            )
            backbone, shared_metrics = train_shared_backbone(
                vit, vit_size, prep, spec, crops_tr, crops_sel, {**fit_kw, "epochs": n_shared}
            )
            shared_metrics["seconds"] = time.perf_counter() - ts
            echo(
                f"      shared backbone: kept epoch {shared_metrics['best_epoch']}/{n_shared}, val "
                f"weighted acc {shared_metrics['best_val_wacc']:.3f} over unit x grade "
                f"({shared_metrics['seconds']:.0f} s)"
            )
        elif n_shared > 0:
            why = "the backbone is pretrained" if not vit_init.startswith("random init") else "only one unit"
            echo(f"      shared backbone skipped: {why}")
            shared_metrics = {"skipped": why}
        for name, tr in crops_tr.items():
            unit = spec.unit(name)
            labels = dict(enumerate(unit.grade_names)) if unit.grade_names else None
            model, vit_init = build_vit(vit, unit.grades, labels, image_size=vit_size)
            if backbone is not None:
                _load_backbone(model, backbone, f"grader {name}")
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
                "n_train": len(tr),
                "n_select": len(sel_y),
                "train_class_counts": np.bincount(tr.grades, minlength=unit.grades).tolist(),
                **hist,
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
        echo("[3/3] whole-face pain ViT on the face square (RGS <= 0.33 no pain, >= 1 pain)")
        t = time.perf_counter()
        fprep = Preprocess(size=size, margin=FACE_MARGIN, grey=grey, standardize=standardize, region="face")
        f_tr, _ = collect_frames(train_imgs, spec, fprep, "train frames")
        f_sel, _ = collect_frames(select_imgs, spec, fprep, "selection frames")
        f_ho, _ = collect_frames(held_imgs, spec, fprep, "held-out frames")
        counts = np.bincount(f_tr.grades, minlength=2)
        if len(f_tr) < 2 or (counts == 0).any():
            echo(f"      skipped: training frames per class (no pain, pain) = {counts.tolist()}")
            pain_metrics = {"skipped": f"class counts {counts.tolist()}"}
        else:
            model, _ = build_vit(vit, 2, {0: "no pain", 1: "pain"}, image_size=vit_size)
            if backbone is not None:  # on the validation animals this beat a fresh start (docs/teacher.md)
                _load_backbone(model, backbone, "pain ViT")
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
        "device": device_info,
        "data": {"path": str(ds.root.resolve()), "hash": dataset_hash(ds.root), "held_out": held_name},
        "settings": {
            "detector": detector,
            "graders_from": None if graders_from is None else str(Path(graders_from).resolve()),
            "vit": vit,
            "vit_init": vit_init,
            "epochs_det": epochs_det,
            "epochs_vit": epochs_vit,
            "imgsz": imgsz,
            "vit_size": size,
            "recipe": recipe,
            "vit_batch": vit_batch,
            "lr": rs["lr"],
            "momentum": momentum,
            "vit_optimizer": rs["vit_optimizer"],
            "weight_decay": rs["weight_decay"],
            "augment": rs["augment"],
            "class_weighting": rs["class_weighting"],
            "sampler": rs["sampler"],
            "label_smoothing": rs["label_smoothing"],
            "select": rs["select"],
            "grey": grey,
            "standardize": standardize,
            "margin": margin,
            "shared_epochs": n_shared,
            "pain_region": "face",
            "face_margin": FACE_MARGIN,
            "seed": seed,
        },
        "metrics": {
            "detector": det_summary,
            "shared_backbone": shared_metrics,
            "graders": grader_metrics,
            "pain": pain_metrics,
            "seconds": {"detector": det_summary["seconds"], "graders": vit_seconds, "total": total},
        },
    }
    save_teacher_parts(out, spec, graders, pain_clf, manifest)
    echo(f"teacher written to {out} in {total:.0f} s")
    return manifest
