"""TensorRTBackend's glue code (tensor API calls, buffers, copies, version/GPU checks, profile limits,
output binding) run against STAND-INS for the TensorRT and cuda-python objects it uses
(``tests/trt_standins.py``).

TensorRT cannot be installed here, so this is NOT a TensorRT test: the stand-in "engine" executes the
tiny ONNX graph with ONNX Runtime on whatever the backend copied into its "device" buffers, and the
result must equal the ONNX Runtime backend's. It catches mistakes in our calling sequence (names,
shapes, dtypes, pointer handling, copy directions, unchecked results); the real engine is exercised
on a Jetson with ``jetson/acceptance.sh``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge.artifact import EngineInfo, ModelMetadata, sidecar_path
from edge.backends import EngineMismatchError, InputError, TensorRTBackend
from edge.predictor import Predictor, load_model
from edge.scales import RGS
from tests.tiny_onnx import build_tiny_onnx, face_image
from tests.trt_standins import StandInTensorRT

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")


def _engine(tmp_path: Path, onnx_path: Path, dla_core: int | None = None, sm: int | None = 16) -> Path:
    eng = tmp_path / "m.engine"
    eng.write_bytes(b"STANDIN-ENGINE")
    meta = ModelMetadata(
        scale=RGS.to_dict(), imgsz=(160, 160),
        engine=EngineInfo(tensorrt_version="10.3.0", gpu_name="Orin", compute_capability="8.7",
                          precision="fp16", dla_core=dla_core, sm_count=sm),
    )
    sidecar_path(eng).write_text(json.dumps(meta.to_dict()))
    return eng


@pytest.fixture
def fixed(tmp_path: Path) -> tuple[Path, Path]:
    onnx_path = build_tiny_onnx(tmp_path / "m.onnx", RGS, imgsz=160, cell=8, box=24)
    return onnx_path, _engine(tmp_path, onnx_path)


@pytest.fixture
def dynamic(tmp_path: Path) -> tuple[Path, Path]:
    onnx_path = build_tiny_onnx(tmp_path / "m.onnx", RGS, imgsz=160, cell=8, box=24, batch=None)
    return onnx_path, _engine(tmp_path, onnx_path)


def test_tensorrt_glue_matches_onnxruntime(fixed, monkeypatch: pytest.MonkeyPatch) -> None:
    onnx_path, eng = fixed
    st = StandInTensorRT("10.3.0", engine_onnx=onnx_path)
    st.install(monkeypatch)
    img = face_image(RGS, 240, 320, size=24)
    with load_model(eng, scale="rgs") as trt_model, load_model(onnx_path) as ort_model:
        assert isinstance(trt_model.backend, TensorRTBackend) and trt_model.backend.device == "tensorrt:Orin"
        a = Predictor(trt_model)([img])[0]
        b = Predictor(ort_model)([img])[0]
        x = np.random.default_rng(0).random((1, 3, 160, 160), dtype=np.float32)
        assert np.array_equal(trt_model.infer(x), ort_model.infer(x))
    run = [c for c in st.calls if c in ("set_input_shape", "H2D", "execute", "D2H")]
    assert run[:4] == ["set_input_shape", "H2D", "execute", "D2H"]
    assert st.calls.index("init_libnvinfer_plugins") < st.calls.index("deserialize")
    assert a.score == b.score and np.array_equal(a.detections.xyxy, b.detections.xyxy)


def test_tensorrt_refuses_engine_from_other_version_or_gpu(fixed, monkeypatch: pytest.MonkeyPatch) -> None:
    onnx_path, eng = fixed
    for version, gpu, pattern in (
        ("10.7.0", (b"Orin", 8, 7, 16), r"built with TensorRT 10\.3\.0 but this machine has TensorRT 10\.7"),
        ("10.3.0", (b"NVIDIA H100", 9, 0, 132), r"compute capability 8\.7.*9\.0"),
        ("10.3.0", (b"Orin", 8, 7, 8), r"16 SMs.*8 SMs"),  # an AGX Orin engine on an Orin Nano
    ):
        StandInTensorRT(version, engine_onnx=onnx_path).install(monkeypatch, gpu=gpu)
        with pytest.raises(EngineMismatchError, match=pattern) as e:
            load_model(eng)
        assert "grimace convert trt" in str(e.value) and str(eng) in str(e.value)


def test_profile_max_batch_caps_the_predictor(dynamic, monkeypatch: pytest.MonkeyPatch) -> None:
    """Defect 6: the engine's profile allows at most 2 frames; the Predictor (default batch 8) must
    send batches of 2, and a direct call outside the profile is refused with both limits."""
    onnx_path, eng = dynamic
    st = StandInTensorRT("10.3.0", engine_onnx=onnx_path, profile=(1, 2, 2))
    st.install(monkeypatch)
    imgs = [face_image(RGS, 240, 320, size=24, seed=i) for i in range(5)]
    with load_model(eng) as trt_model, load_model(onnx_path) as ort_model:
        assert trt_model.backend.max_batch == 2 and trt_model.backend.min_batch == 1
        pred = Predictor(trt_model)
        assert pred.batch_size == 2
        got = pred(imgs)
        want = Predictor(ort_model)(imgs)
        assert [r.score for r in got] == [r.score for r in want]
        assert st.calls.count("execute") == 3  # 2 + 2 + 1
        with pytest.raises(InputError, match=r"batch of 3 is outside the optimization profile.*1\.\.2"):
            trt_model.infer(np.zeros((3, 3, 160, 160), np.float32))


def test_set_input_shape_result_is_checked(dynamic, monkeypatch: pytest.MonkeyPatch) -> None:
    onnx_path, eng = dynamic
    st = StandInTensorRT("10.3.0", engine_onnx=onnx_path, profile=(2, 2, 4))  # min batch 2
    st.install(monkeypatch)
    with load_model(eng) as model:
        model.backend.min_batch = 1  # pretend the limits were not read: TensorRT's own answer still counts
        with pytest.raises(InputError, match=r"refused shape \(1, 3, 160, 160\)"):
            model.infer(np.zeros((1, 3, 160, 160), np.float32))
    assert "execute" not in st.calls


def test_every_output_gets_an_address(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Defect 7: an engine with two outputs; execute_async_v3 needs an address for each."""
    from onnx import TensorProto, helper

    onnx_path = build_tiny_onnx(tmp_path / "m.onnx", RGS, imgsz=160, cell=8, box=24)
    proto = onnx.load(str(onnx_path))
    proto.graph.output.append(helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 400, RGS.nc]))
    onnx.save(proto, str(onnx_path))
    eng = _engine(tmp_path, onnx_path)
    StandInTensorRT("10.3.0", engine_onnx=onnx_path).install(monkeypatch)
    x = np.random.default_rng(1).random((1, 3, 160, 160), dtype=np.float32)
    with load_model(eng) as trt_model, load_model(onnx_path) as ort_model:
        backend = trt_model.backend
        assert backend.output_names == ["output0", "scores"]
        out = trt_model.infer(x)
        assert np.array_equal(out, ort_model.infer(x))
        ref_scores = ort_model.backend.session.run(["scores"], {"images": x})[0]
        assert np.array_equal(backend.last_outputs["scores"], ref_scores)


