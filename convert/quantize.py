"""INT8 quantization of an exported FP32 ONNX model for CPUs (``grimace convert onnx --int8``).

ONNX Runtime static quantization in QDQ format, calibrated on the user's own frames, with INT8
weights (symmetric, one scale per output channel) in one of two forms (``QuantOptions.format``):

* ``s8`` (default): INT8 activations with zero point 0 and FP32 biases (``QuantizeBias=False``).
  These are the rules of TensorRT's explicit quantization (its parser refuses UINT8 Q/DQ and the
  INT32 DequantizeLinear of a quantized bias), so the file passes
  :func:`convert.trt_readiness.check_trt_readiness`; ONNX Runtime on ARM64 runs INT8 activations
  natively. On x86, ONNX Runtime does not fuse this form and it runs slower than FP32 (measured).
* ``u8``: UINT8 asymmetric activations and INT32 biases, the form ONNX Runtime's x86 CPU provider
  fuses into ``QLinearConv`` / ``QLinearSigmoid`` / ``QLinearMul`` (1.85x FP32 at one thread on the
  demo model); TensorRT refuses it.

Steps of :func:`quantize_model`:

1. calibration frames are read through :func:`edge.sources.iter_inputs` (images and videos, videos
   sampled at ``fps``) and turned into network inputs by :meth:`edge.predictor.Predictor.prepare`
   (the runtime's own letterbox and normalisation);
2. the parts of the graph named by ``keep_fp32`` stay in FP32 (:func:`fp32_nodes`: the decode tail of
   the detect head, its output convolutions, ...), everything else is quantized;
3. the INT8 model is compared with the FP32 model on held-out frames that calibration did not see,
   through the same :class:`~edge.predictor.Predictor` (:func:`measure_agreement`): box match
   (:func:`edge.boxes.greedy_match`), unit and argmax-grade agreement of matched boxes, and the
   ICC(2,1) of the frame scores (:func:`train.evaluation.stats.icc21`);
4. below the thresholds the model is refused (:class:`QuantizationRefused`) and no INT8 file is left;
   otherwise it is written atomically with the FP32 model's ``grimace`` metadata unchanged plus a
   ``grimace_quantization`` record (settings, calibration, agreement).

The format, which layers stay FP32 and the calibration method were chosen by measurement on the demo
model (``docs/experiments/int8.md``).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

QUANT_KEY = "grimace_quantization"
"""ONNX metadata property holding the quantization record (JSON)."""
CALIB_METHODS = ("minmax", "entropy", "percentile")
KEEP_FP32 = ("none", "decode", "outputs", "grade-branch", "head")
"""``keep_fp32`` policies, each keeping more of the detect head in FP32:

* ``none``: quantize every node ONNX Runtime can quantize;
* ``decode``: the decode tail of the head (DFL softmax, box arithmetic, unit sigmoid, grade softmax,
  the reshapes and concats between them) stays FP32;
