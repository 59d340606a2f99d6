"""Importers from the annotation tools labs use: COCO 1.0 (CVAT's export), CVAT for images 1.1 XML,
Label Studio JSON and VGG Image Annotator (VIA) 2 JSON -> a grimace dataset.

Each tool's reader turns its file into :class:`RawImage` records (the image as the tool names it, its
declared size, and :class:`RawBox` es with the tool's label and raw grade value), each carrying *where*
it came from: ``file:line`` for XML, ``file:json.path`` for JSON. One writer (:func:`write_import`)
then does what every importer must do the same way:

* label -> unit of the scale (case-insensitive, ``label_map`` renames or drops); an unknown label is
  reported and its box skipped;
* grade: an integer ``0..k-1`` of that unit or one of its grade names (``"obvious"``); missing,
  empty or ``-1`` = ungraded; anything else (``3`` for a 3-level unit, ``1.5``) is reported and skipped;
* the image: found under ``images_dir`` by the tool's path, then by its base name; a missing or
  unreadable image, or one whose size differs from the size the tool recorded, is reported and
  skipped with its boxes;
* the box: a box reaching past the image border by at most ``box_tolerance`` of the image size is
  clipped; one further outside, or empty, is reported and skipped;
* subjects (animal ids) from a ``subjects.csv``-style table column, a folder level of the image path,
  a file-name pattern, or a per-image field of the tool (:class:`SubjectRule`); the split is then
  subject-wise;
* output names are the image base names, made unique (``<folder>_<name>``) and safe (they never
  become paths outside ``out``).

Every problem is one line in ``ImportReport.skipped`` starting with its location; the rest is
imported and ``data check`` passes on the output.
"""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
import urllib.parse
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from xml.parsers import expat

from edge.scales import ScaleSpec, load_scale
from train.data.format import (
    IMG_EXTS,
    LabelBox,
    Subject,
    check_unit_names,
    image_to_label_path,
    write_data_yaml,
    write_labels,
    write_subjects,
)
from train.data.importers import (
    DatasetImportError,
    ImportReport,
    _image_size,
    _prepare_out,
    _split_keys,
)

DEFAULT_BOX_TOLERANCE = 0.02
"""A box may reach past the image border by this fraction of the image width/height (then it is clipped)."""
GRADE_ATTRIBUTE = "grade"
LABEL_ATTRIBUTES = ("unit", "label", "class", "name", "type")
"""VIA region attributes tried, in order, for a box's label when ``label_attribute`` is not given."""
_SAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass
class RawBox:
    """One box as an annotation tool stores it.

    Attributes:
        where: Location for messages (``file:line`` or ``file:json.path``).
        label: The tool's label (class) name.
        x1, y1, x2, y2: Corners, in pixels (``coords == "px"``) or fractions of the image size
            (``coords == "norm"``).
        grade: Raw grade value (``None``/``""`` = ungraded).
        coords: ``"px"`` or ``"norm"``.
        error: Set by a reader when the item cannot be a box (another shape, a rotated box); the
            writer reports ``where: error`` and skips it.
    """

    where: str
    label: str
    x1: float
    y1: float
    x2: float
    y2: float
    grade: Any = None
    coords: str = "px"
    error: str = ""


@dataclass
class RawImage:
    """One image as an annotation tool lists it.

    Attributes:
        where: Location for messages.
        name: The image path as the tool records it (relative to the images folder, or a URL path).
        width, height: Size the tool recorded (``None`` when it records none).
        boxes: Its boxes.
        fields: Per-image fields of the tool (Label Studio task ``data``, VIA ``file_attributes``,
            extra COCO image keys) that a :class:`SubjectRule` column may name.
        error: Set by a reader when the entry is unusable; reported as ``where: error``.
    """

    where: str
    name: str
    width: int | None = None
    height: int | None = None
    boxes: list[RawBox] = field(default_factory=list)
    fields: dict[str, Any] = field(default_factory=dict)
    error: str = ""


# ------------------------------------------------------------------------------------ subjects
@dataclass
class SubjectRule:
    """Where the animal (subject) of each image comes from; at most one source.

    Attributes:
        csv: A table with an ``image`` column (file name or path) and ``column``; ``group`` and
            ``timepoint`` columns are copied when present.
        column: The subject column of ``csv``, or without ``csv`` the per-image field of the tool
            (Label Studio task data key, VIA file attribute, extra COCO image key).
        folder: Folder level of the image path as the tool records it: 1 = the folder holding the
            image, 2 = the one above, ...
        pattern: Regular expression searched in the image file name; the named group ``subject``
            (else the first group, else the whole match) is the subject; named groups ``group`` and
            ``timepoint`` fill those columns.
    """

    csv: Path | None = None
    column: str | None = None
    folder: int | None = None
    pattern: str | None = None
    _table: dict[str, Subject] = field(default_factory=dict, repr=False)
    _regex: re.Pattern[str] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        n = sum(x is not None for x in (self.csv or self.column, self.folder, self.pattern))
        if n > 1:
            raise DatasetImportError(
                "give one subject source: a column (with or without a table), a folder level or a pattern"
            )
        if self.folder is not None and self.folder < 1:
            raise DatasetImportError(f"subject folder level must be >= 1, got {self.folder}")
        if self.pattern is not None:
            try:
                self._regex = re.compile(self.pattern)
            except re.error as e:
                raise DatasetImportError(f"subject pattern {self.pattern!r}: {e}") from None
        if self.csv is not None:
            self._table = _read_subject_table(Path(self.csv), self.column or "subject")

    @property
    def active(self) -> bool:
        """Whether any source is set."""
        return any(x is not None for x in (self.csv, self.column, self.folder, self.pattern))

    def subject_of(self, im: RawImage) -> tuple[Subject | None, str]:
        """``(subject or None, why not)`` for one image (``Subject.image`` is filled in later)."""
        name = PurePosixPath(im.name).name
        if self.csv is not None:
            s = self._table.get(name)
            return (s, "") if s else (None, f"no row for {name!r} in {self.csv}")
        if self.column is not None:
            v = im.fields.get(self.column)
            if v is None or str(v).strip() == "":
                return None, f"no {self.column!r} field"
            return Subject("", str(v).strip()), ""
        if self.folder is not None:
            parts = PurePosixPath(im.name).parts[:-1]
            if len(parts) < self.folder:
                return None, f"path {im.name!r} has no folder level {self.folder}"
            return Subject("", parts[-self.folder]), ""
        if self._regex is not None:
            m = self._regex.search(name)
            if not m:
                return None, f"file name {name!r} does not match the subject pattern {self.pattern!r}"
            gd = m.groupdict()
            subj = gd.get("subject") or (m.group(1) if m.groups() else m.group(0))
            return Subject("", subj, gd.get("group") or "", gd.get("timepoint") or ""), ""
        return None, "no subject source"


