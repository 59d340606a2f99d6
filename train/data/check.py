"""Validate a grimace dataset and report every problem as ``file:line: what is wrong``.

:func:`check_dataset` never stops at the first problem: it walks ``data.yaml``, every split, every
image, every label line and ``subjects.csv`` and returns one :class:`Problem` per finding. Each
problem has a *kind* (a short stable code, listed in :data:`KINDS` and in ``docs/dataset-format.md``)
and a *severity*:

* ``error``   -- the dataset is wrong; training or evaluation would fail or silently learn nonsense.
* ``warning`` -- legal but suspicious (more eyes in one frame than the scale counts, an image that
  no split lists, a ``subjects.csv`` row for an image that does not exist).
* ``info``    -- worth knowing, nothing to fix: an image without a label file is a *background*
  image in the YOLO convention (no boxes), which is allowed.

``grimace data check`` exits non-zero when any error is found (``--strict``: any warning too).
"""

from __future__ import annotations

import contextlib
import csv
import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from edge.scales import ScaleError, ScaleSpec, load_scale
from edge.sources import SourceError, read_image
from train.data.format import (
    IMG_EXTS,
    SAFE_NAME,
    LabelError,
    image_to_label_path,
    list_images,
    parse_label_line,
    unsafe_unit_names,
)

SPLITS = ("train", "val", "test")
DEFAULT_TOLERANCE = 0.005
"""How far (in normalised units) a box edge may lie outside ``[0, 1]`` before it is an error."""

ERROR, WARNING, INFO = "error", "warning", "info"

KINDS: dict[str, tuple[str, str]] = {
    # kind: (severity, what it means)
    "no-dataset": (ERROR, "the dataset folder does not exist"),
    "yaml-missing": (ERROR, "no data.yaml in the dataset root"),
    "yaml-invalid": (ERROR, "data.yaml is not valid YAML or not a mapping"),
    "no-scale": (ERROR, "data.yaml has no 'scale' key"),
    "bad-scale": (ERROR, "the scale in data.yaml is unknown or invalid"),
    "unit-name": (ERROR, "a unit name of the scale is not safe as a folder name"),
    "names-mismatch": (ERROR, "data.yaml 'names'/'nc' disagree with the scale's units"),
    "split-missing": (ERROR, "a split folder named in data.yaml does not exist, or no split is named"),
    "split-overlap": (ERROR, "two splits point at the same folder (or one inside the other)"),
    "labels-missing": (WARNING, "a split has no labels folder at all: every image is background"),
    "no-images": (ERROR, "the dataset holds no images"),
    "image-unlisted": (WARNING, "an image under images/ belongs to no split named in data.yaml"),
    "image-unreadable": (ERROR, "an image file is empty or cannot be decoded"),
    "image-path": (ERROR, "an image is not under an 'images/' folder, so its labels cannot be found"),
    "duplicate-name": (ERROR, "two images share a file name (or a stem, hence a label file)"),
    "no-label": (INFO, "an image has no label file: a background image (allowed)"),
    "label-orphan": (ERROR, "a label file has no image"),
    "label-unreadable": (ERROR, "a label file cannot be read as text"),
    "label-fields": (ERROR, "a label line does not have 5 or 6 fields"),
    "label-nonnumeric": (ERROR, "a label field is not a finite number"),
    "label-unit": (ERROR, "the unit index is not an integer or not a unit of the scale"),
    "label-grade": (ERROR, "the grade is not an integer or out of the unit's range"),
    "box-outside": (ERROR, "the box extends outside the image"),
    "box-size": (ERROR, "the box has zero or negative width/height"),
    "box-duplicate": (WARNING, "the same box appears twice in one label file"),
    "unit-count": (WARNING, "more boxes of a unit in one image than the scale counts per frame"),
    "subjects-columns": (ERROR, "subjects.csv cannot be read or lacks the 'image'/'subject' columns"),
    "subjects-row": (ERROR, "a subjects.csv row has an empty image/subject or repeats an image"),
    "subject-missing": (ERROR, "an image has no row in subjects.csv"),
    "subject-unknown-image": (WARNING, "subjects.csv lists an image that is not in the dataset"),
}


