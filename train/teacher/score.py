"""``grimace teacher score``: the seed's spreadsheet, from a teacher run folder.

Per image: the detector finds units; the top-k boxes per unit by detector confidence are kept (RGS:
2 eyes, 2 ears, 1 nose) and each crop is graded; a unit's grade is the mean over its crops; the total
is the mean over the units present (:func:`edge.scoring.score_frame`). The seed's columns
(``Filename, RGS, Orbital Tightening, Ear Changes, Nose Flattening``) hold the seed's numbers (mean of
the graders' argmax grades); ``RGS expected`` and ``<unit> expected`` use the probability-weighted
grades. A missing unit never blanks the row: the total is over the units found and ``Flag`` says
what is missing; fewer than ``min_units`` units (e.g. no face at all) leaves the total empty, flagged.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from edge.results import FrameResult
from edge.scales import ScaleSpec
from edge.scoring import score_frame
from train.data.format import IMG_EXTS, list_images
from train.teacher.teacher import Teacher


def expand_inputs(inputs: list[str | Path]) -> tuple[list[Path], list[str]]:
    """Files and folders (searched recursively) -> image paths, plus errors for unusable inputs."""
    paths: list[Path] = []
    errors: list[str] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = list_images(p)
            if not found:
                errors.append(f"{p}: folder holds no images ({', '.join(IMG_EXTS)})")
            paths.extend(found)
        elif p.is_file():
            paths.append(p)
        else:
            errors.append(f"{p}: no such file or folder")
    return paths, errors


def frame_row(
    path: Path,
    fr: FrameResult | None,
    spec: ScaleSpec,
    graded: list[str] | None = None,
    min_units: int = 1,
    error: str = "",
) -> dict[str, Any]:
    """One spreadsheet row from a scored frame.

    Args:
        path: Image path.
        fr: The frame result (``None`` when the image could not be read).
        spec: The scale.
        graded: Units that have a grader (columns are made for these; default all units).
        min_units: Fewest units found for a total.
        error: Flag text when ``fr`` is ``None``.

    Returns:
        Column -> value (``None`` for empty cells, never NaN).
    """
    graded = spec.unit_names if graded is None else graded
    units = [u for u in spec.units if u.name in graded]
    row: dict[str, Any] = {"Filename": path.name, "RGS": None}
    for u in units:
        row[u.label] = None
    row["RGS expected"] = None
    for u in units:
        row[f"{u.label} expected"] = None
    for u in units:
        row[f"{u.name} count"] = 0
        row[f"{u.name} confidence"] = None
    row["Units found"] = ""
    row["Flag"] = error
    row["Path"] = str(path)
    if fr is None:
        return row
    sel = fr.selected
    present = []
    for i, u in enumerate(spec.units):
        if u.name not in graded:
            continue
        mine = sel[fr.detections.unit[sel] == i]
        row[f"{u.name} count"] = int(mine.size)
        if mine.size:
            present.append(u)
            row[u.label] = fr.unit_argmax[u.name]
            row[f"{u.label} expected"] = fr.unit_scores[u.name]
            row[f"{u.name} confidence"] = float(fr.detections.confidence[mine].mean())
    row["Units found"] = ", ".join(f"{u.name}:{row[f'{u.name} count']}" for u in present)
    flags = []
    if len(present) >= max(min_units, 1):
        row["RGS"] = float(np.mean([row[u.label] for u in present]))
        row["RGS expected"] = float(np.mean([row[f"{u.label} expected"] for u in present]))
        if fr.abstained:
            flags.append(f"{fr.abstained}; total over units found")
    else:
        flags.append(fr.abstained or f"only {len(present)} unit(s) found, need {min_units}")
    row["Flag"] = "; ".join(flags)
    return row


def score_paths(
    teacher: Teacher,
    paths: list[Path],
    *,
    conf: float = 0.25,
    min_units: int = 1,
    batch: int = 8,
    heatmaps: str | Path | None = None,
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Score images with the teacher.

    Args:
        teacher: Loaded teacher.
        paths: Image files.
        conf: Detector confidence threshold.
        min_units: Fewest units needed for a total.
        batch: Images per step (detector batch; crops of the step are graded together).
        heatmaps: Folder for attention-rollout overlays of the pain ViT (needs one in the teacher).

    Returns:
        ``(rows, timing)``; ``timing`` has ``images``, ``seconds``, ``seconds_per_image``.
    """
    if heatmaps is not None and teacher.pain is None:
        raise ValueError("--heatmaps needs a teacher with a whole-face pain classifier (pain/)")
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    n_ok = 0
    for i in tqdm(range(0, len(paths), batch), desc="score", unit="batch", disable=None):
        chunk = paths[i : i + batch]
        imgs, ok = [], []
        for p in chunk:
            im = cv2.imread(str(p), cv2.IMREAD_COLOR)
            if im is None:
                err = f"cannot read image {p}"
                rows.append(frame_row(p, None, teacher.spec, list(teacher.graders), min_units, err))
            else:
                imgs.append(im)
                ok.append(p)
        if not imgs:
            continue
        dets = teacher.predict(imgs, conf=conf)
        pain = teacher.pain_probability(imgs, [d.xyxy for d in dets])
        for k, (p, d) in enumerate(zip(ok, dets, strict=True)):
            fr = score_frame(d, teacher.spec, min_units=max(min_units, 1), source=str(p))
            row = frame_row(p, fr, teacher.spec, list(teacher.graders), min_units)
            if pain is not None:
                row["Pain probability"] = None if np.isnan(pain[k]) else float(pain[k])
            if heatmaps is not None:
                from train.teacher.pain import write_heatmap

                assert teacher.pain is not None
                out_png, _ = write_heatmap(  # the probability column was computed above, on the same boxes
                    teacher.pain, imgs[k], Path(heatmaps) / f"{p.stem}_attention.png", d.xyxy, float(pain[k])
                )
                row["Heatmap"] = str(out_png)
            rows.append(row)
        n_ok += len(imgs)
    secs = time.perf_counter() - t0
    return rows, {"images": len(paths), "seconds": secs, "seconds_per_image": secs / max(len(paths), 1)}


def write_table(rows: list[dict[str, Any]], out: str | Path) -> Path:
    """Write rows to ``.xlsx`` (openpyxl) or ``.csv``; columns in first-seen order."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cols: list[str] = []
    for r in rows:
        for k in r:
            if k not in cols:
                cols.append(k)
    suffix = out.suffix.lower()
    if suffix == ".csv":
        with out.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=cols)
            w.writeheader()
            for r in rows:
                w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in cols})
    elif suffix == ".xlsx":
        from openpyxl import Workbook

        wb = Workbook()
        ws = wb.active
        ws.title = "RGS"
        ws.append(cols)
        for r in rows:
            ws.append([r.get(k) for k in cols])
        wb.save(out)
    else:
        raise ValueError(f"{out}: output must end in .xlsx or .csv")
    return out
