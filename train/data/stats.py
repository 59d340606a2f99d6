"""Dataset statistics: images per split, boxes per unit and grade, per subject, group and timepoint.

Statistics are read leniently: a label line that does not parse is counted under ``bad_lines`` and
skipped (``grimace data check`` says what is wrong with it).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.scales import ScaleSpec
from train.data.format import (
    LabelError,
    Subject,
    image_to_label_path,
    load_dataset,
    parse_label_line,
    read_subjects,
)

UNGRADED = "ungraded"


@dataclass
class GroupStats:
    """Counts for one subject, group or (group, timepoint) cell.

    Attributes:
        images: Number of images.
        boxes: Number of boxes.
        subjects: Distinct subjects seen.
        grade_sum: Per unit name, sum of the grades of graded boxes.
        graded: Per unit name, number of graded boxes.
    """

    images: int = 0
    boxes: int = 0
    subjects: set[str] = field(default_factory=set)
    grade_sum: Counter[str] = field(default_factory=Counter)
    graded: Counter[str] = field(default_factory=Counter)

    def mean_grade(self, unit: str) -> float | None:
        """Mean grade of the graded boxes of ``unit`` (None when there are none)."""
        n = self.graded[unit]
        return self.grade_sum[unit] / n if n else None

    def to_dict(self, units: list[str]) -> dict[str, Any]:
        """Plain-data form."""
        return {
            "images": self.images,
            "boxes": self.boxes,
            "subjects": len(self.subjects),
            "mean_grade": {u: self.mean_grade(u) for u in units},
        }


@dataclass
class DatasetStats:
    """Counts over a whole dataset.

    Attributes:
        root: Dataset root.
        spec: The dataset's scale.
        images_per_split: Split -> number of images.
        boxes_per_split: Split -> number of boxes.
        background_per_split: Split -> images without boxes.
        unit_grade: Unit name -> Counter over grade (int) or ``"ungraded"``.
        subjects: Subject id -> counts (empty when there is no subjects.csv).
        groups: Group -> counts.
        timepoints: ``(group, timepoint)`` -> counts.
        subject_group: Subject id -> group.
        no_subject: Images without a subjects.csv row (when the file exists).
        bad_lines: Label lines that did not parse (skipped).
    """

    root: Path
    spec: ScaleSpec
    images_per_split: dict[str, int] = field(default_factory=dict)
    boxes_per_split: dict[str, int] = field(default_factory=dict)
    background_per_split: dict[str, int] = field(default_factory=dict)
    unit_grade: dict[str, Counter[int | str]] = field(default_factory=dict)
    subjects: dict[str, GroupStats] = field(default_factory=dict)
    groups: dict[str, GroupStats] = field(default_factory=dict)
    timepoints: dict[tuple[str, str], GroupStats] = field(default_factory=dict)
    subject_group: dict[str, str] = field(default_factory=dict)
    no_subject: int = 0
    bad_lines: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (``grimace data stats --json``)."""
        units = self.spec.unit_names
        return {
            "root": str(self.root),
            "scale": self.spec.name,
            "images_per_split": self.images_per_split,
            "boxes_per_split": self.boxes_per_split,
            "background_per_split": self.background_per_split,
            "unit_grade": {u: {str(k): v for k, v in c.items()} for u, c in self.unit_grade.items()},
            "subjects": {
                s: {**g.to_dict(units), "group": self.subject_group.get(s, "")}
                for s, g in self.subjects.items()
            },
            "groups": {k: g.to_dict(units) for k, g in self.groups.items()},
            "timepoints": {f"{k[0]}/{k[1]}": g.to_dict(units) for k, g in self.timepoints.items()},
            "no_subject": self.no_subject,
            "bad_lines": self.bad_lines,
        }


