"""ONNX export of a fused model: contract, parity with PyTorch, in-graph NMS, FP16, metadata, CLI."""

from __future__ import annotations

import hashlib
import json
import re

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("ultralytics")

import onnx
import torch
from typer.testing import CliRunner

from convert import export
from convert.parity import check_onnx_parity
from edge.artifact import ModelMetadata
from edge.scales import RGS
from tests.convert_fixtures import IMGSZ, METRICS, draw_images, fused_fixture, parity_images_fixture  # noqa: F401

runner = CliRunner()


@pytest.fixture(scope="module")
def raw_export(fused, tmp_path_factory):
    """FP32 raw-output export, fixed batch 1 (shared by several tests to keep the suite fast)."""
    return export.export_onnx(fused.model, fused.meta, tmp_path_factory.mktemp("raw") / "m.onnx")


@pytest.fixture(scope="module")
def nms_export(fused, tmp_path_factory):
    """FP32 export with in-graph NMS and a dynamic batch axis."""
    return export.export_onnx(
        fused.model,
        fused.meta,
        tmp_path_factory.mktemp("nms") / "nms.onnx",
        nms=True,
        dynamic=True,
        max_det=50,
    )


def _cli():
    from edge.cli import app

    return app


def test_fp32_raw_export_matches_pytorch(fused, raw_export, parity_images):
    model = fused.model
    path, md, _ = raw_export
    rep = check_onnx_parity(model, path, md, parity_images)
    print("\n".join(rep.lines()))
    assert rep.ok, rep.failures
    assert rep.raw_max_abs_parts["scores"] <= 1e-4 and rep.raw_max_abs_parts["grades"] <= 1e-4
    assert rep.raw_max_abs_parts["boxes"] / IMGSZ <= 1e-4  # box pixels relative to the input size
    ag = rep.agreement
    assert ag.n_ref > 0 and ag.identical  # non-vacuous: there are boxes, all the same
    proto = onnx.load(str(path))
    assert proto.opset_import[0].version >= 17
    out = proto.graph.output[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in out] == [1, sum((IMGSZ // s) ** 2 for s in (8, 16, 32)), md.num_outputs]


def test_nms_export_keeps_grades_with_boxes(fused, nms_export, parity_images):
    model = fused.model
    path, md, raw = nms_export
    assert md.output == "nms"
    rep = check_onnx_parity(model, path, md, parity_images, raw_proto=raw)
    print("\n".join(rep.lines()))
    assert rep.ok, rep.failures
    assert rep.agreement.n_ref > 0 and rep.agreement.identical
    assert rep.raw_max_abs is not None  # raw graph before the tail is compared too
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    y = sess.run(None, {"images": np.random.default_rng(0).random((1, 3, IMGSZ, IMGSZ), np.float32)})[0]
    assert y.shape == (1, 50, 6 + RGS.ng)
    kept = y[0][y[0, :, 4] > 0]
    pad = y[0][y[0, :, 4] == 0]
    assert len(kept) > 0
    assert np.all(pad == 0)
    assert set(kept[:, 5].astype(int)) <= set(range(RGS.nc))
    grades = kept[:, 6:]
    assert np.allclose(grades.sum(1), 1, atol=1e-5)  # each row carries its unit's distribution


def test_dynamic_batch_export(nms_export):
    path, md, _ = nms_export
    assert md.batch is None
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.rand(3, 3, IMGSZ, IMGSZ)
    y = sess.run(None, {"images": x.numpy()})[0]
    assert y.shape == (3, md.max_det, 6 + RGS.ng)
    single = sess.run(None, {"images": x[1:2].numpy()})[0]
    np.testing.assert_allclose(y[1], single[0], atol=1e-4)


def test_half_export_reports_agreement(fused, parity_images, tmp_path):
    model, meta = fused.model, fused.meta
    path, md, raw = export.export_onnx(model, meta, tmp_path / "half.onnx", half=True)
    assert md.half
    proto = onnx.load(str(path))
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    rep = check_onnx_parity(model, path, md, parity_images, raw_proto=raw)
    print("\n".join(rep.lines()))
    assert rep.ok  # FP16 is reported, never failed
    assert rep.n_images == len(parity_images) and rep.raw_max_abs is not None
    assert rep.agreement.n_ref > 0 and rep.agreement.matched >= 0.9 * rep.agreement.n_ref
    # the caller's model stays FP32
    assert next(model.parameters()).dtype == torch.float32


def test_parity_detects_a_broken_export(fused, raw_export, parity_images, tmp_path):
    model = fused.model
    src, md, _ = raw_export
    path = tmp_path / "broken.onnx"
    proto = onnx.load(str(src))
    # corrupt one bias value of the last conv (one channel only: the same shift on every grade logit
    # of a unit would cancel in its softmax): ONNX now computes something else than PyTorch
    from onnx import numpy_helper

    conv = [n for n in proto.graph.node if n.op_type == "Conv" and len(n.input) > 2][-1]
    init = next(t for t in proto.graph.initializer if t.name == conv.input[2])
    bias = numpy_helper.to_array(init).copy()
    bias[0] += 0.5
    init.CopyFrom(numpy_helper.from_array(bias, init.name))
    onnx.save(proto, str(path))
    rep = check_onnx_parity(model, path, md, parity_images)
    assert not rep.ok
    assert "max |Δ|" in "; ".join(rep.failures)


def test_contract_mismatch_is_a_clear_error(fused, tmp_path):
    model, meta = fused.model, fused.meta
    from edge.scales import MGS

    wrong = ModelMetadata(scale=MGS.to_dict(), imgsz=meta.imgsz, stride=meta.stride)
    with pytest.raises(export.ExportError, match=r"expected \(1, N, 24\).*'mgs'"):
        export.export_onnx(model, wrong, tmp_path / "x.onnx")
    with pytest.raises(export.ExportError, match="multiple of the model stride"):
        export.export_onnx(
            model, ModelMetadata(scale=RGS.to_dict(), imgsz=(100, 100), stride=32), tmp_path / "x.onnx"
        )
    with pytest.raises(export.ExportError, match="opset 13"):
        export.export_onnx(model, meta, tmp_path / "x.onnx", opset=13)


def test_metadata_embedded_and_readable_by_onnxruntime(raw_export):
    path, _, _ = raw_export
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    back = ModelMetadata.from_onnx_props(sess.get_modelmeta().custom_metadata_map)
    assert back.spec.fingerprint == RGS.fingerprint
    assert back.imgsz == (IMGSZ, IMGSZ) and back.batch == 1 and back.output == "raw"
    assert back.metrics == METRICS
    assert back.model_name == "fused-yolov5n-grade"
    assert back.package_version and back.created
    assert sess.get_inputs()[0].shape == [1, 3, IMGSZ, IMGSZ]


def test_exported_graphs_pass_trt_readiness(raw_export, nms_export):
    from convert.trt_readiness import check_trt_readiness

    for path, _, _ in (raw_export, nms_export):
        rep = check_trt_readiness(path)
        print("\n".join(rep.lines()))
        assert rep.ok, rep.errors
        assert not rep.plugins  # standard ONNX NonMaxSuppression, no plugin needed
    assert "NonMaxSuppression" in check_trt_readiness(nms_export[0]).op_counts


def _parity_boxes(output: str) -> int:
    """The reference box count of the parity line ``after post-processing: boxes ref N / test M, ...``."""
    m = re.search(r"after post-processing: boxes ref (\d+) / test (\d+)", output)
    assert m, output
    return int(m.group(1))


def test_cli_onnx_then_inspect(fused, tmp_path):
    """``convert onnx`` on the fused checkpoint (real loader, export, parity, metadata), then ``inspect``."""
    imgdir = tmp_path / "imgs"
    draw_images(imgdir, n=2)
    out = tmp_path / "cli.onnx"
    res = runner.invoke(
        _cli(),
        ["convert", "onnx", str(fused.checkpoint), "--nms", "--images", str(imgdir), "--out", str(out)],
    )
    print(res.output)
    assert res.exit_code == 0, res.output  # exit 0 needs identical post-NMS detections
    assert "parity: ONNX Runtime vs PyTorch on 2 image(s)" in res.output
    assert _parity_boxes(res.output) > 0  # non-vacuous: the drawn faces give boxes
    assert "TensorRT-readiness: PASS" in res.output
    assert "warning: exporting" not in res.output  # exported at the trained size
    md = export.read_onnx_metadata(out)
    weights_sha = hashlib.sha256((fused.checkpoint / "model.safetensors").read_bytes()).hexdigest()
    assert md.source_sha256 == weights_sha  # the checkpoint's weights file identifies the export
    assert md.metrics == METRICS and md.imgsz == (IMGSZ, IMGSZ) and md.output == "nms"
    assert json.loads(md.to_json())["scale"]["name"] == "rgs"
    res = runner.invoke(_cli(), ["convert", "inspect", str(out)])
    print(res.output)
    assert res.exit_code == 0, res.output
    assert "scale        rgs (rat)" in res.output
    assert "unit 3: whiskers" in res.output
    assert weights_sha in res.output
    assert "val/grade_acc 0.81" in res.output
    assert "NonMaxSuppression 1" in res.output
    assert f"input        {IMGSZ}x{IMGSZ} RGB" in res.output


def test_cli_inspect_refuses_model_without_metadata(tmp_path):
    from onnx import TensorProto, helper

    g = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])],
    )
    p = tmp_path / "plain.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(p))
    res = runner.invoke(_cli(), ["convert", "inspect", str(p)])
    assert res.exit_code == 1
    assert "no 'grimace' metadata" in res.output


