"""Write a synthetic grimace dataset in the project's format (plus simulated graders' CSVs).

Test and demo material: the faces are procedural drawings, so a model's accuracy on them is no
evidence of its accuracy on real animals.
"""

from __future__ import annotations

import csv
import json
import shutil
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from edge.scales import ScaleSpec, load_scale
from train.data.format import LabelBox, Subject, write_data_yaml, write_labels, write_subjects
from train.synth.faces import SPECIES_UNITS
from train.synth.render import render_frontal, species_for
from train.synth.study import (
    TIMEPOINTS,
    grader_bias,
    grader_grades,
    latent_pain,
    make_subjects,
    unit_severities,
)

SPLITS = ("train", "val", "test")
_WRITE_PARAMS = {"jpg": [cv2.IMWRITE_JPEG_QUALITY, 95], "png": [cv2.IMWRITE_PNG_COMPRESSION, 1]}
_OWNED = ("images", "labels", "graders", "videos", "data.yaml", "subjects.csv")


@dataclass
class SynthReport:
    """What :func:`generate` wrote.

    Attributes:
        out: Dataset root.
        scale: Scale name.
        species: Face model used.
        images: Images per split.
        boxes: Labelled boxes per unit name.
        grades: Label grade counts per unit name (``{unit: {grade: count}}``).
        scores: Mean ground-truth frame score per ``"group/timepoint"``.
        subjects: Subjects per split.
        grader_files: Written graders' CSVs (ground truth first when graders were asked for).
        videos: Written videos.
        seconds: Wall time.
    """

    out: Path
    scale: str
    species: str
    images: dict[str, int] = field(default_factory=dict)
    boxes: dict[str, int] = field(default_factory=dict)
    grades: dict[str, dict[int, int]] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)
    subjects: dict[str, list[str]] = field(default_factory=dict)
    grader_files: list[Path] = field(default_factory=list)
    videos: list[Path] = field(default_factory=list)
    video_labels: Path | None = None
    seconds: float = 0.0


def frame_score(spec: ScaleSpec, unit_values: dict[str, float]) -> float:
    """Ground-truth frame score by the scale's rule from per-unit values (mean of unit means, or
    the single unit's grade for a binary scale)."""
    vals = [unit_values[u.name] for u in spec.units if u.name in unit_values]
    if not vals:
        return float("nan")
    return float(vals[0]) if spec.aggregation == "binary" else float(np.mean(vals))


def video_label(spec: ScaleSpec, grades: dict[str, list[int]]) -> str:
    """A video's class from its ground-truth grades: the grade name of a binary scale's unit
    (goat: ``pain`` / ``no pain``), else ``pain`` when the frame score reaches ``pain_threshold``."""
    vals = {u: float(np.mean(g)) for u, g in grades.items() if g}
    score = frame_score(spec, vals)
    if spec.aggregation == "binary":
        unit = spec.units[0]
        g = round(score)
        return unit.grade_names[g] if unit.grade_names else str(g)
    thr = spec.pain_threshold if spec.pain_threshold is not None else float(spec.max_grade.max()) / 2
    return "pain" if score >= thr else "no pain"


def write_video_labels(path: Path, spec: ScaleSpec, videos: list[Path]) -> Path:
    """Write the ``video,animal,label`` CSV that ``grimace baseline svm --labels`` reads, from each
    video's ``.json`` sidecar (animal = the synthetic subject, label = :func:`video_label`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["video", "animal", "label"])
        for v in videos:
            info = json.loads(v.with_suffix(".json").read_text())
            w.writerow([v.name, info["subject"], video_label(spec, info["grades"])])
    return path


def grader_columns(spec: ScaleSpec) -> list[str]:
    """Graders' CSV header: ``Filename``, one column per unit (its label, in class order), the total
    (:attr:`~edge.scales.ScaleSpec.score_name`, e.g. ``RGS``) — the frame record's first columns."""
    return ["Filename", *[u.label for u in spec.units], spec.score_name]


def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out} is not empty; choose another folder or pass overwrite=True")
        for name in _OWNED:
            p = out / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    out.mkdir(parents=True, exist_ok=True)


