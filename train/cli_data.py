"""CLI commands: ``grimace data`` -- check, stats, importers, crop export.

Torch-free: only typer, OpenCV, numpy and yaml are needed, so these commands run with the core
install. The dataset modules are imported inside the commands to keep ``grimace --help`` fast.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True, help="Dataset tools: check, stats, importers.")


def _fail(msg: str, code: int = 2) -> typer.Exit:
    typer.echo(f"error: {msg}", err=True)
    return typer.Exit(code)


@app.command("check")
def check_cmd(
    root: Path = typer.Argument(..., help="Dataset folder (holding data.yaml)."),
    strict: bool = typer.Option(False, "--strict", help="Exit non-zero on warnings too."),
    info: bool = typer.Option(False, "--info", help="Also list notes (e.g. background images)."),
    tolerance: float = typer.Option(
        0.005, "--tolerance", help="How far (normalised) a box edge may lie outside the image."
    ),
    read_images: bool = typer.Option(
        True, "--read-images/--no-read-images", help="Decode every image to find corrupt files."
    ),
) -> None:
    """Validate a dataset; print every problem as `file:line: severity: message`, then its kind.

    Exit code 1 when any error is found (with --strict: any warning too), else 0.
    """
    from train.data.check import ERROR, INFO, WARNING, run_check

    rep = run_check(root, tolerance=tolerance, read_images=read_images, progress=True)
    for p in rep.problems:
        if p.severity != INFO or info:
            typer.echo(p.format())
    n_info = rep.count(INFO)
    if n_info and not info:
        kinds = Counter(p.kind for p in rep.problems if p.severity == INFO)
        typer.echo(
            "notes (not problems; --info lists them): " + ", ".join(f"{k} x{n}" for k, n in kinds.items())
        )
    typer.echo(rep.summary())
    failed = rep.count(ERROR) > 0 or (strict and rep.count(WARNING) > 0)
    typer.echo("FAILED" if failed else "OK")
    raise typer.Exit(1 if failed else 0)


@app.command("stats")
def stats_cmd(
    root: Path = typer.Argument(..., help="Dataset folder (holding data.yaml)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """Counts per split, unit and grade, subject, group and timepoint."""
    from edge.scales import ScaleError
    from train.data.format import LabelError
    from train.data.stats import compute_stats, format_stats

    try:
        st = compute_stats(root)
    except (LabelError, ScaleError) as e:
        raise _fail(f"{e} (run `grimace data check {root}` for every problem)") from None
    typer.echo(json.dumps(st.to_dict(), indent=2) if as_json else format_stats(st))


def _parse_map(items: list[str]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for it in items:
        if "=" not in it:
            raise _fail(f"--map {it!r}: expected CATEGORY=UNIT (or CATEGORY= to drop it)")
        k, v = it.split("=", 1)
        out[k.strip()] = v.strip() or None
    return out


def _print_report(rep: object) -> None:
    from train.data.importers import ImportReport

    assert isinstance(rep, ImportReport)
    for msg in rep.skipped:
        typer.echo(f"skipped: {msg}", err=True)
    for msg in rep.notes:
        typer.echo(f"note: {msg}", err=True)
    typer.echo(rep.summary())
    if rep.per_unit_grade:
        by_unit = sorted(rep.per_unit_grade.items())
        typer.echo("crops per unit/grade: " + ", ".join(f"{u}/{g} {n}" for (u, g), n in by_unit))


@app.command("import-coco")
def import_coco_cmd(
    json_path: Path = typer.Argument(..., help="COCO detection JSON with a grade per annotation."),
    images: Path = typer.Option(..., "--images", help="Folder that images[].file_name is relative to."),
    scale: str = typer.Option(..., "--scale", help="Scale: built-in name (rgs, mgs, goat, ...) or YAML."),
    out: Path = typer.Option(..., "--out", help="New dataset folder (must not exist or be empty)."),
    val_frac: float = typer.Option(0.2, "--val-frac", help="Fraction of images/subjects put in val."),
    seed: int = typer.Option(0, "--seed", help="Seed of the train/val split."),
    mapping: list[str] = typer.Option(
        [], "--map", help="CATEGORY=UNIT renaming (repeatable); CATEGORY= drops that category."
    ),
    subjects: Path | None = typer.Option(
        None, "--subjects", help="subjects.csv (image,subject,group,timepoint): subject-wise split."
    ),
) -> None:
    """Convert COCO JSON (bbox xywh pixels, grade in attributes.grade or grade) to a dataset."""
    from edge.scales import ScaleError
    from train.data.check import run_check
    from train.data.format import LabelError
    from train.data.importers import DatasetImportError, import_coco

    if not 0 <= val_frac < 1:
        raise _fail(f"--val-frac must be in [0, 1), got {val_frac}")
    try:
        rep = import_coco(
            json_path, images, scale, out, val_frac=val_frac, seed=seed,
            category_map=_parse_map(mapping), subjects_csv=subjects,
        )  # fmt: skip
    except (DatasetImportError, ScaleError, LabelError) as e:
        raise _fail(str(e)) from None
    _print_report(rep)
    typer.echo("check: " + run_check(out).summary())


@app.command("import-crops")
def import_crops_cmd(
    src: Path = typer.Argument(..., help="Seed-style crop folders: <unit>/<grade>/*.png."),
    scale: str = typer.Option(..., "--scale", help="Scale the crops were graded with."),
    out: Path = typer.Option(..., "--out", help="New crop folder (must not exist or be empty)."),
) -> None:
    """Import per-unit crop folders (eye/0/*.png, ...) as a crop dataset for the teacher's graders."""
    from edge.scales import ScaleError
    from train.data.importers import DatasetImportError, import_crops

    try:
        rep = import_crops(src, scale, out)
    except (DatasetImportError, ScaleError) as e:
        raise _fail(str(e)) from None
    _print_report(rep)


@app.command("export-crops")
def export_crops_cmd(
    dataset: Path = typer.Argument(..., help="Dataset folder (holding data.yaml)."),
    out: Path = typer.Option(..., "--out", help="New crop folder (must not exist or be empty)."),
    margin: float = typer.Option(0.1, "--margin", help="Context per side, fraction of box size."),
    split: list[str] = typer.Option([], "--split", help="Split(s) to export (default: all)."),
    min_size: int = typer.Option(4, "--min-size", help="Skip crops smaller than this (pixels)."),
) -> None:
    """Cut graded boxes out of a dataset into <unit>/<grade>/*.png + index.csv + crops.yaml."""
    from edge.scales import ScaleError
    from train.data.format import LabelError
    from train.data.importers import DatasetImportError, crops_from_dataset

    try:
        rep = crops_from_dataset(dataset, out, margin=margin, splits=split or None, min_size=min_size)
    except (DatasetImportError, ScaleError, LabelError) as e:
        raise _fail(str(e)) from None
    _print_report(rep)