def test_cli_onnx_missing_checkpoint(tmp_path):
    res = runner.invoke(
        _cli(), ["convert", "onnx", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "x.onnx")]
    )
    assert res.exit_code == 1
    assert "no such checkpoint" in res.output


def test_cli_onnx_warns_when_imgsz_differs_from_training(fused, tmp_path):
    """Exporting at another size than the checkpoint was trained at works, with a warning naming both."""
    imgdir = tmp_path / "imgs"
    draw_images(imgdir, n=1, seed=1)
    other = IMGSZ + 32
    out = tmp_path / "other.onnx"
    args = ["convert", "onnx", str(fused.checkpoint), "--imgsz", str(other), "--images", str(imgdir)]
    res = runner.invoke(_cli(), [*args, "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert f"at {other}x{other}, but it was trained at {IMGSZ}x{IMGSZ}" in res.output
    assert export.read_onnx_metadata(out).imgsz == (other, other)


def test_edge_runtime_loads_export_and_refuses_other_scale(raw_export, nms_export):
    """The runtime (edge.backends) opens both exports, scores a frame, and refuses another scale."""
    from convert.parity import synthetic_images
    from edge.predictor import load_model
    from edge.scales import ScaleMismatchError

    img = synthetic_images(3, seed=1)[1]  # 383x257: letterboxed, so boxes are mapped back for real

    for path, _, _ in (raw_export, nms_export):
        model = load_model(path, scale="rgs")
        try:
            from edge.postprocess import postprocess, preprocess

            x, infos = preprocess(img, model.meta, return_info=True)
            out = model.backend.infer(x)
            det = postprocess(out[0], model.meta.spec, letterbox_info=infos[0])
            assert len(det) > 0
            h, w = img.shape[:2]
            assert det.xyxy[:, 2].max() <= w and det.xyxy[:, 3].max() <= h  # mapped back to the image
        finally:
            model.backend.close()
        with pytest.raises(ScaleMismatchError, match="was made for scale 'rgs'"):
            load_model(path, scale="mgs")