def generate(
    out: str | Path,
    scale: str | Path | ScaleSpec = "rgs",
    n: int = 200,
    seed: int = 0,
    imgsz: int = 640,
    subjects: int = 12,
    graders: int = 0,
    val_frac: float = 0.2,
    test_frac: float = 0.1,
    video: int = 0,
    video_seconds: float = 4.0,
    fps: float = 15.0,
    overwrite: bool = False,
    progress: bool = False,
    augment: bool = True,
    image_format: str = "jpg",
) -> SynthReport:
    """Generate a synthetic dataset; see :func:`generate_dataset` (this returns a report)."""
    t0 = time.perf_counter()
    spec = load_scale(scale)
    species = species_for(spec)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if imgsz < 64:
        raise ValueError(f"imgsz must be >= 64, got {imgsz}")
    fmt = image_format.lower().lstrip(".")
    if fmt not in _WRITE_PARAMS:
        raise ValueError(f"image_format must be one of {sorted(_WRITE_PARAMS)}, got {image_format!r}")
    out = Path(out)
    _prepare_out(out, overwrite)
    subs = make_subjects(species, subjects, seed, val_frac, test_frac)
    drawn = SPECIES_UNITS[species]
    report = SynthReport(out=out, scale=spec.name, species=species)
    report.subjects = {s: [x.sid for x in subs if x.split == s] for s in SPLITS}
    rows: list[Subject] = []
    truth: list[tuple[str, dict[str, float]]] = []
    levels: list[dict[str, float]] = []
    score_acc: dict[str, list[float]] = defaultdict(list)
    # image i shows subject i % S; timepoints alternate in pairs of subjects (one control, one
    # injured) and flip every round, so even n < S covers both groups at both timepoints
    n_tp = len(TIMEPOINTS)
    cells = [(sub, TIMEPOINTS[(j // 2 + r) % n_tp]) for r in range(n_tp) for j, sub in enumerate(subs)]
    for i in tqdm(range(n), desc=f"synth {spec.name}", unit="img", disable=not progress):
        sub, tp = cells[i % len(cells)]
        rng = np.random.default_rng([seed, 2, i])
        pain = latent_pain(sub, tp, rng)
        level, inst = unit_severities(pain, drawn, rng)
        r = render_frontal(spec, sub.morph, inst, rng, (imgsz, imgsz), augment=augment)
        name = f"{sub.sid}_{tp}_{i:05d}.{fmt}"
        img_path = out / "images" / sub.split / name
        img_path.parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(img_path), r.image, _WRITE_PARAMS[fmt]):
            raise OSError(f"{img_path}: could not write image")
        boxes = []
        per_unit: dict[str, list[int]] = defaultdict(list)
        for ins in r.instances:
            if ins.box is None:
                continue
            x1, y1, x2, y2 = ins.box
            boxes.append(
                LabelBox(ins.cls, (x1 + x2) / 2 / imgsz, (y1 + y2) / 2 / imgsz, (x2 - x1) / imgsz,
                         (y2 - y1) / imgsz, ins.grade)
            )
            per_unit[ins.unit].append(ins.grade)
            report.boxes[ins.unit] = report.boxes.get(ins.unit, 0) + 1
            g = report.grades.setdefault(ins.unit, {})
            g[ins.grade] = g.get(ins.grade, 0) + 1
        write_labels(out / "labels" / sub.split / f"{img_path.stem}.txt", boxes)
        rows.append(Subject(name, sub.sid, sub.group, tp))
        unit_vals = {u: float(np.mean(v)) for u, v in per_unit.items()}
        truth.append((name, unit_vals))
        levels.append(level)
        score_acc[f"{sub.group}/{tp}"].append(frame_score(spec, unit_vals))
        report.images[sub.split] = report.images.get(sub.split, 0) + 1
    write_subjects(out / "subjects.csv", rows)
    splits = {s: f"images/{s}" for s in SPLITS if report.images.get(s)}
    if "val" not in splits:  # ultralytics needs a val entry; fall back to train
        splits["val"] = splits["train"]
    extra = {
        "synthetic": {
            "generator": "grimace synth",
            "note": "procedural test/demo data; not evidence of accuracy on real animals",
            "seed": seed,
            "n": n,
            "imgsz": imgsz,
            "image_format": fmt,
            "subjects": subjects,
            "species": species,
        }
    }
    write_data_yaml(out, spec, splits, extra)
    if graders > 0:
        report.grader_files = _write_graders(out / "graders", spec, truth, levels, graders, seed)
    if video > 0:
        from train.synth.video import render_video

        for v in range(video):
            sub, tp = cells[v % len(cells)]
            path = out / "videos" / f"{sub.sid}_{tp}_video{v:03d}.mp4"
            render_video(path, spec, sub, tp, seed=seed * 1000 + v, seconds=video_seconds, fps=fps,
                         imgsz=imgsz)
            report.videos.append(path)
        report.video_labels = write_video_labels(out / "videos" / "labels.csv", spec, report.videos)
    report.scores = {k: float(np.mean(v)) for k, v in sorted(score_acc.items())}
    report.seconds = time.perf_counter() - t0
    return report


def _write_graders(
    folder: Path,
    spec: ScaleSpec,
    truth: list[tuple[str, dict[str, float]]],
    levels: list[dict[str, float]],
    k: int,
    seed: int,
) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    cols = grader_columns(spec)
    files = []
    gt = folder / "ground_truth.csv"
    with gt.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for name, vals in truth:
            unit_cells = ["" if u.name not in vals else f"{vals[u.name]:g}" for u in spec.units]
            w.writerow([name, *unit_cells, f"{frame_score(spec, vals):.4f}"])
    files.append(gt)
    for g in range(k):
        rng = np.random.default_rng([seed, 3, g])
        bias = grader_bias(spec, rng)
        path = folder / f"grader_{g + 1}.csv"
        with path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(cols)
            for (name, _), level in zip(truth, levels, strict=True):
                grades = grader_grades(level, spec, bias, rng)
                total = frame_score(spec, {u: float(v) for u, v in grades.items()})
                w.writerow([name, *[grades[u.name] for u in spec.units], f"{total:.4f}"])
        files.append(path)
    return files


def generate_dataset(
    out: str | Path,
    scale: str | Path | ScaleSpec = "rgs",
    n: int = 200,
    seed: int = 0,
    imgsz: int = 640,
    subjects: int = 12,
    graders: int = 0,
    val_frac: float = 0.2,
    test_frac: float = 0.1,
    video: int = 0,
    video_seconds: float = 4.0,
    fps: float = 15.0,
    overwrite: bool = False,
    progress: bool = False,
    augment: bool = True,
    image_format: str = "jpg",
) -> Path:
    """Generate a synthetic grimace dataset (test and demo material, not real-animal evidence).

    Layout: ``images/{train,val,test}/*.jpg`` (or ``.png``), ``labels/...`` (``unit cx cy w h grade``),
    ``data.yaml`` (with the scale and a ``synthetic`` block), ``subjects.csv`` (image, subject,
    group ``control``/``injured``, timepoint ``day1``/``day30``); with ``graders`` also
    ``graders/ground_truth.csv`` and ``graders/grader_{1..K}.csv``; with ``video`` also
    ``videos/*.mp4`` each with a ``.jsonl`` per-frame sidecar and a ``.json`` summary. Splits are by
    subject. Identical arguments give identical files.

    Args:
        out: Output folder (created; must be empty unless ``overwrite``).
        scale: ``"rgs"``, ``"mgs"``, ``"goat"``, any built-in name, a YAML path or a spec whose units
            one face model can draw.
        n: Number of images.
        seed: Random seed.
        imgsz: Image side in pixels (square images).
        subjects: Number of synthetic animals (half control, half injured).
        graders: Number of simulated human graders' CSVs to write.
        val_frac: Fraction of subjects in the validation split.
        test_frac: Fraction of subjects in the test split.
        video: Number of videos to write.
        video_seconds: Length of each video.
        fps: Video frame rate.
        overwrite: Replace a previous dataset in ``out`` (only the files this function writes).
        progress: Show a progress bar.
        augment: Apply lighting, blur and noise.
        image_format: ``"jpg"`` (quality 95, fast, small) or ``"png"`` (lossless).

    Returns:
        The dataset root ``out``.
    """
    return generate(
        out, scale, n, seed, imgsz, subjects, graders, val_frac, test_frac, video, video_seconds, fps,
        overwrite, progress, augment, image_format,
    ).out
