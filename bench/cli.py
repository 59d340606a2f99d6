"""CLI commands: grimace bench (imports nothing heavy at module level)."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True)


def _csv(value: str, allowed: tuple[str, ...], what: str) -> tuple[str, ...]:
    items = tuple(v.strip().removeprefix("yolov5") for v in value.split(",") if v.strip())
    bad = [v for v in items if v not in allowed]
    if not items or bad:
        raise typer.BadParameter(f"{what}: expected a comma list of {', '.join(allowed)}, got {value!r}")
    return items


@app.command("bench")
def bench(
    imgsz: int = typer.Option(None, help="Input size of detector and student (default 640; tiny 160)."),
    repeats: int = typer.Option(None, help="Timed passes over the images (default 3; tiny 1)."),
    images: int = typer.Option(None, help="Synthetic images (default 5; tiny 2)."),
    warmup: int = typer.Option(None, help="Untimed runs per pipeline first (default 2; tiny 1)."),
    sizes: str = typer.Option(None, help="Fused student sizes, comma list of n,s,m (default n,s; tiny n)."),
    teacher_vit: str = typer.Option(None, help="Teacher grader: vit-b16 (the seed's, default) or tiny."),
    teacher_size: str = typer.Option(
        None, help="YOLOv5 size of the teacher's detector (default s, the seed's; tiny n)."
    ),
    crops: int = typer.Option(5, help="Crops graded per image by the teacher (the seed: 3 to 5)."),
    backends: str = typer.Option("onnx,torch", help="Backends to time: onnx, torch."),
    device: str = typer.Option("cpu", help="cpu or cuda (PyTorch FP16 and ONNX Runtime's CUDA provider)."),
    threads: int = typer.Option(
        None, help="Intra-op threads for PyTorch and ONNX Runtime (default 0 = all cores; tiny 1)."
    ),
    video_seconds: float = typer.Option(None, help="Synthetic video length for frames/s (0 = skip)."),
    scale: str = typer.Option("rgs", help="Scale (built-in name or YAML)."),
    tiny: bool = typer.Option(False, "--tiny", help="Tiny settings (small input, tiny ViT, one pass)."),
    json_path: Path = typer.Option(None, "--json", help="Also write the full result as JSON here."),
    workdir: Path = typer.Option(None, help="Keep images, ONNX files and outputs here (default: temp)."),
) -> None:
    """Time the two-stage teacher against the fused student on the same images in one run.

    Per image, end to end and per stage (decode, pre, infer, post), with ONNX Runtime and PyTorch;
    medians over repeated runs; the ratio teacher / student; FLOPs and parameters; video frames/s of
    the edge runtime; peak memory. Models use random weights (timing only).
    """
    from edge.deps import require

    require("torch", "grimace bench")
    require("onnxruntime", "grimace bench")
    import importlib

    for mod in ("train.teacher.vit", "train.fused.model", "convert.export", "train.synth"):
        try:
            importlib.import_module(mod)
        except ImportError as e:
            typer.echo(f"error: grimace bench needs {mod} (teacher, fused model, exporter, synth): {e}",
                       err=True)
            raise typer.Exit(2) from None
    from bench.run import Settings, format_report, run_benchmark, write_json

    if device not in ("cpu", "cuda"):
        raise typer.BadParameter(f"--device: expected cpu or cuda, got {device!r}")
    if teacher_vit is not None and teacher_vit not in ("vit-b16", "tiny"):
        raise typer.BadParameter(f"--teacher-vit: expected vit-b16 or tiny, got {teacher_vit!r}")
    over: dict = {
        "crops": crops,
        "backends": _csv(backends, ("onnx", "torch"), "--backends"), "device": device,
        "scale": scale,
    }
    if teacher_size is not None:
        over["teacher_size"] = teacher_size.removeprefix("yolov5")
    for key, val in (("imgsz", imgsz), ("repeats", repeats), ("images", images), ("warmup", warmup),
                     ("teacher_vit", teacher_vit), ("video_seconds", video_seconds), ("threads", threads)):
        if val is not None:
            over[key] = val
    if sizes is not None:
        over["sizes"] = _csv(sizes, ("n", "s", "m", "l", "x"), "--sizes")
    s = Settings.tiny(**over) if tiny else Settings(**over)
    if s.imgsz % 32:
        raise typer.BadParameter(f"--imgsz must be a multiple of 32, got {s.imgsz}")
    if s.repeats < 1 or s.images < 1:
        raise typer.BadParameter("--repeats and --images must be at least 1")
    try:
        result = run_benchmark(s, workdir, log=lambda m: typer.echo(m, err=True))
    except RuntimeError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    typer.echo(format_report(result))
    if json_path is not None:
        typer.echo(f"JSON: {write_json(result, json_path)}")


def main() -> None:
    """``python -m bench`` entry point (the ``bench`` command alone)."""
    import sys

    typer.main.get_command(app).main(args=sys.argv[1:], prog_name="python -m bench")
