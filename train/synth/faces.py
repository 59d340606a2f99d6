"""Procedural frontal faces of rats, mice and goats whose action units change with their grade.

Every subject gets a :class:`Morphology` (head shape, coat, eye spacing, ear size, whisker lengths...)
that stays fixed across its images. :func:`draw_face` draws a frontal face on a :class:`Canvas` given
a per-instance *severity* in ``[0, 1]`` for every unit (0 = unit absent, 1 = obvious); grades are
the severity quantised to the unit's levels, and the geometry follows the severity:

* ``eye`` (orbital tightening): the lid aperture narrows to a slit, the orbit squeezes, creases appear.
* ``ear`` (rat ear changes / mouse ear position): ears rotate outward and back, move apart and down,
  fold (narrower, less pink pinna visible, a fold line) and become pointed.
* ``nose`` (rat nose flattening): the bulging bridge contours straighten and the muzzle highlight
  shrinks, the nose pad gets flatter and wider. (mouse nose bulge): a bulge grows on the bridge.
* ``cheek`` (mouse cheek bulge): the cheek contour bulges outwards.
* ``whiskers``: from a relaxed, drooping fan to whiskers pulled back (shorter in projection),
  straighter, raised and clumped together.
* ``face`` (goat, binary): ears droop and rotate back, eyes half close, the head is lowered
  (foreshortened) and the mouth tightens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from train.synth.draw import Canvas, Color, arc_pts, bezier, ellipse_pts, mix, rotate, shade

# units each species' face can draw, and how many instances of each are drawn
SPECIES_UNITS: dict[str, dict[str, int]] = {
    "rat": {"eye": 2, "ear": 2, "nose": 1, "whiskers": 1},
    "mouse": {"eye": 2, "nose": 1, "cheek": 2, "ear": 2, "whiskers": 1},
    "goat": {"face": 1},
}
COATS: dict[str, tuple[str, ...]] = {
    "rat": ("albino", "hooded", "black"),
    "mouse": ("white", "black", "agouti"),
    "goat": ("white", "brown", "black", "pied"),
}
# extent of a frontal face in face units (xmin, xmax, ymin, ymax), used to keep faces in frame
EXTENT: dict[str, tuple[float, float, float, float]] = {
    "rat": (-2.0, 2.0, -1.9, 1.9),
    "mouse": (-2.0, 2.0, -2.1, 1.8),
    "goat": (-2.0, 2.0, -1.9, 2.6),
}

WHITE: Color = (245.0, 245.0, 245.0)


@dataclass(frozen=True)
class Morphology:
    """Fixed look of one synthetic subject (face units; colours BGR 0..255).

    Attributes:
        species: ``rat``, ``mouse`` or ``goat``.
        coat: Coat name (see :data:`COATS`).
        size: Relative head size of this animal (multiplies the image scale).
        head_w: Half-width of the head.
        head_h: Vertical stretch of the head.
        taper: How much the head narrows towards the snout/muzzle.
        eye_dx: Horizontal distance of each eye from the midline.
        eye_y: Vertical eye position.
        eye_r: Eye radius.
        ear_size: Ear length.
        ear_dx: Horizontal ear base position.
        nose_w: Nose pad half-width.
        whisker_len: Whisker length.
        whisker_jitter: Relative length of each whisker, per side ``(2, n)``.
        fur, fur_light, skin, eye_col, whisker_col: Colours.
        blaze: White blaze on the forehead (hooded rats, pied goats).
        horns: Goat has horns.
        beard: Goat has a beard.
        fur_strokes: Fixed fur texture ``(n, 5)``: radius and angle inside the head outline, a
            direction jitter (radians), a length and a brightness factor per stroke.
    """

    species: str
    coat: str
    size: float
    head_w: float
    head_h: float
    taper: float
    eye_dx: float
    eye_y: float
    eye_r: float
    ear_size: float
    ear_dx: float
    nose_w: float
    whisker_len: float
    whisker_jitter: np.ndarray = field(repr=False, compare=False)
    fur: Color = (200.0, 200.0, 200.0)
    fur_light: Color = (230.0, 230.0, 230.0)
    skin: Color = (150.0, 150.0, 220.0)
    eye_col: Color = (20.0, 20.0, 20.0)
    whisker_col: Color = (220.0, 220.0, 220.0)
    blaze: bool = False
    horns: bool = False
    beard: bool = False
    fur_strokes: np.ndarray = field(default_factory=lambda: np.zeros((0, 5)), repr=False, compare=False)


def _jit(rng: np.random.Generator, c: tuple[float, float, float], amount: float = 0.08) -> Color:
    f = 1.0 + rng.uniform(-amount, amount)
    return tuple(float(np.clip(v * f * (1 + rng.uniform(-0.03, 0.03)), 0, 255)) for v in c)  # type: ignore[return-value]


def sample_morphology(species: str, rng: np.random.Generator, coat: str | None = None) -> Morphology:
    """Draw one subject's fixed morphology.

    Args:
        species: ``rat``, ``mouse`` or ``goat``.
        rng: Random generator (the subject's own stream).
        coat: Force a coat; random among :data:`COATS` when ``None``.
    """
    if species not in COATS:
        raise ValueError(f"no face model for species {species!r}; known: {sorted(COATS)}")
    coat = coat or str(rng.choice(COATS[species]))
    u = rng.uniform
    if species == "rat":
        fur = {"albino": (222, 236, 242), "hooded": (42, 58, 78), "black": (32, 31, 34)}[coat]
        skin = {"albino": (160, 150, 235), "hooded": (120, 120, 170), "black": (80, 80, 100)}[coat]
        eye = (50, 30, 185) if coat == "albino" else (18, 16, 16)
        wh = {"albino": (232, 238, 240), "hooded": (205, 208, 210), "black": (95, 95, 100)}[coat]
        geo = dict(
            head_w=u(0.92, 1.08), head_h=u(0.92, 1.1), taper=u(0.66, 0.76), eye_dx=u(0.56, 0.68),
            eye_y=u(-0.28, -0.14), eye_r=u(0.13, 0.17), ear_size=u(0.5, 0.62), ear_dx=u(0.5, 0.62),
            nose_w=u(0.12, 0.15), whisker_len=u(0.95, 1.2),
        )
    elif species == "mouse":
        fur = {"white": (226, 232, 236), "black": (36, 35, 38), "agouti": (62, 88, 116)}[coat]
        skin = {"white": (165, 155, 235), "black": (95, 95, 120), "agouti": (120, 125, 185)}[coat]
        eye = (55, 35, 190) if coat == "white" else (15, 14, 14)
        wh = {"white": (232, 236, 240), "black": (110, 110, 115), "agouti": (150, 160, 170)}[coat]
        geo = dict(
            head_w=u(0.9, 1.05), head_h=u(0.88, 1.02), taper=u(0.74, 0.82), eye_dx=u(0.5, 0.6),
            eye_y=u(-0.3, -0.18), eye_r=u(0.16, 0.2), ear_size=u(0.72, 0.88), ear_dx=u(0.45, 0.55),
            nose_w=u(0.09, 0.11), whisker_len=u(1.0, 1.25),
        )
    else:
        fur = {"white": (225, 232, 236), "brown": (45, 80, 130), "black": (35, 35, 38),
               "pied": (50, 95, 150)}[coat]
        skin = (130, 140, 175) if coat in ("white", "pied") else (70, 70, 80)
        eye = (40, 150, 200)  # amber iris
        wh = fur
        geo = dict(
            head_w=u(0.85, 1.0), head_h=u(0.95, 1.1), taper=u(0.45, 0.55), eye_dx=u(0.74, 0.84),
            eye_y=u(-0.42, -0.3), eye_r=u(0.11, 0.14), ear_size=u(0.85, 1.05), ear_dx=u(0.7, 0.8),
            nose_w=u(0.1, 0.13), whisker_len=0.0,
        )
    fur_c = _jit(rng, fur)
    light = mix(fur_c, WHITE, 0.07) if np.mean(fur_c) < 120 else shade(fur_c, 1.03)
    return Morphology(
        species=species,
        coat=coat,
        size=float(u(0.88, 1.12)),
        whisker_jitter=rng.uniform(0.7, 1.15, size=(2, int(rng.integers(5, 8)))),
        fur=fur_c,
        fur_light=light,
        skin=_jit(rng, skin, 0.05),
        eye_col=eye,
        whisker_col=wh,
        blaze=bool(coat == "pied" or (coat == "hooded" and rng.random() < 0.5)),
        horns=bool(species == "goat" and rng.random() < 0.5),
        beard=bool(species == "goat" and rng.random() < 0.4),
        **{k: float(v) for k, v in geo.items()},
        fur_strokes=np.stack(
            [
                np.sqrt(rng.uniform(0.02, 1, 90)) * 0.92,
                rng.uniform(0, 2 * np.pi, 90),
                rng.normal(0, 0.35, 90),
                rng.uniform(0.07, 0.15, 90),
                rng.uniform(0.82, 1.18, 90),
            ],
            1,
        ),
    )


def _fur(
    c: Canvas, m: Morphology, top: float, bottom: float, y0: float, taper_pow: float, ny: float, oid: int = 0
) -> None:
    """Short fur strokes inside the head outline, flowing away from the nose (fixed per subject)."""
    dark = float(np.mean(m.fur)) < 90
    for r, t, jit, length, f in m.fur_strokes:
        ct, st = math.cos(t), math.sin(t)
        x = r * m.head_w * ct * (1 - m.taper * max(st, 0.0) ** taper_pow)
        y = y0 + r * st * (top if st < 0 else bottom) * m.head_h
        ang = math.atan2(y - ny, x if abs(x) > 1e-3 else 1e-3) + jit
        d = np.array([math.cos(ang), math.sin(ang)]) * length
        col = shade(m.fur, 1 + (f - 1) * (2.5 if dark else 0.6))
        c.line(np.array([[x, y], [x + d[0], y + d[1]]]), col, 0.012, oid, 0.05)


# ------------------------------------------------------------------------------------ rodents
def _head_outline(m: Morphology, top: float, bottom: float, n: int = 72) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    x0, y0 = np.cos(t), np.sin(t)
    y = np.where(y0 < 0, y0 * top, y0 * bottom) * m.head_h
    x = m.head_w * x0 * (1 - m.taper * np.clip(y0, 0, 1) ** 1.4)
    return np.stack([x, y], 1)


def _eye(
    c: Canvas,
    m: Morphology,
    side: int,
    v: float,
    oid: int,
    goat: bool = False,
    at: tuple[float, float] | None = None,
) -> None:
    """Eye with orbit: aperture ``1 - 0.92 v`` (goat: ``1 - 0.6 v``), creases for ``v > 0.35``."""
    ex, ey = at if at is not None else (side * m.eye_dx, m.eye_y * m.head_h)
    r = m.eye_r
    ang = -side * (8 if goat else 14)
    a = 1 - (0.6 if goat else 0.92) * v
    dark = float(np.mean(m.fur)) < 90
    socket = shade(m.fur, 1.45) if dark else mix(shade(m.fur, 0.86), m.skin, 0.15)
    c.ellipse(ex, ey, r * 1.6, r * 1.45 * (0.55 + 0.45 * a), socket, ang, oid, 0.3)
    u = np.linspace(-1, 1, 19)
    bump = (1 - u**2) ** 0.8
    upper = np.stack([ex + u * r * 1.25, ey - r * a * bump], 1)
    lower = np.stack([ex + u[::-1] * r * 1.25, ey + r * a * 0.85 * bump[::-1]], 1)
    lid_col = shade(socket, 0.45) if not dark else (12.0, 12.0, 12.0)
    if a > 0.12:
        c.poly(rotate(np.vstack([upper, lower]), ang, (ex, ey)), m.eye_col, oid, 0.35)
        if goat:  # horizontal pupil
            c.ellipse(ex, ey, r * 0.8, r * 0.22 * a, (15, 15, 15), ang, oid, 0.36)
        hl = rotate(np.array([[ex + 0.3 * r, ey - 0.35 * r * a]]), ang, (ex, ey))[0]
        c.ellipse(hl[0], hl[1], r * 0.22, r * 0.18 * a, (235, 235, 240), 0, oid, 0.37, 12)
    c.line(rotate(upper, ang, (ex, ey)), lid_col, r * 0.14, oid, 0.36)
    if v > 0.35:
        k = (v - 0.35) / 0.65
        crease = shade(socket, 0.7) if not dark else shade(socket, 1.4)
        for dy, span in ((-1.15, 0.95), (1.05, 0.8), (-1.45, 0.6)):
            if dy == -1.45 and k < 0.5:
                continue
            p0 = np.array([ex - span * k * r * 1.2, ey + dy * r * (0.6 + 0.4 * a)])
            p2 = np.array([ex + span * k * r * 1.2, p0[1]])
            p1 = (p0 + p2) / 2 + np.array([0, -np.sign(dy) * 0.25 * r])
            c.line(rotate(bezier(p0, p1, p2, 8), ang, (ex, ey)), crease, r * 0.09, oid, 0.34)


def _rodent_ear(c: Canvas, m: Morphology, side: int, v: float, oid: int, mouse: bool) -> None:
    """Ear: rotates outward/back and drops with ``v``, folds (narrower, less pinna) and sharpens."""
    bx = side * (m.ear_dx + (0.3 if mouse else 0.25) * v) * m.head_w
    by = (-0.82 + (0.26 if mouse else 0.2) * v) * m.head_h
    tilt = side * ((15 if mouse else 22) + (58 if mouse else 50) * v)
    h = m.ear_size * (1 - 0.1 * v)
    w = m.ear_size * (0.85 if mouse else 0.72) * (1 - 0.42 * v)
    k = 0.04 + 0.8 * v
    u = np.linspace(-1, 1, 25)
    prof = (1 - k) * np.sqrt(1 - u**2) + k * (1 - np.abs(u))
    outer = np.vstack([np.stack([u * w, -h * prof], 1), [[w * 0.9, 0.35 * h], [-w * 0.9, 0.35 * h]]])
    wi = w * max(0.12, 0.72 - 0.5 * v)
    inner = np.vstack([np.stack([u * wi - side * 0.25 * v * w, -0.82 * h * prof], 1), [[0, 0.2 * h]]])
    ear_col = mix(m.fur, m.skin, 0.35) if m.coat in ("albino", "white") else shade(m.fur, 1.15)
    c.poly(rotate(outer, tilt) + np.array([bx, by]), ear_col, oid, -0.4)
    c.poly(rotate(inner, tilt) + np.array([bx, by]), m.skin, oid, -0.4)
    if v > 0.45:
        fold = np.array([[-side * 0.35 * w, 0.1 * h], [-side * 0.1 * w, -0.75 * h]])
        c.line(rotate(fold, tilt) + np.array([bx, by]), shade(ear_col, 0.6), 0.035, oid, -0.4)


def _whiskers(c: Canvas, m: Morphology, ny: float, v: float, oid: int) -> None:
    """Whisker pads and whiskers: relaxed fan -> pulled back, straight, raised, clumped."""
    pad_col = mix(m.fur, m.skin, 0.2) if m.coat in ("albino", "white") else shade(m.fur, 1.3)
    for side in (-1, 1):
        px, py = side * 0.24 * m.head_w, ny - 0.04
        c.ellipse(px, py, 0.15, 0.11, pad_col, side * 10, oid, 0.85, 20)
        for row in range(3):
            for col in range(3):
                fx, fy = px + side * (col - 1) * 0.07, py + (row - 1) * 0.055
                c.ellipse(fx, fy, 0.012, 0.012, shade(pad_col, 0.6), 0, oid, 0.86, 6)
        jit = m.whisker_jitter[0 if side < 0 else 1]
        n = len(jit)
        for j in range(n):
            t = j / (n - 1)
            theta = math.radians((-14 * v) + (-28 + 60 * t) * (1 - 0.65 * v))
            ox, oy = px + side * 0.05, py + (t - 0.5) * 0.12
            length = m.whisker_len * jit[j] * (1 - 0.45 * v)
            d = np.array([side * math.cos(theta), math.sin(theta)])
            p0 = np.array([ox, oy])
            p2 = p0 + length * d
            p1 = p0 + 0.5 * length * d + np.array([0, (0.2 * (1 - v) + 0.02) * length])
            c.line(bezier(p0, p1, p2, 10), m.whisker_col, 0.012, oid, 0.9)


def _rodent_nose(c: Canvas, m: Morphology, ny: float, v: float, oid: int, mouse: bool) -> None:
    """Nose unit. Rat: bridge bulge flattens with ``v``. Mouse: a bridge bulge grows with ``v``."""
    dark = float(np.mean(m.fur)) < 90
    contour = shade(m.fur, 1.45) if dark else shade(m.fur, 0.8)
    top = 0.3 * m.head_h
    if mouse:
        bump = 0.04 + 0.14 * v
        c.ellipse(0, ny - 0.2, 0.08 + 0.07 * v, bump, mix(m.fur, WHITE, 0.1 + 0.2 * v), 0, oid, 0.9)
        arc = ellipse_pts(0, ny - 0.2, 0.08 + 0.07 * v, bump, 0, 24)[12:]
        c.line(arc, contour, 0.025, oid, 0.9)
        for side in (-1, 1):
            c.line(bezier((side * 0.12, top + 0.15), (side * 0.13, ny - 0.35), (side * 0.1, ny - 0.1)),
                   contour, 0.02, oid, 0.7)
    else:
        bulge = 0.16 * (1 - v) + 0.01
        hl = mix(m.fur, WHITE, 0.1 * (1 - v)) if dark else shade(m.fur, 1.0 + 0.04 * (1 - v))
        c.ellipse(0, (top + ny) / 2, 0.1 + 0.1 * (1 - v), (ny - top) / 2 * 0.85, hl, 0, oid, 0.7)
        for side in (-1, 1):
            p0 = (side * 0.2, top)
            p2 = (side * 0.13 * (1 + 0.3 * v), ny - 0.06)
            p1 = (side * (0.2 + bulge), (top + ny) / 2)
            c.line(bezier(p0, p1, p2), contour, 0.022, oid, 0.7)
    # nose pad: rounded, flatter and wider with v (rat), constant for the mouse
    w = m.nose_w * (1 + (0.0 if mouse else 0.3) * v)
    h = m.nose_w * 0.8 * (1 - (0.0 if mouse else 0.45) * v)
    u = np.linspace(-1, 1, 21)
    upper = np.stack([u * w, ny - h * 0.5 * np.sqrt(1 - u**2) ** 0.5], 1)
    lower = np.stack([u[::-1] * w * 0.95, ny + h * (1 - u[::-1] ** 2) ** 1.2], 1)
    c.poly(np.vstack([upper, lower]), m.skin, oid, 1.0)
    for side in (-1, 1):
        c.ellipse(side * 0.42 * w, ny + 0.1 * h, 0.22 * w, 0.12 * w + 0.2 * h, shade(m.skin, 0.35),
                  side * 35, oid, 1.0, 14)
    c.line(np.array([[0, ny + 0.3 * h], [0, ny + h + 0.02]]), shade(m.skin, 0.5), 0.02, oid, 1.0)


def _draw_rodent(
    c: Canvas, m: Morphology, sev: dict[str, list[float]], ids: dict[tuple[str, int], int]
) -> None:
    mouse = m.species == "mouse"
    bottom = 1.25 if mouse else 1.35
    ny = (bottom - 0.28) * m.head_h
    # body/shoulders behind the head
    body = (205.0, 214.0, 220.0) if m.coat == "hooded" else shade(m.fur, 0.92)
    c.ellipse(0, 1.55 * m.head_h, 1.45 * m.head_w, 0.95, body, 0, 0, -0.5)
    for k, side in enumerate((-1, 1)):
        _rodent_ear(c, m, side, sev["ear"][k], ids.get(("ear", k), 0), mouse)
    c.poly(_head_outline(m, 1.05, bottom), m.fur, 0, 0.0)
    _fur(c, m, 1.05, bottom * 0.8, 0.0, 1.4, ny)
    c.ellipse(0, -0.55 * m.head_h, 0.55 * m.head_w, 0.35, m.fur_light if not m.blaze else m.fur, 0, 0, 0.2)
    if m.blaze:
        stripe = np.array([[-0.12, -1.0], [0.12, -1.0], [0.06, 0.05], [-0.06, 0.05]]) * (1, m.head_h)
        c.poly(stripe, (228.0, 234.0, 238.0), 0, 0.4)
    # cheeks (a unit for the mouse; part of the head for the rat)
    for k, side in enumerate((-1, 1)):
        cv_ = sev["cheek"][k] if mouse else 0.3
        oid = ids.get(("cheek", k), 0) if mouse else 0
        cx, cy = side * 0.5 * m.head_w, 0.42 * m.head_h
        ax, ay = 0.24 + 0.14 * cv_, 0.2 + 0.08 * cv_
        col = mix(m.fur, WHITE, 0.03 + 0.08 * cv_) if float(np.mean(m.fur)) < 90 else shade(m.fur, 0.97)
        c.ellipse(cx + side * 0.08 * cv_, cy, ax, ay, col, side * 25, oid, 0.5)
        t0, t1 = (-80, 80) if side > 0 else (100, 260)
        arc = arc_pts(cx + side * 0.08 * cv_, cy, ax, ay, side * 25, t0, t1, 16)
        c.line(arc, shade(col, 0.85 if np.mean(m.fur) > 90 else 1.35), 0.015 + 0.015 * cv_, oid, 0.5)
    for k, side in enumerate((-1, 1)):
        _eye(c, m, side, sev["eye"][k], ids.get(("eye", k), 0))
    _whiskers(c, m, ny, sev["whiskers"][0], ids.get(("whiskers", 0), 0))
    _rodent_nose(c, m, ny, sev["nose"][0], ids.get(("nose", 0), 0), mouse)
    # mouth below the nose (not a unit)
    mouth_y = ny + m.nose_w * 0.8 + 0.08
    for side in (-1, 1):
        c.line(bezier((0, mouth_y), (side * 0.06, mouth_y + 0.05), (side * 0.12, mouth_y + 0.02), 6),
               shade(m.skin, 0.5), 0.018, 0, 0.95)


# --------------------------------------------------------------------------------------- goat
def _goat_ear(c: Canvas, m: Morphology, side: int, v: float, oid: int) -> None:
    bx, by = side * (m.ear_dx + 0.18 * v) * m.head_w, -0.72 * m.head_h
    droop = side * (-8 + 58 * v)  # rotation from horizontal; + is downward on the right side
    length = m.ear_size * (1 - 0.15 * v)
    u = np.linspace(0, 1, 16)
    widths = 0.17 * np.sin(np.pi * np.clip(u * 1.05, 0, 1)) ** 0.7 + 0.02
    top = np.stack([side * u * length, -widths], 1)
    bot = np.stack([side * u[::-1] * length, widths[::-1]], 1)
    leaf = np.vstack([top, bot])
    ear_col = shade(m.fur, 0.82) if float(np.mean(m.fur)) > 90 else shade(m.fur, 1.25)
    c.poly(rotate(leaf, droop) + np.array([bx, by]), ear_col, oid, -0.3)
    inner = np.vstack([np.stack([side * u * length * 0.85, -widths * 0.5], 1),
                       np.stack([side * u[::-1] * length * 0.85, widths[::-1] * 0.3], 1)])
    c.poly(rotate(inner, droop) + np.array([bx, by]), mix(m.skin, m.fur, 0.3 + 0.4 * v), oid, -0.3)


def _draw_goat(
    c: Canvas, m: Morphology, sev: dict[str, list[float]], ids: dict[tuple[str, int], int]
) -> None:
    v = sev["face"][0]
    oid = ids.get(("face", 0), 0)
    c.ellipse(0, 2.3 * m.head_h, 1.3, 1.0, shade(m.fur, 0.88), 0, 0, -1.5)  # neck
    if m.horns:
        for side in (-1, 1):
            p = bezier((side * 0.3, -0.95 * m.head_h), (side * 0.45, -1.7), (side * 0.85, -1.75), 14)
            wdt = np.linspace(0.11, 0.02, len(p))[:, None]
            poly = np.vstack([p + wdt * (side, 0.3), (p - wdt * (side, 0.3))[::-1]])
            c.poly(poly, (120.0, 135.0, 150.0), oid, -0.2)
    for side in (-1, 1):
        _goat_ear(c, m, side, v, oid)
    t = np.linspace(0, 2 * np.pi, 80, endpoint=False)
    x0, y0 = np.cos(t), np.sin(t)
    y = np.where(y0 < 0, y0 * 1.15, y0 * 2.0) * m.head_h - 0.15
    x = m.head_w * x0 * (1 - m.taper * np.clip(y0, 0, 1) ** 1.2)
    c.poly(np.stack([x, y], 1), m.fur, oid, 0.0)
    _fur(c, m, 1.1, 1.9, -0.15, 1.2, 1.55 * m.head_h, oid)  # strokes are part of the face
    if m.blaze:
        c.poly(np.array([[-0.18, -1.2], [0.18, -1.2], [0.14, 1.2], [-0.14, 1.2]]) * (1, m.head_h),
               (230.0, 236.0, 240.0), oid, 0.3)
    if m.beard:
        beard = np.array([[-0.25, 1.7], [0.25, 1.7], [0.0, 2.25]]) * (1, m.head_h)
        c.poly(beard, shade(m.fur, 0.8), oid, 0.6)
    for side in (-1, 1):
        _eye(c, m, side, v, oid, goat=True)
    # muzzle: nostrils and mouth (mouth straighter and tighter in pain)
    my = 1.55 * m.head_h
    c.ellipse(0, my, 0.42 * m.head_w, 0.28, mix(m.fur, m.skin, 0.45), 0, oid, 0.8)
    for side in (-1, 1):
        c.ellipse(side * 0.17, my - 0.08, 0.07, 0.035, (30.0, 30.0, 35.0), side * 40, oid, 0.9, 12)
    curve = 0.08 * (1 - v)
    c.line(bezier((-0.22, my + 0.15), (0, my + 0.15 + curve), (0.22, my + 0.15), 10), (40.0, 40.0, 50.0),
           0.025, oid, 0.9)


def draw_face(
    c: Canvas, m: Morphology, sev: dict[str, list[float]], ids: dict[tuple[str, int], int]
) -> None:
    """Draw a frontal face.

    Args:
        c: Canvas whose pose is already set (centre, scale, roll, yaw).
        m: The subject's morphology.
        sev: Severity in ``[0, 1]`` per unit name, one value per drawn instance
            (``SPECIES_UNITS[m.species]`` gives the counts; instance 0 is the image-left one).
        ids: ``(unit, instance) -> owner id`` for the instances to label; others are drawn with id 0.
    """
    if m.species == "goat":
        _draw_goat(c, m, sev, ids)
    else:
        _draw_rodent(c, m, sev, ids)


# ------------------------------------------------------------------------ side and back views
def draw_side(
    c: Canvas, m: Morphology, sev: dict[str, list[float]], ids: dict[tuple[str, int], int], direction: int
) -> None:
    """Draw the animal in profile, snout towards ``direction`` (+1 image right, -1 left).

    Rodents show their near eye, near ear, nose tip and whiskers (labelled as instance 0 of each
    unit when ``ids`` has them); the goat's profile is drawn unlabelled unless ``ids`` has ``face``.
    """
    d = direction
    goat = m.species == "goat"
    c.ellipse(-d * (1.9 if goat else 1.5), 0.95, 2.0 if goat else 1.8, 1.0, shade(m.fur, 0.9), 0, 0, -1)
    if not goat:
        tail = bezier((-d * 3.2, 1.3), (-d * 4.0, 1.9), (-d * 4.6, 1.5), 12)
        c.line(tail, mix(m.skin, m.fur, 0.3), 0.09, 0, -1)
    t = np.linspace(0, 2 * np.pi, 60, endpoint=False)
    ct, st = np.cos(t), np.sin(t)
    snout = np.clip(d * ct, 0, 1) ** 1.5
    length = 1.9 if goat else 1.6
    x = np.where(d * ct > 0, ct * (0.9 + (length - 0.9) * snout), ct * 0.9)
    y = st * 0.72 * (1 - 0.45 * snout) + 0.35 * snout
    face_id = ids.get(("face", 0), 0)
    if goat and m.horns:
        horn = bezier((-d * 0.1, -0.6), (-d * 0.5, -1.4), (-d * 1.0, -1.3), 12)
        c.line(horn, (120.0, 135.0, 150.0), 0.12, face_id, -0.2)
    # near ear behind the eye
    v_ear = sev["face"][0] if goat else sev["ear"][0]
    ear_id = face_id if goat else ids.get(("ear", 0), 0)
    ang = -d * (20 + 45 * v_ear) if not goat else d * (60 + 50 * v_ear)
    ear = ellipse_pts(0, -0.38 * m.ear_size, 0.28 * m.ear_size * (1 - 0.35 * v_ear), 0.45 * m.ear_size,
                      0, 24)
    base = np.array([-d * 0.35, -0.5])
    c.poly(rotate(ear, ang) + base, shade(m.fur, 1.1), ear_id, -0.2)
    c.poly(rotate(ear * 0.6, ang) + base, m.skin, ear_id, -0.2)
    c.poly(np.stack([x, y], 1), m.fur, face_id, 0)
    v_eye = sev["face"][0] if goat else sev["eye"][0]
    _eye(c, m, d, v_eye, face_id if goat else ids.get(("eye", 0), 0), goat=goat, at=(d * 0.3, -0.22))
    tip = (d * (length - 0.05), 0.33)
    nose_id = face_id if goat else ids.get(("nose", 0), 0)
    c.ellipse(tip[0], tip[1], 0.1, 0.09, m.skin, 0, nose_id, 1)
    if not goat:
        wid = ids.get(("whiskers", 0), 0)
        v_w = sev["whiskers"][0]
        for j, f in enumerate(m.whisker_jitter[0]):
            theta = math.radians(-25 + 50 * j / max(1, len(m.whisker_jitter[0]) - 1)) * (1 - 0.6 * v_w)
            p0 = np.array([tip[0] - d * 0.15, tip[1] + 0.03])
            dvec = np.array([d * math.cos(theta) * (0.6 - 0.9 * v_w), math.sin(theta)])
            p2 = p0 + m.whisker_len * f * (1 - 0.4 * v_w) * dvec / max(1e-6, np.linalg.norm(dvec))
            c.line(bezier(p0, (p0 + p2) / 2 + (0, 0.1), p2, 8), m.whisker_col, 0.012, wid, 1)


def draw_back(c: Canvas, m: Morphology) -> None:
    """Draw the animal turned away from the camera (no action unit is visible)."""
    goat = m.species == "goat"
    c.ellipse(0, 0.9, 1.5, 1.25, shade(m.fur, 0.92), 0, 0, -1)
    if not goat:
        c.line(bezier((0.0, 2.0), (0.4, 2.6), (1.2, 2.7), 12), mix(m.skin, m.fur, 0.3), 0.09, 0, 0)
    for side in (-1, 1):
        if goat:
            ear = rotate(ellipse_pts(0, 0, 0.55 * m.ear_size, 0.16, 0, 20), side * 15)
            ear = ear + np.array([side * 0.9, -0.55])
        else:
            k = m.ear_size / 0.55
            ear = ellipse_pts(side * 0.55, -1.05, 0.3 * k, 0.36 * k, 0, 24)
        c.poly(ear, shade(m.fur, 0.8), 0, -0.3)
    c.ellipse(0, -0.45, 0.85, 0.8, shade(m.fur, 0.97), 0, 0, 0)
    if goat and m.horns:
        for side in (-1, 1):
            c.line(bezier((side * 0.3, -1.0), (side * 0.45, -1.6), (side * 0.8, -1.7), 10),
                   (120.0, 135.0, 150.0), 0.1, 0, 0)
