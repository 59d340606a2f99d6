"""Parity checks: ONNX Runtime (or a TensorRT engine) against the PyTorch model, on real images.

Two levels, both printed:

* raw output: max |Δ| over every value, and split into box / unit-score / grade columns;
* after post-processing: the same boxes (each reference box matched to a box of the other side with
  IoU >= 0.99, :func:`edge.boxes.greedy_match`), the same units and the same argmax grades.

Both sides run through the runtime's own :class:`edge.predictor.Predictor` stages (the PyTorch side
with :class:`train.fused.backend.TorchBackend`): the same letterboxed input goes into both models and
both outputs are decoded by the same post-processing, so what is compared is the models alone.

FP32 exports must agree within ``atol`` (1e-4 by default) on the score and grade columns and on box
coordinates measured in units of the input size (|Δ| / imgsz; boxes are pixels, and float32 rounding
of a 640-px coordinate alone is 6e-5 px), and have identical post-NMS results. ``--half`` exports are
reported, not failed: FP16 legitimately moves values by ~1e-3 and can flip boxes near the thresholds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.artifact import ModelMetadata
from edge.boxes import box_iou, greedy_match
from edge.results import Detections

IOU_MIN = 0.99
TIE_CONF = 1e-5
"""Confidence difference under which two unmatched boxes count as an equal-score swap."""


class ParityError(RuntimeError):
    """An exported model disagrees with its source beyond the tolerance."""


@dataclass
class Agreement:
    """How far two detection sets of the same images agree (summed over images).

    Attributes:
        n_ref: Boxes of the reference (PyTorch, or ONNX for the engine check).
        n_test: Boxes of the side under test.
        matched: Reference boxes with a test box of IoU >= ``iou_min`` (one-to-one).
        min_iou: Smallest IoU among matched pairs (1.0 when none).
        tie_swaps: Unmatched reference boxes paired with an unmatched test box of the same unit and
            the same confidence (within :data:`TIE_CONF`): two candidates with equal scores where
            float rounding decided which one NMS kept. Counted apart, not as disagreement.
        unit_same: Matched (and tie-swapped) pairs with the same unit.
        grade_same: Matched (and tie-swapped) pairs with the same argmax grade.
    """

    n_ref: int = 0
    n_test: int = 0
    matched: int = 0
    min_iou: float = 1.0
    tie_swaps: int = 0
    unit_same: int = 0
    grade_same: int = 0

    def add(self, other: Agreement) -> None:
        """Accumulate another image's agreement."""
        self.n_ref += other.n_ref
        self.n_test += other.n_test
        self.matched += other.matched
        self.min_iou = min(self.min_iou, other.min_iou)
        self.tie_swaps += other.tie_swaps
        self.unit_same += other.unit_same
        self.grade_same += other.grade_same

    @property
    def identical(self) -> bool:
        """Same number of boxes, all matched (or equal-score swaps), same units and argmax grades."""
        paired = self.matched + self.tie_swaps
        return self.n_ref == self.n_test == paired == self.unit_same == self.grade_same

    def summary(self) -> str:
        """One line of figures."""
        paired = self.matched + self.tie_swaps
        swaps = f" + {self.tie_swaps} equal-score swap(s)" if self.tie_swaps else ""
        return (
            f"boxes ref {self.n_ref} / test {self.n_test}, matched (IoU>={IOU_MIN}) {self.matched}{swaps}, "
            f"min IoU {self.min_iou:.4f}, same unit {self.unit_same}/{paired}, "
            f"same argmax grade {self.grade_same}/{paired}"
        )


def compare_detections(ref: Detections, test: Detections, iou_min: float = IOU_MIN) -> Agreement:
    """Match boxes one-to-one (reference in confidence order, best IoU first) and count agreement.

    Reference boxes left unmatched are then paired with unmatched test boxes of the same unit and
    equal confidence (:data:`TIE_CONF`): equal-score candidates where rounding picked the other one.
    """
    ag = Agreement(n_ref=len(ref), n_test=len(test))
    if len(ref) == 0 or len(test) == 0:
        return ag
    match, miou = greedy_match(ref.xyxy, ref.confidence, test.xyxy, iou_thr=iou_min)
    used = np.zeros(len(test), bool)
    used[match[match >= 0]] = True
    matched_ref = match >= 0
    ref_grade, test_grade = ref.argmax_grade, test.argmax_grade
    for i in np.flatnonzero(matched_ref):
        j = int(match[i])
        ag.matched += 1
        ag.min_iou = min(ag.min_iou, float(miou[i]))
        ag.unit_same += int(ref.unit[i] == test.unit[j])
        ag.grade_same += int(ref_grade[i] == test_grade[j])
    unmatched = np.nonzero(~matched_ref)[0]
    ious = box_iou(ref.xyxy, test.xyxy) if unmatched.size else None
    for i in unmatched:
        cand = np.nonzero(~used & (test.unit == ref.unit[i])
                          & (np.abs(test.confidence - ref.confidence[i]) <= TIE_CONF))[0]
        if cand.size == 0:
            continue
        j = int(cand[np.argmax(ious[i, cand])])
        used[j] = True
        ag.tie_swaps += 1
        ag.unit_same += 1
        ag.grade_same += int(ref_grade[i] == test_grade[j])
    return ag


