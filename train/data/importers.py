"""Importers: per-unit crop folders <-> crop datasets, and what every importer shares.

Two kinds of data come in:

* **Detection datasets** (boxes + grades on whole frames) from annotation tools (COCO, CVAT, Label
  Studio, VIA): see :mod:`train.data.annotations`, which writes a grimace dataset (YOLO layout,
  ``data.yaml`` with the scale, optional ``subjects.csv``) using :class:`ImportReport` from here.
* **Crop classification datasets** for the teacher's per-unit graders. The seed paper's graders were
  trained on crops sorted into folders per unit and grade (``eye/0/*.png``, ``ear/2/*.png``). The
  grimace crop layout is the same tree plus an index and the scale::

      CROPS/
        crops.yaml          # grimace_crops: 1, scale: {...full scale spec...}
        index.csv           # path,unit,grade,subject,group,split,source
        eye/0/*.png         # <unit name>/<grade>/<file>
        ear/2/*.png

  :func:`import_crops` copies a seed-style folder tree into that layout, :func:`crops_from_dataset`
  cuts graded boxes out of a grimace dataset into it, and :func:`load_crop_index` reads it back as
  ``(path, unit, grade)`` tuples.

Bad items (a missing image, an annotation with an impossible grade) are reported in the returned
report's ``skipped`` list and left out; the rest is imported. Structural problems (unknown unit folder,
output folder not empty, unit names unsafe as folder names) raise :class:`DatasetImportError` before
anything is written. Unit names become folder names here, so every scale is checked with
:func:`train.data.format.check_unit_names` and every written path is checked to lie inside ``out``.
"""

from __future__ import annotations

import csv
import random
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np
import yaml

from edge.fileio import atomic_write_bytes
from edge.scales import ScaleError, ScaleSpec, load_scale
from edge.sources import SourceError, read_image
from train.data.format import (
    IMG_EXTS,
    LabelBox,
    LabelError,
    Subject,
    check_unit_names,
    image_to_label_path,
    load_dataset,
    parse_label_line,
    read_subjects,
)

CROPS_FORMAT = 1
INDEX_COLUMNS = ("path", "unit", "grade", "subject", "group", "split", "source")


class DatasetImportError(ValueError):
    """The input cannot be imported as a whole (the message names the file and what is wrong)."""


