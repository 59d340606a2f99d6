"""CLI commands: ``grimace train student|distill|evaluate|flops`` and ``grimace predict``.

Imports nothing heavy at module level (torch, ultralytics are imported inside the commands).

Option vocabulary: ``--model`` always names a model artifact (a fused checkpoint or run folder);
the architecture is ``--arch``; ``--out``/``-o`` is where a command writes; ``--device`` is a torch
device (``auto`` by default). Exit codes: 2 for usage errors (bad option, missing or refused file),
1 when some inputs were bad and were reported and skipped, 0 otherwise.

Old spellings kept for one release, hidden, with a deprecation note: ``--model yolov5n`` on
``train student``/``train flops`` (now ``--arch``), ``grimace distill annotate`` (now
``grimace train distill``), ``--json`` on ``train evaluate`` (now ``--out``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import typer

from train.device import DEVICE_HELP

train_app = typer.Typer(
    no_args_is_help=True, help="Train the fused student: student, distill, evaluate, flops."
)
distill_app = typer.Typer(no_args_is_help=True, hidden=True, help="Deprecated: use `grimace train distill`.")
predict_app = typer.Typer(no_args_is_help=True)

ARCHS = ("yolov5n", "yolov5s", "yolov5m")


def _fail(msg: str, code: int = 2) -> typer.Exit:
    """Print ``error: msg`` on stderr; the ``typer.Exit`` to raise (2: usage, 1: bad items)."""
    typer.secho(f"error: {msg}", err=True, fg=typer.colors.RED)
    return typer.Exit(code)


def _deprecated(old: str, new: str) -> None:
    typer.secho(
        f"warning: {old} is deprecated and will be removed in the next release; use {new}",
        err=True,
        fg=typer.colors.YELLOW,
    )


def _arch(arch: str | None, model: str | None, default: str) -> str:
    """The YOLOv5 size letter from ``--arch`` (or the deprecated ``--model yolov5n`` spelling)."""
    if model is not None:
        if model.removeprefix("yolov5") not in ("n", "s", "m"):
            raise typer.BadParameter(
                f"--model names a model artifact now, not an architecture (got {model!r}); use --arch "
                "yolov5n|yolov5s|yolov5m, and --weights for starting weights",
                param_hint="--model",
            )
        if arch is not None:
            raise typer.BadParameter(
                "give --arch only (--model is its deprecated spelling)", param_hint="--model"
            )
        _deprecated(f"--model {model} (the architecture)", f"--arch {model}")
        arch = model
    arch = arch or default
    if arch.removeprefix("yolov5") not in ("n", "s", "m"):
        raise typer.BadParameter(f"must be one of {', '.join(ARCHS)} (got {arch!r})", param_hint="--arch")
    return arch.removeprefix("yolov5")


def _device(spec: str) -> Any:
    """``--device`` resolved to a torch device (usage error when this machine does not have it)."""
    from train.device import DeviceError, resolve_device

    try:
        return resolve_device(spec)
    except DeviceError as e:
        raise typer.BadParameter(str(e).removeprefix(f"--device {spec}: "), param_hint="--device") from None


MODEL_ALIAS = typer.Option(None, "--model", hidden=True, help="Deprecated spelling of --arch.")


@train_app.command("student")
def student(
    data: Path = typer.Option(..., "--data", help="Grimace dataset folder (data.yaml), e.g. from distill."),
    arch: str | None = typer.Option(
        None, "--arch", help="Architecture: yolov5n | yolov5s | yolov5m [default: yolov5n]."
    ),
    model: str | None = MODEL_ALIAS,
    out: Path = typer.Option(
        ..., "--out", "-o", help="Run folder (best/, last/ weights-only; train/ ultralytics)."
    ),
    epochs: int = typer.Option(100, "--epochs", min=1),
    imgsz: int = typer.Option(640, "--imgsz", min=32),
    batch: int = typer.Option(16, "--batch", min=1),
    resume: bool = typer.Option(
        False,
        "--resume/--no-resume",
        metavar="",
        help="Continue OUT/train/weights/last.pt (an ultralytics pickle: needs --trust-pickle).",
    ),
    weights: str = typer.Option(
        "auto",
        "--weights",
        help="'auto' = COCO yolov5{size}u.pt when downloadable, a teacher run or fused checkpoint folder, a "
        ".safetensors/.pt file, or 'none' (random init).",
    ),
    trust_pickle: bool = typer.Option(
        False,
        "--trust-pickle/--no-trust-pickle",
        metavar="",
        help="Allow unpickling .pt files that hold more than tensors and known ultralytics model classes "
        "(--weights, --resume). Unpickling runs any code the file carries: only for files you made or trust.",
    ),
    grade_ce: float = typer.Option(1.0, "--grade-ce", help="Weight of CE to human grades."),
    grade_kd: float = typer.Option(1.0, "--grade-kd", help="Weight of KL to teacher soft grades."),
    temperature: float = typer.Option(2.0, "--temperature", help="Distillation temperature T (KL × T²)."),
    grade_cls_pw: float = typer.Option(0.5, "--grade-cls-pw", help="Grade class-imbalance power (0 = off)."),
    workers: int = typer.Option(2, "--workers", min=0),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    patience: int = typer.Option(100, "--patience"),
    seed: int = typer.Option(0, "--seed"),
    mosaic: float = typer.Option(1.0, "--mosaic"),
    mixup: float = typer.Option(0.0, "--mixup"),
    close_mosaic: int = typer.Option(10, "--close-mosaic"),
    select: str = typer.Option(
        "grades",
        "--select",
        help="Best checkpoint by detection fitness plus 'grades' (weighted accuracy vs human grades) "
        "or 'agreement' (argmax agreement with the teacher's soft grades; for distillation).",
    ),
    augment: str = typer.Option(
        "standard",
        "--augment",
        help="'standard' (ultralytics: mosaic, flips, colour, scale) or 'consistent': the student sees "
        "each image as the teacher graded it (no augmentation; overrides --mosaic/--mixup/--close-mosaic). "
        "Use it for a final distillation phase.",
    ),
    optimizer: str = typer.Option(
        "auto",
        "--optimizer",
        help="auto | SGD | Adam | AdamW | NAdam | RAdam | RMSProp (auto picks one and its learning rate).",
    ),
    lr0: float | None = typer.Option(
        None, "--lr0", help="Initial learning rate (needs a named --optimizer; default: ultralytics')."
    ),
    warmup_epochs: float = typer.Option(3.0, "--warmup-epochs", help="Epochs of learning-rate warm-up."),
    grade_channels: int | None = typer.Option(
        None,
        "--grade-channels",
        min=1,
        help="Width of the grade branch's 3x3 convolutions. Default: the width of a student given as "
        "--weights, else max(C/4, nc*ng, 16) with C the first head input's channels (16 for yolov5n).",
    ),
) -> None:
    """Train the fused YOLOv5 + grade-head student (labels + teacher soft targets)."""
    from edge.deps import require

    require("torch", "grimace train student")
    require("ultralytics", "grimace train student")
    from train.device import amp_enabled, ultralytics_device
    from train.fused.config import GradeLossConfig
    from train.fused.trainer import (
        AUGMENT_MODES,
        SELECT_RULES,
        GradeTrainer,
        augmentation_overrides,
        optimizer_overrides,
    )
    from train.fused.weights import NO_WEIGHTS, UnsafeWeightsError, resolve_weights

    size = _arch(arch, model, "yolov5n")
    if select not in SELECT_RULES:
        raise typer.BadParameter(f"--select must be 'grades' or 'agreement' (got {select!r})")
    if augment not in AUGMENT_MODES:
        raise typer.BadParameter(f"--augment must be 'standard' or 'consistent' (got {augment!r})")
    try:
        optim = optimizer_overrides(optimizer, lr0, warmup_epochs)
    except ValueError as e:
        raise typer.BadParameter(f"--optimizer/--lr0/--warmup-epochs: {e}") from None
    try:
        grade_config = GradeLossConfig(grade_ce, grade_kd, temperature, grade_cls_pw)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    if weights.lower() not in (*NO_WEIGHTS, "auto"):
        try:
            resolve_weights(weights)
        except FileNotFoundError as e:
            raise typer.BadParameter(str(e), param_hint="--weights") from None
    data_yaml = (data / "data.yaml") if data.is_dir() else data
    if not data_yaml.is_file():
        raise typer.BadParameter(
            f"{data_yaml} does not exist (expected a grimace dataset)", param_hint="--data"
        )
    dev = _device(device)
    out = out.resolve()
    overrides: dict[str, Any] = {
        "data": str(data_yaml),
        "epochs": epochs,
        "imgsz": imgsz,
        "batch": batch,
        "workers": workers,
        "device": ultralytics_device(dev),
        "save_dir": str(out / "train"),
        "exist_ok": True,
        "patience": patience,
        "seed": seed,
        "mosaic": mosaic,
        "mixup": mixup,
        "close_mosaic": close_mosaic,
        "plots": False,
        "amp": amp_enabled(dev),
        **augmentation_overrides(augment),
        **optim,
    }
    if resume:
        last = out / "train" / "weights" / "last.pt"
        if not last.exists():
            raise typer.BadParameter(f"{last} does not exist", param_hint="--resume")
        if not trust_pickle:
            raise typer.BadParameter(
                f"resuming loads {last}, an ultralytics pickle: unpickling runs any code the file carries. "
                "Add --trust-pickle if you made this run folder yourself",
                param_hint="--resume",
            )
        overrides["resume"] = str(last)
    trainer = GradeTrainer(
        overrides=overrides,
        size=size,
        pretrained=weights,
        grade_config=grade_config,
        out_dir=out,
        select=select,
        grade_channels=grade_channels,
        trust_pickle=trust_pickle,
    )
    typer.echo(f"device: {dev}")
    try:
        trainer.train()
    except UnsafeWeightsError as e:
        raise _fail(str(e)) from None
    typer.echo(f"weights-only checkpoints: {out / 'best'} (best), {out / 'last'} (last)")


@train_app.command("flops")
def flops(
    arch: str | None = typer.Option(
        None, "--arch", help="Architecture: yolov5n | yolov5s | yolov5m [default: yolov5s]."
    ),
    model: str | None = MODEL_ALIAS,
    scale: str = typer.Option("rgs", "--scale", help="Built-in scale name or YAML path."),
    imgsz: int = typer.Option(640, "--imgsz", min=32),
) -> None:
    """FLOPs of the fused model vs the same YOLOv5 size without grade heads (one imgsz² image)."""
    from edge.deps import require

    require("torch", "grimace train flops")
    from train.fused.model import flops_comparison

    size = _arch(arch, model, "yolov5s")
    r = flops_comparison(scale, size, imgsz)
    typer.echo(f"plain yolov5{size} detector: {r['plain'] / 1e9:.3f} GFLOPs at {imgsz}x{imgsz}")
    typer.echo(f"fused yolov5{size} + grade heads: {r['fused'] / 1e9:.3f} GFLOPs")
    typer.echo(f"ratio fused/plain: {r['ratio']:.4f} ({'OK' if r['ratio'] <= 1.10 else 'OVER'} limit 1.10)")


@train_app.command("evaluate")
def evaluate(
    model: Path = typer.Option(..., "--model", help="Fused checkpoint folder or training run folder."),
    data: Path = typer.Option(
        ..., "--data", help="Dataset (distilled: soft/ targets are the teacher reference)."
    ),
    split: str = typer.Option("test", "--split"),
    conf: float = typer.Option(0.25, "--conf", min=0.0, max=1.0),
    iou: float = typer.Option(0.45, "--iou", min=0.0, max=1.0),
    teacher: Path | None = typer.Option(
        None, "--teacher", help="Teacher run: compare with its own detections instead of soft targets."
    ),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write the summary as JSON to this file."),
    json_out: Path | None = typer.Option(None, "--json", hidden=True, help="Deprecated spelling of --out."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
) -> None:
    """Grade accuracy of a student on held-out images, and agreement with the teacher."""
    from edge.deps import require

    require("torch", "grimace train evaluate")
    from train.device import describe_device
    from train.fused.checkpoint import CheckpointError
    from train.fused.evaluate import evaluate_checkpoint, format_summary

    if json_out is not None:
        if out is not None:
            raise typer.BadParameter(
                "give --out only (--json is its deprecated spelling)", param_hint="--json"
            )
        _deprecated("--json FILE", "--out FILE")
        out = json_out
    dev = _device(device)
    t = None
    if teacher is not None:
        from train.fused.distill import place_teacher
        from train.teacher import load_teacher

        t = load_teacher(teacher)
        try:
            _, note = place_teacher(t, dev, explicit=device.strip().lower() != "auto")
        except ValueError as e:
            raise typer.BadParameter(str(e), param_hint="--device") from None
        if note:
            typer.secho(f"note: {note}", err=True, fg=typer.colors.YELLOW)
    try:
        g = evaluate_checkpoint(model, data, split, conf=conf, iou=iou, teacher=t, device=dev)
    except CheckpointError as e:
        raise _fail(str(e)) from None
    g["device"] = describe_device(dev)
    typer.echo(f"{g['images']} {split} images; student recall (IoU>=0.5, same unit) {g['recall']:.3f}")
    for line in format_summary(g):
        typer.echo(line)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(g, indent=2, default=str))
    if g["skipped"]:
        for s in g["skipped"]:
            typer.echo(f"skipped: {s}", err=True)
        raise _fail(f"{len(g['skipped'])} image(s) could not be read and were skipped", 1)


def _distill(
    teacher: Path, data: Path, out: Path, unlabelled: list[Path] | None, conf: float, fps: float, device: str
) -> None:
    from edge.deps import require

    require("torch", "grimace train distill")
    from train.fused.distill import annotate, place_teacher
    from train.teacher import load_teacher

    if not math.isfinite(fps) or fps <= 0:
        raise typer.BadParameter(f"must be a finite number > 0 (got {fps})", param_hint="--fps")
    if not 0.0 <= conf <= 1.0:
        raise typer.BadParameter(f"must be within [0, 1] (got {conf})", param_hint="--conf")
    dev = _device(device)
    t = load_teacher(teacher)
    try:
        used, note = place_teacher(t, dev, explicit=device.strip().lower() != "auto")
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--device") from None
    if note:
        typer.secho(f"note: {note}", err=True, fg=typer.colors.YELLOW)
    rep = annotate(
        t,
        data,
        out,
        unlabelled=list(unlabelled or []),
        conf=conf,
        fps=fps,
        teacher_name=str(teacher),
        device=used,
    )
    typer.echo(json.dumps(rep.to_dict() | {"skipped": len(rep.skipped)}))
    if rep.skipped:
        for s in rep.skipped:
            typer.echo(f"skipped: {s}", err=True)
        raise _fail(f"{len(rep.skipped)} input(s) could not be read and were skipped", 1)


TEACHER_OPTION = typer.Option(..., "--teacher", help="Teacher run folder (train.teacher.load_teacher).")
DATA_OPTION = typer.Option(..., "--data", help="Labelled grimace dataset.")
OUT_OPTION = typer.Option(..., "--out", "-o", help="Output dataset with soft/ targets.")
UNLABELLED_OPTION = typer.Option(
    None, "--unlabelled", help="Images, folders or videos to pseudo-label (repeatable)."
)
CONF_OPTION = typer.Option(0.5, "--conf", help="Teacher confidence threshold for pseudo-labels.")
FPS_OPTION = typer.Option(1.0, "--fps", help="Frames per second of video time sampled (as grimace score).")
DEVICE_OPTION = typer.Option("auto", "--device", help=DEVICE_HELP)


@train_app.command("distill")
def train_distill(
    teacher: Path = TEACHER_OPTION,
    data: Path = DATA_OPTION,
    out: Path = OUT_OPTION,
    unlabelled: list[Path] | None = UNLABELLED_OPTION,
    conf: float = CONF_OPTION,
    fps: float = FPS_OPTION,
    device: str = DEVICE_OPTION,
) -> None:
    """Write a distillation dataset: teacher soft grades for labelled boxes, pseudo-labels for the rest."""
    _distill(teacher, data, out, unlabelled, conf, fps, device)


@distill_app.command("annotate", hidden=True)
def distill_annotate(
    teacher: Path = TEACHER_OPTION,
    data: Path = DATA_OPTION,
    out: Path = OUT_OPTION,
    unlabelled: list[Path] | None = UNLABELLED_OPTION,
    conf: float = CONF_OPTION,
    fps: float = FPS_OPTION,
    device: str = DEVICE_OPTION,
) -> None:
    """Deprecated: use `grimace train distill` (same options)."""
    _deprecated("`grimace distill annotate`", "`grimace train distill`")
    _distill(teacher, data, out, unlabelled, conf, fps, device)


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
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
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
