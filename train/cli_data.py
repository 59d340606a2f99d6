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


def _run_import(tool: str, path: Path, images: Path, scale: str, out: Path, opts: dict[str, object],
                **reader_kw: object) -> None:  # fmt: skip
    """Run one tool importer with the shared options, print what was skipped, then `data check`."""
    from edge.scales import ScaleError
    from train.data.annotations import SubjectRule, import_annotations
    from train.data.check import run_check
    from train.data.format import LabelError
    from train.data.importers import DatasetImportError

    val_frac = float(opts["val_frac"])  # type: ignore[arg-type]
    if not 0 <= val_frac < 1:
        raise _fail(f"--val-frac must be in [0, 1), got {val_frac}")
    try:
        rule = SubjectRule(
            csv=opts["subjects"], column=opts["subject_column"], folder=opts["subject_folder"],
            pattern=opts["subject_pattern"],
        )  # type: ignore[arg-type]  # fmt: skip
        rep = import_annotations(
            tool, path, images, scale, out, val_frac=val_frac, seed=int(opts["seed"]),  # type: ignore[call-overload]
            label_map=_parse_map(list(opts["mapping"])), subjects=rule,  # type: ignore[call-overload]
            box_tolerance=float(opts["box_tolerance"]), **reader_kw,  # type: ignore[arg-type]
        )  # fmt: skip
    except (DatasetImportError, ScaleError, LabelError) as e:
        raise _fail(str(e)) from None
    _print_report(rep)
    typer.echo("check: " + run_check(out).summary())


_IMAGES = typer.Option(..., "--images", help="Folder the tool's image names are relative to.")
_SCALE = typer.Option(..., "--scale", help="Scale: built-in name (rgs, mgs, goat, ...) or YAML.")
_OUT = typer.Option(..., "--out", help="New dataset folder (must not exist or be empty).")
_VAL = typer.Option(0.2, "--val-frac", help="Fraction of images/subjects put in val.")
_SEED = typer.Option(0, "--seed", help="Seed of the train/val split.")
_MAP = typer.Option([], "--map", help="LABEL=UNIT renaming (repeatable); LABEL= drops that label.")
_SUBJ = typer.Option(
    None, "--subjects", help="Table: 'image' + a subject column (+ group, timepoint); subject-wise split."
)
_SUBJ_COL = typer.Option(
    None, "--subject-column",
    help="Subject column of --subjects (default 'subject'); without --subjects, the tool's per-image "
    "field (Label Studio task data key, VIA file attribute, extra COCO image key).",
)  # fmt: skip
_SUBJ_DIR = typer.Option(
    None, "--subject-folder", min=1, help="Subject = this folder level of the image path (1 = its folder)."
)
_SUBJ_RE = typer.Option(
    None, "--subject-pattern",
    help="Subject = regex on the file name: named group 'subject' (optional 'group', 'timepoint').",
)  # fmt: skip
_TOL = typer.Option(
    0.02, "--box-tolerance", help="Clip boxes past the border by up to this fraction of the image."
)
_GRADE = typer.Option(
    "grade", "--grade-attribute", help="Attribute (CVAT/COCO/VIA) or Choices name holding the grade."
)


@app.command("import-coco")
def import_coco_cmd(
    json_path: Path = typer.Argument(..., help="COCO 1.0 JSON (e.g. CVAT's export) with a grade attribute."),
    images: Path = _IMAGES, scale: str = _SCALE, out: Path = _OUT, val_frac: float = _VAL, seed: int = _SEED,
    mapping: list[str] = _MAP, subjects: Path | None = _SUBJ, subject_column: str | None = _SUBJ_COL,
    subject_folder: int | None = _SUBJ_DIR, subject_pattern: str | None = _SUBJ_RE,
    box_tolerance: float = _TOL, grade_attribute: str = _GRADE,
) -> None:  # fmt: skip
    """Import COCO JSON (bbox xywh pixels; grade in attributes.grade or grade) as a dataset."""
    _run_import("coco", json_path, images, scale, out, dict(locals()), grade_attribute=grade_attribute)


@app.command("import-cvat")
def import_cvat_cmd(
    xml_path: Path = typer.Argument(..., help="CVAT for images 1.1 XML (annotations.xml)."),
    images: Path = _IMAGES, scale: str = _SCALE, out: Path = _OUT, val_frac: float = _VAL, seed: int = _SEED,
    mapping: list[str] = _MAP, subjects: Path | None = _SUBJ, subject_column: str | None = _SUBJ_COL,
    subject_folder: int | None = _SUBJ_DIR, subject_pattern: str | None = _SUBJ_RE,
    box_tolerance: float = _TOL, grade_attribute: str = _GRADE,
) -> None:  # fmt: skip
    """Import a CVAT for images 1.1 XML export (boxes; the grade as a box attribute) as a dataset."""
    _run_import("cvat", xml_path, images, scale, out, dict(locals()), grade_attribute=grade_attribute)


