"""Pre- and post-processing of fused-model I/O in numpy + OpenCV (no torch).

This is the single implementation shared by the edge runtime and the PyTorch predict path:

* :func:`letterbox` resizes with the aspect ratio kept and pads to the network size exactly like
  ultralytics' ``LetterBox`` (centre padding; ``top = round(dh - 0.1)``, ``bottom = round(dh + 0.1)``,
  each resized side ``max(round(side * r), 1)``).
* :func:`preprocess` letterboxes a batch of BGR images, converts to RGB, scales to ``[0, 1]`` and
  normalises with the model's mean/std into ``float32 (B, 3, H, W)``.
* :func:`postprocess` turns one image's fused output into :class:`~edge.results.Detections` in the
  original image's pixels:

  - raw layout ``(N, 4 + nc + nc*ng)``: ``x1 y1 x2 y2`` in letterboxed input pixels, ``nc`` unit scores,
    ``nc*ng`` grade probabilities (unit-major). Candidates whose best unit score is above ``conf`` are
    kept, at most ``max_nms`` of them (the highest scores, ties by candidate order) go into NMS, NMS runs
    per unit (OpenCV, the same kept set as ``torchvision.ops.batched_nms``), at most ``max_det`` boxes
    remain (highest confidence first), and each box keeps the ``ng`` grade columns of its chosen unit.
    The ``max_nms`` cap bounds the worst case (a frame where every candidate passes the threshold):
    greedy NMS costs up to candidates × kept box comparisons, so 8,400 candidates that all pass and
    mostly survive take ~100x longer than a realistic frame. Below the cap the result is exactly the
    uncapped one; above it, only candidates ranked below the cap can be lost, and none is when NMS
    already keeps ``max_det`` boxes among the capped ones.
  - in-graph NMS layout ``(max_det, 6 + ng)``: ``x1 y1 x2 y2 conf unit | grade probs``; rows whose
    confidence is not above ``conf`` (including zero padding rows) are dropped.

  Boxes are mapped back like ultralytics' ``scale_boxes`` (subtract the padding, divide by the
  per-axis gain of the rounded resize) and clipped to the image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from edge.artifact import ModelMetadata
from edge.results import Detections
from edge.scales import ScaleSpec

MAX_NMS = 256
"""Default of ``max_nms``: most candidates passed to NMS (highest scores first), as ultralytics'
``max_nms`` (30,000 there, where it never binds at 8,400 candidates). 256 is above the few dozen to
few hundred candidates a trained detector passes over ``conf`` 0.25 on a frame (so those frames are
decoded exactly as without a cap) and keeps the worst case of an 8,400-candidate head (every candidate
over ``conf``, none suppressed) under 1 ms on one CPU core; measured in ``bench/bench_postprocess.py``
and ``docs/benchmarks.md``."""


def top_k_stable(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` highest scores, in ascending index order, in O(n).

    The same set as ``np.argsort(-scores, kind="stable")[:k]`` (ties at the cut go to the lower
    index), found with a partition instead of a full sort.

    Args:
        scores: float ``(n,)`` scores (no NaN).
        k: How many to keep (``>= 1``).

    Returns:
        int64 ``(min(k, n),)`` indices, ascending.
    """
    n = len(scores)
    if n <= k:
        return np.arange(n, dtype=np.int64)
    v = np.partition(scores, n - k)[n - k]  # the k-th highest value
    above = np.flatnonzero(scores > v)
    ties = np.flatnonzero(scores == v)[: k - len(above)]
    out = np.concatenate([above, ties])
    out.sort()
    return out.astype(np.int64, copy=False)


@dataclass(frozen=True)
class LetterboxInfo:
    """How an image was letterboxed, enough to map boxes back to it.

    Attributes:
        ratio: Per-axis gain ``(gain_x, gain_y)`` = resized size / original size (after rounding the
            resized size to whole pixels, so it can differ slightly between the axes).
        pad: Pixels of padding on the left and top ``(pad_x, pad_y)``.
        orig_shape: Original image ``(height, width)``.
        new_shape: Letterboxed image ``(height, width)``.
    """

    ratio: tuple[float, float]
    pad: tuple[int, int]
    orig_shape: tuple[int, int] = (0, 0)
    new_shape: tuple[int, int] = (0, 0)


