"""In-graph NMS tail appended to an exported raw fused graph (``--nms``).

The tail turns the raw output ``(B, N, 4 + nc + nc*ng)`` into a fixed-size list of kept boxes
``(B, max_det, 6 + ng)`` = ``x1 y1 x2 y2 conf unit | grade probs of that unit``; unused rows are all 0
(``conf == 0`` marks padding).

Why standard ONNX ``NonMaxSuppression`` and not the ``EfficientNMS_TRT`` plugin: the standard op runs
in ONNX Runtime, so the NMS graph gets the same parity check against PyTorch as the raw graph, and
TensorRT 10's ONNX parser builds it natively (``INMSLayer``; "NonMaxSuppression | Y | FP32, FP16" in
the onnx-tensorrt operator matrix, see :mod:`convert.trt_readiness`). ``EfficientNMS_TRT`` is a
TensorRT plugin that ONNX Runtime cannot run, so a graph using it could never be checked here.

The tail reproduces the numpy post-processing rule: each candidate keeps only its best unit
(``ArgMax``), NMS is per unit (class-aware) with a score threshold, then the ``max_det`` best kept
boxes over all units are taken with ``TopK`` and their boxes and the chosen unit's grade
probabilities are gathered. ``NonMaxSuppression`` returns a data-dependent number of rows; the tail
scatters the kept scores back into a dense ``(B, nc, N)`` tensor (``ScatterND``) so everything after
it has static shapes. Every op used is in the TensorRT 10 ONNX operator support matrix.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def append_nms(
    model: Any,
    nc: int,
    ng: int,
    conf: float = 0.25,
    iou: float = 0.45,
    max_det: int = 300,
    output_name: str = "output0",
) -> Any:
    """Return a copy of a raw fused ONNX model with the NMS tail appended.

    Args:
        model: ``onnx.ModelProto`` with one output ``(B, N, 4 + nc + nc*ng)`` (float32 or float16),
            ``N`` static.
        nc: Number of units.
        ng: Grade columns per unit.
        conf: Score threshold (a box is kept when its unit score is above it).
        iou: IoU threshold of the per-unit NMS.
        max_det: Rows per image of the output.
        output_name: Name of the new output.

    Returns:
        ``onnx.ModelProto`` whose only output is float32 ``(B, max_det, 6 + ng)``.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    if len(g.output) != 1:
        raise ValueError(f"append_nms: expected one raw output, got {len(g.output)}")
    raw_out = g.output[0]
    dims = raw_out.type.tensor_type.shape.dim
    c_expected = 4 + nc + nc * ng
    if len(dims) != 3 or not dims[1].HasField("dim_value") or dims[2].dim_value != c_expected:
        shape = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in dims]
        raise ValueError(
            f"append_nms: raw output must be (B, N, {c_expected}) with static N, got {shape}"
        )
    n = int(dims[1].dim_value)
    k = min(max_det, nc * n)
    opset = next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), 17)

    nodes: list[Any] = []
    inits: list[Any] = []

    def const(name: str, value: Any, dtype: Any = np.int64) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), f"nms/{name}"))
        return f"nms/{name}"

    def node(op: str, inputs: list[str], name: str, outputs: int = 1, **attrs: Any) -> list[str]:
        outs = [f"nms/{name}" if outputs == 1 else f"nms/{name}_{i}" for i in range(outputs)]
        nodes.append(helper.make_node(op, inputs, outs, name=f"nms/{name}", **attrs))
        return outs

    src = raw_out.name
    if raw_out.type.tensor_type.elem_type != TensorProto.FLOAT:
        src = node("Cast", [src], "raw_f32", to=TensorProto.FLOAT)[0]

    def cols(start: int, end: int, name: str) -> str:
        return node("Slice", [src, const(f"{name}_s", [start]), const(f"{name}_e", [end]),
                              const(f"{name}_a", [2])], name)[0]

    boxes = cols(0, 4, "boxes")  # (B, N, 4)
    scores = cols(4, 4 + nc, "scores")  # (B, N, nc)
    grades = cols(4 + nc, c_expected, "grades")  # (B, N, nc*ng)

    best = node("ArgMax", [scores], "best", axis=2, keepdims=1)[0]  # (B, N, 1) int64
    is_best = node("Equal", [best, const("units", np.arange(nc))], "is_best")[0]  # (B, N, nc)
    zero = const("zero", 0.0, np.float32)
    best_only = node("Where", [is_best, scores, zero], "best_only")[0]
    cls_scores = node("Transpose", [best_only], "cls_scores", perm=[0, 2, 1])[0]  # (B, nc, N)
    selected = node(
        "NonMaxSuppression",
        [boxes, cls_scores, const("max_out", [max_det]), const("iou", [iou], np.float32),
         const("score_thr", [conf], np.float32)],
        "nms",
        center_point_box=0,
    )[0]  # (K, 3) int64: batch, unit, box
    kept_scores = node("GatherND", [cls_scores, selected], "kept_scores")[0]  # (K,)
    dense_zero = node(
        "ConstantOfShape", [node("Shape", [cls_scores], "cls_shape")[0]], "dense_zero",
        value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.0]),
    )[0]
    dense = node("ScatterND", [dense_zero, selected, kept_scores], "dense")[0]  # (B, nc, N)
    flat = node("Reshape", [dense, const("flat_shape", [0, -1])], "flat")[0]  # (B, nc*N)
    top_val, top_idx = node("TopK", [flat, const("k", [k])], "topk", outputs=2, axis=1, largest=1, sorted=1)
    n_const = const("n", n)
    unit = node("Div", [top_idx, n_const], "unit")[0]  # (B, k) int64
    box_i = node("Mod", [top_idx, n_const], "box_i", fmod=0)[0]  # (B, k)
    box_i3 = node("Unsqueeze", [box_i, const("ax2", [2])], "box_i3")[0]  # (B, k, 1)
    sel_boxes = node("GatherElements", [boxes, node("Expand", [box_i3, const("e4", [1, 1, 4])], "bi4")[0]],
                     "sel_boxes", axis=1)[0]  # (B, k, 4)
    sel_grades = node(
        "GatherElements", [grades, node("Expand", [box_i3, const("eg", [1, 1, nc * ng])], "big")[0]],
        "sel_grades", axis=1,
    )[0]  # (B, k, nc*ng)
    g4 = node("Reshape", [sel_grades, const("g4_shape", [0, 0, nc, ng])], "g4")[0]  # (B, k, nc, ng)
    u4 = node("Reshape", [unit, const("u4_shape", [0, 0, 1, 1])], "u4")[0]
    u4 = node("Expand", [u4, const("eu", [1, 1, 1, ng])], "u4e")[0]  # (B, k, 1, ng)
    unit_grades = node("GatherElements", [g4, u4], "unit_grades4", axis=2)[0]
    unit_grades = node("Reshape", [unit_grades, const("ug_shape", [0, 0, ng])], "unit_grades")[0]
    valid = node("Cast", [node("Greater", [top_val, zero], "is_kept")[0]], "valid", to=TensorProto.FLOAT)[0]
    valid3 = node("Unsqueeze", [valid, const("ax2b", [2])], "valid3")[0]  # (B, k, 1)
    conf3 = node("Unsqueeze", [top_val, const("ax2c", [2])], "conf3")[0]
    unit_f = node("Cast", [node("Unsqueeze", [unit, const("ax2d", [2])], "unit3")[0]], "unit_f",
                  to=TensorProto.FLOAT)[0]
    parts = [
        node("Mul", [sel_boxes, valid3], "boxes_out")[0],
        conf3,
        node("Mul", [unit_f, valid3], "unit_out")[0],
        node("Mul", [unit_grades, valid3], "grades_out")[0],
    ]
    out = node("Concat", parts, "out", axis=2)[0]  # (B, k, 6+ng)
    if k < max_det:
        out = node("Pad", [out, const("pads", [0, 0, 0, 0, max_det - k, 0])], "pad", mode="constant")[0]
    nodes.append(helper.make_node("Identity", [out], [output_name], name="nms/output"))

    g.node.extend(nodes)
    g.initializer.extend(inits)
    batch_dim = dims[0]
    del g.output[:]
    out_vi = helper.make_tensor_value_info(output_name, TensorProto.FLOAT, [None, max_det, 6 + ng])
    d0 = out_vi.type.tensor_type.shape.dim[0]
    if batch_dim.HasField("dim_value"):
        d0.dim_value = batch_dim.dim_value
    else:
        d0.dim_param = batch_dim.dim_param or "batch"
    g.output.append(out_vi)
    if raw_out.name == output_name:
        raise ValueError("append_nms: output_name must differ from the raw output's name")
    del opset  # every op above exists unchanged from opset 13 to 24
    return m
