"""TensorRT-readiness check on hand-built ONNX graphs (the exported graphs are checked in
test_convert_onnx.py)."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from convert.trt_readiness import SUPPORTED_OPS, UNSUPPORTED_OPS, check_trt_readiness  # noqa: E402


def _model(nodes, inputs=None, outputs=None, inits=(), opset=17):
    inputs = inputs or [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 32, 32])]
    outputs = outputs or [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    g = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _conv_relu(extra=()):
    w = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
    nodes = [helper.make_node("Conv", ["images", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["y" if not extra else "r"], name="relu"), *extra]
    return nodes, [w]


def test_supported_graph_passes():
    nodes, inits = _conv_relu()
    rep = check_trt_readiness(_model(nodes, inits=inits))
    assert rep.ok, rep.errors
    assert rep.op_counts == {"Conv": 1, "Relu": 1}


def test_unsupported_op_fails_and_is_named():
    nodes, inits = _conv_relu([helper.make_node("Det", ["r2"], ["y"], name="my_det")])
    nodes.insert(2, helper.make_node("Reshape", ["r", "shape"], ["r2"], name="to_square"))
    inits.append(numpy_helper.from_array(np.array([4, 32, 32], np.int64), "shape"))
    rep = check_trt_readiness(_model(nodes, inits=inits))
    assert not rep.ok
    msg = "\n".join(rep.errors)
    assert "'my_det' (Det)" in msg and "op 'Det' is marked unsupported" in msg


def test_unknown_op_and_foreign_domain_fail():
    nodes, inits = _conv_relu([helper.make_node("FancyOp", ["r"], ["y"], name="f", domain="com.example")])
    m = _model(nodes, inits=inits)
    m.opset_import.append(helper.make_opsetid("com.example", 1))
    rep = check_trt_readiness(m)
    assert any("FancyOp" in e and "com.example" in e for e in rep.errors)


def test_standard_plugin_is_named_not_failed():
    nodes, inits = _conv_relu([helper.make_node("EfficientNMS_TRT", ["r"], ["y"], name="enms")])
    m = _model(nodes, inits=inits)
    rep = check_trt_readiness(m)
    assert rep.ok, rep.errors
    assert any("EfficientNMS_TRT plugin" in p for p in rep.plugins)


def test_dynamic_spatial_dims_fail():
    nodes, inits = _conv_relu()
    inp = [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, "h", "w"])]
    rep = check_trt_readiness(_model(nodes, inputs=inp, inits=inits))
    assert not rep.ok
    assert any("axis 2 is dynamic ('h')" in e for e in rep.errors)
    inp = [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, 32, 32])]
    assert check_trt_readiness(_model(nodes, inputs=inp, inits=inits)).ok  # dynamic batch is fine


def test_dtype_rules():
    # a string tensor and a non-float image input are rejected; DOUBLE is a warning
    nodes = [helper.make_node("Cast", ["images"], ["y"], name="to_double", to=TensorProto.DOUBLE)]
    out = [helper.make_tensor_value_info("y", TensorProto.DOUBLE, None)]
    rep = check_trt_readiness(_model(nodes, outputs=out))
    assert any("cast to DOUBLE" in e for e in rep.errors)
    inp = [helper.make_tensor_value_info("images", TensorProto.UINT8, [1, 3, 32, 32])]
    nodes = [helper.make_node("Cast", ["images"], ["y"], name="c", to=TensorProto.FLOAT)]
    rep = check_trt_readiness(_model(nodes, inputs=inp))
    assert any("must be FP32 or FP16" in e for e in rep.errors)


def test_topk_restrictions():
    k = numpy_helper.from_array(np.array([5000], np.int64), "k")
    inp = [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 8000])]
    nodes = [helper.make_node("TopK", ["images", "k"], ["y", "i"], name="topk")]
    outs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("i", TensorProto.INT64, None)]
    rep = check_trt_readiness(_model(nodes, inputs=inp, outputs=outs, inits=[k]))
    assert any("K=5000 must be < 3840" in e for e in rep.errors)


def test_resize_mode_restriction():
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    nodes = [helper.make_node("Resize", ["images", "", "scales"], ["y"], name="up", mode="cubic")]
    rep = check_trt_readiness(_model(nodes, inits=[scales]))
    assert any("resize mode 'cubic'" in e for e in rep.errors)


def test_old_opset_fails():
    nodes, inits = _conv_relu()
    rep = check_trt_readiness(_model(nodes, inits=inits, opset=8))
    assert any("opset 8 outside" in e for e in rep.errors)


def test_matrix_tables_are_disjoint_and_cover_detector_ops():
    assert not set(SUPPORTED_OPS) & UNSUPPORTED_OPS
    for op in ("Conv", "Sigmoid", "Mul", "Concat", "Resize", "MaxPool", "Softmax", "NonMaxSuppression",
               "TopK", "ScatterND", "GatherElements", "GatherND"):
        assert op in SUPPORTED_OPS


def test_cli_check_trt_exit_codes(tmp_path):
    from edge.cli import app

    nodes, inits = _conv_relu()
    good = tmp_path / "good.onnx"
    onnx.save(_model(nodes, inits=inits), str(good))
    nodes, inits = _conv_relu([helper.make_node("Unique", ["r"], ["y"], name="uniq")])
    bad = tmp_path / "bad.onnx"
    onnx.save(_model(nodes, inits=inits), str(bad))
    runner = CliRunner()
    res = runner.invoke(app, ["convert", "check-trt", str(good)])
    assert res.exit_code == 0, res.output
    assert "PASS" in res.output and "onnx-tensorrt" in res.output
    res = runner.invoke(app, ["convert", "check-trt", str(bad)])
    assert res.exit_code == 1
    assert "op 'Unique'" in res.output and "FAIL" in res.output
