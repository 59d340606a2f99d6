"""Per-animal / per-session aggregation of grimace scores.

:func:`aggregate` groups frame records (:class:`edge.records.FrameRecord`) by animal, session or
source into :class:`GroupSummary` rows: number of frames, scored and abstained, mean and standard
error of the mean (SEM) of the frame scores (expected and argmax), mean per unit; for binary scales
(goats) also the mean pain probability, the share of painful frames and a verdict by the one rule
of :class:`edge.verdict.VerdictRule` (painful / not painful / insufficient frames).

:func:`load_subject_map` reads ``--subject-map`` CSVs that map files/videos to animal ids.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.records import GROUP_KEY_COLUMN, FrameRecord
from edge.scales import ScaleSpec
from edge.verdict import DEFAULT_MIN_FRAMES, VerdictRule

KEY_COLUMNS = ("file", "filename", "image", "video", "path", "source")
SUBJECT_COLUMNS = ("subject", "animal", "animal_id", "id")


class SubjectMapError(ValueError):
    """A subject map CSV is invalid (the message names the file and line)."""


def mean_sem(values: Iterable[float]) -> tuple[float | None, float | None]:
    """Mean and standard error of the mean (``None`` when undefined: no values / one value for SEM)."""
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    if v.size == 0:
        return None, None
    mean = float(v.mean())
    sem = float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else None
    return mean, sem


@dataclass
class GroupSummary:
    """Aggregate of one group (animal, session or source).

    Attributes:
        group: The group key (animal id, session or source: what was grouped by).
        n_frames: Frames in the group.
        n_scored: Frames with a score.
        n_abstained: Frames that abstained.
        mean: Mean of the expected-grade frame scores.
        sem: Its standard error.
        mean_argmax: Mean of the argmax-grade frame scores.
        sem_argmax: Its standard error.
        unit_means: Mean expected-grade score per unit name over frames where the unit was found.
        abstain_reasons: Count per abstention reason.
        mean_pain_prob: Binary scales: mean pain probability of scored frames.
        share_painful: Binary scales: share of scored frames at or above the threshold.
        verdict: Binary scales: ``"painful"`` / ``"not painful"`` (mean pain probability vs threshold) or
            ``"insufficient frames"`` (fewer than ``min_frames`` scored frames).
        threshold: The threshold used.
        min_frames: The fewest scored frames for a verdict.
    """

    group: str
    n_frames: int
    n_scored: int
    n_abstained: int
    mean: float | None
    sem: float | None
    mean_argmax: float | None
    sem_argmax: float | None
    unit_means: dict[str, float | None] = field(default_factory=dict)
    abstain_reasons: dict[str, int] = field(default_factory=dict)
    mean_pain_prob: float | None = None
    share_painful: float | None = None
    verdict: str | None = None
    threshold: float | None = None
    min_frames: int | None = None

    def row(self, spec: ScaleSpec, by: str = "subject") -> dict[str, Any]:
        """Flat row for a summary table: the key under ``animal``/``session``/``source`` (what was
        grouped by), scores named like the frame columns (``RGS mean``, ``RGS argmax mean``, unit means
        under the units' labels)."""
        s = spec.score_name
        r: dict[str, Any] = {
            GROUP_KEY_COLUMN.get(by, by): self.group,
            "n_frames": self.n_frames,
            "n_scored": self.n_scored,
            "n_abstained": self.n_abstained,
            f"{s} mean": self.mean,
            f"{s} sem": self.sem,
            f"{s} argmax mean": self.mean_argmax,
            f"{s} argmax sem": self.sem_argmax,
        }
        for u in spec.units:
            r[f"{u.label} mean"] = self.unit_means.get(u.name)
        if spec.aggregation == "binary":
            r.update(
                mean_pain_prob=self.mean_pain_prob,
                share_painful=self.share_painful,
                verdict=self.verdict,
                threshold=self.threshold,
                min_frames=self.min_frames,
            )
        r["abstain_reasons"] = "; ".join(f"{k} ({v})" for k, v in sorted(self.abstain_reasons.items()))
        return r


def aggregate(
    records: Iterable[FrameRecord],
    spec: ScaleSpec,
    by: str = "subject",
    threshold: float | None = None,
    min_frames: int = DEFAULT_MIN_FRAMES,
) -> list[GroupSummary]:
    """Group frame records and summarise each group.

    Args:
        records: Frame records.
        spec: The scale.
        by: Record attribute to group by (``"subject"``, ``"session"`` or ``"source"``).
        threshold: Pain threshold for binary scales (default: the scale's).
        min_frames: Binary scales: fewest scored frames for a verdict; fewer give
            ``"insufficient frames"``.

    Returns:
        One :class:`GroupSummary` per group, sorted by group key.
    """
    thr = spec.pain_threshold if threshold is None else threshold
    binary = spec.aggregation == "binary" and thr is not None
    rule = VerdictRule(min_frames=min_frames, threshold=thr) if binary else None
    groups: dict[str, list[FrameRecord]] = {}
    for r in records:
        groups.setdefault(str(getattr(r, by)) or "(none)", []).append(r)
    out = []
    for key in sorted(groups):
        rs = groups[key]
        scored = [r for r in rs if r.score is not None]
        mean, sem = mean_sem(r.score for r in scored)
        mean_a, sem_a = mean_sem(r.score_argmax for r in scored if r.score_argmax is not None)
        reasons: dict[str, int] = {}
        for r in rs:
            if r.abstained:
                reasons[r.abstained] = reasons.get(r.abstained, 0) + 1
        unit_means = {u.name: mean_sem(r.unit_scores.get(u.name) for r in scored)[0] for u in spec.units}
        s = GroupSummary(
            group=key,
            n_frames=len(rs),
            n_scored=len(scored),
            n_abstained=len(rs) - len(scored),
            mean=mean,
            sem=sem,
            mean_argmax=mean_a,
            sem_argmax=sem_a,
            unit_means=unit_means,
            abstain_reasons=reasons,
            threshold=thr,
        )
        if rule is not None:
            s.min_frames = rule.min_frames
            s.mean_pain_prob = mean
            if scored:
                s.share_painful = float(np.mean([r.score >= thr for r in scored]))  # type: ignore[operator]
            s.verdict = rule.verdict(len(scored), mean)
        out.append(s)
    return out


def summary_rows(
    groups: Iterable[GroupSummary], spec: ScaleSpec, by: str = "subject"
) -> list[dict[str, Any]]:
    """Rows of a summary table (:meth:`GroupSummary.row`), numbers rounded to 4 digits."""
    out = []
    for g in groups:
        r = g.row(spec, by)
        out.append({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()})
    return out


@dataclass
class SubjectInfo:
    """What a subject map says about one file."""

    subject: str
    group: str = ""
    timepoint: str = ""
    session: str = ""


class SubjectMap:
    """Maps files/videos to animal ids; looked up by full path, relative path, file name or stem.

    Attributes:
        path: The CSV it was read from.
        entries: Key (as written in the CSV) -> :class:`SubjectInfo`.
    """

    def __init__(self, entries: dict[str, SubjectInfo], path: str = "<map>") -> None:
        self.path = path
        self.entries = entries
        self._by_name: dict[str, SubjectInfo] = {}
        self._by_stem: dict[str, SubjectInfo | None] = {}
        for k, v in entries.items():
            p = Path(k)
            self._by_name[p.name] = v
            self._by_stem[p.stem] = v if p.stem not in self._by_stem else None  # ambiguous stems -> None
        self.unmatched: set[str] = set()

    def lookup(self, source: str | Path) -> SubjectInfo | None:
        """The entry for a file, or ``None`` (and the file is remembered in :attr:`unmatched`)."""
        p = Path(source)
        for key in (str(source), p.as_posix(), str(p.resolve()) if p.exists() else None):
            if key and key in self.entries:
                return self.entries[key]
        hit = self._by_name.get(p.name) or self._by_stem.get(p.stem)
        if hit is None:
            self.unmatched.add(str(source))
        return hit


def load_subject_map(path: str | Path) -> SubjectMap:
    """Read a subject map CSV.

    Columns (header row required, case-insensitive): a file column (one of
    ``file, filename, image, video, path, source``), a subject column (one of
    ``subject, animal, animal_id, id``), optional ``group``, ``timepoint``, ``session``. The project's
    ``subjects.csv`` (``image,subject,group,timepoint``) is accepted as is.

    Raises:
        SubjectMapError: Missing file/columns, empty subject, or one file mapped to two subjects
            (the message names the file and line).
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise SubjectMapError(f"{p}: cannot read subject map: {e.strerror or e}") from None
    rows = list(csv.reader(text.splitlines()))
    if not rows:
        raise SubjectMapError(f"{p}: subject map is empty")
    header = [h.strip().lower() for h in rows[0]]
    key_col = next((header.index(c) for c in KEY_COLUMNS if c in header), None)
    subj_col = next((header.index(c) for c in SUBJECT_COLUMNS if c in header), None)
    if key_col is None or subj_col is None:
        raise SubjectMapError(
            f"{p}:1: header {rows[0]} needs a file column (one of {list(KEY_COLUMNS)}) and a subject "
            f"column (one of {list(SUBJECT_COLUMNS)})"
        )
    opt = {c: header.index(c) for c in ("group", "timepoint", "session") if c in header}
    entries: dict[str, SubjectInfo] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) <= max(key_col, subj_col):
            raise SubjectMapError(f"{p}:{line}: expected {len(header)} columns, got {len(row)}: {row}")
        key, subject = row[key_col].strip(), row[subj_col].strip()
        if not key or not subject:
            raise SubjectMapError(f"{p}:{line}: empty file or subject in {row}")
        info = SubjectInfo(subject, **{c: row[i].strip() for c, i in opt.items() if i < len(row)})
        if key in entries and entries[key].subject != subject:
            raise SubjectMapError(
                f"{p}:{line}: {key!r} is mapped to subject {subject!r} but an earlier line says "
                f"{entries[key].subject!r}"
            )
        entries[key] = info
    return SubjectMap(entries, str(p))