* ``outputs``: ``decode`` plus the last convolution of every head branch (box, unit, grade);
* ``grade-branch``: ``outputs`` plus the whole grade branch;
* ``head``: the whole detect head.
"""
INT8_FORMATS = ("s8", "u8")
DEFAULT_METHOD = "minmax"
DEFAULT_KEEP = "outputs"
DEFAULT_PERCENTILE = 99.999
DEFAULT_MIN_AGREE = 0.95
DEFAULT_MIN_ICC = 0.95
BOX_IOU = 0.5
"""Least IoU for an INT8 box to count as the same box as an FP32 one."""


class QuantizationError(RuntimeError):
    """The model cannot be quantized as asked (bad input, no frames, unknown option)."""


class QuantizationRefused(QuantizationError):
    """The INT8 model agrees too little with the FP32 model; nothing was written.

    Attributes:
        agreement: The measured :class:`Int8Agreement`.
        failures: Which thresholds were missed.
    """

    def __init__(self, message: str, agreement: Int8Agreement, failures: list[str]) -> None:
        super().__init__(message)
        self.agreement = agreement
        self.failures = failures


@dataclass
class QuantOptions:
    """Settings of :func:`quantize_model`.

    Attributes:
        method: Calibration method, one of :data:`CALIB_METHODS`.
        percentile: Percentile of ``|activation|`` kept by the ``percentile`` method.
        keep_fp32: Graph parts kept in FP32, one of :data:`KEEP_FP32`.
        exclude: More node names kept in FP32.
        per_channel: Per-output-channel weight scales.
        format: ``"s8"``: INT8 symmetric activations, FP32 biases (TensorRT explicit quantization, ARM64
            CPUs); ``"u8"``: UINT8 asymmetric activations, INT32 biases (what ONNX Runtime's x86 CPU
            kernels fuse; TensorRT refuses it). Weights are INT8 symmetric in both.
    """

    method: str = DEFAULT_METHOD
    percentile: float = DEFAULT_PERCENTILE
    keep_fp32: str = DEFAULT_KEEP
    exclude: tuple[str, ...] = ()
    per_channel: bool = True
    format: str = "s8"

    def __post_init__(self) -> None:
        if self.format not in INT8_FORMATS:
            raise QuantizationError(
                f"INT8 format must be one of {', '.join(INT8_FORMATS)}, got {self.format!r}"
            )
        if self.method not in CALIB_METHODS:
            raise QuantizationError(
                f"calibration method must be one of {', '.join(CALIB_METHODS)}, got {self.method!r}"
            )
        if self.keep_fp32 not in KEEP_FP32:
            raise QuantizationError(
                f"keep-fp32 must be one of {', '.join(KEEP_FP32)}, got {self.keep_fp32!r}"
            )
        if not 90.0 <= self.percentile <= 100.0:
            raise QuantizationError(f"percentile must be in [90, 100], got {self.percentile}")


# ------------------------------------------------------------------------------------------ frames
def read_frames(
    paths: Iterable[str | Path],
    limit: int,
    fps: float | None = 1.0,
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
) -> tuple[list[np.ndarray], list[str]]:
    """Up to ``limit`` BGR frames of images and videos (read by :func:`edge.sources.iter_inputs`).

    Args:
        paths: Image/video files and folders.
        limit: Most frames kept.
        fps: Frames per second sampled from videos.
        transform: Applied to each frame as it is read (:func:`fit_to_input` keeps memory at the
            network's input size instead of the camera's).

    Returns:
        ``(frames, problems)``: the frames and one line per input that could not be read.
    """
    from edge.sources import ItemError, iter_inputs

    frames: list[np.ndarray] = []
    problems: list[str] = []
    for item in iter_inputs(list(paths), fps=fps):
        if isinstance(item, ItemError):
            problems.append(str(item))
            continue
        frames.append(item.image if transform is None else transform(item.image))
        if len(frames) >= limit:
            break
    return frames, problems


def fit_to_input(meta: Any) -> Callable[[np.ndarray], np.ndarray]:
    """A frame transform that letterboxes to the model's input with the runtime's own letterbox.

    :meth:`edge.predictor.Predictor.prepare` of the result is exactly that of the original frame
    (letterboxing an image that already has the input size changes nothing), so calibration and the
    agreement check see the same network inputs while 200 phone-video frames take 200 x 1.2 MB at
    640 px instead of 200 x 6 MB at 1080p.
    """
    from edge.postprocess import letterbox

    def fit(img: np.ndarray) -> np.ndarray:
        return letterbox(img, meta.imgsz, stride=meta.stride, pad_value=meta.pad_value)[0]

    return fit


def split_holdout(frames: Sequence[np.ndarray], every: int = 4) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Split frames into calibration and held-out sets: every ``every``-th frame is held out."""
    calib = [f for i, f in enumerate(frames) if i % every != every - 1]
    hold = [f for i, f in enumerate(frames) if i % every == every - 1]
    return calib, hold


