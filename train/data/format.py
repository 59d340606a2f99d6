"""The grimace dataset format.

Layout (ultralytics YOLO layout, plus grades and subjects)::

    DATASET/
      data.yaml            # splits, class names, and the full scale spec (see write_data_yaml)
      images/train/*.png   # any of IMG_EXTS; file names unique across the whole dataset
      images/val/...
      images/test/...      # optional
      labels/train/*.txt   # one line per box: "unit cx cy w h [grade]"
      subjects.csv         # optional: image,subject,group,timepoint

A label line holds the unit (class index in the scale's order), the box centre and size normalised to
``[0, 1]`` by the image width/height, and optionally the grade (an integer ``0..k-1`` of that unit;
omitted or ``-1`` means ungraded). ``subjects.csv`` keys rows by image file name (not path).
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from edge.scales import ScaleError, ScaleSpec, load_scale

IMG_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
FORMAT_VERSION = 1
SUBJECT_COLUMNS = ("image", "subject", "group", "timepoint")
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
"""Unit names become folder names (crop datasets ``<unit>/<grade>/``, per-unit grader folders), so they
must be one plain path part: a letter or digit, then letters, digits, ``_`` or ``-`` (at most 64)."""


class LabelError(ValueError):
    """A label line or dataset file is invalid; the message starts with ``file:line:``."""


@dataclass(frozen=True)
class LabelBox:
    """One labelled box.

    Attributes:
        unit: Unit (class) index in the scale's order.
        cx, cy, w, h: Box centre and size, normalised to the image size.
        grade: Grade ``0..k-1`` or ``None`` when ungraded.
    """

    unit: int
    cx: float
    cy: float
    w: float
    h: float
    grade: int | None = None

    def xyxy(self, width: int, height: int) -> tuple[float, float, float, float]:
        """Box corners in pixels for an image of ``width`` x ``height``."""
        return (
            (self.cx - self.w / 2) * width,
            (self.cy - self.h / 2) * height,
            (self.cx + self.w / 2) * width,
            (self.cy + self.h / 2) * height,
        )


@dataclass(frozen=True)
class Subject:
    """Row of ``subjects.csv``."""

    image: str
    subject: str
    group: str = ""
    timepoint: str = ""


def unsafe_unit_names(spec: ScaleSpec) -> list[str]:
    """The unit names of ``spec`` that do not match :data:`SAFE_NAME` (empty when all are safe)."""
    return [n for n in spec.unit_names if not SAFE_NAME.match(n)]


def check_unit_names(spec: ScaleSpec, where: str) -> None:
    """Refuse a scale whose unit names could not safely become folder names.

    Raises:
        LabelError: ``where: unit name(s) [...] ...`` naming the offending names.
    """
    bad = unsafe_unit_names(spec)
    if bad:
        raise LabelError(
            f"{where}: unit name(s) {bad} of scale {spec.name!r} are not safe as folder names "
            "(allowed: a letter or digit, then letters, digits, '_' or '-', at most 64)"
        )


def parse_label_line(line: str, where: str = "<label>", spec: ScaleSpec | None = None) -> LabelBox:
    """Parse ``unit cx cy w h [grade]``.

    Args:
        line: The text of the line (surrounding whitespace ignored).
        where: ``file:line`` prefix for error messages.
        spec: If given, also check the unit index and grade range against the scale.

    Raises:
        LabelError: Wrong field count, non-numeric field, unknown unit, grade out of range.
    """
    parts = line.split()
    if len(parts) not in (5, 6):
        raise LabelError(f"{where}: expected 'unit cx cy w h [grade]' (5 or 6 fields), got {len(parts)}")
    try:
        unit_f = float(parts[0])
        vals = [float(p) for p in parts[1:5]]
        grade_f = float(parts[5]) if len(parts) == 6 else -1.0
    except ValueError:
        raise LabelError(f"{where}: non-numeric field in {line.strip()!r}") from None
    if not all(math.isfinite(v) for v in (unit_f, *vals, grade_f)):
        raise LabelError(f"{where}: non-finite field (nan/inf) in {line.strip()!r}")
    if unit_f != int(unit_f) or unit_f < 0:
        raise LabelError(f"{where}: unit index must be a non-negative integer, got {parts[0]!r}")
    if grade_f != int(grade_f):
        raise LabelError(f"{where}: grade must be an integer, got {parts[5]!r}")
    unit, grade = int(unit_f), int(grade_f)
    if spec is not None:
        if unit >= spec.nc:
            raise LabelError(
                f"{where}: unknown unit index {unit}; scale {spec.name!r} has units "
                f"0..{spec.nc - 1} ({', '.join(spec.unit_names)})"
            )
        n = spec.units[unit].grades
        if grade != -1 and not 0 <= grade < n:
            raise LabelError(
                f"{where}: grade {grade} out of range for unit {spec.units[unit].name!r} (0..{n - 1})"
            )
    elif grade < -1:
        raise LabelError(f"{where}: grade must be >= 0 or -1 (ungraded), got {grade}")
    return LabelBox(unit, *vals, grade=None if grade == -1 else grade)


def format_label_line(box: LabelBox) -> str:
    """Inverse of :func:`parse_label_line` (6 decimals; grade written as -1 when ungraded)."""
    g = -1 if box.grade is None else box.grade
    return f"{box.unit} {box.cx:.6f} {box.cy:.6f} {box.w:.6f} {box.h:.6f} {g}"


def read_labels(path: str | Path, spec: ScaleSpec | None = None) -> list[LabelBox]:
    """Read a label file; raises :class:`LabelError` naming ``file:line`` on the first bad line."""
    path = Path(path)
    boxes = []
    # utf-8-sig: a byte-order mark (Windows Notepad, Excel) is not part of the first line
    for i, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        if line.strip():
            boxes.append(parse_label_line(line, f"{path}:{i}", spec))
    return boxes


def write_labels(path: str | Path, boxes: list[LabelBox]) -> None:
    """Write a label file (parent folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(format_label_line(b) + "\n" for b in boxes))