def _as_hw(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    hw = tuple(int(v) for v in size)
    if len(hw) != 2:
        raise ValueError(f"size must be an int or (height, width), got {size!r}")
    return hw  # type: ignore[return-value]


def letterbox_params(
    orig_shape: Sequence[int],
    new_shape: int | Sequence[int],
    stride: int = 32,
    auto: bool = False,
    scaleup: bool = True,
) -> tuple[LetterboxInfo, tuple[int, int], tuple[int, int, int, int]]:
    """Letterbox geometry without touching pixels.

    Args:
        orig_shape: Image ``(height, width[, channels])``.
        new_shape: Target ``(height, width)`` or an int for a square.
        stride: Model stride; with ``auto`` the padded size is the smallest multiple of it.
        auto: Minimum rectangle (pad only to a multiple of ``stride``) instead of the full target.
        scaleup: Allow enlarging images smaller than the target.

    Returns:
        ``(info, resized_wh, (top, bottom, left, right))``.
    """
    h0, w0 = int(orig_shape[0]), int(orig_shape[1])
    if h0 <= 0 or w0 <= 0:
        raise ValueError(f"letterbox: image shape must be positive, got {tuple(orig_shape)}")
    th, tw = _as_hw(new_shape)
    r = min(th / h0, tw / w0)
    if not scaleup:
        r = min(r, 1.0)
    new_w, new_h = max(round(w0 * r), 1), max(round(h0 * r), 1)
    dw, dh = tw - new_w, th - new_h
    if auto:
        dw, dh = dw % stride, dh % stride
    dw, dh = dw / 2, dh / 2
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    out_h, out_w = new_h + top + bottom, new_w + left + right
    info = LetterboxInfo(
        ratio=(new_w / w0, new_h / h0),
        pad=(int(left), int(top)),
        orig_shape=(h0, w0),
        new_shape=(out_h, out_w),
    )
    return info, (new_w, new_h), (top, bottom, left, right)


def letterbox(
    img: np.ndarray,
    new_shape: int | Sequence[int] = 640,
    stride: int = 32,
    auto: bool = False,
    pad_value: int = 114,
    scaleup: bool = True,
) -> tuple[np.ndarray, LetterboxInfo]:
    """Resize keeping the aspect ratio and pad to ``new_shape`` (ultralytics ``LetterBox`` rule).

    Args:
        img: Image ``(H, W, 3)`` or ``(H, W)``, any dtype OpenCV resizes.
        new_shape: Target ``(height, width)`` or an int for a square.
        stride: Model stride (used with ``auto``).
        auto: Pad only up to the next multiple of ``stride``.
        pad_value: Border value.
        scaleup: Allow enlarging small images.

    Returns:
        The letterboxed image ``(H', W', C)`` and its :class:`LetterboxInfo`.
    """
    if img is None or not hasattr(img, "shape") or img.ndim not in (2, 3) or img.size == 0:
        shape = getattr(img, "shape", None)
        raise ValueError(f"letterbox: expected an image array (H, W[, C]), got shape {shape}")
    info, new_wh, (top, bottom, left, right) = letterbox_params(
        img.shape, new_shape, stride=stride, auto=auto, scaleup=scaleup
    )
    if (img.shape[1], img.shape[0]) != new_wh:
        img = cv2.resize(img, new_wh, interpolation=cv2.INTER_LINEAR)
    if img.ndim == 2:
        img = img[..., None]
    c = img.shape[2]
    if c == 3:
        img = cv2.copyMakeBorder(img, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(pad_value,) * 3)
    else:
        h, w = img.shape[:2]
        out = np.full((h + top + bottom, w + left + right, c), pad_value, dtype=img.dtype)
        out[top : top + h, left : left + w] = img
        img = out
    return img, info


def preprocess(
    images_bgr: np.ndarray | Sequence[np.ndarray],
    meta_or_imgsz: ModelMetadata | int | Sequence[int] = 640,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    stride: int | None = None,
    pad_value: int | None = None,
    auto: bool = False,
    dtype: type | np.dtype = np.float32,
    return_info: bool = False,
) -> np.ndarray | tuple[np.ndarray, list[LetterboxInfo]]:
    """Letterbox, BGR→RGB, scale to ``[0, 1]`` and normalise a batch of images.

    Args:
        images_bgr: One ``uint8 (H, W, 3)`` BGR image or a list of them (sizes may differ).
        meta_or_imgsz: The model's :class:`~edge.artifact.ModelMetadata` (input size, stride, mean,
            std, pad value) or just the input size (int or ``(height, width)``).
        mean: Per-channel RGB mean after scaling to ``[0, 1]`` (overrides the metadata).
        std: Per-channel RGB std (overrides the metadata).
        stride: Model stride (overrides the metadata).
        pad_value: Letterbox border value (overrides the metadata).
        auto: Minimum-rectangle letterbox (sizes then differ per image; all images of a batch must
            then give the same shape).
        dtype: Output dtype (``np.float16`` for FP16 engines).
        return_info: Also return the per-image :class:`LetterboxInfo`.

    Returns:
        ``(B, 3, H, W)`` array of ``dtype``, C-contiguous; with ``return_info`` a tuple
        ``(batch, infos)``.

    Raises:
        ValueError: Empty batch, non-image input, or images giving different letterboxed shapes.
    """
    if isinstance(meta_or_imgsz, ModelMetadata):
        imgsz: tuple[int, int] = tuple(meta_or_imgsz.imgsz)  # type: ignore[assignment]
        mean = meta_or_imgsz.mean if mean is None else mean
        std = meta_or_imgsz.std if std is None else std
        stride = meta_or_imgsz.stride if stride is None else stride
        pad_value = meta_or_imgsz.pad_value if pad_value is None else pad_value
    else:
        imgsz = _as_hw(meta_or_imgsz)
    stride = 32 if stride is None else int(stride)
    pad_value = 114 if pad_value is None else int(pad_value)
    if isinstance(images_bgr, np.ndarray) and images_bgr.ndim == 3:
        images_bgr = [images_bgr]
    images = list(images_bgr)
    if not images:
        raise ValueError("preprocess: empty batch")
    boxed = []
    infos = []
    for i, im in enumerate(images):
        if not isinstance(im, np.ndarray) or im.ndim != 3 or im.shape[2] != 3:
            raise ValueError(
                f"preprocess: image #{i}: expected a BGR array (H, W, 3), got "
                f"{getattr(im, 'shape', type(im).__name__)}"
            )
        lb, info = letterbox(im, imgsz, stride=stride, auto=auto, pad_value=pad_value)
        boxed.append(lb)
        infos.append(info)
    shapes = {b.shape for b in boxed}
    if len(shapes) != 1:
        raise ValueError(f"preprocess: images letterbox to different shapes {sorted(shapes)}")
    x = np.stack(boxed)[..., ::-1].transpose(0, 3, 1, 2)  # BGR->RGB, BHWC->BCHW
    if boxed[0].dtype != np.uint8:
        raise ValueError(f"preprocess: expected uint8 BGR images, got dtype {boxed[0].dtype}")
    out = np.ascontiguousarray(x, dtype=np.float32)
    out /= np.float32(255.0)
    m = np.asarray(mean if mean is not None else (0.0, 0.0, 0.0), np.float32).reshape(1, 3, 1, 1)
    s = np.asarray(std if std is not None else (1.0, 1.0, 1.0), np.float32).reshape(1, 3, 1, 1)
    if np.any(m != 0):
        out -= m
    if np.any(s != 1):
        if np.any(s <= 0):
            raise ValueError(f"preprocess: std must be > 0, got {s.ravel().tolist()}")
        out /= s
    if np.dtype(dtype) != np.float32:
        out = out.astype(dtype)
    return (out, infos) if return_info else out


def scale_boxes(xyxy: np.ndarray, info: LetterboxInfo, clip: bool = True) -> np.ndarray:
    """Map ``x1 y1 x2 y2`` boxes from letterboxed input pixels back to the original image.

    Same arithmetic as ultralytics' ``scale_boxes`` (float32, padding subtracted, then divided by
    the per-axis gain), followed by clipping to ``info.orig_shape``.

    Args:
        xyxy: ``(N, 4)`` boxes; not modified.
        info: The letterbox of the image.
        clip: Clip to the original image.

    Returns:
        float32 ``(N, 4)`` boxes in original pixels.
    """
    b = np.array(xyxy, dtype=np.float32, copy=True).reshape(-1, 4)
    pad_x, pad_y = info.pad
    gain_x, gain_y = info.ratio
    b[:, 0] -= pad_x
    b[:, 1] -= pad_y
    b[:, 2] -= pad_x
    b[:, 3] -= pad_y
    b[:, 0] /= gain_x
    b[:, 1] /= gain_y
    b[:, 2] /= gain_x
    b[:, 3] /= gain_y
    if clip and info.orig_shape[0] > 0:
        h, w = info.orig_shape
        b[:, [0, 2]] = b[:, [0, 2]].clip(0, w)
        b[:, [1, 3]] = b[:, [1, 3]].clip(0, h)
    return b


PER_UNIT_NMS_FROM = 128
"""From this many candidates on, NMS runs as one ``cv2.dnn.NMSBoxes`` call per unit (each box is then
compared only with kept boxes of its own unit); below it, one ``cv2.dnn.NMSBoxesBatched`` call."""


def batched_nms(
    xyxy: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray,
    iou: float,
    per_class_from: int = PER_UNIT_NMS_FROM,
) -> np.ndarray:
    """Per-class NMS with OpenCV, giving the kept set and order of ``torchvision.ops.batched_nms``.

    OpenCV's NMS takes ``(x, y, w, h)`` rectangles and keeps a box when its overlap with every kept
    box of its class is ``<= iou`` (torchvision suppresses when ``> iou``: the same rule).
    Candidates are sorted by descending score first (stable), so ties keep input order. Few
    candidates go through one ``cv2.dnn.NMSBoxesBatched`` call (classes separated by coordinate
    offsets); many go through one ``cv2.dnn.NMSBoxes`` call per class, which is faster because the
    greedy pass then only compares boxes of the same class. Both give the same result.

    Args:
        xyxy: float ``(N, 4)`` boxes.
        scores: float ``(N,)`` scores.
        classes: int ``(N,)`` class ids.
        iou: IoU threshold.
        per_class_from: Candidate count from which the per-class path is used.

    Returns:
        int64 indices into the inputs of the kept boxes, by descending score.
    """
    n = len(scores)
    if n == 0:
        return np.zeros((0,), np.int64)
    order = np.argsort(-scores, kind="stable")
    b = xyxy[order].astype(np.float64)
    rects = np.empty_like(b)
    rects[:, :2] = b[:, :2]
    rects[:, 2:] = b[:, 2:] - b[:, :2]
    s = scores[order].astype(np.float32)
    c = classes[order].astype(np.int32)
    if n >= per_class_from and float(s.min()) > 0.0:
        parts = []
        for k in np.unique(c):
            idx = np.flatnonzero(c == k)  # ascending = descending score
            kk = cv2.dnn.NMSBoxes(rects[idx], s[idx], 0.0, float(iou))  # keeps scores > 0
            parts.append(idx[np.asarray(kk, dtype=np.int64).reshape(-1)])
        keep = np.concatenate(parts)
    else:
        kk = cv2.dnn.NMSBoxesBatched(rects, s, c, float(s.min()) - 1.0, float(iou))
        keep = np.asarray(kk, dtype=np.int64).reshape(-1)
    keep.sort()  # positions in descending-score order
    return order[keep].astype(np.int64)


def _layout(raw: np.ndarray, spec: ScaleSpec) -> str:
    nc, ng = spec.nc, spec.ng
    if raw.shape[1] == 4 + nc + nc * ng:
        return "raw"
    if raw.shape[1] == 6 + ng:
        return "nms"
    raise ValueError(
        f"postprocess: scale {spec.name!r} (nc={nc}, ng={ng}) expects raw output (N, {4 + nc + nc * ng}) "
        f"or in-graph NMS output (max_det, {6 + ng}), got shape {tuple(raw.shape)}"
    )


def postprocess(
    raw: np.ndarray,
    spec: ScaleSpec,
    conf: float = 0.25,
    iou: float = 0.45,
    max_det: int = 300,
    letterbox_info: LetterboxInfo | None = None,
    orig_shape: Sequence[int] | None = None,
    *,
    input_shape: Sequence[int] | None = None,
    layout: str = "auto",
    max_nms: int = MAX_NMS,
) -> Detections:
    """Decode one image's fused-model output into detections in original image pixels.

    Args:
        raw: float ``(N, 4 + nc + nc*ng)`` candidates (raw layout) or ``(max_det, 6 + ng)`` rows
            ``x1 y1 x2 y2 conf unit | grade probs`` (in-graph NMS layout); boxes in letterboxed input
            pixels. A leading batch axis of size 1 is accepted.
        spec: The scale the model was made for.
        conf: Keep candidates whose best unit score is ``> conf``.
        iou: Per-unit NMS IoU threshold (raw layout only).
        max_det: Most boxes kept.
        letterbox_info: How the image was letterboxed; boxes are mapped back with it. ``None`` with
            ``orig_shape`` and ``input_shape`` given recomputes it; ``None`` alone leaves boxes in
            input pixels.
        orig_shape: Original image ``(height, width)``: clipping bound (defaults to the info's).
        input_shape: Network input ``(height, width)`` (only to recompute the letterbox).
        layout: ``"raw"``, ``"nms"`` or ``"auto"`` (by the number of columns).
        max_nms: Most candidates (highest scores first) passed to NMS (raw layout only); bounds the
            worst-case time (:data:`MAX_NMS`).

    Returns:
        :class:`Detections` sorted by descending confidence, grade columns ``(K, spec.ng)``.

    Raises:
        ValueError: When the output's shape does not fit the scale (message gives expected vs actual).
    """
    raw = np.asarray(raw)
    if raw.ndim == 3 and raw.shape[0] == 1:
        raw = raw[0]
    if raw.ndim != 2:
        raise ValueError(f"postprocess: expected one image's output (N, C), got shape {tuple(raw.shape)}")
    if max_nms < 1:
        raise ValueError(f"postprocess: max_nms must be >= 1, got {max_nms}")
    nc, ng = spec.nc, spec.ng
    kind = _layout(raw, spec) if layout == "auto" else layout
    if kind not in ("raw", "nms"):
        raise ValueError(f"postprocess: layout must be 'raw', 'nms' or 'auto', got {layout!r}")
    if kind != _layout(raw, spec):
        raise ValueError(f"postprocess: output shape {tuple(raw.shape)} is not the {kind!r} layout")

    if kind == "raw":
        scores_all = raw[:, 4 : 4 + nc]
        best = scores_all[:, 0].astype(np.float32)  # column-wise max: faster than max(axis=1) for small nc
        for j in range(1, nc):
            np.maximum(best, scores_all[:, j], out=best)
        cand = np.flatnonzero(best > conf)
        if cand.size > max_nms:
            cand = cand[top_k_stable(best[cand], max_nms)]
        unit = scores_all[cand].argmax(axis=1)
        score = best[cand]
        boxes = raw[cand, :4].astype(np.float32)
        keep = batched_nms(boxes, score, unit, iou)[:max_det]
        rows = cand[keep]
        unit = unit[keep].astype(np.int64)
        score = score[keep].astype(np.float32)
        boxes = boxes[keep]
        cols = 4 + nc + unit[:, None] * ng + np.arange(ng)[None, :]
        grades = raw[rows[:, None], cols].astype(np.float32)
    else:
        c = raw[:, 4]
        ok = np.flatnonzero(c > conf)
        ok = ok[np.argsort(-c[ok], kind="stable")][:max_det]
        unit = np.rint(raw[ok, 5]).astype(np.int64)
        if unit.size and (unit.min() < 0 or unit.max() >= nc):
            raise ValueError(
                f"postprocess: in-graph NMS output names unit ids {sorted(set(unit.tolist()))} outside "
                f"0..{nc - 1} of scale {spec.name!r}"
            )
        score = c[ok].astype(np.float32)
        boxes = raw[ok, :4].astype(np.float32)
        grades = raw[ok, 6 : 6 + ng].astype(np.float32)

    if letterbox_info is None and orig_shape is not None and input_shape is not None:
        letterbox_info, _, _ = letterbox_params(orig_shape, input_shape)
    if letterbox_info is not None:
        if orig_shape is not None:
            letterbox_info = LetterboxInfo(
                letterbox_info.ratio,
                letterbox_info.pad,
                (int(orig_shape[0]), int(orig_shape[1])),
                letterbox_info.new_shape,
            )
        boxes = scale_boxes(boxes, letterbox_info)
    elif orig_shape is not None:
        h, w = int(orig_shape[0]), int(orig_shape[1])
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
    return Detections(boxes, unit, score, grades)
