"""Drawing helpers: a canvas that draws face-coordinate shapes into an image and an owner map.

Faces are described in *face units*: the origin is the middle of the face at eye level, ``x`` points
to the image right, ``y`` down and ``z`` towards the camera; one unit is the half-width of the head.
:class:`Canvas` projects such points with a small yaw (pseudo-3D, using each shape's depth ``z``), a
roll, a scale (pixels per face unit) and a translation, then draws them into a supersampled copy of
the image (``ss`` times larger) and, with the very same rasterisation, into an ``owner`` map (uint8)
of that size: every pixel holds the id of the labelled unit instance drawn last on it (0 = no unit).
Because later shapes overwrite earlier ones in both, the owner map holds exactly the *visible* pixels
of every unit instance. :meth:`Canvas.result` averages ``ss x ss`` blocks (anti-aliasing), so a unit
changes exactly the output pixels whose block holds one of its owner pixels, and :meth:`Canvas.boxes`
gives boxes that contain every pixel a unit changed and nothing more.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

_SHIFT = 4  # sub-pixel bits for cv2 drawing
_ONE = 1 << _SHIFT

Color = tuple[float, float, float]


def ellipse_pts(
    cx: float, cy: float, ax: float, ay: float, angle_deg: float = 0.0, n: int = 40
) -> np.ndarray:
    """Points on an ellipse, shape ``(n, 2)``."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    a = math.radians(angle_deg)
    x, y = ax * np.cos(t), ay * np.sin(t)
    return np.stack([cx + x * math.cos(a) - y * math.sin(a), cy + x * math.sin(a) + y * math.cos(a)], 1)


def arc_pts(
    cx: float, cy: float, ax: float, ay: float, angle_deg: float, t0: float, t1: float, n: int = 16
) -> np.ndarray:
    """Points on an elliptic arc from parameter angle ``t0`` to ``t1`` (degrees), shape ``(n, 2)``."""
    t = np.radians(np.linspace(t0, t1, n))
    a = math.radians(angle_deg)
    x, y = ax * np.cos(t), ay * np.sin(t)
    return np.stack([cx + x * math.cos(a) - y * math.sin(a), cy + x * math.sin(a) + y * math.cos(a)], 1)


def bezier(p0: np.ndarray, p1: np.ndarray, p2: np.ndarray, n: int = 12) -> np.ndarray:
    """Quadratic Bezier curve from ``p0`` to ``p2`` with control ``p1``, shape ``(n, 2)``."""
    t = np.linspace(0, 1, n)[:, None]
    p0, p1, p2 = (np.asarray(p, dtype=np.float64) for p in (p0, p1, p2))
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2