def compute_stats(root: str | Path) -> DatasetStats:
    """Count images, boxes, units and grades of a dataset.

    Args:
        root: Dataset root (or its ``data.yaml``).

    Raises:
        LabelError: ``data.yaml`` missing or invalid, or ``subjects.csv`` invalid (run
            ``grimace data check`` for the full list of problems).
    """
    info = load_dataset(root)
    spec = info.spec
    st = DatasetStats(root=info.root, spec=spec)
    st.unit_grade = {u: Counter() for u in spec.unit_names}
    subjects: dict[str, Subject] = {}
    if info.subjects_csv.exists():
        subjects = read_subjects(info.subjects_csv)
    seen: set[Path] = set()
    for split in info.splits:
        images = [p for p in info.images(split) if p.resolve() not in seen]
        seen.update(p.resolve() for p in images)
        st.images_per_split[split] = len(images)
        st.boxes_per_split[split] = 0
        st.background_per_split[split] = 0
        for img in images:
            boxes = []
            try:
                lbl = image_to_label_path(img)
                lines = lbl.read_text().splitlines() if lbl.exists() else []
            except (LabelError, OSError, UnicodeDecodeError):
                lines = []
            for i, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    boxes.append(parse_label_line(line, f"{lbl}:{i}", spec))
                except LabelError:
                    st.bad_lines += 1
            st.boxes_per_split[split] += len(boxes)
            if not boxes:
                st.background_per_split[split] += 1
            for b in boxes:
                st.unit_grade[spec.unit_names[b.unit]][UNGRADED if b.grade is None else b.grade] += 1
            sub = subjects.get(img.name)
            if subjects and sub is None:
                st.no_subject += 1
            if sub is None:
                continue
            st.subject_group[sub.subject] = sub.group
            cells = [
                st.subjects.setdefault(sub.subject, GroupStats()),
                st.groups.setdefault(sub.group or "-", GroupStats()),
                st.timepoints.setdefault((sub.group or "-", sub.timepoint or "-"), GroupStats()),
            ]
            for cell in cells:
                cell.images += 1
                cell.boxes += len(boxes)
                cell.subjects.add(sub.subject)
                for b in boxes:
                    if b.grade is not None:
                        name = spec.unit_names[b.unit]
                        cell.grade_sum[name] += b.grade
                        cell.graded[name] += 1
    return st


def format_table(headers: list[str], rows: list[list[Any]], title: str = "") -> str:
    """A plain-text table; numbers right-aligned, text left-aligned."""

    def cell(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.2f}"
        return str(v)

    body = [[cell(v) for v in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(headers)]
    numeric = [
        all(isinstance(r[i], (int, float)) or r[i] is None for r in rows) and rows
        for i in range(len(headers))
    ]

    def fmt(vals: list[str]) -> str:
        return "  ".join(
            v.rjust(w) if numeric[i] else v.ljust(w)
            for i, (v, w) in enumerate(zip(vals, widths, strict=True))
        )

    out = [title] if title else []
    out.append(fmt(headers).rstrip())
    out.append("  ".join("-" * w for w in widths))
    out.extend(fmt(r).rstrip() for r in body)
    return "\n".join(out)


def format_stats(st: DatasetStats) -> str:
    """Human-readable tables of :class:`DatasetStats`."""
    spec = st.spec
    units = spec.unit_names
    parts = [f"dataset {st.root}  (scale {spec.name}: {', '.join(units)})"]

    splits = list(st.images_per_split)
    rows = [[s, st.images_per_split[s], st.background_per_split[s], st.boxes_per_split[s]] for s in splits]
    rows.append(
        [
            "total",
            sum(st.images_per_split.values()),
            sum(st.background_per_split.values()),
            sum(st.boxes_per_split.values()),
        ]
    )
    parts.append(format_table(["split", "images", "background", "boxes"], rows, "\nImages per split"))

    ng = spec.ng
    grade_cols = [str(g) for g in range(ng)]
    rows = []
    for i, u in enumerate(units):
        c = st.unit_grade[u]
        n_levels = spec.units[i].grades
        rows.append([u, *[c[g] if g < n_levels else None for g in range(ng)], c[UNGRADED], sum(c.values())])
    parts.append(
        format_table(
            ["unit", *[f"grade {g}" for g in grade_cols], UNGRADED, "total"],
            rows,
            "\nBoxes per unit and grade",
        )
    )

    if st.subjects:
        rows = [
            [s, st.subject_group.get(s, ""), g.images, g.boxes, *[g.mean_grade(u) for u in units]]
            for s, g in sorted(st.subjects.items())
        ]
        parts.append(
            format_table(
                ["subject", "group", "images", "boxes", *[f"mean {u}" for u in units]],
                rows,
                "\nPer subject (mean grade of graded boxes)",
            )
        )
        rows = [
            [k, len(g.subjects), g.images, g.boxes, *[g.mean_grade(u) for u in units]]
            for k, g in sorted(st.groups.items())
        ]
        parts.append(
            format_table(
                ["group", "subjects", "images", "boxes", *[f"mean {u}" for u in units]], rows, "\nPer group"
            )
        )
        if any(k[1] != "-" for k in st.timepoints):
            rows = [
                [k[0], k[1], len(g.subjects), g.images, g.boxes, *[g.mean_grade(u) for u in units]]
                for k, g in sorted(st.timepoints.items())
            ]
            parts.append(
                format_table(
                    ["group", "timepoint", "subjects", "images", "boxes", *[f"mean {u}" for u in units]],
                    rows,
                    "\nPer group and timepoint",
                )
            )
    else:
        parts.append("\n(no subjects.csv: no per-subject or per-group counts)")
    if st.no_subject:
        parts.append(f"\n{st.no_subject} images have no row in subjects.csv")
    if st.bad_lines:
        parts.append(
            f"\n{st.bad_lines} label lines did not parse and were skipped (see `grimace data check`)"
        )
    return "\n".join(parts)
