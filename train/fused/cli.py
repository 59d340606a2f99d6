"""CLI commands: grimace train / distill / predict (imports nothing heavy at module level)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

train_app = typer.Typer(no_args_is_help=True, help="Train the fused student model.")
distill_app = typer.Typer(no_args_is_help=True, help="Distillation data from the teacher.")
predict_app = typer.Typer(no_args_is_help=True)

SIZES = ("yolov5n", "yolov5s", "yolov5m", "n", "s", "m")


def _size(model: str) -> str:
    if model not in SIZES:
        raise typer.BadParameter(f"--model must be one of yolov5n, yolov5s, yolov5m (got {model!r})")
    return model.removeprefix("yolov5")


@train_app.command("student")
def student(
    data: Path = typer.Option(..., "--data", help="Grimace dataset folder (data.yaml), e.g. from distill."),
    model: str = typer.Option("yolov5n", "--model", help="yolov5n | yolov5s | yolov5m"),
    out: Path = typer.Option(
        ..., "--out", help="Run folder (best/, last/ weights-only; train/ ultralytics)."
    ),
    epochs: int = typer.Option(100, "--epochs"),
    imgsz: int = typer.Option(640, "--imgsz"),
    batch: int = typer.Option(16, "--batch"),
    resume: bool = typer.Option(False, "--resume", help="Continue RUN_DIR/train/weights/last.pt."),
    weights: str = typer.Option(
        "auto",
        "--weights",
        help="'auto' = COCO yolov5{size}u.pt when downloadable, a detector checkpoint path "
        "(e.g. the teacher's detector), or 'none' (random init).",
    ),
    grade_ce: float = typer.Option(1.0, "--grade-ce", help="Weight of CE to human grades."),
    grade_kd: float = typer.Option(1.0, "--grade-kd", help="Weight of KL to teacher soft grades."),
    temperature: float = typer.Option(2.0, "--temperature", help="Distillation temperature T (KL × T²)."),
    grade_cls_pw: float = typer.Option(0.5, "--grade-cls-pw", help="Grade class-imbalance power (0 = off)."),
    workers: int = typer.Option(2, "--workers"),
    device: str = typer.Option("cpu", "--device"),
    patience: int = typer.Option(100, "--patience"),
    seed: int = typer.Option(0, "--seed"),
    mosaic: float = typer.Option(1.0, "--mosaic"),
    mixup: float = typer.Option(0.0, "--mixup"),
    close_mosaic: int = typer.Option(10, "--close-mosaic"),
    select: str = typer.Option(
        "grades", "--select",
        help="Best checkpoint by detection fitness plus 'grades' (weighted accuracy vs human grades) "
        "or 'agreement' (argmax agreement with the teacher's soft grades; for distillation).",
    ),
    augment: str = typer.Option(
        "standard", "--augment",
        help="'standard' (ultralytics: mosaic, flips, colour, scale) or 'consistent': the student sees "
        "each image as the teacher graded it (no augmentation; overrides --mosaic/--mixup/--close-mosaic). "
        "Use it for a final distillation phase.",
    ),
    optimizer: str = typer.Option(
        "auto", "--optimizer",
        help="auto | SGD | Adam | AdamW | NAdam | RAdam | RMSProp (auto picks one and its learning rate).",
    ),
    lr0: float | None = typer.Option(
        None, "--lr0", help="Initial learning rate (needs a named --optimizer; default: ultralytics')."
    ),
    warmup_epochs: float = typer.Option(3.0, "--warmup-epochs", help="Epochs of learning-rate warm-up."),
    grade_channels: int | None = typer.Option(
        None, "--grade-channels", min=1,
        help="Width of the grade branch's 3x3 convolutions. Default: the width of a student given as "
        "--weights, else max(C/4, nc*ng, 16) with C the first head input's channels (16 for yolov5n).",
    ),
) -> None:
    """Train the fused YOLOv5 + grade-head student (labels + teacher soft targets)."""
    from edge.deps import require

    require("torch", "grimace train student")
    require("ultralytics", "grimace train student")
    from train.fused.trainer import (
        AUGMENT_MODES,
        SELECT_RULES,
        GradeTrainer,
        augmentation_overrides,
        optimizer_overrides,
    )

    size = _size(model)
    if select not in SELECT_RULES:
        raise typer.BadParameter(f"--select must be 'grades' or 'agreement' (got {select!r})")
    if augment not in AUGMENT_MODES:
        raise typer.BadParameter(f"--augment must be 'standard' or 'consistent' (got {augment!r})")
    try:
        optim = optimizer_overrides(optimizer, lr0, warmup_epochs)
    except ValueError as e:
        raise typer.BadParameter(f"--optimizer/--lr0/--warmup-epochs: {e}") from None
    out = out.resolve()
    overrides: dict[str, Any] = {
        "data": str((data / "data.yaml") if data.is_dir() else data),
        "epochs": epochs,
        "imgsz": imgsz,
        "batch": batch,
        "workers": workers,
        "device": device,
        "save_dir": str(out / "train"),
        "exist_ok": True,
        "patience": patience,
        "seed": seed,
        "mosaic": mosaic,
        "mixup": mixup,
        "close_mosaic": close_mosaic,
        "plots": False,
        "amp": device != "cpu",
        **augmentation_overrides(augment),
        **optim,
    }
    if resume:
        last = out / "train" / "weights" / "last.pt"
        if not last.exists():
            raise typer.BadParameter(f"--resume: {last} does not exist")
        overrides["resume"] = str(last)
    trainer = GradeTrainer(
        overrides=overrides,
        size=size,
        pretrained=weights,
        grade_hyp={
            "grade_ce": grade_ce,
            "grade_kd": grade_kd,
            "grade_T": temperature,
            "grade_cls_pw": grade_cls_pw,
        },
        out_dir=out,
        select=select,
        grade_channels=grade_channels,
    )
    trainer.train()
    best = out / "best"
    typer.echo(f"weights-only checkpoints: {best} (best), {out / 'last'} (last)")


@train_app.command("flops")
def flops(
    model: str = typer.Option("yolov5s", "--model", help="yolov5n | yolov5s | yolov5m"),
    scale: str = typer.Option("rgs", "--scale", help="Built-in scale name or YAML path."),
    imgsz: int = typer.Option(640, "--imgsz"),
) -> None:
    """FLOPs of the fused model vs the same YOLOv5 size without grade heads (one imgsz² image)."""
    from edge.deps import require

    require("torch", "grimace train flops")
    from train.fused.model import flops_comparison

    r = flops_comparison(scale, _size(model), imgsz)
    typer.echo(f"plain yolov5{_size(model)} detector: {r['plain'] / 1e9:.3f} GFLOPs at {imgsz}x{imgsz}")
    typer.echo(f"fused yolov5{_size(model)} + grade heads: {r['fused'] / 1e9:.3f} GFLOPs")
    typer.echo(f"ratio fused/plain: {r['ratio']:.4f} ({'OK' if r['ratio'] <= 1.10 else 'OVER'} limit 1.10)")


@train_app.command("evaluate")
def evaluate(
    model: Path = typer.Option(..., "--model", help="Fused checkpoint folder."),
    data: Path = typer.Option(
        ..., "--data", help="Dataset (distilled: soft/ targets are the teacher reference)."
    ),
    split: str = typer.Option("test", "--split"),
    conf: float = typer.Option(0.25, "--conf"),
    iou: float = typer.Option(0.45, "--iou"),
    teacher: Path = typer.Option(
        None, "--teacher", help="Teacher run: compare with its own detections instead of soft targets."
    ),
    json_out: Path = typer.Option(None, "--json", help="Write the summary as JSON."),
) -> None:
    """Grade accuracy of a student on held-out images, and agreement with the teacher."""
    from edge.deps import require

    require("torch", "grimace train evaluate")
    from train.fused.evaluate import evaluate_checkpoint, format_summary

    t = None
    if teacher is not None:
        from train.teacher import load_teacher

        t = load_teacher(teacher)
    g = evaluate_checkpoint(model, data, split, conf=conf, iou=iou, teacher=t)
    typer.echo(f"{g['images']} {split} images; student recall (IoU>=0.5, same unit) {g['recall']:.3f}")
    for line in format_summary(g):
        typer.echo(line)
    if json_out:
        json_out.write_text(json.dumps(g, indent=2, default=str))


@distill_app.command("annotate")
def distill_annotate(
    teacher: Path = typer.Option(..., "--teacher", help="Teacher run folder (train.teacher.load_teacher)."),
    data: Path = typer.Option(..., "--data", help="Labelled grimace dataset."),
    out: Path = typer.Option(..., "--out", help="Output dataset with soft/ targets."),
    unlabelled: list[Path] = typer.Option(
        None, "--unlabelled", help="Images, folders or videos to pseudo-label (repeatable)."
    ),
    conf: float = typer.Option(0.5, "--conf", help="Teacher confidence threshold for pseudo-labels."),
    fps: float = typer.Option(1.0, "--fps", help="Frames per second sampled from videos."),
) -> None:
    """Write a distillation dataset: teacher soft grades for labelled boxes, pseudo-labels for the rest."""
    from edge.deps import require

    require("torch", "grimace distill annotate")
    from train.fused.distill import annotate
    from train.teacher import load_teacher

    t = load_teacher(teacher)
    rep = annotate(
        t, data, out, unlabelled=list(unlabelled or []), conf=conf, fps=fps, teacher_name=str(teacher)
    )
    for s in rep.skipped:
        typer.echo(f"skipped: {s}", err=True)
    typer.echo(json.dumps(rep.to_dict() | {"skipped": len(rep.skipped)}))


@predict_app.command("predict")
def predict(
    inputs: list[Path] = typer.Argument(..., help="Image/video files and folders (searched recursively)."),
    model: Path = typer.Option(
        ..., "--model", "-m", help="Fused checkpoint folder (model.safetensors + config.json) or run folder."
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Write frame records: .jsonl (with boxes), .csv or .xlsx."
    ),
    json_out: Path | None = typer.Option(None, "--json", hidden=True, help="Deprecated: use --out x.jsonl."),
    fps: float | None = typer.Option(None, "--fps", help="Video frames per second (as `grimace score`)."),
    imgsz: int | None = typer.Option(None, "--imgsz", help="Letterbox size (default: the checkpoint's)."),
    conf: float = typer.Option(0.25, "--conf", min=0.0, max=1.0, help="Unit-score threshold."),
    iou: float = typer.Option(0.45, "--iou", min=0.0, max=1.0, help="NMS IoU threshold."),
    device: str = typer.Option("auto", "--device", help="Torch device: auto, cpu, cuda, cuda:N or mps."),
    batch: int = typer.Option(8, "--batch", min=1, max=256, help="Frames per forward pass."),
) -> None:
    """Detect, grade and score images and videos with a fused PyTorch checkpoint (same records as
    `grimace score`)."""
    from edge.deps import require

    require("torch", "grimace predict")
    from train.device import resolve_device
    from train.fused.predict import OUT_SUFFIXES, predict_inputs

    if json_out is not None:
        typer.echo("note: --json is deprecated; use --out FILE.jsonl", err=True)
        out = out or json_out
    if out is not None and out.suffix.lower() not in OUT_SUFFIXES:
        raise typer.BadParameter(f"{out}: must end in {', '.join(OUT_SUFFIXES)}", param_hint="--out")
    if fps is not None and not 0 < fps < 1000:
        raise typer.BadParameter(f"must be in (0, 1000) frames per second, got {fps}", param_hint="--fps")

    def show(rec: Any) -> None:
        s = f"{rec.score:.3f}" if rec.score is not None else f"abstained ({rec.abstained})"
        units = " ".join(f"{k}={'-' if v is None else f'{v:.2f}'}" for k, v in rec.unit_scores.items())
        typer.echo(f"{rec.name}: score {s}; {units}; {rec.n_boxes} boxes")

    dev = resolve_device(device)
    run = predict_inputs(
        model, inputs, out, fps=fps, imgsz=imgsz, conf=conf, iou=iou, device=dev, batch=batch,
        on_frame=show, on_error=lambda e: typer.echo(f"error: {e}", err=True),
    )  # fmt: skip
    if out is not None:
        typer.echo(f"{len(run.records)} frame record(s) -> {out}")
    if run.errors:
        raise typer.Exit(1 if run.records else 2)