@dataclass(frozen=True)
class Problem:
    """One finding of :func:`check_dataset`.

    Attributes:
        file: Path of the file concerned (as a string).
        line: 1-based line number, or ``None`` when the problem concerns the whole file.
        message: What is wrong, in words.
        kind: Stable code from :data:`KINDS`.
        severity: ``"error"``, ``"warning"`` or ``"info"`` (the kind's default unless overridden).
    """

    file: str
    line: int | None
    message: str
    kind: str = "error"
    severity: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown problem kind {self.kind!r}")
        if not self.severity:
            object.__setattr__(self, "severity", KINDS[self.kind][0])

    @property
    def location(self) -> str:
        """``file:line`` (or ``file`` alone when there is no line)."""
        return f"{self.file}:{self.line}" if self.line is not None else self.file

    def __str__(self) -> str:
        return f"{self.location}: {self.message}"

    def format(self) -> str:
        """``file:line: severity: message [kind]``, the form ``grimace data check`` prints."""
        return f"{self.location}: {self.severity}: {self.message} [{self.kind}]"


@dataclass
class CheckReport:
    """Everything :func:`check_dataset` found, with a few counts for the summary line."""

    root: Path
    problems: list[Problem] = field(default_factory=list)
    n_images: int = 0
    n_label_files: int = 0
    n_boxes: int = 0
    scale: ScaleSpec | None = None

    def add(self, file: str | Path, line: int | None, message: str, kind: str) -> None:
        """Record one problem."""
        self.problems.append(Problem(str(file), line, message, kind))

    def count(self, severity: str) -> int:
        """Number of problems of one severity."""
        return sum(p.severity == severity for p in self.problems)

    @property
    def ok(self) -> bool:
        """No errors (warnings and infos allowed)."""
        return self.count(ERROR) == 0

    def summary(self) -> str:
        """One line: counts and the verdict."""
        kinds = Counter(p.kind for p in self.problems if p.severity != INFO)
        top = ", ".join(f"{k} x{n}" for k, n in kinds.most_common())
        scale = self.scale.name if self.scale else "?"
        return (
            f"{self.root}: scale {scale}, {self.n_images} images, {self.n_label_files} label files, "
            f"{self.n_boxes} boxes: {self.count(ERROR)} errors, {self.count(WARNING)} warnings, "
            f"{self.count(INFO)} note(s)" + (f" ({top})" if top else "")
        )