def _read_subject_table(path: Path, column: str) -> dict[str, Subject]:
    try:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            cols = [c.strip() for c in reader.fieldnames or []]
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DatasetImportError(f"{path}: cannot read: {e}") from None
    for need in ("image", column):
        if need not in cols:
            raise DatasetImportError(f"{path}:1: missing column {need!r} (have {cols})")
    out: dict[str, Subject] = {}
    for i, row in enumerate(rows, start=2):
        row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
        if not row.get("image") or not row.get(column):
            raise DatasetImportError(f"{path}:{i}: empty 'image' or {column!r}")
        name = PurePosixPath(row["image"].replace("\\", "/")).name
        if name in out:
            raise DatasetImportError(f"{path}:{i}: image {name!r} listed twice")
        out[name] = Subject(name, row[column], row.get("group", ""), row.get("timepoint", ""))
    return out


# ------------------------------------------------------------------------------------ helpers
def _unit_of(label: str, spec: ScaleSpec, label_map: dict[str, str | None]) -> tuple[int | None, bool]:
    """``(unit index or None, known)``; known False = not a unit of the scale and not mapped."""
    by_lower = {n.lower(): i for i, n in enumerate(spec.unit_names)}
    for k, v in label_map.items():
        if k.lower() == label.strip().lower():
            if v in (None, ""):
                return None, True
            label = str(v)
            break
    idx = by_lower.get(label.strip().lower())
    return idx, idx is not None


def parse_grade(value: Any, spec: ScaleSpec, unit: int) -> int | None:
    """A tool's grade value -> grade ``0..k-1`` of ``unit``, or ``None`` (ungraded).

    Accepts integers, integer strings (``"2"``) and the unit's grade names (case-insensitive).

    Raises:
        ValueError: Not an integer or grade name, or outside the unit's levels (the message says which).
    """
    u = spec.units[unit]
    if value is None or (isinstance(value, (list, dict)) and not value):
        return None
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, (bool, list, dict)):
        raise ValueError(f"grade {value!r} is not an integer")
    s = str(value).strip()
    if s in ("", "-1"):
        return None
    names = [g.lower() for g in u.grade_names]
    if s.lower() in names:
        return names.index(s.lower())
    try:
        f = float(s)
    except ValueError:
        known = f" or one of {list(u.grade_names)}" if u.grade_names else ""
        raise ValueError(f"grade {value!r} is not an integer{known}") from None
    if not math.isfinite(f) or f != int(f):
        raise ValueError(f"grade {value!r} is not an integer")
    g = int(f)
    if g == -1:
        return None
    if not 0 <= g < u.grades:
        raise ValueError(f"grade {g} is outside the levels of unit {u.name!r} (0..{u.grades - 1})")
    return g


def safe_file_name(name: str) -> str:
    """The base name of ``name``, made safe as one path part (no folders, no ``..``, plain characters)."""
    name = PurePosixPath(name.replace("\\", "/")).name
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = name, ""
    stem = _SAFE_CHARS.sub("_", stem).strip("._-") or "image"
    ext = _SAFE_CHARS.sub("", ext)
    return f"{stem}.{ext}" if ext else stem


class _ImageFinder:
    """Find the image a tool names under ``images_dir`` (never outside it).

    Tried in order: the tool's path relative to ``images_dir``; its base name at the top; the base
    name without Label Studio's upload prefix (8 hex digits and ``-``); then a file of that base name
    anywhere below ``images_dir`` when exactly one exists (tools that keep only base names).
    """

    def __init__(self, images_dir: Path) -> None:
        self.root = images_dir.resolve()
        self._by_name: dict[str, list[Path]] | None = None

    def _inside(self, p: Path) -> bool:
        return p == self.root or self.root in p.parents

    def find(self, name: str) -> tuple[Path | None, str]:
        """``(path, "")`` or ``(None, why)``."""
        rel = name.replace("\\", "/").lstrip("/")
        base = PurePosixPath(rel).name
        bases = [base]
        m = re.match(r"^[0-9a-f]{8}-(.+)$", base)
        if m:
            bases.append(m.group(1))
        for c in (rel, *bases):
            p = (self.root / c).resolve()
            if self._inside(p) and p.is_file():
                return p, ""
        if self._by_name is None:
            self._by_name = {}
            for p in sorted(self.root.rglob("*")):
                if p.is_file() and p.suffix.lower() in IMG_EXTS:
                    self._by_name.setdefault(p.name, []).append(p)
        for b in bases:
            hits = self._by_name.get(b, [])
            if len(hits) == 1:
                return hits[0], ""
            if len(hits) > 1:
                where = ", ".join(str(h.relative_to(self.root)) for h in hits[:3])
                return None, f"image {name!r} is ambiguous: {len(hits)} files named {b!r} ({where})"
        return None, f"image missing: {name!r} not found under {self.root}"


