"""Frame quality for frame selection (the job of the classic "Rodent Face Finder").

A frame is worth scoring when the face is all there, sharp, big enough and seen from the front. The
quality score in ``[0, 1]`` combines five parts, each in ``[0, 1]``:

* ``confidence``: mean detector confidence of the boxes selected for scoring.
* ``completeness``: share of the required unit instances present (RGS: 2 eyes + 2 ears + 1 nose = 5
  slots; 4 of 5 found gives 0.8).
* ``sharpness``: variance of the Laplacian of the face region (the union of the selected boxes,
  resized so its longer side is ``sharp_side`` pixels), mapped to ``v / (v + sharp_half)``.
* ``size``: the face region's shorter side relative to ``target_face_px`` in original pixels (capped at 1).
* ``frontalness``: for scales with two eyes: size symmetry of the eyes, levelness of the eye line and
  how well the nose sits between the eyes; 0.25 with only one eye visible (profile); not applicable
  (left out) for scales without a paired eye unit (goat face).

``score = completeness × weighted mean of the other parts`` (so a frame missing required units ranks
low however sharp it is). Weights and constants live in :class:`QualityConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from edge.results import Detections
from edge.scales import ScaleSpec
from edge.scoring import select_boxes


@dataclass(frozen=True)
class QualityConfig:
    """Constants of the quality score.

    Attributes:
        weights: Weight of each part (``confidence``, ``sharpness``, ``size``, ``frontalness``).
        sharp_side: Longer side (pixels) the face region is resized to before the Laplacian.
        sharp_half: Laplacian variance that maps to sharpness 0.5.
        target_face_px: Face region shorter side (original pixels) that counts as fully big enough.
        margin: Fractional margin added around the union of the boxes.
    """

    weights: dict[str, float] = field(
        default_factory=lambda: {"confidence": 1.0, "sharpness": 1.0, "size": 1.0, "frontalness": 1.0}
    )
    sharp_side: int = 160
    sharp_half: float = 60.0
    target_face_px: float = 96.0
    margin: float = 0.1


@dataclass
class QualityReport:
    """Quality of one frame.

    Attributes:
        score: Overall quality in ``[0, 1]``.
        parts: Each part's value (``None`` when not applicable).
        face_box: ``x1 y1 x2 y2`` of the face region in original pixels, or ``None`` with no boxes.
    """

    score: float
    parts: dict[str, float | None]
    face_box: tuple[float, float, float, float] | None

    def __float__(self) -> float:
        return float(self.score)


def face_region(
    dets: Detections, idx: np.ndarray, shape: tuple[int, ...], margin: float = 0.1
) -> tuple[int, int, int, int] | None:
    """Union of the boxes ``idx`` with a margin, clipped to the image, as integer ``x1 y1 x2 y2``."""
    if idx.size == 0:
        return None
    b = dets.xyxy[idx]
    x1, y1 = b[:, 0].min(), b[:, 1].min()
    x2, y2 = b[:, 2].max(), b[:, 3].max()
    mx, my = (x2 - x1) * margin, (y2 - y1) * margin
    h, w = shape[:2]
    r = (
        int(max(0, np.floor(x1 - mx))),
        int(max(0, np.floor(y1 - my))),
        int(min(w, np.ceil(x2 + mx))),
        int(min(h, np.ceil(y2 + my))),
    )
    return r if r[2] > r[0] and r[3] > r[1] else None


def laplacian_variance(gray: np.ndarray, side: int = 160) -> float:
    """Variance of the Laplacian of ``gray`` after resizing its longer side to ``side`` pixels."""
    h, w = gray.shape[:2]
    s = side / max(h, w)
    if abs(s - 1.0) > 1e-3:
        gray = cv2.resize(gray, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


def _centre(b: np.ndarray) -> np.ndarray:
    return np.array([(b[0] + b[2]) / 2, (b[1] + b[3]) / 2])


def frontalness(dets: Detections, idx: np.ndarray, spec: ScaleSpec) -> float | None:
    """Frontal-view score from eye symmetry (``None`` when the scale has no paired eye unit)."""
    if "eye" not in spec.unit_names or spec.unit("eye").per_frame < 2:
        return None
    eye = spec.unit_index("eye")
    eyes = idx[dets.unit[idx] == eye]
    if eyes.size == 0:
        return 0.0
    if eyes.size == 1:
        return 0.25
    a, b = dets.xyxy[eyes[0]], dets.xyxy[eyes[1]]
    area = lambda r: max(float((r[2] - r[0]) * (r[3] - r[1])), 1e-6)  # noqa: E731
    size_sym = min(area(a), area(b)) / max(area(a), area(b))
    ca, cb = _centre(a), _centre(b)
    dx, dy = abs(ca[0] - cb[0]), abs(ca[1] - cb[1])
    level = 1.0 - min(1.0, dy / max(dx, 1e-6))
    parts = [size_sym, level]
    if "nose" in spec.unit_names:
        noses = idx[dets.unit[idx] == spec.unit_index("nose")]
        if noses.size and dx > 0:
            nx = _centre(dets.xyxy[noses[0]])[0]
            mid = (ca[0] + cb[0]) / 2
            parts.append(1.0 - min(1.0, abs(nx - mid) / (dx / 2)))
    return float(np.prod(parts) ** (1.0 / len(parts)))


def completeness(dets: Detections, idx: np.ndarray, spec: ScaleSpec) -> float:
    """Share of the required unit instances present among the selected boxes."""
    want = got = 0
    for i, u in enumerate(spec.units):
        if u.required:
            want += u.per_frame
            got += min(u.per_frame, int(np.sum(dets.unit[idx] == i)))
    return got / want if want else 1.0


def frame_quality(
    image: np.ndarray, dets: Detections, spec: ScaleSpec, config: QualityConfig | None = None
) -> QualityReport:
    """Quality of one frame for frame selection.

    Args:
        image: BGR uint8 ``(H, W, 3)`` (the original frame the boxes refer to).
        dets: Its detections in original pixels.
        spec: The scale.
        config: Constants; defaults to :class:`QualityConfig`.

    Returns:
        The :class:`QualityReport`; score 0 when nothing was detected.
    """
    cfg = config or QualityConfig()
    idx = select_boxes(dets, spec)
    box = face_region(dets, idx, image.shape, cfg.margin)
    if box is None:
        parts0: dict[str, float | None] = dict.fromkeys(("completeness", *cfg.weights), 0.0)
        return QualityReport(0.0, parts0, None)
    x1, y1, x2, y2 = box
    crop = image[y1:y2, x1:x2]
    gray = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY) if crop.ndim == 3 else crop
    lv = laplacian_variance(gray, cfg.sharp_side)
    parts: dict[str, float | None] = {
        "confidence": float(dets.confidence[idx].mean()),
        "completeness": completeness(dets, idx, spec),
        "sharpness": lv / (lv + cfg.sharp_half),
        "size": min(1.0, min(x2 - x1, y2 - y1) / cfg.target_face_px),
        "frontalness": frontalness(dets, idx, spec),
    }
    num = den = 0.0
    for k, w in cfg.weights.items():
        v = parts.get(k)
        if v is not None and w > 0:
            num += w * v
            den += w
    base = num / den if den else 1.0
    score = float(np.clip(parts["completeness"] * base, 0.0, 1.0))  # type: ignore[operator]
    return QualityReport(score, parts, (float(x1), float(y1), float(x2), float(y2)))