class _Prepared(Sequence):
    """Network inputs of frames, made one at a time (200 float inputs at 640 px would take 1 GB).

    Each is :meth:`edge.predictor.Predictor.prepare` of one frame, repeated to a fixed batch axis
    when the model has one.
    """

    def __init__(self, predictor: Any, frames: Sequence[np.ndarray]) -> None:
        self.predictor = predictor
        self.frames = frames
        b = predictor.model.backend.input_shape[0]
        self.repeat = b if isinstance(b, int) and b > 1 else 1

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int) -> np.ndarray:  # type: ignore[override]
        x, _ = self.predictor.prepare([self.frames[i]])
        return np.repeat(x, self.repeat, axis=0) if self.repeat > 1 else x


def _prepared(predictor: Any, frames: Sequence[np.ndarray]) -> Sequence[np.ndarray]:
    """The network inputs of ``frames`` (made lazily, see :class:`_Prepared`)."""
    return _Prepared(predictor, frames)


# ------------------------------------------------------------------------------------- graph parts
def _head_prefix(proto: Any) -> str | None:
    """``/model.N/`` of the last module of an ultralytics-style export (the detect head), if any."""
    best = -1
    for n in proto.graph.node:
        parts = n.name.split("/")
        if len(parts) > 2 and parts[1].startswith("model.") and parts[1][6:].isdigit():
            best = max(best, int(parts[1][6:]))
    return None if best < 0 else f"/model.{best}/"


def fp32_nodes(proto: Any, keep: str) -> list[str]:
    """Names of the nodes a ``keep_fp32`` policy leaves in FP32.

    The head is found by the module names of an ultralytics-style export (``/model.N/`` of the last
    module; its branches ``cv2`` boxes, ``cv3`` units, ``cv4`` grades). In a graph without that
    naming, the decode tail is found by structure instead: every node after the last weighted
    operation (Conv, ConvTranspose, MatMul, Gemm) on all of its paths; ``outputs`` and wider policies
    add those last weighted operations. That structural tail (an in-graph NMS tail included) is kept
    FP32 by every policy but ``none``. Nodes must be named (:func:`quantize_graph` names unnamed ones
    ``OpType_index`` first).
    """
    if keep not in KEEP_FP32:
        raise QuantizationError(f"keep-fp32 must be one of {', '.join(KEEP_FP32)}, got {keep!r}")
    prefix = _head_prefix(proto)
    if keep == "none":
        return []
    if prefix is None:
        return _tail_nodes(proto, with_last_weighted=keep != "decode")
    head = [n for n in proto.graph.node if n.name.startswith(prefix)]
    branch = {n.name: n.name[len(prefix) :].split("/")[0].split(".")[0] for n in head}
    consumers: dict[str, list[Any]] = {}
    for n in proto.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def is_branch(n: Any) -> bool:
        return branch[n.name] in ("cv2", "cv3", "cv4")

    def is_output_conv(n: Any) -> bool:  # a branch conv whose output feeds no other branch node
        return (
            n.op_type == "Conv"
            and is_branch(n)
            and not any(
                c.name.startswith(prefix) and is_branch(c) for o in n.output for c in consumers.get(o, [])
            )
        )

    out = []
    for n in head:
        if (
            keep == "head"
            or not is_branch(n)
            or (keep in ("outputs", "grade-branch") and is_output_conv(n))
            or (keep == "grade-branch" and branch[n.name] == "cv4")
        ):
            out.append(n.name)
    seen = set(out)  # and whatever follows the head (an in-graph NMS tail)
    return out + [n for n in _tail_nodes(proto, with_last_weighted=False) if n not in seen]


_WEIGHTED = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm"})


def _tail_nodes(proto: Any, with_last_weighted: bool) -> list[str]:
    """Nodes no weighted operation follows (the decode tail), plus the last weighted ones if asked."""
    consumers: dict[str, list[Any]] = {}
    for n in proto.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    weighted_after: dict[str, bool] = {}
    for n in reversed(list(proto.graph.node)):  # graph nodes are topologically sorted
        nxt = [c for o in n.output for c in consumers.get(o, [])]
        weighted_after[n.name] = any(c.op_type in _WEIGHTED or weighted_after.get(c.name, False) for c in nxt)
    out = []
    for n in proto.graph.node:
        if not weighted_after[n.name] and (n.op_type not in _WEIGHTED or with_last_weighted):
            out.append(n.name)
    return out