def rotate(pts: np.ndarray, angle_deg: float, origin: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Rotate points ``(N, 2)`` about ``origin`` (positive = clockwise on screen, y down)."""
    a = math.radians(angle_deg)
    c, s = math.cos(a), math.sin(a)
    o = np.asarray(origin, dtype=np.float64)
    d = np.asarray(pts, dtype=np.float64) - o
    return np.stack([d[:, 0] * c - d[:, 1] * s, d[:, 0] * s + d[:, 1] * c], 1) + o


def shade(color: Color, factor: float) -> Color:
    """Scale a BGR colour (clipped to 0..255)."""
    return tuple(float(min(255.0, max(0.0, c * factor))) for c in color)  # type: ignore[return-value]


def mix(a: Color, b: Color, t: float) -> Color:
    """Linear blend ``a*(1-t) + b*t``."""
    return tuple(float(x * (1 - t) + y * t) for x, y in zip(a, b, strict=True))  # type: ignore[return-value]


class Canvas:
    """Draws face-coordinate shapes into a supersampled BGR image and a uint8 owner map.

    Args:
        image: BGR uint8 background ``(H, W, 3)`` (not modified; see :meth:`result`).
        ss: Supersampling factor (2 gives smooth edges).
        track_owner: Keep the owner map (needed for :meth:`boxes`).
    """

    def __init__(self, image: np.ndarray, ss: int = 2, track_owner: bool = True) -> None:
        h, w = image.shape[:2]
        self.size = (h, w)
        self.ss = int(ss)
        self.image = cv2.resize(image, (w * self.ss, h * self.ss), interpolation=cv2.INTER_NEAREST)
        self.owner = np.zeros((h * self.ss, w * self.ss), np.uint8) if track_owner else None
        self.skip: set[int] = set()  # owner ids not to draw at all (used to test label boxes)
        self.set_pose(0.0, 0.0, 1.0)

    def set_pose(
        self,
        cx: float,
        cy: float,
        scale: float,
        roll_deg: float = 0.0,
        yaw_deg: float = 0.0,
        sy: float = 1.0,
    ) -> None:
        """Set the projection: centre in pixels, pixels per face unit, roll, yaw, vertical squash."""
        self.cx, self.cy, self.scale = cx, cy, scale
        self._cr, self._sr = math.cos(math.radians(roll_deg)), math.sin(math.radians(roll_deg))
        self._cy_, self._sy_ = math.cos(math.radians(yaw_deg)), math.sin(math.radians(yaw_deg))
        self.sy = sy

    def project(self, pts: np.ndarray, z: float | np.ndarray = 0.0) -> np.ndarray:
        """Face units ``(N, 2)`` (+ depth) -> pixel coordinates ``(N, 2)`` float64."""
        p = np.asarray(pts, dtype=np.float64)
        x = p[:, 0] * self._cy_ + np.asarray(z, dtype=np.float64) * self._sy_
        y = p[:, 1] * self.sy
        xr = x * self._cr - y * self._sr
        yr = x * self._sr + y * self._cr
        return np.stack([self.cx + self.scale * xr, self.cy + self.scale * yr], 1)

    def px(self, length: float) -> float:
        """A length in face units, in pixels."""
        return length * self.scale

    def _int(self, pix: np.ndarray) -> np.ndarray:
        # pixel centres: output pixel (i, j) covers supersampled pixels ss*i .. ss*i + ss - 1
        p = (pix + 0.5) * self.ss - 0.5
        return np.round(p * _ONE).astype(np.int32).reshape(-1, 1, 2)

    def result(self) -> np.ndarray:
        """The drawn image at the output size, BGR uint8 ``(H, W, 3)`` (block average)."""
        h, w = self.size
        if self.ss == 1:
            return self.image.copy()
        return cv2.resize(self.image, (w, h), interpolation=cv2.INTER_AREA)

    def boxes(self, ids: list[int]) -> dict[int, tuple[int, int, int, int]]:
        """Output-pixel boxes ``(x1, y1, x2, y2)`` (exclusive ends) of each id's visible pixels.

        Args:
            ids: Instance ids to measure.

        Returns:
            Id -> box, only for ids with at least one visible pixel.
        """
        if self.owner is None:
            raise ValueError("this canvas keeps no owner map")
        s = self.ss
        out: dict[int, tuple[int, int, int, int]] = {}
        for i in ids:
            x, y, bw, bh = cv2.boundingRect((self.owner == i).astype(np.uint8))
            if bw == 0 or bh == 0:
                continue
            out[i] = (x // s, y // s, -(-(x + bw) // s), -(-(y + bh) // s))
        return out

    def owner_map(self) -> np.ndarray:
        """Owner map at the output size (the id holding most of each block), uint8 ``(H, W)``."""
        if self.owner is None:
            raise ValueError("this canvas keeps no owner map")
        return self.owner[:: self.ss, :: self.ss].copy()

    def poly(self, pts: np.ndarray, color: Color, owner: int = 0, z: float | np.ndarray = 0.0) -> None:
        """Fill a polygon given in face units."""
        if owner in self.skip:
            return
        ip = self._int(self.project(pts, z))
        cv2.fillPoly(self.image, [ip], color, cv2.LINE_8, _SHIFT)
        if self.owner is not None:
            cv2.fillPoly(self.owner, [ip], int(owner), cv2.LINE_8, _SHIFT)

    def line(
        self,
        pts: np.ndarray,
        color: Color,
        width: float,
        owner: int = 0,
        z: float | np.ndarray = 0.0,
        closed: bool = False,
    ) -> None:
        """Draw a polyline given in face units; ``width`` in face units (at least 1 pixel)."""
        if owner in self.skip:
            return
        ip = self._int(self.project(pts, z))
        t = max(self.ss, round(self.px(width) * self.ss))
        cv2.polylines(self.image, [ip], closed, color, t, cv2.LINE_8, _SHIFT)
        if self.owner is not None:
            cv2.polylines(self.owner, [ip], closed, int(owner), t, cv2.LINE_8, _SHIFT)

    def ellipse(
        self,
        cx: float,
        cy: float,
        ax: float,
        ay: float,
        color: Color,
        angle: float = 0.0,
        owner: int = 0,
        z: float = 0.0,
        n: int = 36,
    ) -> None:
        """Fill an ellipse given in face units."""
        self.poly(ellipse_pts(cx, cy, ax, ay, angle, n), color, owner, z)