@dataclass
class ImportReport:
    """What an importer wrote and what it skipped.

    Attributes:
        out: Output folder.
        images: Images (or crops) written.
        boxes: Boxes written (detection imports).
        per_split: Split -> images written.
        per_unit_grade: ``(unit, grade)`` -> count (crop imports; grade ``-1`` for ungraded boxes).
        skipped: One message per item left out, naming the item.
        notes: Things worth knowing about items that were imported.
    """

    out: Path
    images: int = 0
    boxes: int = 0
    per_split: dict[str, int] = field(default_factory=dict)
    per_unit_grade: Counter[tuple[str, int]] = field(default_factory=Counter)
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for the CLI."""
        splits = ", ".join(f"{k} {v}" for k, v in self.per_split.items())
        return (
            f"{self.out}: {self.images} images"
            + (f" ({splits})" if splits else "")
            + (f", {self.boxes} boxes" if self.boxes else "")
            + f", {len(self.skipped)} items skipped"
        )


def _prepare_out(out: str | Path) -> Path:
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DatasetImportError(f"{out}: output folder exists and is not empty; choose a new folder")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _inside(path: Path, root: Path) -> Path:
    """``path`` if it resolves inside ``root``; else :class:`DatasetImportError` (never write outside)."""
    r, p = root.resolve(), path.resolve()
    if r != p and r not in p.parents:
        raise DatasetImportError(f"{path}: refusing to write outside {root}")
    return path


def _relative(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` (POSIX form) when it lies inside it, else as given."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _image_size(path: Path) -> tuple[int, int] | None:
    """``(width, height)`` of a readable image, else None."""
    try:
        buf = np.fromfile(str(path), dtype=np.uint8)
    except OSError:
        return None
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) if buf.size else None
    if img is None:
        return None
    return int(img.shape[1]), int(img.shape[0])


def _split_keys(keys: list[str], val_frac: float, seed: int) -> set[str]:
    """The keys going to the validation split (deterministic for a seed)."""
    if val_frac <= 0 or len(keys) < 2:
        return set()
    keys = sorted(keys)
    random.Random(seed).shuffle(keys)
    n_val = min(len(keys) - 1, max(1, round(len(keys) * val_frac)))
    return set(keys[:n_val])


# ----------------------------------------------------------------------------------------- crops
class CropItem(NamedTuple):
    """One crop: ``path`` (absolute), ``unit`` name, ``grade`` (``0..k-1``)."""

    path: Path
    unit: str
    grade: int


@dataclass(frozen=True)
class CropRecord:
    """One row of ``index.csv`` with everything known about the crop.

    Attributes:
        path: Absolute path of the crop image.
        unit: Unit name.
        grade: Grade ``0..k-1``.
        subject: Animal id ("" when unknown) -- use it for subject-wise splits.
        group: Group of the subject ("" when unknown).
        split: Split of the frame the crop came from ("" when unknown).
        source: Where the crop came from: ``images/<split>/<name>:<label line>`` (relative to the
            dataset root named in ``crops.yaml``) for exported crops, the original path for imported ones.
    """

    path: Path
    unit: str
    grade: int
    subject: str = ""
    group: str = ""
    split: str = ""
    source: str = ""


def _write_crop_meta(out: Path, spec: ScaleSpec, rows: list[CropRecord], extra: dict[str, Any]) -> None:
    meta = {"grimace_crops": CROPS_FORMAT, **extra, "scale": spec.to_dict()}
    (out / "crops.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
    with (out / "index.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(INDEX_COLUMNS)
        for r in rows:
            w.writerow(
                [r.path.relative_to(out).as_posix(), r.unit, r.grade, r.subject, r.group, r.split, r.source]
            )


def import_crops(src: str | Path, scale: str | Path | ScaleSpec, out: str | Path) -> ImportReport:
    """Copy a seed-style crop tree (``<unit>/<grade>/*.png``) into the grimace crop layout.

    Unit folder names are matched to the scale's unit names (case-insensitive); grade folders must
    be integers in the unit's range. Unreadable images are skipped and reported.

    Args:
        src: Folder holding one sub-folder per unit.
        scale: The scale the crops were graded with.
        out: New crop folder (must not exist or be empty).

    Raises:
        DatasetImportError: ``src`` missing, a unit folder that is not a unit of the scale, a grade
            folder that is not a valid grade, or no crops at all.
    """
    src = Path(src)
    spec = load_scale(scale)
    try:
        check_unit_names(spec, f"scale {spec.name!r}")
    except LabelError as e:
        raise DatasetImportError(str(e)) from None
    if not src.is_dir():
        raise DatasetImportError(f"{src}: crop folder does not exist")
    by_lower = {n.lower(): n for n in spec.unit_names}
    plan: list[tuple[Path, str, int]] = []
    for udir in sorted(p for p in src.iterdir() if p.is_dir()):
        unit = by_lower.get(udir.name.lower())
        if unit is None:
            raise DatasetImportError(
                f"{udir}: folder {udir.name!r} is not a unit of scale {spec.name!r} {spec.unit_names}"
            )
        n = spec.unit(unit).grades
        for gdir in sorted(p for p in udir.iterdir() if p.is_dir()):
            try:
                grade = int(gdir.name)
            except ValueError:
                raise DatasetImportError(f"{gdir}: grade folder must be an integer 0..{n - 1}") from None
            if not 0 <= grade < n:
                raise DatasetImportError(f"{gdir}: grade {grade} out of range for unit {unit!r} (0..{n - 1})")
            plan.extend(
                (p, unit, grade)
                for p in sorted(gdir.iterdir())
                if p.is_file() and p.suffix.lower() in IMG_EXTS
            )
    if not plan:
        raise DatasetImportError(
            f"{src}: no crops found (expected <unit>/<grade>/*.png for units {spec.unit_names})"
        )
    out = _prepare_out(out)
    rep = ImportReport(out=out)
    rows = []
    for path, unit, grade in plan:
        if _image_size(path) is None:
            rep.skipped.append(f"{path}: unreadable image")
            continue
        dst = _inside(out / unit / str(grade) / path.name, out)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dst)
        rows.append(CropRecord(dst, unit, grade, source=str(path)))
        rep.images += 1
        rep.per_unit_grade[(unit, grade)] += 1
    _write_crop_meta(out, spec, rows, {"source": str(src.resolve())})
    return rep


def crops_from_dataset(
    root: str | Path,
    out: str | Path,
    margin: float = 0.1,
    splits: list[str] | None = None,
    min_size: int = 4,
) -> ImportReport:
    """Cut every graded box of a grimace dataset out into the crop layout.

    Crops are named ``<image stem>_L<label line>.png`` (``<split>-`` prepended if that name is
    taken), so every crop can be traced back to its label line. Ungraded boxes are not exported
    (there is nothing to learn from them for a grader); bad label lines and unreadable images are
    reported and skipped.

    Args:
        root: Dataset root (or its ``data.yaml``).
        out: New crop folder (must not exist or be empty).
        margin: Context added on each side, as a fraction of the box width/height (clipped to the image).
        splits: Splits to export (default: all splits of the dataset).
        min_size: Crops smaller than this many pixels on a side are skipped.

    Raises:
        LabelError: Invalid ``data.yaml``.
        DatasetImportError: ``out`` not empty, or an unknown split asked for.
    """
    if margin < 0:
        raise DatasetImportError(f"margin must be >= 0, got {margin}")
    info = load_dataset(root)
    spec = info.spec
    use = list(info.splits) if splits is None else splits
    for s in use:
        if s not in info.splits:
            raise DatasetImportError(f"{info.root}: no split {s!r} (have {list(info.splits)})")
    subjects: dict[str, Subject] = {}
    out = _prepare_out(out)
    rep = ImportReport(out=out)
    if info.subjects_csv.exists():
        try:
            subjects = read_subjects(info.subjects_csv)
        except LabelError as e:
            rep.skipped.append(f"{e} (crops exported without subjects)")
    rows: list[CropRecord] = []
    seen_images: set[Path] = set()
    for split in use:
        for img_path in info.images(split):
            if img_path.resolve() in seen_images:
                continue
            seen_images.add(img_path.resolve())
            lbl = image_to_label_path(img_path)
            if not lbl.exists():
                continue
            try:
                lines = lbl.read_text(encoding="utf-8-sig").splitlines()
            except (OSError, UnicodeDecodeError) as e:
                rep.skipped.append(f"{lbl}: cannot read: {e}")
                continue
            boxes: list[tuple[int, LabelBox]] = []
            for i, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    boxes.append((i, parse_label_line(line, f"{lbl}:{i}", spec)))
                except LabelError as e:
                    rep.skipped.append(str(e))
            boxes = [(i, b) for i, b in boxes if b.grade is not None]
            if not boxes:
                continue
            try:  # the runtime's one reader: size limit from the header, corrupt data reported
                img = read_image(img_path)
            except SourceError as e:
                rep.skipped.append(str(e))
                continue
            h, w = img.shape[:2]
            sub = subjects.get(img_path.name)
            n_written = 0
            for i, b in boxes:
                x1, y1, x2, y2 = b.xyxy(w, h)
                mx, my = (x2 - x1) * margin, (y2 - y1) * margin
                xa, ya = max(0, int(np.floor(x1 - mx))), max(0, int(np.floor(y1 - my)))
                xb, yb = min(w, int(np.ceil(x2 + mx))), min(h, int(np.ceil(y2 + my)))
                if xb - xa < min_size or yb - ya < min_size:
                    rep.skipped.append(
                        f"{lbl}:{i}: crop {xb - xa}x{yb - ya} px is smaller than {min_size} px"
                    )
                    continue
                unit = spec.unit_names[b.unit]
                dst = _inside(out / unit / str(b.grade) / f"{img_path.stem}_L{i}.png", out)
                if dst.exists():
                    dst = dst.with_name(f"{split}-{dst.name}")
                dst.parent.mkdir(parents=True, exist_ok=True)
                ok, enc = cv2.imencode(".png", img[ya:yb, xa:xb])
                if not ok:
                    rep.skipped.append(f"{lbl}:{i}: could not encode crop")
                    continue
                atomic_write_bytes(dst, enc.tobytes())  # OSError (disk full) ends the export, named
                rows.append(
                    CropRecord(
                        dst,
                        unit,
                        int(b.grade),  # type: ignore[arg-type]
                        subject=sub.subject if sub else "",
                        group=sub.group if sub else "",
                        split=split,
                        source=f"{_relative(img_path, info.root)}:{i}",
                    )
                )
                rep.per_unit_grade[(unit, int(b.grade))] += 1  # type: ignore[arg-type]
                n_written += 1
            if n_written:
                rep.per_split[split] = rep.per_split.get(split, 0) + n_written
                rep.images += n_written
    _write_crop_meta(out, spec, rows, {"source": str(info.root.resolve()), "margin": margin})
    return rep


def load_crop_scale(folder: str | Path) -> ScaleSpec:
    """The scale stored in ``crops.yaml`` of a crop folder.

    Raises:
        LabelError: Missing or invalid ``crops.yaml``.
    """
    meta_path = Path(folder) / "crops.yaml"
    if not meta_path.exists():
        raise LabelError(f"{meta_path}: no crops.yaml (is {folder} a grimace crop folder?)")
    try:
        meta = yaml.safe_load(meta_path.read_text())
    except yaml.YAMLError as e:
        raise LabelError(f"{meta_path}: invalid YAML: {e}") from None
    if not isinstance(meta, dict) or "scale" not in meta:
        raise LabelError(f"{meta_path}:1: no 'scale' key")
    try:
        spec = load_scale(meta["scale"])
    except ScaleError as e:
        raise LabelError(f"{meta_path}: {e}") from None
    check_unit_names(spec, str(meta_path))
    return spec


def load_crop_records(folder: str | Path, unit: str | None = None) -> list[CropRecord]:
    """Read ``index.csv`` of a crop folder, validating every row against ``crops.yaml``'s scale.

    Args:
        folder: The crop folder.
        unit: Only crops of this unit (default: all).

    Raises:
        LabelError: Missing/invalid ``crops.yaml`` or ``index.csv`` (``file:line``), unknown unit,
            grade out of range, or a listed crop file that does not exist.
    """
    folder = Path(folder).resolve()
    spec = load_crop_scale(folder)
    if unit is not None and unit not in spec.unit_names:
        raise LabelError(f"{folder}: unknown unit {unit!r}; scale {spec.name!r} has {spec.unit_names}")
    index = folder / "index.csv"
    if not index.exists():
        raise LabelError(f"{index}: no index.csv")
    out = []
    with index.open(newline="") as f:
        reader = csv.DictReader(f)
        cols = reader.fieldnames or []
        for need in ("path", "unit", "grade"):
            if need not in cols:
                raise LabelError(f"{index}:1: missing column {need!r} (have {cols})")
        for lineno, row in enumerate(reader, start=2):
            name = row["unit"]
            if name not in spec.unit_names:
                raise LabelError(
                    f"{index}:{lineno}: unknown unit {name!r}; scale {spec.name!r} has {spec.unit_names}"
                )
            try:
                grade = int(row["grade"])
            except (TypeError, ValueError):
                raise LabelError(f"{index}:{lineno}: grade {row['grade']!r} is not an integer") from None
            n = spec.unit(name).grades
            if not 0 <= grade < n:
                raise LabelError(
                    f"{index}:{lineno}: grade {grade} out of range for unit {name!r} (0..{n - 1})"
                )
            path = (folder / row["path"]).resolve()
            if folder not in path.parents:
                raise LabelError(f"{index}:{lineno}: crop path {row['path']!r} points outside {folder}")
            if not path.is_file():
                raise LabelError(f"{index}:{lineno}: crop file {path} does not exist")
            if unit is not None and name != unit:
                continue
            out.append(
                CropRecord(
                    path,
                    name,
                    grade,
                    subject=row.get("subject") or "",
                    group=row.get("group") or "",
                    split=row.get("split") or "",
                    source=row.get("source") or "",
                )
            )
    return out


def load_crop_index(folder: str | Path, unit: str | None = None) -> list[CropItem]:
    """The crops of a crop folder as ``(path, unit, grade)`` tuples.

    Args:
        folder: A folder written by :func:`import_crops` or :func:`crops_from_dataset`.
        unit: Only crops of this unit (default: all).

    Returns:
        :class:`CropItem` named tuples (``path`` absolute), in index order.

    Raises:
        LabelError: See :func:`load_crop_records`.
    """
    return [CropItem(r.path, r.unit, r.grade) for r in load_crop_records(folder, unit)]