# --------------------------------------------------------------------------------------- helpers
def _key_lines(text: str) -> dict[str, int]:
    """1-based line of each top-level key of a YAML mapping (empty if it does not compose)."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return {}
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {str(k.value): k.start_mark.line + 1 for k, _ in node.value}


def _is_intlike(s: str) -> bool:
    try:
        v = float(s)
    except ValueError:
        return False
    return math.isfinite(v) and v == int(v)


def _label_kind(parts: list[str], spec: ScaleSpec | None) -> str:
    """Which :data:`KINDS` entry a line rejected by ``parse_label_line`` falls under."""
    if len(parts) not in (5, 6):
        return "label-fields"
    for p in parts:
        try:
            if not math.isfinite(float(p)):
                return "label-nonnumeric"
        except ValueError:
            return "label-nonnumeric"
    if not _is_intlike(parts[0]) or float(parts[0]) < 0 or (spec and int(float(parts[0])) >= spec.nc):
        return "label-unit"
    return "label-grade"


def _read_image(path: Path) -> tuple[np.ndarray | None, str]:
    """Decode an image with the runtime's one reader (:func:`edge.sources.read_image`: the header is
    checked against the pixel limit before decoding, corrupt JPEG scans are caught); returns
    ``(image or None, reason)``. Never raises: a file whose header lies about its size is a finding."""
    try:
        return read_image(path), ""
    except SourceError as e:
        return None, str(e).removeprefix(f"{path}: ")
    except Exception as e:  # a decoder failure nobody foresaw is still this file's problem, not the check's
        return None, f"cannot be decoded ({type(e).__name__}: {e})"


def _label_dir_to_image_dir(folder: Path) -> Path:
    """Inverse of the ultralytics rule: the last ``labels`` part becomes ``images``."""
    parts = list(folder.parts)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "labels":
            parts[i] = "images"
            break
    return Path(*parts)


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


# ----------------------------------------------------------------------------------- data.yaml
def _check_yaml(root: Path, rep: CheckReport) -> tuple[ScaleSpec | None, dict[str, Path], bool]:
    """Check data.yaml; return the scale (if valid), split folders, and whether the yaml was usable."""
    yml = root / "data.yaml"
    if not yml.exists():
        rep.add(yml, None, "no data.yaml (a grimace dataset needs one naming its scale)", "yaml-missing")
        return None, {}, False
    try:
        text = yml.read_text(encoding="utf-8-sig", errors="replace")
    except OSError as e:  # a folder named data.yaml, no permission...
        rep.add(yml, None, f"cannot read data.yaml: {e.strerror or e}", "yaml-invalid")
        return None, {}, False
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        reason = getattr(e, "problem", None) or str(e).splitlines()[0]
        rep.add(yml, line, f"invalid YAML: {reason}", "yaml-invalid")
        return None, {}, False
    if not isinstance(raw, dict):
        rep.add(yml, 1, f"data.yaml must be a mapping, got {type(raw).__name__}", "yaml-invalid")
        return None, {}, False
    lines = _key_lines(text)

    spec: ScaleSpec | None = None
    if "scale" not in raw:
        rep.add(yml, None, "no 'scale' key; a grimace dataset must name its scale", "no-scale")
    else:
        try:
            spec = load_scale(raw["scale"])
        except ScaleError as e:
            rep.add(yml, lines.get("scale"), f"invalid scale: {e}", "bad-scale")
        except (TypeError, ValueError) as e:  # e.g. a list where a name/mapping belongs
            rep.add(yml, lines.get("scale"), f"invalid scale: {e}", "bad-scale")

    if spec is not None:
        _check_names(yml, raw, lines, spec, rep)
        for name in unsafe_unit_names(spec):
            rep.add(
                yml,
                lines.get("scale"),
                f"unit name {name!r} is not safe as a folder name (must match {SAFE_NAME.pattern}); "
                "crops and graders are stored in folders named after units",
                "unit-name",
            )

    splits: dict[str, Path] = {}
    for key in SPLITS:
        if key not in raw or raw[key] in (None, ""):
            continue
        val = raw[key]
        if not isinstance(val, str):
            rep.add(
                yml, lines.get(key), f"split {key!r} must be one folder path, got {val!r}", "split-missing"
            )
            continue
        p = Path(val)
        folder = p if p.is_absolute() else root / p
        if not folder.is_dir():
            why = "is a file, not an image folder" if folder.is_file() else "does not exist"
            rep.add(yml, lines.get(key), f"split {key!r}: folder {val} {why}", "split-missing")
            continue
        splits[key] = folder
    if not any(raw.get(k) for k in SPLITS):
        rep.add(yml, None, "no split named: need at least one of 'train', 'val', 'test'", "split-missing")

    resolved = {k: v.resolve() for k, v in splits.items()}
    names = list(resolved)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            pa, pb = resolved[a], resolved[b]
            if pa == pb or pa in pb.parents or pb in pa.parents:
                rep.add(
                    yml,
                    lines.get(b),
                    f"splits {a!r} and {b!r} overlap ({_rel(splits[a], root)} vs {_rel(splits[b], root)})",
                    "split-overlap",
                )
    return spec, splits, True


def _check_names(
    yml: Path, raw: dict[str, Any], lines: dict[str, int], spec: ScaleSpec, rep: CheckReport
) -> None:
    names = raw.get("names")
    if names is not None:
        if isinstance(names, dict):
            try:
                got = [str(names[k]) for k in sorted(names, key=int)]
            except (TypeError, ValueError):
                got = [str(v) for v in names.values()]
        elif isinstance(names, list):
            got = [str(n) for n in names]
        else:
            got = [str(names)]
        if got != spec.unit_names:
            rep.add(
                yml,
                lines.get("names"),
                f"'names' {got} differ from the units of scale {spec.name!r} {spec.unit_names} "
                "(the detector would learn the wrong class names)",
                "names-mismatch",
            )
    nc = raw.get("nc")
    if nc is not None and nc != spec.nc:
        rep.add(
            yml,
            lines.get("nc"),
            f"'nc' is {nc} but scale {spec.name!r} has {spec.nc} units",
            "names-mismatch",
        )


# -------------------------------------------------------------------------------------- labels
def _check_label_file(lbl: Path, root: Path, spec: ScaleSpec | None, tol: float, rep: CheckReport) -> None:
    try:
        text = lbl.read_text(encoding="utf-8-sig")  # a byte-order mark is not part of line 1
    except UnicodeDecodeError:
        rep.add(lbl, None, "label file is not UTF-8 text", "label-unreadable")
        return
    except OSError as e:
        rep.add(lbl, None, f"cannot read label file: {e.strerror or e}", "label-unreadable")
        return
    rep.n_label_files += 1
    per_unit: dict[int, list[int]] = defaultdict(list)
    seen: dict[tuple[float, ...], int] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{lbl}:{lineno}"
        try:
            box = parse_label_line(line, where=where, spec=spec)
        except LabelError as e:
            msg = str(e).removeprefix(f"{where}: ")
            rep.add(lbl, lineno, msg, _label_kind(line.split(), spec))
            continue
        rep.n_boxes += 1
        if box.w <= 0 or box.h <= 0:
            rep.add(lbl, lineno, f"box has zero or negative size (w={box.w:g}, h={box.h:g})", "box-size")
        else:
            x1, y1 = box.cx - box.w / 2, box.cy - box.h / 2
            x2, y2 = box.cx + box.w / 2, box.cy + box.h / 2
            if min(x1, y1) < -tol or max(x2, y2) > 1 + tol:
                rep.add(
                    lbl,
                    lineno,
                    f"box outside the image: edges x {x1:.4f}..{x2:.4f}, y {y1:.4f}..{y2:.4f} "
                    f"(normalised; must lie in [0, 1], tolerance {tol:g})",
                    "box-outside",
                )
        key = (box.unit, round(box.cx, 6), round(box.cy, 6), round(box.w, 6), round(box.h, 6))
        if key in seen:
            rep.add(lbl, lineno, f"same box as line {seen[key]}", "box-duplicate")
            continue  # a duplicate is not counted again below
        seen[key] = lineno
        per_unit[box.unit].append(lineno)
    if spec is not None:
        for u, lns in sorted(per_unit.items()):
            unit = spec.units[u]
            if len(lns) > unit.per_frame:
                rep.add(
                    lbl,
                    lns[unit.per_frame],
                    f"{len(lns)} {unit.name!r} boxes; scale {spec.name!r} counts at most "
                    f"{unit.per_frame} per frame (extra boxes from this line on)",
                    "unit-count",
                )


# ------------------------------------------------------------------------------------ subjects
def _check_subjects(path: Path, images: list[Path], root: Path, rep: CheckReport) -> None:
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:  # Excel's "CSV UTF-8" has a BOM
            reader = csv.DictReader(f)
            cols = [c.strip() for c in (reader.fieldnames or [])]
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        rep.add(path, None, f"cannot read subjects.csv: {e}", "subjects-columns")
        return
    missing = [c for c in ("image", "subject") if c not in cols]
    if missing:
        rep.add(path, 1, f"missing column(s) {missing}; header is {cols}", "subjects-columns")
        return
    listed: dict[str, int] = {}
    for lineno, row in enumerate(rows, start=2):
        row = {(k or "").strip(): v for k, v in row.items()}
        image = (row.get("image") or "").strip()
        subject = (row.get("subject") or "").strip()
        if not image:
            rep.add(path, lineno, "empty 'image'", "subjects-row")
            continue
        name = Path(image).name
        if not subject:
            rep.add(path, lineno, f"image {name!r} has an empty 'subject'", "subjects-row")
        if name in listed:
            rep.add(
                path, lineno, f"image {name!r} listed twice (first on line {listed[name]})", "subjects-row"
            )
            continue
        listed[name] = lineno
    present = {p.name for p in images}
    for img in images:
        if img.name not in listed:
            rep.add(img, None, f"image has no row in {_rel(path, root)} (subject missing)", "subject-missing")
    for name, lineno in listed.items():
        if name not in present:
            rep.add(
                path, lineno, f"lists image {name!r}, which is not in the dataset", "subject-unknown-image"
            )


# ---------------------------------------------------------------------------------------- main
def run_check(
    root: str | Path,
    tolerance: float = DEFAULT_TOLERANCE,
    read_images: bool = True,
    progress: bool = False,
) -> CheckReport:
    """Check a dataset and return the full report (problems plus counts).

    Args:
        root: Dataset root (the folder holding ``data.yaml``) or the ``data.yaml`` path.
        tolerance: How far a box edge may lie outside ``[0, 1]`` (normalised) before it is an error.
        read_images: Decode every image (slower, catches corrupt files). If False only zero-byte
            files are reported as unreadable.
        progress: Show a progress bar over the images.
    """
    root = Path(root)
    if root.suffix in (".yaml", ".yml"):
        root = root.parent
    rep = CheckReport(root=root)
    if not root.is_dir():
        rep.add(root, None, "dataset folder does not exist", "no-dataset")
        return rep

    spec, splits, yaml_ok = _check_yaml(root, rep)
    rep.scale = spec
    if not yaml_ok or not splits:
        # still check what is on disk: treat each folder under images/ as a split
        img_root = root / "images"
        if img_root.is_dir():
            subdirs = sorted(p for p in img_root.iterdir() if p.is_dir())
            splits = {p.name: p for p in subdirs} if subdirs else {"images": img_root}

    # ---- collect images (each file once, even when splits overlap)
    images: list[Path] = []
    split_of: dict[Path, str] = {}
    for split, folder in splits.items():
        for img in list_images(folder):
            r = img.resolve()
            if r not in split_of:
                split_of[r] = split
                images.append(img)
    in_split = set(split_of)
    img_root = root / "images"
    if img_root.is_dir() and yaml_ok:
        for img in list_images(img_root):
            if img.resolve() not in in_split:
                rep.add(
                    img, None, "image is in no split named in data.yaml (it is never used)", "image-unlisted"
                )
    rep.n_images = len(images)
    if not images:
        rep.add(
            root, None, "no images found (expected images/<split>/*" + "|".join(IMG_EXTS) + ")", "no-images"
        )

    # ---- duplicate names: same file name anywhere, or same stem in one folder (one label file)
    by_name: dict[str, list[Path]] = defaultdict(list)
    by_label: dict[Path, list[Path]] = defaultdict(list)
    label_of: dict[Path, Path] = {}
    for img in images:
        by_name[img.name.lower()].append(img)
        try:
            lbl = image_to_label_path(img)
        except LabelError:
            rep.add(
                img,
                None,
                "image is not under an 'images/' folder; its label file cannot be located",
                "image-path",
            )
            continue
        label_of[img] = lbl
        by_label[lbl].append(img)
    for group in by_name.values():
        for dup in group[1:]:
            rep.add(
                dup,
                None,
                f"file name also used by {_rel(group[0], root)} (names must be unique)",
                "duplicate-name",
            )
    for lbl, group in by_label.items():
        if len(group) > 1 and len({g.name.lower() for g in group}) > 1:
            for dup in group[1:]:
                rep.add(
                    dup,
                    None,
                    f"shares label file {_rel(lbl, root)} with {_rel(group[0], root)}",
                    "duplicate-name",
                )

    # ---- splits whose labels folder is missing entirely
    no_labels_dir: set[Path] = set()
    for split, folder in splits.items():
        try:
            lbl_dir = image_to_label_path(folder / "x.png").parent
        except LabelError:
            continue
        if list_images(folder) and not lbl_dir.is_dir():
            rep.add(
                lbl_dir,
                None,
                f"split {split!r} has no labels folder: all its images are background",
                "labels-missing",
            )
            no_labels_dir.add(lbl_dir)

    # ---- images and their labels
    it: Iterable[Path] = images
    if progress:
        from tqdm import tqdm

        it = tqdm(images, desc="checking", unit="img", leave=False, disable=None)
    for img in it:
        if read_images:
            arr, reason = _read_image(img)
            if arr is None:
                rep.add(img, None, reason, "image-unreadable")
        elif img.stat().st_size == 0:
            rep.add(img, None, "image file is empty (0 bytes)", "image-unreadable")
        lbl = label_of.get(img)
        if lbl is None or (len(by_label[lbl]) > 1 and by_label[lbl][0] != img):
            continue
        if not lbl.exists():
            if lbl.parent not in no_labels_dir:
                rep.add(
                    img, None, f"no label file {_rel(lbl, root)}: background image (no boxes)", "no-label"
                )
            continue
        _check_label_file(lbl, root, spec, tolerance, rep)

    # ---- label files without an image
    expected = set(label_of.values())
    label_dirs: set[Path] = set()
    for folder in splits.values():
        with contextlib.suppress(LabelError):
            label_dirs.add(image_to_label_path(folder / "x.png").parent)
    if (root / "labels").is_dir():
        label_dirs.add(root / "labels")
    seen_lbl: set[Path] = set()
    for d in sorted(label_dirs):
        if not d.is_dir():
            continue
        for lbl in sorted(d.rglob("*.txt")):
            if lbl in seen_lbl or lbl.name == "classes.txt":
                continue
            seen_lbl.add(lbl)
            if lbl not in expected:
                img_dir = _label_dir_to_image_dir(lbl.parent)
                rep.add(
                    lbl,
                    None,
                    f"label file has no image (no {_rel(img_dir, root)}/{lbl.stem}.<image ext>)",
                    "label-orphan",
                )

    # ---- subjects.csv
    subj = root / "subjects.csv"
    if subj.exists():
        _check_subjects(subj, images, root, rep)

    rep.problems.sort(key=lambda p: (p.file, p.line or 0))
    return rep


def check_dataset(
    root: str | Path, tolerance: float = DEFAULT_TOLERANCE, read_images: bool = True
) -> list[Problem]:
    """Validate a dataset; every problem found, in file/line order (see :data:`KINDS`).

    Args:
        root: Dataset root (the folder holding ``data.yaml``) or the ``data.yaml`` path.
        tolerance: How far a box edge may lie outside ``[0, 1]`` (normalised) before it is an error.
        read_images: Decode every image to catch corrupt files.

    Returns:
        All problems; ``[p for p in problems if p.severity == "error"]`` empty means the dataset is usable.
    """
    return run_check(root, tolerance=tolerance, read_images=read_images).problems