def _name_nodes(proto: Any) -> None:
    """Give unnamed nodes a unique ``OpType_index`` name (so they can be kept FP32 by name)."""
    taken = {n.name for n in proto.graph.node if n.name}
    for i, n in enumerate(proto.graph.node):
        if not n.name:
            name = f"{n.op_type}_{i}"
            while name in taken:
                name += "_"
            n.name = name
            taken.add(name)


# ------------------------------------------------------------------------------------ quantization
class _Reader:
    """ONNX Runtime calibration data reader over prepared inputs."""

    def __init__(self, name: str, inputs: Sequence[np.ndarray]) -> None:
        self.name = name
        self.inputs = inputs
        self.i = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.i >= len(self.inputs):
            return None
        self.i += 1
        return {self.name: self.inputs[self.i - 1]}

    def rewind(self) -> None:
        self.i = 0


def quantize_graph(
    fp32_path: str | Path, out_path: str | Path, inputs: Sequence[np.ndarray], opts: QuantOptions
) -> list[str]:
    """Run ONNX Runtime static quantization (QDQ, TensorRT-compatible settings) into ``out_path``.

    Returns:
        The node names kept in FP32.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    proto = onnx.load(str(fp32_path))
    _name_nodes(proto)
    name = proto.graph.input[0].name
    excluded = sorted(set(fp32_nodes(proto, opts.keep_fp32)) | set(opts.exclude))
    known = {n.name for n in proto.graph.node}
    unknown = sorted(set(opts.exclude) - known)
    if unknown:
        raise QuantizationError(
            f"{fp32_path}: no node named {', '.join(unknown)} (see `grimace convert inspect`)"
        )
    reader = type("CalibReader", (_Reader, CalibrationDataReader), {})(name, inputs)
    method = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[opts.method]
    s8 = opts.format == "s8"
    extra: dict[str, Any] = {
        # s8: TensorRT explicit quantization: INT8 with zero point 0, biases FP32 (its parser refuses the
        # INT32 DequantizeLinear of a quantized bias). u8: ONNX Runtime's x86 CPU kernels (QLinearConv,
        # QLinearSigmoid, QLinearMul) need UINT8 activations and an INT32 bias to fuse.
        "ActivationSymmetric": s8,
        "WeightSymmetric": True,
        "QuantizeBias": not s8,
        "CalibMaxIntermediateOutputs": 16,
    }
    if opts.method == "percentile":
        extra["CalibPercentile"] = opts.percentile
    with tempfile.TemporaryDirectory(prefix="grimace-int8-") as tmp:
        src = str(Path(tmp) / "fp32_named.onnx")  # the input with every node named
        onnx.save(proto, src)
        root = logging.getLogger()
        hint = _NoPreprocessHint()
        root.addFilter(hint)
        try:
            quantize_static(  # calibrates in its own temporary folder
                src,
                str(out_path),
                reader,
                quant_format=QuantFormat.QDQ,
                per_channel=opts.per_channel,
                activation_type=QuantType.QInt8 if s8 else QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=excluded,
                calibrate_method=method,
                extra_options=extra,
            )
        finally:
            root.removeFilter(hint)
    return excluded


class _NoPreprocessHint(logging.Filter):
    """Drops ONNX Runtime's "consider pre-processing before quantization" hint, logged on the root
    logger at every call. It suggests ONNX Runtime's optional shape-inference/optimisation pre-pass; the
    agreement report that follows measures the quantized model either way."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-process" not in record.getMessage()


