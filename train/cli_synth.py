"""CLI commands: grimace synth (imports nothing heavy at module level)."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True)


@app.command("synth")
def synth(
    out: Path = typer.Option(..., "--out", "-o", help="Output dataset folder."),
    scale: str = typer.Option("rgs", "--scale", "-s", help="rgs | mgs | goat | rgs-seed | PATH.yaml"),
    n: int = typer.Option(200, "--n", help="Number of images."),
    seed: int = typer.Option(0, "--seed", help="Random seed (same seed -> same files)."),
    imgsz: int = typer.Option(640, "--imgsz", help="Image side in pixels."),
    subjects: int = typer.Option(12, "--subjects", help="Number of synthetic animals."),
    graders: int = typer.Option(0, "--graders", help="Also write K simulated human graders' CSVs."),
    val_frac: float = typer.Option(0.2, "--val-frac", help="Fraction of subjects in val."),
    test_frac: float = typer.Option(0.1, "--test-frac", help="Fraction of subjects in test."),
    video: int = typer.Option(
        0, "--video", help="Also write N videos of an animal in a chamber, and videos/labels.csv."
    ),
    video_seconds: float = typer.Option(4.0, "--video-seconds", help="Length of each video (s)."),
    fps: float = typer.Option(15.0, "--fps", help="Video frame rate."),
    image_format: str = typer.Option("jpg", "--format", help="Image format: jpg (q95) or png."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a dataset already in --out."),
) -> None:
    """Generate a synthetic grimace dataset (procedural faces; test/demo data, not real animals)."""
    from edge.scales import ScaleError
    from train.synth.dataset import generate

    try:
        r = generate(
            out, scale, n, seed, imgsz, subjects, graders, val_frac, test_frac, video, video_seconds,
            fps, overwrite=overwrite, progress=True, image_format=image_format,
        )
    except (ScaleError, ValueError, FileExistsError, OSError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    total = sum(r.images.values())
    typer.echo(
        f"wrote {total} images of scale {r.scale!r} ({r.species} faces) to {r.out} in {r.seconds:.1f} s"
    )
    for split in ("train", "val", "test"):
        if r.images.get(split):
            typer.echo(f"  {split:5s}: {r.images[split]:5d} images, subjects {', '.join(r.subjects[split])}")
    for unit, count in r.boxes.items():
        grades = ", ".join(f"{g}:{c}" for g, c in sorted(r.grades[unit].items()))
        typer.echo(f"  {unit:9s} {count:5d} boxes  grades {grades}")
    typer.echo("  mean ground-truth score per group/timepoint: "
               + ", ".join(f"{k} {v:.2f}" for k, v in r.scores.items()))
    if r.grader_files:
        typer.echo(f"  graders: {', '.join(p.name for p in r.grader_files)} in {r.grader_files[0].parent}")
    if r.videos:
        typer.echo(f"  videos: {len(r.videos)} in {r.videos[0].parent} (sidecars: .jsonl per frame, .json)")
        if r.video_labels:
            typer.echo(f"  video labels: {r.video_labels} (video,animal,label for `baseline svm --labels`)")
    typer.echo("  note: synthetic test/demo data; not evidence of accuracy on real animals")