def test_dla_engine_sets_runtime_dla_core(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    onnx_path = build_tiny_onnx(tmp_path / "m.onnx", RGS, imgsz=160, cell=8, box=24)
    eng = _engine(tmp_path, onnx_path, dla_core=1)
    st = StandInTensorRT("10.3.0", engine_onnx=onnx_path)
    st.install(monkeypatch)
    with load_model(eng):
        pass
    assert st.runtime_dla_core == 1


def test_missing_cuda_python_is_a_clear_error(fixed, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from edge.deps import MissingDependencyError

    onnx_path, eng = fixed
    st = StandInTensorRT("10.3.0", engine_onnx=onnx_path)
    monkeypatch.setitem(sys.modules, "tensorrt", st.module)
    for name in ("cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.cudart"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(MissingDependencyError, match=r"cuda-python.*<13"):
        load_model(eng)


def test_engine_check_runs_both_sides_through_the_predictor(fixed, monkeypatch: pytest.MonkeyPatch) -> None:
    """`grimace convert check`'s comparison (convert.trt_engine.check_engine_against_onnx) with the
    stand-in engine: both sides are the same graph, so the agreement must be complete."""
    from convert.trt_engine import check_engine_against_onnx

    onnx_path, eng = fixed
    StandInTensorRT("10.3.0", engine_onnx=onnx_path).install(monkeypatch)
    imgs = [face_image(RGS, 240, 320, size=24, seed=i) for i in range(3)]
    rep = check_engine_against_onnx(eng, onnx_path, imgs)
    assert rep.n_images == 3 and rep.agreement.n_ref > 0 and rep.agreement.identical
    assert rep.raw_max_abs == 0.0 and rep.postprocess == "edge.predictor.Predictor"