@app.command("import-label-studio")
def import_label_studio_cmd(
    json_path: Path = typer.Argument(..., help="Label Studio JSON export (list of tasks)."),
    images: Path = _IMAGES, scale: str = _SCALE, out: Path = _OUT, val_frac: float = _VAL, seed: int = _SEED,
    mapping: list[str] = _MAP, subjects: Path | None = _SUBJ, subject_column: str | None = _SUBJ_COL,
    subject_folder: int | None = _SUBJ_DIR, subject_pattern: str | None = _SUBJ_RE,
    box_tolerance: float = _TOL, grade_attribute: str = _GRADE,
    image_key: str | None = typer.Option(None, "--image-key", help="Task data key of the image."),
    predictions: bool = typer.Option(
        False, "--predictions/--annotations-only",
        help="Use a task's predictions when nobody annotated it (e.g. an untouched pre-annotation file).",
    ),
) -> None:  # fmt: skip
    """Import a Label Studio JSON export (RectangleLabels + a per-region grade Choices) as a dataset."""
    kw = {"grade_attribute": grade_attribute, "image_key": image_key, "use_predictions": predictions}
    _run_import("label-studio", json_path, images, scale, out, dict(locals()), **kw)


@app.command("import-via")
def import_via_cmd(
    json_path: Path = typer.Argument(..., help="VGG Image Annotator 2 project or annotation JSON."),
    images: Path = _IMAGES, scale: str = _SCALE, out: Path = _OUT, val_frac: float = _VAL, seed: int = _SEED,
    mapping: list[str] = _MAP, subjects: Path | None = _SUBJ, subject_column: str | None = _SUBJ_COL,
    subject_folder: int | None = _SUBJ_DIR, subject_pattern: str | None = _SUBJ_RE,
    box_tolerance: float = _TOL, grade_attribute: str = _GRADE,
    label_attribute: str | None = typer.Option(
        None, "--label-attribute", help="Region attribute holding the unit (default unit/label/class/...)."
    ),
) -> None:  # fmt: skip
    """Import a VIA 2 JSON (rect regions; unit and grade as region attributes) as a dataset."""
    _run_import("via", json_path, images, scale, out, dict(locals()), grade_attribute=grade_attribute,
                label_attribute=label_attribute)  # fmt: skip


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


@app.command("export-preannotations")
def export_preannotations_cmd(
    inputs: list[Path] = typer.Argument(..., help="New frames: image files, folders and/or videos."),
    out: Path = typer.Option(..., "--out", help="New folder: images/ + the CVAT / Label Studio imports."),
    model: Path | None = typer.Option(None, "--model", help="Fused model artifact (.onnx or .engine)."),
    teacher: Path | None = typer.Option(None, "--teacher", help="Or a teacher run folder (needs torch)."),
    fmt: list[str] = typer.Option(
        ["cvat", "label-studio"], "--format", help="cvat and/or label-studio (repeatable; default both)."
    ),
    select: str = typer.Option(
        "uncertain",
        "--select",
        help="uncertain: least certain frames first (grade entropy, low box confidence, missing units); "
        "all: input order.",
    ),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Keep at most this many frames."),
    fps: float = typer.Option(1.0, "--fps", help="Video frames sampled per second (0 = every frame)."),
    conf: float = typer.Option(0.25, "--conf", min=0.0, max=1.0, help="Box confidence threshold."),
    url_prefix: str = typer.Option(
        "/data/local-files/?d=",
        "--url-prefix",
        help="Label Studio image URL prefix (default: local-files storage); the images/ names follow it.",
    ),
    device: str = typer.Option("auto", "--device", help="Torch device for --teacher (auto, cpu, cuda:N)."),
) -> None:
    """Run a model over new frames; write its boxes and grades as editable CVAT / Label Studio suggestions."""
    from edge.artifact import ArtifactError
    from edge.scales import ScaleError
    from train.data.importers import DatasetImportError
    from train.data.preannotate import detector_from_model, detector_from_teacher, export_preannotations

    if (model is None) == (teacher is None):
        raise _fail("give exactly one of --model (edge artifact) or --teacher (teacher run folder)")
    try:
        if model is not None:
            detect, spec = detector_from_model(model, conf=conf)
            version = model.name
        else:
            from edge.deps import require

            require("torch", "grimace data export-preannotations --teacher")
            from train.device import DeviceError
            from train.teacher.teacher import TeacherError

            try:
                detect, spec = detector_from_teacher(teacher, conf=conf, device=device)  # type: ignore[arg-type]
            except (TeacherError, DeviceError) as e:
                raise _fail(str(e)) from None
            version = f"teacher {teacher.name}"  # type: ignore[union-attr]
        rep = export_preannotations(
            inputs, detect, spec, out, formats=fmt, select=select, limit=limit, fps=fps or None,
            url_prefix=url_prefix, model_version=version,
        )  # fmt: skip
    except (DatasetImportError, ArtifactError, ScaleError, FileNotFoundError) as e:
        raise _fail(str(e)) from None
    for msg in rep.skipped:
        typer.echo(f"skipped: {msg}", err=True)
    typer.echo(rep.summary())
