"""CLI commands: ``grimace teacher train | score | import-seed | heatmap``.

Nothing heavy is imported at module level (torch, ultralytics and transformers are imported inside
the commands), so ``grimace --help`` stays fast and works without the train extra.
"""

from __future__ import annotations

import math
from pathlib import Path

import typer

from edge.deps import require
from train.device import DEVICE_HELP

app = typer.Typer(no_args_is_help=True, help="Two-stage teacher: YOLO unit detector + ViT graders.")



def _device_option() -> object:
    return typer.Option("auto", "--device", help=DEVICE_HELP)


def _load(teacher: Path, device: str) -> object:
    """load_teacher with user errors (bad folder, unavailable device) as `error: ...`, exit 2."""
    from train.device import DeviceError
    from train.teacher.teacher import TeacherError, load_teacher

    try:
        return load_teacher(teacher, device=device)
    except (TeacherError, DeviceError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None


@app.command("train")
def train_cmd(
    data: Path = typer.Option(..., "--data", help="Grimace dataset folder (with data.yaml)."),
    out: Path = typer.Option(..., "--out", help="Teacher run folder to write."),
    detector: str = typer.Option("s", "--detector", help="YOLOv5 size: n, s or m."),
    vit: str | None = typer.Option(
        None,
        "--vit",
        help="ViT backbone: Hugging Face id, local folder, config.json, 'small' or 'tiny' "
        "(default: the recipe's - 'small' for scratch, google/vit-base-patch16-224-in21k for seed).",
    ),
    epochs_det: int = typer.Option(100, "--epochs-det", min=1, help="Detector epochs."),
    epochs_vit: int | None = typer.Option(None, "--epochs-vit", min=1, help="Epochs per ViT."),
    imgsz: int = typer.Option(640, "--imgsz", min=32, help="Detector input size."),
    vit_size: int | None = typer.Option(
        None, "--vit-size", min=16, help="ViT input size for randomly initialised backbones."
    ),
    det_batch: int = typer.Option(16, "--det-batch", min=1),
    det_optimizer: str = typer.Option(
        "SGD",
        "--det-optimizer",
        help="Detector optimiser (SGD as in the seed; 'auto' = ultralytics' choice).",
    ),
    det_init: Path | None = typer.Option(
        None, "--det-init", help="Start the detector from this teacher run folder's detector."
    ),
    reuse_detector: Path | None = typer.Option(
        None, "--reuse-detector", help="Copy this teacher run's detector instead of training one."
    ),
    graders_from: Path | None = typer.Option(
        None,
        "--graders-from",
        help="Copy this teacher run's graders instead of training them (boxes-only data: e.g. the "
        "seed's graders from `teacher import-seed`).",
    ),
    recipe: str = typer.Option(
        "scratch",
        "--recipe",
        help="ViT training recipe: 'scratch' (from-scratch small ViT; works offline) or 'seed' (the "
        "published method: fine-tune ImageNet-21k ViT-Base/16 at 224 with SGD and weighted CE). "
        "The ViT options below override single settings of it.",
    ),
    vit_batch: int | None = typer.Option(None, "--vit-batch", min=1),
    lr: float | None = typer.Option(None, "--lr", help="ViT peak learning rate."),
    vit_optimizer: str | None = typer.Option(
        None, "--vit-optimizer", help="sgd (the seed; with momentum) or adamw (for random-init ViTs)."
    ),
    weight_decay: float | None = typer.Option(None, "--weight-decay", min=0.0, help="ViT weight decay."),
    augment: float | None = typer.Option(
        None, "--augment", min=0.0, help="ViT augmentation strength (0 = flips)."
    ),
    class_weighting: str | None = typer.Option(
        None, "--class-weighting", help="Cross-entropy class weights: inverse, sqrt or none."
    ),
    sampler: str | None = typer.Option(
        None, "--sampler", help="shuffle, or balanced (grade-balanced sampling with replacement)."
    ),
    label_smoothing: float | None = typer.Option(
        None, "--label-smoothing", min=0.0, max=0.5, help="Cross-entropy label smoothing."
    ),
    select: str | None = typer.Option(
        None,
        "--select",
        help="ViT epoch kept: val_loss (lowest validation loss) or val_wacc (best validation "
        "weighted accuracy).",
    ),
    grey: bool | None = typer.Option(
        None, "--grey/--colour", help="Grade grey-level crops (ignore fur colour)."
    ),
    standardize: bool | None = typer.Option(
        None, "--standardize/--fixed-norm", help="Per-image standardisation of ViT inputs."
    ),
    margin: float | None = typer.Option(
        None, "--margin", min=0.0, help="Crop context margin (fraction of box)."
    ),
    shared_epochs: int | None = typer.Option(
        None,
        "--shared-epochs",
        min=0,
        help="Epochs of the shared backbone trained on all units' crops that initialises every grader "
        "(random-init backbones only; 0 = off; scratch recipe: 40).",
    ),
    pain: bool = typer.Option(True, "--pain/--no-pain", help="Also train the whole-face pain ViT."),
    pretrained: bool = typer.Option(True, "--pretrained/--scratch", help="Try pretrained weights first."),
    seed: int = typer.Option(0, "--seed"),
    device: str = _device_option(),  # type: ignore[assignment]
    quiet: bool = typer.Option(False, "--quiet", help="Less ultralytics output."),
) -> None:
    """Train the detector, one ViT grader per unit and the pain ViT; write a teacher run folder."""
    for m in ("torch", "ultralytics", "transformers"):
        require(m, "grimace teacher train")
    from train.teacher.teacher import TeacherError
    from train.teacher.training import train_teacher

    try:
        train_teacher(
            data,
            out,
            detector=detector,
            vit=vit,
            epochs_det=epochs_det,
            epochs_vit=epochs_vit,
            imgsz=imgsz,
            vit_size=vit_size,
            det_batch=det_batch,
            det_optimizer=det_optimizer,
            det_init=det_init,
            reuse_detector=reuse_detector,
            graders_from=graders_from,
            recipe=recipe,
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
            pain=pain,
            pretrained=pretrained,
            seed=seed,
            device=device,
            verbose=not quiet,
            echo=typer.echo,
        )
    except (ValueError, TeacherError) as e:  # bad recipe/option, unavailable device, bad --graders-from
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e


@app.command("score")
def score_cmd(
    inputs: list[Path] = typer.Argument(..., help="Image/video files and folders (searched recursively)."),
    teacher: Path = typer.Option(..., "--teacher", help="Teacher run folder."),
    out: Path = typer.Option(Path("results.xlsx"), "--out", "-o", help="Output .xlsx or .csv."),
    fps: float | None = typer.Option(
        None, "--fps", help="Video frames per second to score (as `grimace score`); default every frame."
    ),
    conf: float = typer.Option(0.25, "--conf", min=0.0, max=1.0, help="Detector confidence threshold."),
    min_units: int = typer.Option(
        1, "--min-units", min=1, help="Fewest units found for a score (fewer: abstained, with the reason)."
    ),
    batch: int = typer.Option(8, "--batch", min=1, help="Frames per detector batch."),
    heatmaps: Path | None = typer.Option(
        None, "--heatmaps", help="Write pain-ViT attention overlays (PNG) into this folder."
    ),
    device: str = _device_option(),  # type: ignore[assignment]
) -> None:
    """Score images and videos by the seed's rule; write the frame table (seed's columns first)."""
    for m in ("torch", "ultralytics", "transformers"):
        require(m, "grimace teacher score")
    if out.suffix.lower() not in (".xlsx", ".csv"):
        raise typer.BadParameter(f"{out}: must end in .xlsx or .csv", param_hint="--out")
    if fps is not None and not (0 < fps < 1000):
        raise typer.BadParameter(
            f"must be a number of frames per second in (0, 1000), got {fps}", param_hint="--fps"
        )
    from train.teacher.score import score_inputs, write_outputs

    t = _load(teacher, device)
    run = score_inputs(t, inputs, fps=fps, conf=conf, min_units=min_units, batch=batch, heatmaps=heatmaps)
    if not run.records:
        for e in run.errors:
            typer.echo(f"error: {e}", err=True)
        typer.echo("error: no frame could be read", err=True)
        raise typer.Exit(2)  # nothing to write: the run failed as a whole (as `grimace score`)
    files = write_outputs(run, t.spec, out)
    abstained = sum(r.score is None for r in run.records)
    typer.echo(
        f"scored {len(run.records)} frame(s) -> {files[0]}  ({abstained} abstained)  "
        f"{run.seconds_per_frame:.3f} s/frame ({run.seconds:.1f} s total)"
    )
    if run.errors:
        typer.echo(f"{len(run.errors)} input(s) failed:", err=True)
        for e in run.errors:
            typer.echo(f"  {e}", err=True)
        raise typer.Exit(1)


@app.command("heatmap")
def heatmap_cmd(
    inputs: list[Path] = typer.Argument(..., help="Image files and/or folders."),
    teacher: Path = typer.Option(..., "--teacher", help="Teacher run folder with a pain ViT."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the PNG overlays."),
    device: str = _device_option(),  # type: ignore[assignment]
) -> None:
    """Attention-rollout heatmaps of the whole-face pain ViT, one PNG overlay per image."""
    require("torch", "grimace teacher heatmap")

    from edge.sources import ItemError, iter_inputs
    from train.teacher.pain import write_heatmap

    t = _load(teacher, device)
    if t.pain is None:  # type: ignore[attr-defined]
        typer.echo(f"{teacher}: this teacher has no whole-face pain classifier", err=True)
        raise typer.Exit(1)
    failed = 0
    for item in iter_inputs(inputs):
        if isinstance(item, ItemError):
            typer.echo(f"error: {item}", err=True)
            failed += 1
            continue
        img = item.image
        boxes = t.predict([img])[0].xyxy if t.pain.prep.region == "face" else None
        stem = Path(item.name).stem.replace("@", "_")
        png, prob = write_heatmap(t.pain, img, out / f"{stem}_attention.png", boxes)
        shown = "no face found" if math.isnan(prob) else f"pain p={prob:.3f}"
        typer.echo(f"{item.name}: {shown} -> {png}")
    if failed:
        raise typer.Exit(1)


@app.command("import-seed")
def import_seed_cmd(
    weights: Path = typer.Option(..., "--weights", help="Folder with eye/ear/nose_weights.bin."),
    detector: Path = typer.Option(..., "--detector", help="ultralytics detector checkpoint (best.pt)."),
    out: Path = typer.Option(..., "--out", help="Teacher run folder to write."),
    classes: str = typer.Option("ear,eye,nose", "--classes", help="Detector class names in order."),
    vit_config: Path | None = typer.Option(None, "--vit-config", help="ViT config.json (default: inferred)."),
    heads: int | None = typer.Option(None, "--heads", help="Attention heads when inferring the config."),
    imgsz: int | None = typer.Option(None, "--imgsz", help="Detector input size (default: checkpoint's)."),
) -> None:
    """Turn the seed paper's released weights into a teacher run folder (units mapped onto RGS)."""
    for m in ("torch", "ultralytics", "transformers"):
        require(m, "grimace teacher import-seed")
    from train.teacher.seed import import_seed

    run = import_seed(
        weights,
        detector,
        out,
        classes=[c.strip() for c in classes.split(",") if c.strip()],
        vit_config=vit_config,
        heads=heads,
        imgsz=imgsz,
    )
    typer.echo(f"seed teacher written to {run}")
