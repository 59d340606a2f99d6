"""The simulated study: subjects, groups, timepoints, latent pain, unit grades and human graders.

Every subject belongs to a group (``control`` or ``injured``) and is imaged at timepoints ``day1`` and
``day30``. A latent pain state ``P`` in ``[0, 2]`` is drawn per image around the mean of its
(group, timepoint) cell (:data:`PAIN_MEANS`: control stays low; injured is high at day 1 and partly
recovered at day 30) times the subject's own sensitivity. Each unit's severity (``[0, 1]``) is
``P * SEVERITY_PER_PAIN`` times the unit's gain plus unit noise; each drawn instance (left/right
eye...) adds a little asymmetry. A label grade is the instance severity quantised to the unit's levels.

Simulated graders see the image-level unit severity through their own bias and noise; the noise is
small for the eye and large for ears and nose (:data:`GRADER_NOISE`), mirroring the seed's inter-grader
ICCs (orbital tightening very good, ears and nose moderate).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.scales import ScaleSpec, Unit
from train.synth.faces import Morphology, sample_morphology

GROUPS = ("control", "injured")
TIMEPOINTS = ("day1", "day30")
PAIN_MEANS: dict[tuple[str, str], float] = {
    ("control", "day1"): 0.15,
    ("control", "day30"): 0.12,
    ("injured", "day1"): 1.35,
    ("injured", "day30"): 0.55,
}
# how strongly each unit follows the latent pain (unknown units: 0.8)
UNIT_GAIN = {"eye": 1.0, "ear": 0.92, "nose": 0.9, "cheek": 0.85, "whiskers": 0.85, "face": 1.0}
SEVERITY_PER_PAIN = 0.6  # unit severity per unit of latent pain (before the unit's gain)
UNIT_NOISE = 0.08  # per image and unit, in severity units
INSTANCE_NOISE = 0.05  # left/right asymmetry
# simulated graders: (bias sd, noise sd) in severity units, per unit (unknown units: ear-like)
GRADER_NOISE = {
    "eye": (0.02, 0.05),
    "ear": (0.07, 0.2),
    "nose": (0.07, 0.22),
    "cheek": (0.06, 0.17),
    "whiskers": (0.06, 0.16),
    "face": (0.03, 0.08),
}


@dataclass(frozen=True)
class SimSubject:
    """One synthetic animal."""

    sid: str
    group: str
    split: str
    sensitivity: float
    morph: Morphology


def grade_of(sev: float, unit: Unit) -> int:
    """Quantise a severity in ``[0, 1]`` to the unit's grade levels ``0..grades-1``."""
    k = unit.grades - 1
    return int(np.clip(np.floor(sev * k + 0.5), 0, k))


def make_subjects(
    species: str,
    n_subjects: int,
    seed: int,
    val_frac: float = 0.2,
    test_frac: float = 0.1,
) -> list[SimSubject]:
    """Subjects with groups (alternating, so balanced) and a subject-wise split.

    Subjects are interleaved by group before splitting, so test/val/train each mix groups when there
    are enough subjects. A split with a non-zero fraction gets at least one subject while train keeps
    at least one.

    Raises:
        ValueError: Fewer than 1 subject or fractions outside ``[0, 1)`` summing to ``>= 1``.
    """
    if n_subjects < 1:
        raise ValueError(f"need at least 1 subject, got {n_subjects}")
    if not (0 <= val_frac < 1 and 0 <= test_frac < 1 and val_frac + test_frac < 1):
        raise ValueError(f"val_frac ({val_frac}) and test_frac ({test_frac}) must be in [0, 1) with sum < 1")
    rng = np.random.default_rng([seed, 0])
    groups = [GROUPS[i % len(GROUPS)] for i in range(n_subjects)]
    n_test = round(n_subjects * test_frac)
    n_val = round(n_subjects * val_frac)
    if test_frac > 0 and n_test == 0 and n_subjects - n_val > 1:
        n_test = 1
    if val_frac > 0 and n_val == 0 and n_subjects - n_test > 1:
        n_val = 1
    while n_test + n_val >= n_subjects and n_test + n_val > 0:
        if n_test >= n_val and n_test > 0:
            n_test -= 1
        else:
            n_val -= 1
    # interleave groups in a seeded order, then cut test | val | train
    by_group = {g: [i for i in range(n_subjects) if groups[i] == g] for g in GROUPS}
    for g in GROUPS:
        rng.shuffle(by_group[g])
    order: list[int] = []
    while any(by_group.values()):
        for g in GROUPS:
            if by_group[g]:
                order.append(by_group[g].pop(0))
    split_of = {}
    for pos, i in enumerate(order):
        split_of[i] = "test" if pos < n_test else "val" if pos < n_test + n_val else "train"
    prefix = {"rat": "rat", "mouse": "mouse", "goat": "goat"}.get(species, "subj")
    out = []
    for i in range(n_subjects):
        srng = np.random.default_rng([seed, 1, i])
        out.append(
            SimSubject(
                sid=f"{prefix}{i + 1:02d}",
                group=groups[i],
                split=split_of[i],
                sensitivity=float(np.clip(srng.normal(1.0, 0.15), 0.6, 1.4)),
                morph=sample_morphology(species, srng),
            )
        )
    return out


def latent_pain(subject: SimSubject, timepoint: str, rng: np.random.Generator) -> float:
    """Latent pain ``P`` in ``[0, 2]`` of one image of ``subject`` at ``timepoint``."""
    mean = PAIN_MEANS[(subject.group, timepoint)] * subject.sensitivity
    return float(np.clip(mean + rng.normal(0, 0.15), 0, 2))


def unit_severities(
    pain: float, units: dict[str, int], rng: np.random.Generator
) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Image-level and per-instance severities in ``[0, 1]``.

    Args:
        pain: Latent pain in ``[0, 2]``.
        units: Unit name -> number of drawn instances.
        rng: Random generator.

    Returns:
        ``(image_level, per_instance)``: unit -> severity, and unit -> list of instance severities.
    """
    level: dict[str, float] = {}
    inst: dict[str, list[float]] = {}
    for u, k in units.items():
        s = pain * SEVERITY_PER_PAIN * UNIT_GAIN.get(u, 0.8) + rng.normal(0, UNIT_NOISE)
        s = float(np.clip(s, 0, 1))
        level[u] = s
        inst[u] = [float(np.clip(s + rng.normal(0, INSTANCE_NOISE), 0, 1)) for _ in range(k)]
    return level, inst


def grader_grades(
    level: dict[str, float],
    spec: ScaleSpec,
    bias: dict[str, float],
    rng: np.random.Generator,
) -> dict[str, int]:
    """One grader's integer grade per unit of ``spec`` for one image.

    Args:
        level: Image-level severity per unit (``[0, 1]``).
        spec: The scale (gives units and grade levels).
        bias: This grader's bias per unit (severity units).
        rng: Random generator (the grader's stream).
    """
    out = {}
    for u in spec.units:
        noise = GRADER_NOISE.get(u.name, GRADER_NOISE["ear"])[1]
        out[u.name] = grade_of(level[u.name] + bias[u.name] + rng.normal(0, noise), u)
    return out


def grader_bias(spec: ScaleSpec, rng: np.random.Generator) -> dict[str, float]:
    """A grader's fixed per-unit bias."""
    return {
        u.name: float(rng.normal(0, GRADER_NOISE.get(u.name, GRADER_NOISE["ear"])[0])) for u in spec.units
    }