def image_to_label_path(image: str | Path, folder: str = "labels") -> Path:
    """``.../images/<split>/x.png`` -> ``.../labels/<split>/x.txt`` (the ultralytics rule).

    ``folder`` names another sidecar tree with the same rule (e.g. ``"soft"`` for teacher targets).
    """
    p = Path(image)
    parts = list(p.parts)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "images":
            parts[i] = folder
            return Path(*parts).with_suffix(".txt")
    raise LabelError(f"{image}: image is not under an 'images/' folder")


def list_images(folder: str | Path) -> list[Path]:
    """Image files under ``folder`` (recursive), sorted."""
    folder = Path(folder)
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMG_EXTS)


def read_subjects(path: str | Path) -> dict[str, Subject]:
    """Read ``subjects.csv`` keyed by image file name.

    Raises:
        LabelError: Missing columns, empty image/subject, or a duplicated image (with ``file:line``).
    """
    path = Path(path)
    out: dict[str, Subject] = {}
    with path.open(newline="", encoding="utf-8-sig") as f:  # Excel's "CSV UTF-8" starts with a BOM
        reader = csv.DictReader(f)
        cols = reader.fieldnames or []
        for need in ("image", "subject"):
            if need not in cols:
                raise LabelError(f"{path}:1: missing column {need!r} (have {cols})")
        for i, row in enumerate(reader, start=2):
            image = (row.get("image") or "").strip()
            subject = (row.get("subject") or "").strip()
            if not image or not subject:
                raise LabelError(f"{path}:{i}: empty 'image' or 'subject'")
            name = Path(image).name
            if name in out:
                raise LabelError(f"{path}:{i}: image {name!r} listed twice")
            out[name] = Subject(
                name, subject, (row.get("group") or "").strip(), (row.get("timepoint") or "").strip()
            )
    return out


def write_subjects(path: str | Path, subjects: list[Subject]) -> None:
    """Write ``subjects.csv``."""
    path = Path(path)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(SUBJECT_COLUMNS)
        for s in subjects:
            w.writerow([s.image, s.subject, s.group, s.timepoint])


def write_data_yaml(
    root: str | Path, spec: ScaleSpec, splits: dict[str, str], extra: dict[str, Any] | None = None
) -> Path:
    """Write ``data.yaml``: ultralytics keys (``path``, splits, ``names``, ``nc``) plus the scale.

    Args:
        root: Dataset root.
        spec: The scale; embedded in full so the dataset carries it.
        splits: e.g. ``{"train": "images/train", "val": "images/val"}`` relative to ``root``.
        extra: More keys to store (e.g. generator settings).
    """
    root = Path(root)
    data: dict[str, Any] = {"path": str(root.resolve()), **splits}
    data["nc"] = spec.nc
    data["names"] = {i: n for i, n in enumerate(spec.unit_names)}
    data["grimace_format"] = FORMAT_VERSION
    data["scale"] = spec.to_dict()
    if extra:
        data.update(extra)
    path = root / "data.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@dataclass
class DatasetInfo:
    """A loaded ``data.yaml``.

    Attributes:
        root: Dataset root folder.
        spec: The scale the dataset was made for.
        splits: Split name -> image folder (absolute).
        raw: The whole ``data.yaml`` mapping.
    """

    root: Path
    spec: ScaleSpec
    splits: dict[str, Path]
    raw: dict[str, Any]

    def images(self, split: str) -> list[Path]:
        """Images of one split (empty if the split is absent)."""
        folder = self.splits.get(split)
        return list_images(folder) if folder and folder.exists() else []

    @property
    def subjects_csv(self) -> Path:
        """Path of ``subjects.csv`` (may not exist)."""
        return self.root / "subjects.csv"


def load_dataset(root: str | Path, expect_scale: ScaleSpec | None = None) -> DatasetInfo:
    """Load ``root/data.yaml`` (or a path to a yaml file).

    Raises:
        LabelError: Missing/invalid ``data.yaml``, missing scale, unit names unsafe as folder names
            (message names the file).
        edge.scales.ScaleMismatchError: If ``expect_scale`` differs from the dataset's scale.
    """
    root = Path(root)
    yml = root if root.suffix in (".yaml", ".yml") else root / "data.yaml"
    root = yml.parent
    if not yml.exists():
        raise LabelError(f"{yml}: no data.yaml (is {root} a grimace dataset?)")
    try:
        raw = yaml.safe_load(yml.read_text()) or {}
    except yaml.YAMLError as e:
        raise LabelError(f"{yml}: invalid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise LabelError(f"{yml}:1: data.yaml must be a mapping, got {type(raw).__name__}")
    if "scale" not in raw:
        raise LabelError(f"{yml}:1: no 'scale' key; a grimace dataset must name its scale")
    try:
        spec = load_scale(raw["scale"])
    except ScaleError as e:
        raise LabelError(f"{yml}: {e}") from None
    check_unit_names(spec, str(yml))
    if expect_scale is not None:
        expect_scale.check_compatible(spec, what=f"dataset {root}")
    splits = {}
    for key in ("train", "val", "test"):
        if raw.get(key):
            p = Path(raw[key])
            splits[key] = p if p.is_absolute() else root / p
    return DatasetInfo(root=root, spec=spec, splits=splits, raw=raw)