# ------------------------------------------------------------------------------------ writer
def write_import(
    images: list[RawImage],
    *,
    source: Path,
    images_dir: str | Path,
    scale: str | Path | ScaleSpec,
    out: str | Path,
    val_frac: float = 0.2,
    seed: int = 0,
    label_map: dict[str, str | None] | None = None,
    subjects: SubjectRule | None = None,
    box_tolerance: float = DEFAULT_BOX_TOLERANCE,
    kind: str = "annotations",
) -> ImportReport:
    """Check and write tool records as a grimace dataset (see the module docstring for the rules).

    Args:
        images: The tool's images with their boxes (from one of the readers).
        source: The annotation file (recorded in ``data.yaml``).
        images_dir: Folder the tool's image names are relative to.
        scale: The scale (built-in name, YAML path or spec).
        out: New dataset folder (must not exist or be empty).
        val_frac: Fraction of images (or subjects) put in ``val``.
        seed: Seed of the split.
        label_map: Tool label -> unit name; ``None``/``""`` drops that label.
        subjects: Where animal ids come from (subject-wise split, ``subjects.csv`` written).
        box_tolerance: How far (fraction of the image size) a box may reach past the border and be
            clipped rather than reported.
        kind: Tool name for ``data.yaml``'s ``source``.

    Returns:
        The report: counts, and one ``location: what is wrong`` line per skipped item.

    Raises:
        DatasetImportError: No image can be imported, no label matches the scale, or ``out`` is not
            empty.
    """
    spec = load_scale(scale)
    check_unit_names(spec, f"scale {spec.name!r}")
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise DatasetImportError(f"{images_dir}: images folder does not exist")
    label_map = label_map or {}
    rule = subjects if subjects is not None and subjects.active else None
    all_labels = Counter(b.label for im in images for b in im.boxes if not b.error)
    unknown_labels = {lb for lb in all_labels if not _unit_of(lb, spec, label_map)[1]}
    if all_labels and unknown_labels == set(all_labels):
        raise DatasetImportError(
            f"{source}: none of the labels {sorted(all_labels)} is a unit of scale {spec.name!r} "
            f"{spec.unit_names}; map them with --map 'LABEL=UNIT' (or --map 'LABEL=' to drop one)"
        )
    rep = ImportReport(out=Path(out))
    planned: list[tuple[Path, str, list[LabelBox], Subject | None]] = []
    used: set[str] = set()
    finder = _ImageFinder(images_dir)
    for im in images:
        if im.error:
            rep.skipped.append(f"{im.where}: {im.error}")
            continue
        src, why = finder.find(im.name)
        if src is None:
            rep.skipped.append(f"{im.where}: {why}")
            continue
        if src.suffix.lower() not in IMG_EXTS:
            rep.skipped.append(f"{im.where}: {src.name}: not an image extension {IMG_EXTS}")
            continue
        size = _image_size(src)
        if size is None:
            rep.skipped.append(f"{im.where}: {src}: unreadable image")
            continue
        w, h = size
        if im.width and im.height and (int(im.width), int(im.height)) != (w, h):
            rep.skipped.append(
                f"{im.where}: the tool says {im.width}x{im.height} but {src.name} is {w}x{h}; "
                "its boxes would be misplaced (image skipped)"
            )
            continue
        boxes: list[LabelBox] = []
        for b in im.boxes:
            if b.error:
                rep.skipped.append(f"{b.where}: {b.error}")
                continue
            unit, known = _unit_of(b.label, spec, label_map)
            if not known:
                rep.skipped.append(
                    f"{b.where}: unknown label {b.label!r} (scale {spec.name!r} units: "
                    f"{', '.join(spec.unit_names)}; rename with --map)"
                )
                continue
            if unit is None:
                continue  # dropped on purpose
            try:
                grade = parse_grade(b.grade, spec, unit)
            except ValueError as e:
                rep.skipped.append(f"{b.where}: {e}")
                continue
            sx, sy = (w, h) if b.coords == "norm" else (1.0, 1.0)
            x1, y1, x2, y2 = b.x1 * sx, b.y1 * sy, b.x2 * sx, b.y2 * sy
            if not all(math.isfinite(v) for v in (x1, y1, x2, y2)) or x2 <= x1 or y2 <= y1:
                rep.skipped.append(f"{b.where}: empty or invalid box ({x1:g}, {y1:g})-({x2:g}, {y2:g}) px")
                continue
            tx, ty = box_tolerance * w, box_tolerance * h
            if x1 < -tx or y1 < -ty or x2 > w + tx or y2 > h + ty:
                rep.skipped.append(
                    f"{b.where}: box outside the image: ({x1:g}, {y1:g})-({x2:g}, {y2:g}) px in a "
                    f"{w}x{h} image (more than {box_tolerance:g} of the size past the border)"
                )
                continue
            x1, y1, x2, y2 = max(0.0, x1), max(0.0, y1), min(float(w), x2), min(float(h), y2)
            if x2 <= x1 or y2 <= y1:
                rep.skipped.append(f"{b.where}: box lies outside the {w}x{h} image")
                continue
            boxes.append(
                LabelBox(unit, (x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h, grade)
            )
        subj: Subject | None = None
        if rule is not None:
            subj, why = rule.subject_of(im)
            if subj is None:
                rep.notes.append(f"{im.where}: no subject ({why}); imported, split on its own")
        name = safe_file_name(src.name)
        if name.lower() in used:
            parts = [safe_file_name(p) for p in src.relative_to(finder.root).parts[:-1]]
            alt = "_".join([*parts[-2:], name]) if parts else name
            k = 2
            while alt.lower() in used:
                alt = f"{Path(name).stem}_{k}{Path(name).suffix}"
                k += 1
            rep.notes.append(f"{im.where}: file name {name!r} already used; written as {alt!r}")
            name = alt
        used.add(name.lower())
        planned.append((src, name, boxes, subj))
    if not planned:
        raise DatasetImportError(f"{source}: no image could be imported ({len(rep.skipped)} problems)")
    n_unknown = Counter(
        b.label for im in images for b in im.boxes if not b.error and b.label in unknown_labels
    )
    if n_unknown:
        rep.notes.append(
            f"{source}: labels not in scale {spec.name!r}: "
            + ", ".join(f"{k!r} x{v}" for k, v in n_unknown.most_common())
            + " (skipped; --map 'LABEL=UNIT' renames, --map 'LABEL=' drops)"
        )

    out = _prepare_out(out)

    def key_of(name: str, s: Subject | None) -> str:
        return f"subject:{s.subject}" if s else f"image:{name}"

    val_keys = _split_keys(sorted({key_of(n, s) for _, n, _, s in planned}), val_frac, seed)
    rows: list[Subject] = []
    for src, name, boxes, subj in planned:
        split = "val" if key_of(name, subj) in val_keys else "train"
        dst = out / "images" / split / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
        write_labels(image_to_label_path(dst), boxes)
        rep.images += 1
        rep.boxes += len(boxes)
        rep.per_split[split] = rep.per_split.get(split, 0) + 1
        if subj is not None:
            rows.append(Subject(name, subj.subject, subj.group, subj.timepoint))
        elif rule is not None:
            rows.append(Subject(name, f"unknown:{Path(name).stem}"))
    splits = {s: f"images/{s}" for s in ("train", "val") if rep.per_split.get(s)}
    write_data_yaml(out, spec, splits, extra={"source": {kind: str(Path(source).resolve())}})
    if rule is not None:
        write_subjects(out / "subjects.csv", rows)
    return rep


# ------------------------------------------------------------------------------------ readers
def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetImportError(f"{path}: cannot read: {e}") from None
    except json.JSONDecodeError as e:
        raise DatasetImportError(f"{path}:{e.lineno}: invalid JSON: {e.msg}") from None


def _num(v: Any) -> float:
    f = float(v)
    if not math.isfinite(f):
        raise ValueError(f"{v!r} is not finite")
    return f


def read_coco(path: str | Path, grade_attribute: str = GRADE_ATTRIBUTE) -> list[RawImage]:
    """COCO detection JSON (CVAT's "COCO 1.0" export): ``bbox`` ``[x, y, w, h]`` px, the grade in
    ``attributes[grade_attribute]`` (CVAT) or a top-level ``grade``.

    Raises:
        DatasetImportError: Unreadable JSON or missing ``images``/``annotations``/``categories``.
    """
    path = Path(path)
    coco = _load_json(path)
    if not isinstance(coco, dict):
        raise DatasetImportError(f"{path}: a COCO file must be a JSON object")
    for key in ("images", "annotations", "categories"):
        if not isinstance(coco.get(key), list):
            raise DatasetImportError(f"{path}: missing or invalid {key!r} list")
    cats: dict[Any, str] = {}
    for i, c in enumerate(coco["categories"]):
        if not isinstance(c, dict) or "id" not in c or "name" not in c:
            raise DatasetImportError(f"{path}:categories[{i}]: every category needs 'id' and 'name'")
        cats[c["id"]] = str(c["name"])
    by_id: dict[Any, RawImage] = {}
    out: list[RawImage] = []
    bad: list[RawImage] = []
    for i, im in enumerate(coco["images"]):
        where = f"{path}:images[{i}]"
        if not isinstance(im, dict) or "id" not in im or "file_name" not in im:
            bad.append(RawImage(where, "", error="image entry needs 'id' and 'file_name'"))
            continue
        extra = {k: v for k, v in im.items() if k not in ("id", "file_name", "width", "height")}
        r = RawImage(f"{where} (id {im['id']})", str(im["file_name"]), im.get("width"), im.get("height"),
                     fields=extra)  # fmt: skip
        by_id[im["id"]] = r
        out.append(r)
    for i, a in enumerate(coco["annotations"]):
        where = f"{path}:annotations[{i}] (id {a.get('id', '?') if isinstance(a, dict) else '?'})"
        if not isinstance(a, dict) or a.get("image_id") not in by_id:
            img = a.get("image_id") if isinstance(a, dict) else None
            bad.append(RawImage(where, "", error=f"annotation names unknown image_id {img!r}"))
            continue
        cid = a.get("category_id")
        if cid not in cats:
            err = f"unknown category_id {cid!r} (not in 'categories')"
            by_id[a["image_id"]].boxes.append(RawBox(where, "", 0, 0, 0, 0, error=err))
            continue
        attrs = a.get("attributes") if isinstance(a.get("attributes"), dict) else {}
        grade = attrs.get(grade_attribute, a.get(grade_attribute))
        try:
            x, y, bw, bh = (_num(v) for v in a.get("bbox"))  # type: ignore[union-attr]
        except (TypeError, ValueError):
            err = f"bbox {a.get('bbox')!r} is not [x, y, width, height]"
            by_id[a["image_id"]].boxes.append(RawBox(where, cats[cid], 0, 0, 0, 0, error=err))
            continue
        by_id[a["image_id"]].boxes.append(RawBox(where, cats[cid], x, y, x + bw, y + bh, grade))
    return out + bad


class _Node:
    __slots__ = ("attrs", "children", "line", "tag", "text")

    def __init__(self, tag: str, attrs: dict[str, str], line: int) -> None:
        self.tag, self.attrs, self.line = tag, attrs, line
        self.children: list[_Node] = []
        self.text = ""

    def find(self, tag: str) -> _Node | None:
        return next((c for c in self.children if c.tag == tag), None)


def _parse_xml(path: Path) -> _Node:
    """Parse XML keeping each element's line (expat: no external entities, entity expansion limited)."""
    parser = expat.ParserCreate()
    stack: list[_Node] = []
    root: list[_Node] = []

    def start(tag: str, attrs: dict[str, str]) -> None:
        node = _Node(tag, attrs, parser.CurrentLineNumber)
        (stack[-1].children if stack else root).append(node)
        stack.append(node)

    def end(tag: str) -> None:
        stack.pop()

    def chars(data: str) -> None:
        if stack:
            stack[-1].text += data

    parser.StartElementHandler, parser.EndElementHandler, parser.CharacterDataHandler = start, end, chars
    try:
        with path.open("rb") as f:
            parser.ParseFile(f)
    except OSError as e:
        raise DatasetImportError(f"{path}: cannot read: {e}") from None
    except expat.ExpatError as e:
        raise DatasetImportError(f"{path}:{e.lineno}: invalid XML: {expat.errors.messages[e.code]}") from None
    if not root:
        raise DatasetImportError(f"{path}: empty XML")
    return root[0]


def read_cvat_xml(path: str | Path, grade_attribute: str = GRADE_ATTRIBUTE) -> list[RawImage]:
    """CVAT for images 1.1 XML: ``<image name width height>`` holding ``<box label xtl ytl xbr ybr>``
    with ``<attribute name="grade">2</attribute>``. Other shapes are reported; rotated boxes too.

    Raises:
        DatasetImportError: Not XML, not a CVAT ``<annotations>`` file, or a video (track) export.
    """
    path = Path(path)
    root = _parse_xml(path)
    if root.tag != "annotations":
        raise DatasetImportError(
            f"{path}:{root.line}: root element is <{root.tag}>, not CVAT's <annotations>"
        )
    images = [c for c in root.children if c.tag == "image"]
    if not images and any(c.tag == "track" for c in root.children):
        raise DatasetImportError(
            f"{path}: this is a 'CVAT for video' export (tracks); export the task as 'CVAT for images 1.1'"
        )
    out: list[RawImage] = []
    for node in images:
        where = f"{path}:{node.line}"
        name = node.attrs.get("name", "")
        try:
            w, h = int(node.attrs["width"]), int(node.attrs["height"])
        except (KeyError, ValueError):
            w = h = None  # type: ignore[assignment]
        r = RawImage(where, name, w, h)
        for s in node.children:
            bwhere = f"{path}:{s.line}"
            if s.tag == "tag":
                continue
            if s.tag != "box":
                err = f"<{s.tag}> is not a box (only rectangles are imported)"
                r.boxes.append(RawBox(bwhere, s.attrs.get("label", ""), 0, 0, 0, 0, error=err))
                continue
            attrs = {a.attrs.get("name", ""): a.text.strip() for a in s.children if a.tag == "attribute"}
            label = s.attrs.get("label", "")
            try:
                x1, y1, x2, y2 = (_num(s.attrs[k]) for k in ("xtl", "ytl", "xbr", "ybr"))
                rot = _num(s.attrs.get("rotation", 0) or 0)
            except (KeyError, ValueError):
                err = "box needs numeric xtl, ytl, xbr, ybr"
                r.boxes.append(RawBox(bwhere, label, 0, 0, 0, 0, error=err))
                continue
            if abs(rot) > 1e-6:
                err = f"rotated box ({rot:g} degrees); only upright boxes are imported"
                r.boxes.append(RawBox(bwhere, label, 0, 0, 0, 0, error=err))
                continue
            r.boxes.append(RawBox(bwhere, label, x1, y1, x2, y2, attrs.get(grade_attribute)))
        out.append(r)
    return out


def _ls_image_name(value: str) -> str:
    """Label Studio's image URL -> the path to look for (local-files ``?d=``, uploads, URLs)."""
    parsed = urllib.parse.urlparse(value)
    q = urllib.parse.parse_qs(parsed.query)
    if "d" in q:
        return q["d"][0]
    p = urllib.parse.unquote(parsed.path)
    m = re.match(r"^/?data/upload/\d+/(.+)$", p)
    return m.group(1) if m else p


def read_label_studio(
    path: str | Path,
    grade_attribute: str = GRADE_ATTRIBUTE,
    image_key: str | None = None,
    use_predictions: bool = False,
) -> list[RawImage]:
    """Label Studio JSON export: tasks with ``annotations[].result[]`` items of type
    ``rectanglelabels`` (``value.x/y/width/height`` in percent of the image) and, for the grade, a
    per-region ``choices`` item of the control named ``grade_attribute`` sharing the region's ``id``.

    Args:
        path: The export (a list of tasks, or one task).
        grade_attribute: ``from_name`` of the per-region grade ``<Choices>``.
        image_key: Task data key of the image (default: ``image``, else the only key that looks
            like an image).
        use_predictions: Read ``predictions`` for tasks nobody annotated (e.g. a pre-annotation file
            re-imported as it is).

    Raises:
        DatasetImportError: Unreadable JSON or not a task list.
    """
    path = Path(path)
    tasks = _load_json(path)
    if isinstance(tasks, dict):
        tasks = [tasks]
    if not isinstance(tasks, list):
        raise DatasetImportError(f"{path}: a Label Studio export must be a JSON list of tasks")
    out: list[RawImage] = []
    for ti, task in enumerate(tasks):
        where = f"{path}:[{ti}]"
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            out.append(RawImage(where, "", error="task has no 'data' object"))
            continue
        where += f" (task {task.get('id', '?')})"
        data = task["data"]
        key = image_key or ("image" if "image" in data else next(
            (k for k, v in data.items() if isinstance(v, str) and Path(_ls_image_name(v)).suffix.lower()
             in IMG_EXTS), None))  # fmt: skip
        if key is None or not isinstance(data.get(key), str):
            out.append(RawImage(where, "", error=f"task data has no image key {image_key or 'image'!r}"))
            continue
        r = RawImage(where, _ls_image_name(data[key]), fields=dict(data))
        anns = task.get("annotations") or task.get("completions") or []
        done = [(i, a) for i, a in enumerate(anns) if isinstance(a, dict) and not a.get("was_cancelled")]
        src_key = "annotations" if task.get("annotations") else "completions"
        if not done and use_predictions:
            done = [(i, a) for i, a in enumerate(task.get("predictions") or []) if isinstance(a, dict)]
            src_key = "predictions"
        if done:
            ai, ann = done[-1]  # the latest annotation
            _ls_regions(r, ann.get("result") or [], f"{path}:[{ti}].{src_key}[{ai}]", grade_attribute)
        out.append(r)
    return out


def _ls_regions(r: RawImage, result: list[Any], base: str, grade_attribute: str) -> None:
    grades: dict[str, Any] = {}
    labels: dict[str, str] = {}
    for it in result:
        if not isinstance(it, dict):
            continue
        v = it.get("value") or {}
        if it.get("type") == "choices" and it.get("from_name") == grade_attribute and "id" in it:
            grades[str(it["id"])] = v.get("choices")
        elif it.get("type") == "labels" and "id" in it:
            labels[str(it["id"])] = (v.get("labels") or [""])[0]
    for k, it in enumerate(result):
        if not isinstance(it, dict) or it.get("type") not in ("rectanglelabels", "rectangle"):
            continue
        where = f"{base}.result[{k}]"
        v = it.get("value") or {}
        rid = str(it.get("id", ""))
        label = (v.get("rectanglelabels") or [labels.get(rid, "")])[0]
        if r.width is None and it.get("original_width") and it.get("original_height"):
            r.width, r.height = int(it["original_width"]), int(it["original_height"])
        try:
            x, y, bw, bh = (_num(v[c]) / 100.0 for c in ("x", "y", "width", "height"))
            rot = _num(v.get("rotation", 0) or 0)
        except (KeyError, TypeError, ValueError):
            err = "box needs numeric x, y, width, height"
            r.boxes.append(RawBox(where, str(label), 0, 0, 0, 0, error=err))
            continue
        if abs(rot) > 1e-6:
            err = f"rotated box ({rot:g} degrees); only upright boxes are imported"
            r.boxes.append(RawBox(where, str(label), 0, 0, 0, 0, error=err))
            continue
        r.boxes.append(RawBox(where, str(label), x, y, x + bw, y + bh, grades.get(rid), coords="norm"))


def read_via(
    path: str | Path, grade_attribute: str = GRADE_ATTRIBUTE, label_attribute: str | None = None
) -> list[RawImage]:
    """VGG Image Annotator 2 JSON: a saved project (``_via_img_metadata``) or the exported
    annotations (the same mapping on its own). Rectangles are ``shape_attributes`` ``{"name": "rect",
    x, y, width, height}`` in pixels; the label and grade are ``region_attributes``.

    Args:
        path: The JSON file.
        grade_attribute: Region attribute holding the grade.
        label_attribute: Region attribute holding the unit (default: the first of
            :data:`LABEL_ATTRIBUTES` present, else the only other attribute).

    Raises:
        DatasetImportError: Unreadable JSON or not VIA's structure.
    """
    path = Path(path)
    doc = _load_json(path)
    meta = doc.get("_via_img_metadata", doc) if isinstance(doc, dict) else None
    if not isinstance(meta, dict) or not all(isinstance(v, dict) and "filename" in v for v in meta.values()):
        raise DatasetImportError(
            f"{path}: not a VIA 2 project or annotation export (expected _via_img_metadata entries with "
            "'filename' and 'regions')"
        )
    prefix = "_via_img_metadata" if "_via_img_metadata" in doc else ""
    out: list[RawImage] = []
    for key, entry in meta.items():
        where = f"{path}:{prefix}[{json.dumps(key)}]"
        r = RawImage(where, str(entry["filename"]), fields=dict(entry.get("file_attributes") or {}))
        regions = entry.get("regions") or []
        items = list(regions.items()) if isinstance(regions, dict) else list(enumerate(regions))
        for k, reg in items:
            rwhere = f"{where}.regions[{k}]"
            sa = reg.get("shape_attributes") or {} if isinstance(reg, dict) else {}
            ra = reg.get("region_attributes") or {} if isinstance(reg, dict) else {}
            raw_label = ra.get(label_attribute) if label_attribute else _via_label(ra, grade_attribute)
            label = _via_value(raw_label)
            if sa.get("name") != "rect":
                err = f"region shape {sa.get('name', '?')!r} is not a rectangle (only 'rect' is imported)"
                r.boxes.append(RawBox(rwhere, str(label), 0, 0, 0, 0, error=err))
                continue
            try:
                x, y, bw, bh = (_num(sa[c]) for c in ("x", "y", "width", "height"))
            except (KeyError, TypeError, ValueError):
                err = "rect needs numeric x, y, width, height"
                r.boxes.append(RawBox(rwhere, str(label), 0, 0, 0, 0, error=err))
                continue
            r.boxes.append(RawBox(rwhere, label, x, y, x + bw, y + bh, _via_value(ra.get(grade_attribute))))
        out.append(r)
    return out


def _via_label(ra: dict[str, Any], grade_attribute: str) -> Any:
    for k in LABEL_ATTRIBUTES:
        if k in ra:
            return ra[k]
    others = [k for k in ra if k != grade_attribute]
    return ra[others[0]] if len(others) == 1 else ""


def _via_value(v: Any) -> Any:
    """VIA stores a dropdown/radio as a string and a checkbox as ``{"option": true}``."""
    if isinstance(v, dict):
        on = [k for k, x in v.items() if x]
        return on[0] if len(on) == 1 else (on or "")
    return "" if v is None else v


READERS: dict[str, Callable[..., list[RawImage]]] = {
    "coco": read_coco,
    "cvat": read_cvat_xml,
    "label-studio": read_label_studio,
    "via": read_via,
}


def import_annotations(
    tool: str,
    path: str | Path,
    images_dir: str | Path,
    scale: str | Path | ScaleSpec,
    out: str | Path,
    *,
    val_frac: float = 0.2,
    seed: int = 0,
    label_map: dict[str, str | None] | None = None,
    subjects: SubjectRule | None = None,
    box_tolerance: float = DEFAULT_BOX_TOLERANCE,
    **reader_kw: Any,
) -> ImportReport:
    """Read one tool's export (:data:`READERS`) and write it as a grimace dataset.

    Args:
        tool: ``coco``, ``cvat``, ``label-studio`` or ``via``.
        path: The tool's annotation file.
        images_dir: Folder its image names are relative to.
        scale: The scale.
        out: New dataset folder.
        val_frac: Fraction of images/subjects in ``val``.
        seed: Split seed.
        label_map: Label renames/drops.
        subjects: Subject source.
        box_tolerance: See :func:`write_import`.
        **reader_kw: Passed to the reader (``grade_attribute``, ``image_key``, ``use_predictions``,
            ``label_attribute``).

    Raises:
        DatasetImportError: See the reader and :func:`write_import`.
    """
    if tool not in READERS:
        raise DatasetImportError(f"unknown annotation tool {tool!r}; one of {sorted(READERS)}")
    path = Path(path)
    raw = READERS[tool](path, **reader_kw)
    return write_import(
        raw, source=path, images_dir=images_dir, scale=scale, out=out, val_frac=val_frac, seed=seed,
        label_map=label_map, subjects=subjects, box_tolerance=box_tolerance, kind=tool,
    )  # fmt: skip


def import_coco(
    json_path: str | Path,
    images_dir: str | Path,
    scale: str | Path | ScaleSpec,
    out: str | Path,
    val_frac: float = 0.2,
    seed: int = 0,
    category_map: dict[str, str | None] | None = None,
    subjects_csv: str | Path | None = None,
    subjects: SubjectRule | None = None,
    box_tolerance: float = DEFAULT_BOX_TOLERANCE,
) -> ImportReport:
    """COCO JSON with grades -> grimace dataset (``import_annotations("coco", ...)``; ``subjects_csv``
    is short for ``SubjectRule(csv=...)``)."""
    if subjects_csv is not None:
        subjects = SubjectRule(csv=Path(subjects_csv))
    return import_annotations(
        "coco", json_path, images_dir, scale, out, val_frac=val_frac, seed=seed, label_map=category_map,
        subjects=subjects, box_tolerance=box_tolerance,
    )  # fmt: skip


# ------------------------------------------------------------------------------------ writers
@dataclass
class Suggestion:
    """One box proposed to an annotator (a model's detection).

    Attributes:
        unit: Unit index in the scale.
        xyxy: Corners in image pixels.
        grade: Proposed grade ``0..k-1`` (``None`` = leave ungraded).
        score: The model's confidence in the box (0..1), shown by Label Studio.
    """

    unit: int
    xyxy: tuple[float, float, float, float]
    grade: int | None = None
    score: float = 1.0


@dataclass
class SuggestedImage:
    """An image file name (as the annotation tool will know it), its size and its suggestions."""

    name: str
    width: int
    height: int
    boxes: list[Suggestion] = field(default_factory=list)
    score: float = 1.0


def _xml_attr(v: Any) -> str:
    from xml.sax.saxutils import quoteattr

    return quoteattr(str(v))


def write_cvat_xml(
    images: list[SuggestedImage], spec: ScaleSpec, path: str | Path, grade_attribute: str = GRADE_ATTRIBUTE
) -> Path:
    """Write a CVAT for images 1.1 XML that CVAT imports as annotations of a task with these images.

    Every box gets a ``grade`` select attribute (its values are each unit's levels; ungraded boxes
    get no attribute). Boxes carry ``source="auto"`` so annotators can tell suggestions apart.

    Returns:
        ``path``.
    """
    from xml.sax.saxutils import escape

    path = Path(path)
    lines = ['<?xml version="1.0" encoding="utf-8"?>', "<annotations>", "  <version>1.1</version>",
             "  <meta>", "    <task>", f"      <size>{len(images)}</size>", "      <mode>annotation</mode>",
             "      <labels>"]  # fmt: skip
    for u in spec.units:
        values = "\n".join(str(g) for g in range(u.grades))
        lines += [
            f"        <label><name>{escape(u.name)}</name><type>rectangle</type><attributes><attribute>",
            f"          <name>{escape(grade_attribute)}</name><mutable>False</mutable>"
            "<input_type>select</input_type>",
            f"          <default_value>0</default_value><values>{values}</values>",
            "        </attribute></attributes></label>",
        ]
    lines += ["      </labels>", "    </task>", "  </meta>"]
    for i, im in enumerate(images):
        lines.append(f'  <image id="{i}" name={_xml_attr(im.name)} width="{im.width}" height="{im.height}">')
        for b in im.boxes:
            x1, y1, x2, y2 = b.xyxy
            lines.append(
                f'    <box label={_xml_attr(spec.units[b.unit].name)} source="auto" occluded="0" '
                f'xtl="{x1:.2f}" ytl="{y1:.2f}" xbr="{x2:.2f}" ybr="{y2:.2f}" z_order="0">'
            )
            if b.grade is not None:
                lines.append(f"      <attribute name={_xml_attr(grade_attribute)}>{b.grade}</attribute>")
            lines.append("    </box>")
        lines.append("  </image>")
    lines.append("</annotations>")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def label_studio_config(spec: ScaleSpec, grade_attribute: str = GRADE_ATTRIBUTE) -> str:
    """The Label Studio labeling config these importers read: ``RectangleLabels`` named ``unit`` with
    the scale's units and a per-region ``Choices`` named ``grade_attribute`` with the grade levels."""
    from xml.sax.saxutils import escape

    ng = max(u.grades for u in spec.units)
    labels = "\n".join(f'    <Label value="{escape(u.name)}"/>' for u in spec.units)
    choices = "\n".join(f'    <Choice value="{g}"/>' for g in range(ng))
    return (
        "<View>\n"
        '  <Image name="image" value="$image" zoom="true"/>\n'
        '  <RectangleLabels name="unit" toName="image" canRotate="false">\n'
        f"{labels}\n  </RectangleLabels>\n"
        f'  <Choices name="{escape(grade_attribute)}" toName="image" perRegion="true" choice="single" '
        'showInline="true">\n'
        f"{choices}\n  </Choices>\n</View>\n"
    )


def write_label_studio(
    images: list[SuggestedImage],
    spec: ScaleSpec,
    path: str | Path,
    url_prefix: str = "/data/local-files/?d=",
    model_version: str = "grimace",
    grade_attribute: str = GRADE_ATTRIBUTE,
) -> Path:
    """Write Label Studio tasks whose ``predictions`` are the suggestions (editable pre-annotations).

    Each box is a ``rectanglelabels`` region (percent coordinates) plus, when graded, a per-region
    ``choices`` result with the same ``id``. The task ``data.image`` is ``url_prefix + name`` (Label
    Studio's local-files URL by default; use the storage prefix your project serves the images from).

    Returns:
        ``path``.
    """
    path = Path(path)
    tasks = []
    for i, im in enumerate(images):
        result: list[dict[str, Any]] = []
        for k, b in enumerate(im.boxes):
            x1, y1, x2, y2 = b.xyxy
            rid = f"p{i}_{k}"
            common = {"original_width": im.width, "original_height": im.height, "image_rotation": 0,
                      "to_name": "image", "id": rid}  # fmt: skip
            geo = {"x": 100.0 * x1 / im.width, "y": 100.0 * y1 / im.height,
                   "width": 100.0 * (x2 - x1) / im.width, "height": 100.0 * (y2 - y1) / im.height,
                   "rotation": 0}  # fmt: skip
            result.append({**common, "from_name": "unit", "type": "rectanglelabels", "score": float(b.score),
                           "value": {**geo, "rectanglelabels": [spec.units[b.unit].name]}})  # fmt: skip
            if b.grade is not None:
                result.append({**common, "from_name": grade_attribute, "type": "choices",
                               "value": {**geo, "choices": [str(b.grade)]}})  # fmt: skip
        tasks.append({
            "data": {"image": url_prefix + urllib.parse.quote(im.name)},
            "predictions": [{"model_version": model_version, "score": float(im.score), "result": result}],
        })  # fmt: skip
    path.write_text(json.dumps(tasks, indent=1), encoding="utf-8")
    return path