@dataclass
class ParityReport:
    """Figures of one parity run.

    Attributes:
        what: e.g. ``"ONNX Runtime vs PyTorch"``.
        n_images: Images compared.
        raw_max_abs: Max |Δ| over all raw values (``None`` when no raw output was compared).
        raw_max_abs_parts: Max |Δ| of the box, unit-score and grade columns.
        agreement: Post-processing agreement.
        half: FP16 model (reported, never failed).
        postprocess: Which post-processing implementation was used.
        notes: Extra lines (e.g. why something was not run).
    """

    what: str
    n_images: int = 0
    raw_max_abs: float | None = None
    raw_max_abs_parts: dict[str, float] = field(default_factory=dict)
    agreement: Agreement = field(default_factory=Agreement)
    half: bool = False
    postprocess: str = ""
    notes: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    box_rel: float | None = None

    @property
    def ok(self) -> bool:
        """No failure recorded."""
        return not self.failures

    def lines(self) -> list[str]:
        """Human-readable figures."""
        out = [f"parity: {self.what} on {self.n_images} image(s){' [FP16]' if self.half else ''}"]
        if self.raw_max_abs is not None:
            parts = ", ".join(f"{k} {v:.3g}{' px' if k == 'boxes' else ''}"
                              for k, v in self.raw_max_abs_parts.items())
            rel = f"; boxes / imgsz {self.box_rel:.3g}" if self.box_rel is not None else ""
            out.append(f"  raw output max |Δ| {self.raw_max_abs:.3g} ({parts}{rel})")
        out.append(f"  after post-processing: {self.agreement.summary()}")
        out.append(f"  post-processing: {self.postprocess}")
        out += [f"  note: {n}" for n in self.notes]
        out += [f"  FAILED: {f}" for f in self.failures]
        if self.ok:
            out.append("  agreement reported (FP16: not enforced)" if self.half else "  OK")
        return out

    def raise_if_failed(self) -> None:
        """Raise :class:`ParityError` listing the failures."""
        if self.failures:
            raise ParityError("; ".join(self.failures))


def raw_deltas(ref: np.ndarray, test: np.ndarray, nc: int) -> dict[str, float]:
    """Max |Δ| of all, box, unit-score and grade columns of two raw outputs ``(..., C)``."""
    d = np.abs(np.asarray(ref, np.float64) - np.asarray(test, np.float64))
    return {
        "all": float(d.max(initial=0.0)),
        "boxes": float(d[..., :4].max(initial=0.0)),
        "scores": float(d[..., 4 : 4 + nc].max(initial=0.0)),
        "grades": float(d[..., 4 + nc :].max(initial=0.0)),
    }


def _fit_batch(x: np.ndarray, backend: Any) -> np.ndarray:
    """One image's input repeated to a fixed batch axis (exports with ``--batch N``), in its dtype."""
    b = backend.input_shape[0]
    xb = np.repeat(x, b, axis=0) if isinstance(b, int) and b > 1 else x
    return xb.astype(backend.input_dtype)


