"""TensorRT-readiness check of an ONNX graph, without TensorRT (``grimace convert check-trt``).

Source of the operator list: NVIDIA's ONNX-TensorRT operator support matrix, ``docs/operators.md`` of
https://github.com/onnx/onnx-tensorrt (main branch, the TensorRT 10 parser; its header reads
"TensorRT 10.15 supports operators in the inclusive range of opset 9 to opset 24"). The table below
keeps, for every operator marked ``Y`` there, the data types listed as supported, and the operators
marked ``N``; the restrictions column is checked for the operators a fused detector can contain (TopK,
Resize, pooling, reductions, Squeeze/Unsqueeze, ScatterND, Dropout, Constant). Jetson JetPack 6 ships
TensorRT 10.3, whose parser is older than the matrix: export at opset 17 (the default), which every
TensorRT 10 release parses.

What is checked:

* every node is in the default ONNX domain and its op is supported (or is a standard TensorRT plugin,
  named in the report: it needs ``libnvinfer_plugin``), the opset is in range;
* the data type of each node's data input (``Cast``: its target type) is one the matrix lists;
* no STRING / complex / unsigned-16+ tensors anywhere; DOUBLE is a warning (TensorRT casts it down);
* graph inputs are float NCHW with static channel and spatial dims, only the batch axis may be
  symbolic, and every output dim except the batch is static (TensorRT profiles fix one range per
  dynamic axis; data-dependent intermediate shapes such as NonMaxSuppression's are supported in 10);
* per-op restrictions: TopK ``K`` a constant below 3840 with ``sorted=1``; Resize modes; 2D/3D pooling
  without dilation or MaxPool ``Indices``; constant reduction/squeeze axes; ScatterND ``reduction=none``;
* Q/DQ graphs (``grimace convert onnx --int8``) as TensorRT explicit quantization: every
  QuantizeLinear/DequantizeLinear quantizes to INT8 (or FP8/INT4 weights) with a constant zero point
  of all zeros (TensorRT's quantization is symmetric) and a constant, positive scale; per-channel
  scales only on constants (weights); no INT32 DequantizeLinear (a quantized bias: TensorRT takes
  biases in FP32 and rejects it, "only activation types allowed as input to this layer") and no
  UINT8 Q/DQ. Such a graph is built with the INT8 flag and no calibrator: its scales are in the graph.

This does not prove TensorRT will build the engine (only a build on the target does); it catches the
graph features the parser is documented to reject, before a model is shipped to a Jetson.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MATRIX_SOURCE = (
    "https://github.com/onnx/onnx-tensorrt/blob/main/docs/operators.md "
    "(TensorRT 10.15 parser, opsets 9-24)"
)
OPSET_MIN, OPSET_MAX = 9, 24
TOPK_MAX_K = 3840

_F = "FP32,FP16,BF16"
_FI = "FP32,FP16,BF16,INT32,INT64"
_FIB = "FP32,FP16,BF16,INT32,INT64,BOOL"

# operator -> data types the matrix lists as supported ("Y" rows).
_SUPPORTED_SRC = f"""
Abs:{_FI} Acos:{_F} Acosh:{_F} Add:{_FI} And:BOOL ArgMax:{_FI} ArgMin:{_FI} Asin:{_F} Asinh:{_F}
Atan:{_F} Atanh:{_F} Attention:{_F},INT8,FP8 AveragePool:{_F} BatchNormalization:{_F}
BlackmanWindow:FP32,FP16 Cast:{_FI},UINT8,BOOL CastLike:{_FI},UINT8,BOOL Ceil:{_F} Celu:{_F} Clip:{_F}
Concat:{_FIB} Constant:{_FIB},FP8,FP4,INT4 ConstantOfShape:{_FIB},FP8,FP4,INT4 Conv:{_F}
ConvTranspose:{_F} Cos:{_F} Cosh:{_F} CumSum:{_F} DeformConv:FP32,FP16 DepthToSpace:{_FI}
DequantizeLinear:INT8,FP8,FP4,INT4 Div:{_FI} Dropout:{_F} Einsum:{_F} Elu:{_F} Equal:{_FI} Erf:{_F}
Exp:{_F} Expand:{_FIB} EyeLike:{_FIB} Flatten:{_FIB} Floor:{_F} Gather:{_FIB} GatherElements:{_FIB}
GatherND:{_FIB} Gelu:{_FI},INT8 Gemm:{_F} GlobalAveragePool:{_F} GlobalLpPool:{_F} GlobalMaxPool:{_F}
Greater:{_FI} GreaterOrEqual:{_FI} GridSample:FP32,FP16 GroupNormalization:{_F} GRU:{_F}
HammingWindow:FP32,FP16 HannWindow:FP32,FP16 HardSigmoid:{_F} HardSwish:{_F} Hardmax:{_F}
Identity:{_FIB} If:{_FIB} ImageScaler:{_F} InstanceNormalization:{_F} IsInf:{_F} IsNaN:{_FI}
LayerNormalization:{_F} LeakyRelu:{_F} Less:{_FI} LessOrEqual:{_FI} Log:{_F} LogSoftmax:{_F}
Loop:{_FIB} LRN:{_F} LSTM:{_F} LpNormalization:{_F} LpPool:{_F} MatMul:{_F} Max:{_FI} MaxPool:{_F}
Mean:{_FI},FP8 MeanVarianceNormalization:{_F} Min:{_FI} Mish:FP32,FP16 Mod:{_FI} Mul:{_FI} Neg:{_FI}
NonMaxSuppression:FP32,FP16 NonZero:FP32,FP16 Not:BOOL OneHot:{_FIB} Or:BOOL Pad:{_FI}
ParametricSoftplus:{_F} Pow:{_FI} PRelu:{_F} QuantizeLinear:{_F} RandomNormal:{_F}
RandomNormalLike:{_F} RandomUniform:{_F} RandomUniformLike:{_F} Range:{_FI} Reciprocal:{_F}
ReduceL1:{_FI} ReduceL2:{_FI} ReduceLogSum:{_FI} ReduceLogSumExp:{_FI} ReduceMax:{_FI}
ReduceMean:{_FI} ReduceMin:{_FI} ReduceProd:{_FI} ReduceSum:{_FI} ReduceSumSquare:{_FI} Relu:{_FI}
Reshape:{_FIB} Resize:{_F} ReverseSequence:{_FIB} RMSNormalization:{_F} RNN:{_F} RoiAlign:FP32,FP16
RotaryEmbedding:{_F} Round:{_F} STFT:FP32 ScaledTanh:{_F} Scan:{_F} Scatter:{_FI}
ScatterElements:{_FI} ScatterND:{_FI} Selu:{_F} Shape:{_FIB} Shrink:{_FI} Sigmoid:{_F} Sign:{_FI}
Sin:{_F} Sinh:{_F} Size:{_FIB} Slice:{_FIB} Softmax:{_F} Softplus:{_F} Softsign:{_F}
SpaceToDepth:{_FI} Split:{_FIB} Sqrt:{_F} Squeeze:{_FIB} Sub:{_FI} Sum:{_FI} Tan:{_F} Tanh:{_F}
TensorScatter:{_F},INT32 ThresholdedRelu:{_F} Tile:{_FIB} TopK:{_FI} Transpose:{_FIB} Trilu:{_FIB}
Unsqueeze:{_FIB} Upsample:{_F} Where:{_FIB} Xor:BOOL
"""

# operators the matrix marks "N"
UNSUPPORTED_OPS = frozenset(
    [
        "AffineGrid", "Bernoulli", "BitShift", "BitwiseAnd", "BitwiseNot", "BitwiseOr",
        "BitwiseXor", "Col2Im", "CenterCropPad", "Compress", "ConcatFromSequence", "ConvInteger",
        "DFT", "Det", "DynamicQuantizeLinear", "ImageDecoder", "MatMulInteger", "MaxRoiPool",
        "MaxUnpool", "MelWeightMatrix", "Multinomial", "NegativeLogLikelihoodLoss", "Optional",
        "OptionalGetElement", "OptionalHasElement", "QLinearConv", "QLinearMatMul",
        "RegexFullMatch", "SequenceAt", "SequenceConstruct", "SequenceEmpty", "SequenceErase",
        "SequenceInsert", "SequenceLength", "SequenceMap", "SoftmaxCrossEntropyLoss",
        "SplitToSequence", "StringConcat", "StringNormalizer", "StringSplit", "TfIdfVectorizer",
        "Unique",
    ]
)


def _parse_supported(src: str) -> dict[str, frozenset[str]]:
    out: dict[str, frozenset[str]] = {}
    for item in src.split():
        op, types = item.split(":")
        out[op] = frozenset(t for t in types.replace(",", " ").split() if t)
    return out


SUPPORTED_OPS: dict[str, frozenset[str]] = _parse_supported(_SUPPORTED_SRC)

# Standard TensorRT plugins the ONNX parser maps by op name (shipped in libnvinfer_plugin).
TRT_PLUGINS = {
    "EfficientNMS_TRT": "EfficientNMS_TRT plugin (libnvinfer_plugin)",
    "BatchedNMSDynamic_TRT": "BatchedNMSDynamic_TRT plugin (libnvinfer_plugin, deprecated)",
    "BatchedNMS_TRT": "BatchedNMS_TRT plugin (libnvinfer_plugin, deprecated)",
}

# ONNX TensorProto element type -> matrix type name
_DTYPE_NAMES = {
    1: "FP32", 2: "UINT8", 3: "INT8", 4: "UINT16", 5: "INT16", 6: "INT32", 7: "INT64", 8: "STRING",
    9: "BOOL", 10: "FP16", 11: "DOUBLE", 12: "UINT32", 13: "UINT64", 14: "COMPLEX64",
    15: "COMPLEX128", 16: "BF16", 17: "FP8", 18: "FP8", 19: "FP8", 20: "FP8", 21: "UINT4", 22: "INT4",
    23: "FP4",
}
_REJECTED_DTYPES = {"STRING", "COMPLEX64", "COMPLEX128", "UINT16", "UINT32", "UINT64", "INT16", "UINT4"}

_RESIZE_COORD = {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"}
_RESIZE_NEAREST = {"floor", "ceil", "round_prefer_floor", "round_prefer_ceil"}


@dataclass
class ReadinessReport:
    """Result of :func:`check_trt_readiness`.

    Attributes:
        path: The model checked.
        opset: Default-domain opset.
        op_counts: Nodes per op type.
        inputs: ``name: dtype shape`` lines.
        outputs: Same for outputs.
        errors: What TensorRT's parser would reject (each names the node and op).
        warnings: Accepted with caveats.
        plugins: Standard TensorRT plugins the graph needs.
    """

    path: str
    opset: int = 0
    op_counts: dict[str, int] = field(default_factory=dict)
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    plugins: list[str] = field(default_factory=list)
    qdq: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """No errors."""
        return not self.errors

    def lines(self) -> list[str]:
        """Printable report."""
        out = [
            f"TensorRT-readiness of {self.path}",
            f"  checked against: {MATRIX_SOURCE}",
            f"  opset {self.opset}; {sum(self.op_counts.values())} nodes, "
            f"{len(self.op_counts)} op types: "
            + ", ".join(f"{k} {v}" for k, v in sorted(self.op_counts.items())),
        ]
        out += [f"  input  {s}" for s in self.inputs]
        out += [f"  output {s}" for s in self.outputs]
        out += [f"  plugin: {p}" for p in self.plugins]
        if self.qdq:
            out.append(
                f"  explicit quantization: {self.qdq.get('QuantizeLinear', 0)} QuantizeLinear, "
                f"{self.qdq.get('DequantizeLinear', 0)} DequantizeLinear (Q/DQ scales are in the graph: "
                "build with the INT8 flag and no calibrator)"
            )
        out += [f"  warning: {w}" for w in self.warnings]
        out += [f"  ERROR: {e}" for e in self.errors]
        out.append("  result: " + ("PASS (TensorRT 10's ONNX parser accepts every op, dtype and shape)"
                                   if self.ok else f"FAIL ({len(self.errors)} problem(s))"))
        return out


def _dims(vi: Any) -> list[int | str]:
    return [
        d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
        for d in vi.type.tensor_type.shape.dim
    ]


def _const_values(graph: Any) -> dict[str, Any]:
    from onnx import numpy_helper

    vals = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for n in graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    vals[n.output[0]] = numpy_helper.to_array(a.t)
    return vals


def _attr(node: Any, name: str, default: Any = None) -> Any:
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def check_trt_readiness(model: str | Path | Any) -> ReadinessReport:
    """Check an ONNX model (path or ``ModelProto``) against TensorRT 10's ONNX parser support.

    Returns:
        The report; ``report.ok`` is False when something would be rejected.
    """
    import onnx

    path = str(model) if isinstance(model, str | Path) else "<model>"
    proto = onnx.load(str(model)) if isinstance(model, str | Path) else model
    rep = ReadinessReport(path=path)
    try:
        proto = onnx.shape_inference.infer_shapes(proto)
    except Exception as e:  # a graph shape inference rejects is not one TensorRT will take either
        rep.errors.append(f"ONNX shape inference failed: {e}")
    g = proto.graph
    rep.opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    if not OPSET_MIN <= rep.opset <= OPSET_MAX:
        rep.errors.append(f"opset {rep.opset} outside TensorRT 10's range {OPSET_MIN}-{OPSET_MAX}")
    dtypes: dict[str, str] = {}
    for vi in (*g.input, *g.output, *g.value_info):
        dtypes[vi.name] = _DTYPE_NAMES.get(vi.type.tensor_type.elem_type, "UNKNOWN")
    for t in g.initializer:
        dtypes[t.name] = _DTYPE_NAMES.get(t.data_type, "UNKNOWN")
    consts = _const_values(g)
    rep.op_counts = dict(Counter(n.op_type for n in g.node))

    for kind, values in (("input", g.input), ("output", g.output)):
        init_names = {t.name for t in g.initializer}
        for vi in values:
            if vi.name in init_names:
                continue
            dims = _dims(vi)
            dt = dtypes.get(vi.name, "UNKNOWN")
            (rep.inputs if kind == "input" else rep.outputs).append(f"{vi.name}: {dt} {dims}")
            if kind == "input":
                if dt not in ("FP32", "FP16"):
                    rep.errors.append(f"input {vi.name!r} is {dt}; the image input must be FP32 or FP16")
                if len(dims) != 4:
                    rep.errors.append(f"input {vi.name!r} must be NCHW (4-D), got {dims}")
            for ax, d in enumerate(dims):
                if ax > 0 and not isinstance(d, int):
                    rep.errors.append(
                        f"{kind} {vi.name!r} axis {ax} is dynamic ({d!r}); only the batch axis may be "
                        "dynamic (export with fixed --imgsz)"
                    )

    for name, dt in sorted(dtypes.items()):
        if dt in _REJECTED_DTYPES:
            rep.errors.append(f"tensor {name!r} has type {dt}, which TensorRT does not support")
        elif dt == "DOUBLE":
            rep.warnings.append(f"tensor {name!r} is DOUBLE; TensorRT casts it down to FP32")

    for node in g.node:
        where = f"node {node.name or '<unnamed>'!r} ({node.op_type})"
        if node.domain not in ("", "ai.onnx"):
            if node.op_type in TRT_PLUGINS:
                rep.plugins.append(f"{where}: {TRT_PLUGINS[node.op_type]}")
            else:
                rep.errors.append(
                    f"{where}: op {node.op_type!r} of domain {node.domain!r} is neither an ONNX op nor a "
                    "standard TensorRT plugin"
                )
            continue
        op = node.op_type
        if op in TRT_PLUGINS:
            rep.plugins.append(f"{where}: {TRT_PLUGINS[op]}")
            continue
        if op not in SUPPORTED_OPS:
            why = "marked unsupported" if op in UNSUPPORTED_OPS else "not in"
            rep.errors.append(f"{where}: op {op!r} is {why} the TensorRT 10 ONNX operator matrix")
            continue
        allowed = SUPPORTED_OPS[op]
        if op in ("QuantizeLinear", "DequantizeLinear"):
            rep.qdq[op] = rep.qdq.get(op, 0) + 1
            _check_qdq(node, where, consts, dtypes, rep)
            continue
        if op == "Cast":
            dt = _DTYPE_NAMES.get(int(_attr(node, "to", 1)), "UNKNOWN")
            if dt not in allowed:
                rep.errors.append(f"{where}: cast to {dt} is not supported (allowed {sorted(allowed)})")
        elif op == "ConstantOfShape":
            val = _attr(node, "value")
            dt = _DTYPE_NAMES.get(val.data_type, "UNKNOWN") if val is not None else "FP32"
            if dt not in allowed:
                rep.errors.append(f"{where}: value type {dt} not supported (allowed {sorted(allowed)})")
        elif node.input and node.input[0]:
            dt = dtypes.get(node.input[0])
            if dt is not None and dt != "UNKNOWN" and dt not in allowed:
                rep.errors.append(
                    f"{where}: input {node.input[0]!r} is {dt}; TensorRT supports {op} on {sorted(allowed)}"
                )
        _check_restrictions(node, where, consts, rep)
    return rep


def _check_restrictions(node: Any, where: str, consts: dict[str, Any], rep: ReadinessReport) -> None:
    op = node.op_type
    if op == "TopK":
        k = consts.get(node.input[1]) if len(node.input) > 1 else None
        if k is None:
            rep.errors.append(f"{where}: K must be a build-time constant")
        elif int(k.reshape(-1)[0]) >= TOPK_MAX_K:
            rep.errors.append(f"{where}: K={int(k.reshape(-1)[0])} must be < {TOPK_MAX_K}")
        if int(_attr(node, "sorted", 1)) != 1:
            rep.errors.append(f"{where}: sorted must be 1")
    elif op == "Resize":
        mode = _attr(node, "mode", b"nearest")
        ctm = _attr(node, "coordinate_transformation_mode", b"half_pixel")
        nearest = _attr(node, "nearest_mode", b"round_prefer_floor")
        mode, ctm, nearest = (v.decode() if isinstance(v, bytes) else v for v in (mode, ctm, nearest))
        if mode not in ("nearest", "linear"):
            rep.errors.append(f"{where}: resize mode {mode!r} unsupported (nearest, linear)")
        if ctm not in _RESIZE_COORD:
            rep.errors.append(f"{where}: coordinate_transformation_mode {ctm!r} unsupported")
        if mode == "nearest" and nearest not in _RESIZE_NEAREST:
            rep.errors.append(f"{where}: nearest_mode {nearest!r} unsupported")
        if int(_attr(node, "antialias", 0)):
            rep.errors.append(f"{where}: antialiasing is not supported")
    elif op in ("MaxPool", "AveragePool", "LpPool"):
        ks = _attr(node, "kernel_shape", [])
        if len(ks) not in (2, 3):
            rep.errors.append(f"{where}: only 2D or 3D pooling is supported (kernel {list(ks)})")
        if any(d != 1 for d in _attr(node, "dilations", []) or []):
            rep.errors.append(f"{where}: dilations must be all ones")
        if op == "MaxPool" and len(node.output) > 1 and node.output[1]:
            rep.errors.append(f"{where}: the Indices output is unsupported")
    elif op.startswith("Reduce") or op in ("Squeeze", "Unsqueeze"):
        if len(node.input) > 1 and node.input[1] and node.input[1] not in consts:
            rep.errors.append(f"{where}: axes must be a build-time constant")
    elif op == "ScatterND":
        red = _attr(node, "reduction", b"none")
        red = red.decode() if isinstance(red, bytes) else red
        if red != "none":
            rep.errors.append(f"{where}: reduction {red!r} is not supported")
    elif op == "Dropout":
        if len(node.input) > 2 and node.input[2]:
            val = consts.get(node.input[2])
            if val is None or bool(val):
                rep.errors.append(f"{where}: is_training must be a constant False")
    elif op == "Constant":
        for a in node.attribute:
            if a.name in ("sparse_value", "value_string", "value_strings"):
                rep.errors.append(f"{where}: Constant attribute {a.name!r} is unsupported")
    elif op == "NonMaxSuppression":
        for i in (2, 3, 4):
            if len(node.input) > i and node.input[i] and node.input[i] not in consts:
                rep.warnings.append(
                    f"{where}: input {i} is not a constant (TensorRT 8.x required constants here)"
                )


_QDQ_TYPES = frozenset({"INT8", "FP8", "INT4"})


def _check_qdq(
    node: Any, where: str, consts: dict[str, Any], dtypes: dict[str, str], rep: ReadinessReport
) -> None:
    """TensorRT explicit quantization rules for one QuantizeLinear / DequantizeLinear node."""
    import numpy as np

    op = node.op_type
    x = node.input[0]
    scale = node.input[1] if len(node.input) > 1 else ""
    zp = node.input[2] if len(node.input) > 2 else ""
    if op == "QuantizeLinear":
        qtype = dtypes.get(zp, "UNKNOWN") if zp else "UINT8"  # no zero point: ONNX quantizes to UINT8
        xtype = dtypes.get(x)
        if xtype is not None and xtype not in ("FP32", "FP16", "BF16", "UNKNOWN"):
            rep.errors.append(f"{where}: input {x!r} is {xtype}; TensorRT quantizes FP32/FP16/BF16")
    else:
        qtype = dtypes.get(x, dtypes.get(zp, "UNKNOWN") if zp else "UNKNOWN")
    if qtype == "UINT8":
        rep.errors.append(f"{where}: UINT8 quantization; TensorRT's explicit quantization takes INT8 "
                          "with zero point 0 (quantize with --int8-format s8)")
    elif qtype == "INT32":
        rep.errors.append(f"{where}: INT32 DequantizeLinear (a quantized bias); TensorRT takes biases in "
                          "FP32 and rejects it (quantize with --int8-format s8, which keeps biases FP32)")
    elif qtype not in _QDQ_TYPES and qtype != "UNKNOWN":
        rep.errors.append(f"{where}: {qtype} quantization is not supported (INT8, FP8, INT4)")
    s = consts.get(scale) if scale else None
    if s is None:
        rep.errors.append(f"{where}: scale must be a build-time constant")
    else:
        s = np.asarray(s, dtype=np.float64)
        if not (np.all(np.isfinite(s)) and np.all(s > 0)):
            rep.errors.append(f"{where}: scale must be finite and > 0")
        if s.size > 1 and x not in consts and op == "QuantizeLinear":
            rep.errors.append(f"{where}: per-channel scales on an activation; TensorRT quantizes activations "
                              "per tensor (per-channel only for weights)")
    if zp:
        z = consts.get(zp)
        if z is None:
            rep.errors.append(f"{where}: zero point must be a build-time constant")
        elif np.any(np.asarray(z) != 0):
            rep.errors.append(f"{where}: zero point must be 0 (TensorRT's quantization is symmetric)")
    if int(_attr(node, "block_size", 0) or 0) and qtype != "INT4":
        rep.errors.append(f"{where}: block quantization is supported for INT4 weights only")
