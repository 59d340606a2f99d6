"""TensorRTBackend's glue code (tensor API calls, buffers, copies, version/GPU checks) run against a
stand-in for the subset of the TensorRT 10 and cuda-python APIs it uses.

TensorRT cannot be installed here, so this is NOT a TensorRT test: the stand-in "engine" executes the
tiny ONNX graph with ONNX Runtime on whatever the backend copied into its "device" buffers, and the
result must equal the ONNX Runtime backend's. It catches mistakes in our calling sequence (names,
shapes, dtypes, pointer handling, copy directions); the real engine is exercised on a Jetson with
`grimace convert check`.
"""

from __future__ import annotations

import ctypes
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from edge.artifact import EngineInfo, ModelMetadata, sidecar_path
from edge.backends import EngineMismatchError, TensorRTBackend
from edge.predictor import load_model
from edge.scales import RGS
from tests.tiny_onnx import build_tiny_onnx, face_image

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


class _Memory:
    """Host memory standing in for device allocations; pointers are real addresses."""

    def __init__(self) -> None:
        self.blocks: dict[int, np.ndarray] = {}

    def malloc(self, n: int) -> int:
        buf = np.zeros(n, np.uint8)
        ptr = buf.ctypes.data
        self.blocks[ptr] = buf
        return ptr


def _fake_modules(onnx_path: Path, version: str = "10.3.0", gpu: tuple[bytes, int, int] = (b"Orin", 8, 7)):
    mem = _Memory()
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    in_shape = tuple(sess.get_inputs()[0].shape)
    out_shape = tuple(sess.get_outputs()[0].shape)
    calls: list[str] = []

    trt = types.ModuleType("tensorrt")
    trt.__version__ = version

    class Logger:
        WARNING = 2

        def __init__(self, level: int) -> None:
            self.level = level

    class TensorIOMode:
        INPUT = "input"
        OUTPUT = "output"

    class Context:
        def __init__(self) -> None:
            self.addr: dict[str, int] = {}
            self.shape: tuple[int, ...] = in_shape

        def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
            assert name == "images"
            self.shape = tuple(shape)
            calls.append("set_input_shape")
            return True

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            return out_shape if name == "output0" else self.shape

        def set_tensor_address(self, name: str, ptr: int) -> bool:
            self.addr[name] = int(ptr)
            return True

        def execute_async_v3(self, stream: int) -> bool:
            calls.append("execute")
            n_in = int(np.prod(self.shape)) * 4
            x = np.frombuffer((ctypes.c_uint8 * n_in).from_address(self.addr["images"]), np.float32)
            y = sess.run(None, {"images": x.reshape(self.shape).copy()})[0]
            ctypes.memmove(self.addr["output0"], y.ctypes.data, y.nbytes)
            return True

    class Engine:
        num_io_tensors = 2

        def get_tensor_name(self, i: int) -> str:
            return ["images", "output0"][i]

        def get_tensor_mode(self, name: str) -> str:
            return TensorIOMode.INPUT if name == "images" else TensorIOMode.OUTPUT

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            return in_shape if name == "images" else out_shape

        def get_tensor_dtype(self, name: str) -> str:
            return "float32"

        def create_execution_context(self) -> Context:
            return Context()

    class Runtime:
        def __init__(self, logger: Logger) -> None:
            pass

        def deserialize_cuda_engine(self, data: bytes) -> Engine | None:
            return Engine() if data == b"engine" else None

    trt.Logger, trt.TensorIOMode, trt.Runtime = Logger, TensorIOMode, Runtime
    trt.nptype = lambda dt: {"float32": np.float32, "float16": np.float16}[dt]

    rt = types.ModuleType("cuda.bindings.runtime")

    class MemcpyKind:
        cudaMemcpyHostToDevice = 1
        cudaMemcpyDeviceToHost = 2

    def memcpy(dst: int, src: int, n: int, kind: int, stream: int) -> tuple[int]:
        calls.append("H2D" if kind == 1 else "D2H")
        ctypes.memmove(dst, src, n)
        return (0,)

    props = types.SimpleNamespace(name=gpu[0], major=gpu[1], minor=gpu[2])
    rt.cudaMemcpyKind = MemcpyKind
    rt.cudaMemcpyAsync = memcpy
    rt.cudaMalloc = lambda n: (0, mem.malloc(n))
    rt.cudaFree = lambda p: (0,)
    rt.cudaStreamCreate = lambda: (0, 7)
    rt.cudaStreamSynchronize = lambda s: (0,)
    rt.cudaStreamDestroy = lambda s: (0,)
    rt.cudaGetDeviceProperties = lambda i: (0, props)
    cuda = types.ModuleType("cuda")
    bindings = types.ModuleType("cuda.bindings")
    bindings.runtime = rt
    cuda.bindings = bindings
    mods = {"tensorrt": trt, "cuda": cuda, "cuda.bindings": bindings, "cuda.bindings.runtime": rt}
    return mods, calls


@pytest.fixture
def engine(tmp_path: Path) -> tuple[Path, Path]:
    onnx_path = build_tiny_onnx(tmp_path / "m.onnx", RGS, imgsz=160, cell=8, box=24)
    eng = tmp_path / "m.engine"
    eng.write_bytes(b"engine")
    meta = ModelMetadata(
        scale=RGS.to_dict(),
        imgsz=(160, 160),
        engine=EngineInfo(
            tensorrt_version="10.3.0", gpu_name="Orin", compute_capability="8.7", precision="fp16"
        ),
    )
    sidecar_path(eng).write_text(json.dumps(meta.to_dict()))
    return onnx_path, eng


def test_tensorrt_glue_matches_onnxruntime(
    engine: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    onnx_path, eng = engine
    mods, calls = _fake_modules(onnx_path)
    for name, mod in mods.items():
        monkeypatch.setitem(sys.modules, name, mod)
    from edge.predictor import Predictor

    img = face_image(RGS, 240, 320, size=24)
    with load_model(eng, scale="rgs") as trt_model, load_model(onnx_path) as ort_model:
        assert isinstance(trt_model.backend, TensorRTBackend) and trt_model.backend.device == "tensorrt:Orin"
        a = Predictor(trt_model)([img])[0]
        b = Predictor(ort_model)([img])[0]
        x = np.random.default_rng(0).random((1, 3, 160, 160), dtype=np.float32)
        assert np.array_equal(trt_model.infer(x), ort_model.infer(x))
    assert calls[:4] == ["set_input_shape", "H2D", "execute", "D2H"]
    assert a.score == b.score and np.array_equal(a.detections.xyxy, b.detections.xyxy)


def test_tensorrt_refuses_engine_from_other_version_or_gpu(
    engine: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    onnx_path, eng = engine
    for version, gpu, pattern in (
        ("10.7.0", (b"Orin", 8, 7), r"built with TensorRT 10\.3\.0 but this machine has TensorRT 10\.7\.0"),
        ("10.3.0", (b"NVIDIA H100", 9, 0), r"compute capability 8\.7.*9\.0"),
    ):
        mods, _ = _fake_modules(onnx_path, version=version, gpu=gpu)
        for name, mod in mods.items():
            monkeypatch.setitem(sys.modules, name, mod)
        with pytest.raises(EngineMismatchError, match=pattern) as e:
            load_model(eng)
        assert "grimace convert trt" in str(e.value) and str(eng) in str(e.value)
