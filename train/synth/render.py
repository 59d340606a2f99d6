"""Render one labelled synthetic image: background, posed face, photometric variation, boxes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.scales import ScaleError, ScaleSpec
from train.synth.draw import Canvas
from train.synth.faces import EXTENT, SPECIES_UNITS, Morphology, draw_face
from train.synth.scene import background, photometric
from train.synth.study import grade_of


@dataclass(frozen=True)
class Instance:
    """One drawn, labelled unit instance.

    Attributes:
        unit: Unit name.
        k: Instance number within the unit (0 = image-left).
        cls: Class index in the scale.
        oid: Owner id in the owner map.
        severity: Severity in ``[0, 1]`` that shaped it.
        grade: Label grade.
        box: Pixel box ``(x1, y1, x2, y2)`` of its visible pixels, or ``None`` if not visible.
    """

    unit: str
    k: int
    cls: int
    oid: int
    severity: float
    grade: int
    box: tuple[int, int, int, int] | None


@dataclass
class Rendered:
    """A rendered image with its owner map and labelled instances.

    Attributes:
        image: BGR uint8 ``(H, W, 3)``.
        owner: uint8 ``(H, W)``; pixel value = ``Instance.oid`` of the unit visible there (0 = none),
            sampled from the supersampled owner map, before blur/noise.
        instances: Labelled instances in class order.
        pose: Pose parameters used (centre, scale, roll, yaw, in pixels and degrees).
    """

    image: np.ndarray
    owner: np.ndarray
    instances: list[Instance]
    pose: dict[str, float]


def species_for(spec: ScaleSpec) -> str:
    """Which face model draws the units of ``spec``.

    The spec's species is used when its face has every unit of the scale; otherwise the first face
    model that has them all.

    Raises:
        ScaleError: No face model can draw all units of the scale.
    """
    names = set(spec.unit_names)
    sp = spec.species.lower()
    if sp in SPECIES_UNITS and names <= set(SPECIES_UNITS[sp]):
        return sp
    for sp, units in SPECIES_UNITS.items():
        if names <= set(units):
            return sp
    known = "; ".join(f"{s}: {', '.join(u)}" for s, u in SPECIES_UNITS.items())
    raise ScaleError(
        f"scale {spec.name!r}: the synthetic generator cannot draw units {sorted(names)}; "
        f"every unit must come from one face model ({known})"
    )


def sample_pose(
    species: str, morph: Morphology, h: int, w: int, rng: np.random.Generator
) -> dict[str, float]:
    """Random frontal pose: scale, small roll and yaw, position keeping the face in frame."""
    scale = min(h, w) * rng.uniform(0.12, 0.19) * morph.size
    x0, x1, y0, y1 = EXTENT[species]
    cx_lo, cx_hi = -x0 * scale, w - x1 * scale
    cy_lo, cy_hi = -y0 * scale, h - y1 * scale
    cx = rng.uniform(cx_lo, cx_hi) if cx_hi > cx_lo else w / 2
    cy = rng.uniform(cy_lo, cy_hi) if cy_hi > cy_lo else h / 2
    return {
        "cx": float(cx),
        "cy": float(cy),
        "scale": float(scale),
        "roll": float(rng.uniform(-12, 12)),
        "yaw": float(rng.uniform(-18, 18)),
    }


def render_frontal(
    spec: ScaleSpec,
    morph: Morphology,
    severities: dict[str, list[float]],
    rng: np.random.Generator,
    size: tuple[int, int],
    augment: bool = True,
    hide: set[tuple[str, int]] | None = None,
    pose: dict[str, float] | None = None,
) -> Rendered:
    """Render one frontal image of a subject and its labelled unit instances.

    Args:
        spec: Scale; its units are labelled in its class order (other drawn units stay unlabelled).
        morph: The subject's morphology.
        severities: Unit -> per-instance severities in ``[0, 1]`` for every unit the face draws.
        rng: Random generator for background, pose and photometric variation.
        size: ``(height, width)`` in pixels.
        augment: Apply lighting, tint, blur and noise.
        hide: ``(unit, instance)`` pairs not to draw (everything else, and every random draw,
            stays the same; used to test that a unit's pixels lie inside its box).
        pose: Fixed pose instead of a random one (same keys as :func:`sample_pose`).

    Returns:
        The rendered image, owner map and instances with tight boxes of their visible pixels.
    """
    h, w = size
    species = morph.species
    img = background(h, w, rng, "stall" if species == "goat" and rng.random() < 0.5 else None)
    p = pose or sample_pose(species, morph, h, w, rng)
    canvas = Canvas(img)
    sy, dy = 1.0, 0.0
    if species == "goat":  # a goat in pain lowers its head: the face drops and foreshortens
        v = severities["face"][0]
        sy, dy = 1.0 - 0.14 * v, 0.3 * v * p["scale"]
    canvas.set_pose(p["cx"], p["cy"] + dy, p["scale"], p["roll"], p["yaw"], sy)
    ids: dict[tuple[str, int], int] = {}
    meta: list[tuple[str, int, int]] = []
    for u in spec.units:
        for k in range(SPECIES_UNITS[species][u.name]):
            ids[(u.name, k)] = len(ids) + 1
            meta.append((u.name, k, spec.unit_index(u.name)))
    if hide:
        canvas.skip = {ids[key] for key in hide if key in ids}
    draw_face(canvas, morph, severities, ids)
    img = canvas.result()
    out = photometric(img, rng) if augment else img
    boxes = canvas.boxes(list(ids.values()))
    instances = []
    for name, k, cls in meta:
        oid = ids[(name, k)]
        sev = severities[name][k]
        instances.append(Instance(name, k, cls, oid, sev, grade_of(sev, spec.units[cls]), boxes.get(oid)))
    return Rendered(out, canvas.owner_map(), instances, p)
