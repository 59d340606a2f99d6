"""INT8 quantization (``grimace convert onnx --int8``): real ONNX Runtime static quantization of the
tiny colour-blob model (tests/tiny_onnx.py) calibrated on drawn faces, the agreement report, the
refusal, the metadata carried over, TensorRT-readiness of the Q/DQ graph, and the FP32-kept parts of
the real demo model's head."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime.quantization")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from convert import quantize as q  # noqa: E402
from convert.trt_readiness import check_trt_readiness  # noqa: E402
from edge.artifact import METADATA_KEY  # noqa: E402
from edge.predictor import Predictor, load_model  # noqa: E402
from edge.scales import RGS  # noqa: E402
from tests.tiny_onnx import build_tiny_onnx, face_image  # noqa: E402

DEMO = Path(__file__).resolve().parents[1] / "edge" / "assets" / "demo_model.onnx"
runner = CliRunner()


def _faces(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [
        face_image(RGS, shift=(int(rng.integers(-40, 40)), int(rng.integers(-30, 30))),
                   brightness=float(rng.uniform(0.7, 1.0)), seed=int(rng.integers(1 << 30)))
        for _ in range(n)
    ]  # fmt: skip


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return build_tiny_onnx(tmp_path_factory.mktemp("int8") / "tiny.onnx", RGS, imgsz=320)


@pytest.mark.parametrize("fmt", ["s8", "u8"])
def test_quantize_tiny_model_agrees_and_carries_metadata(tiny: Path, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"tiny.{fmt}.onnx"
    opts = q.QuantOptions(method="minmax", format=fmt, keep_fp32="decode")  # the MatMuls are quantized
    res = q.quantize_model(tiny, out, _faces(12), _faces(4, seed=1), opts)
    ag = res.agreement
    assert out.is_file() and ag.frames == 4 and ag.boxes_fp32 > 0
    assert ag.box_match >= 0.95 and ag.unit_agreement >= 0.95 and ag.grade_agreement >= 0.95
    assert ag.icc >= 0.95
    fp32_props = {p.key: p.value for p in onnx.load(str(tiny)).metadata_props}
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert props[METADATA_KEY] == fp32_props[METADATA_KEY]  # scale spec, schema version: unchanged
    rec = json.loads(props[q.QUANT_KEY])
    assert rec == q.read_quantization_record(out) and rec["int8_format"] == fmt
    assert rec["calibration"] == {"method": "minmax", "frames": 12, "note": ""}
    assert rec["agreement"]["frames"] == 4 and rec["fp32_model_sha256"]
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    # the INT8 file runs through the one runtime loader and predictor
    with load_model(out) as m:
        assert m.meta.spec.name == RGS.name
        assert len(Predictor(m)(_faces(1, seed=2))[0].detections) > 0
    ready = check_trt_readiness(out)
    if fmt == "s8":  # INT8 with zero point 0 and FP32 biases: TensorRT explicit quantization
        assert ready.ok, ready.errors
        assert ready.qdq["QuantizeLinear"] > 0 and any("explicit quantization" in s for s in ready.lines())
    else:  # UINT8 activations: TensorRT refuses them, and the report says what to use instead
        assert not ready.ok and any("UINT8" in e and "--int8-format s8" in e for e in ready.errors)


def test_quantizing_the_decode_tail_is_refused_and_nothing_is_written(tiny: Path, tmp_path: Path) -> None:
    """Quantizing everything (one scale for box pixels and scores in the output Concat) destroys the
    scores: the agreement check refuses it, no INT8 file and no temporary file remain."""
    out = tmp_path / "bad.int8.onnx"
    with pytest.raises(q.QuantizationRefused, match=r"box match 0\.0% < 95\.0%") as e:
        opts = q.QuantOptions(method="minmax", keep_fp32="none")
        q.quantize_model(tiny, out, _faces(8), _faces(4, seed=1), opts)
    assert e.value.agreement.boxes_fp32 > 0 and e.value.failures
    assert list(tmp_path.iterdir()) == []


def test_fp32_nodes_of_the_demo_model_head() -> None:
    proto = onnx.load(str(DEMO), load_external_data=False)
    decode = q.fp32_nodes(proto, "decode")
    outputs = q.fp32_nodes(proto, "outputs")
    grade = q.fp32_nodes(proto, "grade-branch")
    head = q.fp32_nodes(proto, "head")
    assert q.fp32_nodes(proto, "none") == []
    assert set(decode) < set(outputs) < set(grade) < set(head)
    ops = {n.name: n.op_type for n in proto.graph.node}
    assert all(n.startswith("/model.24/") for n in head)
    assert {"Softmax", "Sigmoid", "Concat"} <= {ops[n] for n in decode}
    assert not any("/cv2" in n or "/cv3" in n or "/cv4" in n for n in decode)
    last = sorted(set(outputs) - set(decode))  # the last conv of each branch at each of the 3 levels
    assert len(last) == 9 and all(ops[n] == "Conv" and n.endswith("2/Conv") for n in last)
    assert all("/cv4" in n for n in set(grade) - set(outputs))
    with pytest.raises(q.QuantizationError, match="keep-fp32 must be one of"):
        q.fp32_nodes(proto, "everything")


def test_calibration_frames_come_from_edge_sources(tmp_path: Path) -> None:
    imgs = _faces(5)
    for i, im in enumerate(imgs):
        cv2.imwrite(str(tmp_path / f"f{i}.png"), im)
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    frames, problems = q.read_frames([tmp_path], limit=10)
    assert len(frames) == 5 and np.array_equal(frames[0], imgs[0])
    assert len(problems) == 1 and "broken.jpg" in problems[0]
    # frames are kept at the network's input size; prepare() of that is prepare() of the original
    with load_model(build_tiny_onnx(tmp_path / "m.onnx", RGS, imgsz=320)) as m:
        fit, pred = q.fit_to_input(m.meta), Predictor(m)
        for shape in ((480, 640), (1080, 1920), (333, 517), (320, 320), (100, 90)):
            img = np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8)
            small = fit(img)
            assert small.shape == (320, 320, 3)
            assert np.array_equal(pred.prepare([small])[0], pred.prepare([img])[0])
        fitted, _ = q.read_frames([tmp_path], limit=2, transform=fit)
        assert [f.shape for f in fitted] == [(320, 320, 3)] * 2
    calib, hold = q.split_holdout(list(range(9)))
    assert hold == [3, 7] and not set(hold) & set(calib)


def _cli():
    from edge.cli import app

    return app


def test_cli_int8_writes_or_refuses_with_exit_code(tiny: Path, tmp_path: Path) -> None:
    calib = tmp_path / "calib"
    calib.mkdir()
    for i, im in enumerate(_faces(16)):
        cv2.imwrite(str(calib / f"c{i:02d}.png"), im)
    out = tmp_path / "tiny.int8.onnx"
    args = ["convert", "onnx", str(tiny), "--int8", "--calib", str(calib), "--int8-out", str(out),
            "--calib-method", "minmax", "--keep-fp32", "decode"]  # fmt: skip
    res = runner.invoke(_cli(), args)
    assert res.exit_code == 0, res.output
    assert "INT8 vs FP32 on 4 held-out frame(s)" in res.output and "TensorRT-readiness: PASS" in res.output
    assert out.is_file() and q.read_quantization_record(out)["calibration"]["frames"] == 12
    shown = runner.invoke(_cli(), ["convert", "inspect", str(out)])
    assert shown.exit_code == 0 and "quantized    QDQ s8" in shown.output
    assert "4 held-out frames: box match" in shown.output
    bad = tmp_path / "bad.int8.onnx"
    res = runner.invoke(_cli(), [*args[:-6], "--int8-out", str(bad), "--keep-fp32", "none", "--calib-method",
                                 "minmax"])  # fmt: skip
    assert res.exit_code == 3 and "INT8 model refused" in res.output and not bad.exists()
    res = runner.invoke(_cli(), ["convert", "onnx", str(tiny), "--out", str(tmp_path / "x.onnx"), "--int8",
                                 "--calib", str(calib)])  # fmt: skip
    assert res.exit_code == 1 and "--int8-out" in res.output
    res = runner.invoke(_cli(), ["convert", "onnx", str(tiny)])
    assert res.exit_code == 1 and "--int8 --calib" in res.output


# ------------------------------------------------------------------ TensorRT-readiness of Q/DQ graphs
def _qdq_model(act_zp=np.int8(0), w_zp=np.int8(0), act_scale=np.float32(0.05), bias_int32=False):
    w = np.random.default_rng(0).integers(-127, 128, (4, 3, 3, 3)).astype(np.int8)
    inits = [
        numpy_helper.from_array(np.asarray(act_scale, np.float32), "a_s"),
        numpy_helper.from_array(np.asarray(act_zp), "a_z"),
        numpy_helper.from_array(w, "w_q"),
        numpy_helper.from_array(np.full(4, 0.01, np.float32), "w_s"),
        numpy_helper.from_array(np.full(4, w_zp, np.asarray(w_zp).dtype), "w_z"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["images", "a_s", "a_z"], ["xq"], name="q_in"),
        helper.make_node("DequantizeLinear", ["xq", "a_s", "a_z"], ["xd"], name="dq_in"),
        helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_z"], ["w"], name="dq_w", axis=0),
    ]
    if bias_int32:
        inits += [numpy_helper.from_array(np.zeros(4, np.int32), "b_q"),
                  numpy_helper.from_array(np.full(4, 5e-4, np.float32), "b_s")]  # fmt: skip
        nodes.append(helper.make_node("DequantizeLinear", ["b_q", "b_s"], ["b"], name="dq_bias", axis=0))
    else:
        inits.append(numpy_helper.from_array(np.zeros(4, np.float32), "b"))
    nodes.append(helper.make_node("Conv", ["xd", "w", "b"], ["y"], name="conv", pads=[1, 1, 1, 1]))
    g = helper.make_graph(
        nodes, "qdq", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 32, 32])], initializer=inits,
    )  # fmt: skip
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_trt_readiness_accepts_int8_qdq_and_names_what_tensorrt_refuses() -> None:
    rep = check_trt_readiness(_qdq_model())
    assert rep.ok, rep.errors
    assert rep.qdq == {"QuantizeLinear": 1, "DequantizeLinear": 2}
    uint8 = check_trt_readiness(_qdq_model(act_zp=np.uint8(128)))
    assert any("'q_in'" in e and "UINT8" in e for e in uint8.errors)
    nonzero = check_trt_readiness(_qdq_model(act_zp=np.int8(3)))
    assert any("'q_in'" in e and "zero point must be 0" in e for e in nonzero.errors)
    bias = check_trt_readiness(_qdq_model(bias_int32=True))
    assert [e for e in bias.errors if "INT32 DequantizeLinear" in e and "'dq_bias'" in e]
    per_channel_act = check_trt_readiness(_qdq_model(act_scale=np.full((1, 3, 1, 1), 0.05, np.float32)))
    assert any("per-channel scales on an activation" in e for e in per_channel_act.errors)
    negative = check_trt_readiness(_qdq_model(act_scale=np.float32(-1.0)))
    assert any("scale must be finite and > 0" in e for e in negative.errors)