# --------------------------------------------------------------------------------------- agreement
@dataclass
class Int8Agreement:
    """How far the INT8 model agrees with the FP32 model on held-out frames.

    Attributes:
        frames: Held-out frames compared.
        boxes_fp32: Boxes the FP32 model kept (all frames).
        boxes_int8: Boxes the INT8 model kept.
        matched: One-to-one pairs with IoU >= :data:`BOX_IOU` (FP32 boxes in confidence order).
        unit_same: Matched pairs with the same unit.
        grade_same: Matched pairs with the same argmax grade.
        grade_abs_diff: Mean |Δ expected grade| of matched pairs of the same unit.
        scored_both: Frames both models scored (neither abstained).
        abstain_same: Frames where both scored or both abstained.
        icc: ICC(2,1) of the expected frame scores of ``scored_both`` frames (NaN when undefined).
        icc_argmax: The same for the argmax-grade frame scores.
        score_abs_diff_max: Largest |Δ frame score|.
    """

    frames: int = 0
    boxes_fp32: int = 0
    boxes_int8: int = 0
    matched: int = 0
    unit_same: int = 0
    grade_same: int = 0
    grade_abs_diff: float = 0.0
    scored_both: int = 0
    abstain_same: int = 0
    icc: float = math.nan
    icc_argmax: float = math.nan
    score_abs_diff_max: float = 0.0

    @property
    def box_match(self) -> float:
        """Matched pairs / the larger box count (extra and missing INT8 boxes both count against)."""
        return self.matched / max(self.boxes_fp32, self.boxes_int8, 1)

    @property
    def unit_agreement(self) -> float:
        """Same unit among matched pairs."""
        return self.unit_same / self.matched if self.matched else math.nan

    @property
    def grade_agreement(self) -> float:
        """Same argmax grade among matched pairs."""
        return self.grade_same / self.matched if self.matched else math.nan

    def failures(self, min_agree: float, min_icc: float) -> list[str]:
        """Thresholds the agreement misses (empty when it passes)."""
        out = []
        if self.boxes_fp32 == 0:
            return [
                "the FP32 model found no box on any held-out frame, so agreement cannot be judged "
                "(give frames where the animal's face is visible)"
            ]
        for what, v in (
            ("box match", self.box_match),
            ("unit agreement", self.unit_agreement),
            ("argmax-grade agreement", self.grade_agreement),
        ):
            if not v >= min_agree:
                out.append(f"{what} {v:.1%} < {min_agree:.1%}")
        if self.scored_both >= 2 and not math.isnan(self.icc) and self.icc < min_icc:
            out.append(f"frame-score ICC {self.icc:.3f} < {min_icc:.3f}")
        elif self.scored_both < 2 or math.isnan(self.icc):
            out.append(
                f"frame-score ICC undefined ({self.scored_both} frame(s) scored by both models, "
                "or no variance); give more held-out frames with faces"
            )
        return out

    def lines(self) -> list[str]:
        """Printable report."""
        return [
            f"INT8 vs FP32 on {self.frames} held-out frame(s):",
            f"  boxes FP32 {self.boxes_fp32} / INT8 {self.boxes_int8}, matched (IoU>={BOX_IOU}) "
            f"{self.matched} = box match {self.box_match:.1%}",
            f"  same unit {self.unit_same}/{self.matched} = {self.unit_agreement:.1%}, same argmax grade "
            f"{self.grade_same}/{self.matched} = {self.grade_agreement:.1%}, mean |Δ expected grade| "
            f"{self.grade_abs_diff:.4f}",
            f"  frames scored by both {self.scored_both}, same score/abstain decision "
            f"{self.abstain_same}/{self.frames}; frame-score ICC(2,1) {self.icc:.4f} (argmax grades "
            f"{self.icc_argmax:.4f}), max |Δ score| {self.score_abs_diff_max:.4f}",
        ]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe figures (NaN as ``None``)."""
        d: dict[str, Any] = asdict(self)
        d.update(
            box_match=self.box_match, unit_agreement=self.unit_agreement, grade_agreement=self.grade_agreement
        )
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}


def measure_agreement(
    fp32: Any, int8: Any, frames: Sequence[np.ndarray], conf: float = 0.25, iou: float = 0.45
) -> Int8Agreement:
    """Run both models (:class:`edge.predictor.Model`) over frames through the one Predictor and compare.

    Args:
        fp32: The reference model.
        int8: The quantized model.
        frames: Held-out BGR frames.
        conf: Score threshold.
        iou: NMS IoU threshold.
    """
    from edge.boxes import greedy_match
    from edge.predictor import Predictor
    from train.evaluation.stats import icc21

    ag = Int8Agreement()
    ref, test = (
        Predictor(fp32, conf, iou, max_det=fp32.meta.max_det),
        Predictor(int8, conf, iou, max_det=int8.meta.max_det),
    )
    scores, scores_arg, gdiff = [], [], []
    for img in frames:
        r, t = ref([img])[0], test([img])[0]
        a, b = r.detections, t.detections
        ag.frames += 1
        ag.boxes_fp32 += len(a)
        ag.boxes_int8 += len(b)
        match, _ = greedy_match(a.xyxy, a.confidence, b.xyxy, iou_thr=BOX_IOU)
        ok = np.flatnonzero(match >= 0)
        j = match[ok]
        ag.matched += len(ok)
        same_unit = a.unit[ok] == b.unit[j]
        ag.unit_same += int(same_unit.sum())
        ag.grade_same += int((a.argmax_grade[ok] == b.argmax_grade[j]).sum())
        gdiff += list(np.abs(a.expected_grade[ok] - b.expected_grade[j])[same_unit])
        ag.abstain_same += int((r.score is None) == (t.score is None))
        if r.score is not None and t.score is not None:
            ag.scored_both += 1
            scores.append((r.score, t.score))
            scores_arg.append((r.score_argmax, t.score_argmax))
    ag.grade_abs_diff = float(np.mean(gdiff)) if gdiff else 0.0
    if scores:
        s = np.asarray(scores, float)
        ag.score_abs_diff_max = float(np.abs(s[:, 0] - s[:, 1]).max())
        ag.icc = icc21(s)
        ag.icc_argmax = icc21(np.asarray(scores_arg, float))
    return ag


# ------------------------------------------------------------------------------------------ driver
@dataclass
class Int8Result:
    """What :func:`quantize_model` wrote and measured.

    Attributes:
        path: The INT8 model.
        agreement: Agreement with the FP32 model on the held-out frames.
        record: The ``grimace_quantization`` metadata record.
        fp32_nodes: Nodes kept in FP32.
    """

    path: Path
    agreement: Int8Agreement
    record: dict[str, Any]
    fp32_nodes: list[str] = field(default_factory=list)


def quantize_model(
    fp32_path: str | Path,
    out_path: str | Path,
    calib_frames: Sequence[np.ndarray],
    holdout_frames: Sequence[np.ndarray],
    opts: QuantOptions | None = None,
    *,
    conf: float = 0.25,
    iou: float = 0.45,
    min_agree: float = DEFAULT_MIN_AGREE,
    min_icc: float = DEFAULT_MIN_ICC,
    calib_note: str = "",
    progress: Callable[[str], None] | None = None,
) -> Int8Result:
    """Quantize an exported FP32 model to INT8 QDQ and check it against the FP32 model.

    Args:
        fp32_path: FP32 ONNX exported by ``grimace convert onnx`` (raw or in-graph NMS output).
        out_path: Where the INT8 model goes (written only when it passes).
        calib_frames: BGR frames for calibration (the user's own data).
        holdout_frames: BGR frames calibration did not see, for the agreement report.
        opts: Quantization settings.
        conf: Score threshold of the agreement check.
        iou: NMS IoU threshold of the agreement check.
        min_agree: Least box match, unit and argmax-grade agreement.
        min_icc: Least frame-score ICC(2,1).
        calib_note: How the frames were chosen (goes into the record).
        progress: Called with a line at each step.

    Returns:
        The :class:`Int8Result`.

    Raises:
        QuantizationError: Not an FP32 grimace model, no frames, bad options.
        QuantizationRefused: Agreement below the thresholds; no file is left at ``out_path``.
    """
    import onnx
    import onnxruntime as ort

    from convert.export import sha256_file, write_metadata
    from edge.artifact import ArtifactError
    from edge.fileio import atomic_write_bytes
    from edge.predictor import Predictor, load_model

    opts = opts or QuantOptions()
    say = progress or (lambda _s: None)
    fp32_path, out_path = Path(fp32_path), Path(out_path)
    if not calib_frames:
        raise QuantizationError("no calibration frames: give --calib images or videos of your own animals")
    if not holdout_frames:
        raise QuantizationError(
            "no held-out frames for the agreement check: give more --calib frames or --holdout"
        )
    try:
        fp32 = load_model(fp32_path)
    except (ArtifactError, FileNotFoundError) as e:
        raise QuantizationError(str(e)) from None
    with fp32:
        meta = fp32.meta
        if meta.half:
            raise QuantizationError(f"{fp32_path}: an FP16 model; quantize the FP32 export (without --half)")
        proto = onnx.load(str(fp32_path), load_external_data=False)
        if any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in proto.graph.node):
            raise QuantizationError(f"{fp32_path}: already quantized; quantize the FP32 export")
        pred = Predictor(fp32)
        inputs = _prepared(pred, calib_frames)
        say(
            f"calibrating on {len(inputs)} frame(s) ({opts.method}"
            + (f" {opts.percentile}" if opts.method == "percentile" else "")
            + f", keep FP32: {opts.keep_fp32})"
        )
        out_path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{out_path.name[:80]}.", suffix=".onnx", dir=out_path.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            try:
                excluded = quantize_graph(fp32_path, tmp, inputs, opts)
            except QuantizationError:
                raise
            except Exception as e:  # ONNX Runtime's quantizer rejecting the graph: say so, no traceback
                raise QuantizationError(f"{fp32_path}: ONNX Runtime could not quantize it: {e}") from e
            say(f"checking agreement on {len(holdout_frames)} held-out frame(s)")
            int8 = load_model(tmp)
            with int8:
                ag = measure_agreement(fp32, int8, holdout_frames, conf=conf, iou=iou)
            failures = ag.failures(min_agree, min_icc)
            if failures:
                raise QuantizationRefused(
                    f"INT8 model refused: {'; '.join(failures)}. Nothing was written to {out_path}. Try "
                    "--keep-fp32 head, another --calib-method, or more and more varied calibration frames",
                    ag,
                    failures,
                )
            record = {
                "format": "QDQ",
                "weights": "int8 symmetric, per-channel"
                if opts.per_channel
                else "int8 symmetric, per-tensor",
                "int8_format": opts.format,
                "activations": "int8 symmetric, per-tensor"
                if opts.format == "s8"
                else "uint8 asymmetric, per-tensor",
                "bias": "fp32" if opts.format == "s8" else "int32",
                "calibration": {
                    "method": opts.method,
                    "frames": len(inputs),
                    "note": calib_note,
                    **({"percentile": opts.percentile} if opts.method == "percentile" else {}),
                },
                "keep_fp32": opts.keep_fp32,
                "fp32_nodes": excluded,
                "fp32_model_sha256": sha256_file(fp32_path),
                "agreement": {
                    **ag.to_dict(),
                    "conf": conf,
                    "iou": iou,
                    "box_iou": BOX_IOU,
                    "min_agree": min_agree,
                    "min_icc": min_icc,
                },
                "onnxruntime": ort.__version__,
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            }
            q = onnx.load(str(tmp))
            write_metadata(q, meta)  # the FP32 model's metadata, unchanged (scale spec, schema version)
            q.metadata_props.add(key=QUANT_KEY, value=json.dumps(record, sort_keys=True))
            atomic_write_bytes(out_path, q.SerializeToString())
        finally:
            tmp.unlink(missing_ok=True)
    return Int8Result(out_path, ag, record, excluded)


def read_quantization_record(path: str | Path) -> dict[str, Any] | None:
    """The ``grimace_quantization`` record of an ONNX file, or ``None`` for an unquantized one."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    for p in proto.metadata_props:
        if p.key == QUANT_KEY:
            return json.loads(p.value)
    return None


def time_model(path: str | Path, threads: int, repeats: int = 50, warmup: int = 5) -> float:
    """Median milliseconds of one ONNX Runtime CPU inference of a zero-free random input."""
    import time

    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in inp.shape]
    x = np.random.default_rng(0).uniform(0, 1, shape).astype(np.float32)
    for _ in range(warmup):
        sess.run(None, {inp.name: x})
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        sess.run(None, {inp.name: x})
        ts.append((time.perf_counter() - t0) * 1000)
    return float(np.median(ts))