def check_onnx_parity(
    model: Any,
    onnx_path: str | Path,
    meta: ModelMetadata,
    images: Sequence[np.ndarray],
    *,
    raw_proto: Any | None = None,
    conf: float = 0.25,
    iou: float = 0.45,
    atol: float = 1e-4,
    progress: Callable[[int], None] | None = None,
) -> ParityReport:
    """Compare an exported ONNX model with the PyTorch model on images.

    Args:
        model: The PyTorch fused model (float32; eval mode is set here).
        onnx_path: The exported file.
        meta: Its metadata (``output`` raw/nms, ``half``, ``imgsz``...).
        images: BGR uint8 images of any size (letterboxed here as at run time).
        raw_proto: For ``nms`` exports, the raw graph before the NMS tail, so raw values are compared too.
        conf: Score threshold of the post-processing (the NMS graph has its own, from export).
        iou: NMS IoU threshold (likewise).
        atol: Tolerance of the raw comparison (FP32 only).
        progress: Called with 1 after each image.

    Returns:
        The report; ``report.failures`` is non-empty when an FP32 export is off.
    """
    from dataclasses import replace

    from edge.artifact import ArtifactError
    from edge.backends import OnnxRuntimeBackend
    from edge.postprocess import MAX_NMS
    from edge.predictor import Model, Predictor
    from train.fused.backend import TorchBackend

    spec = meta.spec
    rep = ParityReport(what="ONNX Runtime vs PyTorch", half=meta.half, postprocess="edge.predictor.Predictor")
    try:
        ort_backend = OnnxRuntimeBackend(onnx_path, providers=["CPUExecutionProvider"])
    except ArtifactError as e:  # ORT may lack a kernel (e.g. some FP16 ops on CPU)
        if meta.half:
            rep.notes.append(f"ONNX Runtime (CPU) cannot run this FP16 model: {e}")
            return rep
        raise
    raw_meta = replace(meta, output="raw", half=False)
    # the in-graph NMS has no pre-NMS cap, so the reference of an --nms export runs uncapped too
    max_nms = 1 << 31 if meta.output == "nms" else MAX_NMS
    ref = Predictor(Model(Path("<pytorch>"), raw_meta, TorchBackend(model.float(), raw_meta)), conf, iou,
                    max_det=meta.max_det, max_nms=max_nms)  # fmt: skip
    test = Predictor(Model(Path(onnx_path), meta, ort_backend), conf, iou, max_det=meta.max_det)
    raw_side = None
    if meta.output == "nms" and raw_proto is not None:
        raw_side = OnnxRuntimeBackend(raw_proto.SerializeToString(), providers=["CPUExecutionProvider"])
    deltas: list[dict[str, float]] = []
    for img in images:
        x, infos = ref.prepare([img])
        ref_raw = ref.infer(x)
        ref_det = ref.decode(ref_raw, infos)[0]
        out = test.infer(_fit_batch(x, ort_backend))[:1]
        if meta.output == "raw":
            deltas.append(raw_deltas(ref_raw, out, spec.nc))
        elif raw_side is not None:
            deltas.append(raw_deltas(ref_raw, raw_side.infer(_fit_batch(x, raw_side))[:1], spec.nc))
        test_det = test.decode(out, infos)[0]
        rep.agreement.add(compare_detections(ref_det, test_det))
        rep.n_images += 1
        if progress is not None:
            progress(1)
    ort_backend.close()
    if deltas:
        rep.raw_max_abs_parts = {k: max(d[k] for d in deltas) for k in deltas[0]}
        rep.raw_max_abs = rep.raw_max_abs_parts.pop("all")
    if rep.raw_max_abs_parts:
        rep.box_rel = rep.raw_max_abs_parts["boxes"] / float(max(meta.imgsz))
    if rep.agreement.n_ref == 0 and rep.agreement.n_test == 0:
        rep.notes.append(
            f"no box scored above conf {conf} on any image, so the post-processing comparison is empty; "
            "use real images (--images) or a lower --conf"
        )
    _judge(rep, atol, box_scale=float(max(meta.imgsz)))
    return rep


def _judge(rep: ParityReport, atol: float, box_scale: float) -> None:
    if rep.half:
        return
    if rep.n_images == 0:
        rep.failures.append("no images were compared")
        return
    p = rep.raw_max_abs_parts
    if p:
        if p["scores"] > atol or p["grades"] > atol:
            rep.failures.append(
                f"raw unit-score/grade max |Δ| {max(p['scores'], p['grades']):.3g} > {atol:g}"
            )
        if p["boxes"] / box_scale > atol:
            rep.failures.append(
                f"raw box max |Δ| {p['boxes']:.3g} px = {p['boxes'] / box_scale:.3g} x imgsz > {atol:g}"
            )
    if not rep.agreement.identical:
        rep.failures.append(f"post-processed detections differ: {rep.agreement.summary()}")


def synthetic_images(n: int = 4, seed: int = 0) -> list[np.ndarray]:
    """Textured rat-face-like BGR images drawn with OpenCV, for parity when no real images are given."""
    import cv2

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        h, w = int(rng.integers(240, 480)), int(rng.integers(240, 480))
        img = rng.integers(0, 256, (h, w, 3)).astype(np.uint8)
        img = cv2.GaussianBlur(img, (9, 9), 0)
        cx, cy = w // 2, h // 2
        face = tuple(int(v) for v in rng.integers(80, 200, 3))
        cv2.ellipse(img, (cx, cy), (w // 3, h // 3), 0, 0, 360, face, -1)
        for dx in (-w // 7, w // 7):
            cv2.circle(img, (cx + dx, cy - h // 10), max(2, w // 20), (20, 20, 20), -1)
            cv2.ellipse(img, (cx + 2 * dx, cy - h // 3), (w // 10, h // 8), 0, 0, 360, (170, 150, 200), -1)
        cv2.circle(img, (cx, cy + h // 8), max(2, w // 25), (90, 80, 200), -1)
        noise = rng.normal(0, 8, img.shape)
        out.append(np.clip(img + noise, 0, 255).astype(np.uint8))
    return out


def load_images(folder: str | Path, limit: int | None = None) -> tuple[list[np.ndarray], list[str]]:
    """Read images of a folder (sorted); unreadable files are reported and skipped.

    Returns:
        ``(images, problems)``.
    """
    import cv2

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a folder of images")
    exts = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in exts)
    if limit is not None:
        paths = paths[:limit]
    images, problems = [], []
    for p in paths:
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if img is None:
            problems.append(f"{p}: cannot be read as an image; skipped")
        else:
            images.append(img)
    if not images:
        raise FileNotFoundError(f"{folder}: no readable images ({', '.join(sorted(exts))})")
    return images, problems
