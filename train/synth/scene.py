"""Backgrounds and photometric variation (lighting, tint, blur, noise) for synthetic images."""

from __future__ import annotations

import cv2
import numpy as np

BACKGROUNDS = ("plain", "bars", "bedding", "stall")


def background(h: int, w: int, rng: np.random.Generator, kind: str | None = None) -> np.ndarray:
    """A BGR uint8 background ``(h, w, 3)``: cage wall, cage bars, bedding or a stall wall.

    Args:
        h, w: Size in pixels.
        rng: Random generator.
        kind: One of :data:`BACKGROUNDS`; random when ``None``.
    """
    kind = kind or str(rng.choice(BACKGROUNDS[:3]))
    grey = rng.uniform(60, 215)
    base = np.clip(grey * (1 + rng.uniform(-0.12, 0.12, size=3)), 0, 255)  # greys, muted tints
    if kind == "stall":
        base = np.array([70, 120, 160]) * rng.uniform(0.7, 1.2)
    top, bottom = base * rng.uniform(0.8, 1.15), base * rng.uniform(0.7, 1.1)
    ramp = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    img = (top[None, None, :] * (1 - ramp) + bottom[None, None, :] * ramp).repeat(w, 1)
    img = np.clip(img, 0, 255).astype(np.uint8)
    if kind == "bars":
        step = int(rng.integers(max(8, w // 16), max(12, w // 7)))
        col = tuple(float(x) for x in np.clip(base * rng.uniform(0.4, 1.6), 0, 255))
        thick = max(1, w // 160)
        for x in range(int(rng.integers(0, step)), w, step):
            cv2.line(img, (x, 0), (x, h), col, thick, cv2.LINE_AA)
    elif kind == "bedding":
        y0 = int(h * rng.uniform(0.55, 0.8))
        n = int((h - y0) * w / max(1.0, (w / 60) ** 2) / 6)
        xs = rng.integers(0, w, n)
        ys = rng.integers(y0, h, n)
        r = max(2, w // 90)
        tone = np.array([150, 190, 215]) * rng.uniform(0.6, 1.1)
        for x, y, f, a in zip(xs, ys, rng.uniform(0.7, 1.2, n), rng.uniform(0, 180, n), strict=True):
            col = tuple(float(c) for c in np.clip(tone * f, 0, 255))
            cv2.ellipse(img, (int(x), int(y)), (r * 2, r), float(a), 0, 360, col, -1, cv2.LINE_AA)
    elif kind == "stall":
        step = int(rng.integers(max(10, h // 10), max(14, h // 5)))
        for y in range(int(rng.integers(0, step)), h, step):
            cv2.line(img, (0, y), (w, y), tuple(float(c) for c in base * 0.55), max(1, h // 200), cv2.LINE_AA)
    return img


def lighting(h: int, w: int, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """A multiplicative lighting field with gain, gradient and colour tint, float32 ``(h, w, 3)``."""
    ang = rng.uniform(0, 2 * np.pi)
    ys = (np.arange(h, dtype=np.float32) / h - 0.5)[:, None]
    xs = (np.arange(w, dtype=np.float32) / w - 0.5)[None, :]
    grad = xs * np.float32(np.cos(ang)) + ys * np.float32(np.sin(ang))
    gain = rng.uniform(1 - 0.3 * strength, 1 + 0.2 * strength)
    field = np.float32(gain) * (1 + np.float32(rng.uniform(0, 0.5 * strength)) * grad)
    tint = (1 + rng.uniform(-0.07, 0.07, 3) * strength).astype(np.float32)
    return field[..., None] * tint[None, None, :]


def finish(
    img: np.ndarray, light: np.ndarray, sigma: float, noise_sd: float, rng: np.random.Generator
) -> np.ndarray:
    """Apply a lighting field, Gaussian blur (``sigma`` px) and sensor noise; returns BGR uint8."""
    out = img.astype(np.float32) * light
    if sigma > 0.3:
        out = cv2.GaussianBlur(out, (0, 0), sigma)
    if noise_sd > 0.5:
        out += rng.standard_normal(out.shape, dtype=np.float32) * np.float32(noise_sd)
    return np.clip(out, 0, 255).astype(np.uint8)


def photometric(img: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """Lighting gradient, colour tint, gain, Gaussian blur and sensor noise.

    Args:
        img: BGR uint8 ``(H, W, 3)``.
        rng: Random generator.
        strength: 0 disables every effect; 1 is the default range.

    Returns:
        A new BGR uint8 image ``(H, W, 3)``.
    """
    if strength <= 0:
        return img.copy()
    h, w = img.shape[:2]
    light = lighting(h, w, rng, strength)
    sigma = rng.uniform(0, 1.6 * strength) if rng.random() < 0.7 else 0.0
    return finish(img, light, sigma, rng.uniform(0, 7 * strength), rng)
