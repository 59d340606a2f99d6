"""STAND-INS for the TensorRT and cuda-python objects our code calls — not TensorRT.

TensorRT cannot be installed here and there is no GPU, so these small classes stand in for the subset
of the TensorRT 8.6 / 10.x Python API and of ``cuda.bindings.runtime`` that ``edge.backends`` and
``convert.trt_engine`` use, with the documented behaviour our code depends on:

* ``Builder.create_network(flags)``: on 8.x without ``1 << EXPLICIT_BATCH`` the network is implicit
  batch and the ONNX parser refuses it (as onnx-tensorrt 8.6 does); on 10.x the flag is ignored.
* ``OnnxParser.parse_from_file``: reads the ONNX graph (with ``onnx``) for the input, dtype and layer
  kinds; a plugin op (``*_TRT``) fails unless ``init_libnvinfer_plugins`` ran first.
* ``build_serialized_network``: with ``BuilderFlag.INT8`` and a calibrator it pulls batches through
  ``get_batch`` and reads the bytes at the returned device pointer as the network input's dtype;
  an exception raised in ``get_batch`` is swallowed (the real binding's behaviour) and calibration
  simply ends.
* timing caches: ``create_timing_cache`` returns ``None`` for bytes that are not a timing cache,
  ``set_timing_cache`` returns ``False`` for a cache from another TensorRT.
* runtime: the "engine" executes an ONNX graph with ONNX Runtime on whatever was copied into its
  "device" buffers; ``set_input_shape`` returns ``False`` outside the optimization profile (real
  TensorRT logs an error and returns false); ``execute_async_v3`` returns ``False`` when an I/O tensor
  has no address.
* "device memory" is host memory; pointers are real addresses, copies are real ``memmove``\\ s.

Deprecated 10.x calls (``platform_has_fast_fp16``, ``int8_calibrator``, ``set_calibration_profile``)
are recorded in ``StandInTensorRT.deprecated_calls`` when used with a 10.x stand-in.
"""

from __future__ import annotations

import ctypes
import types
from pathlib import Path
from typing import Any

import numpy as np

PLUGIN_SUFFIX = "_TRT"


class _Memory:
    """Host memory standing in for device allocations; pointers are real addresses."""

    def __init__(self) -> None:
        self.blocks: dict[int, np.ndarray] = {}

    def malloc(self, n: int) -> int:
        buf = np.zeros(max(int(n), 1), np.uint8)
        self.blocks[buf.ctypes.data] = buf
        return buf.ctypes.data

    def read(self, ptr: int, n: int) -> bytes:
        return ctypes.string_at(ptr, n)


def standin_cuda(
    mem: _Memory, calls: list[str], gpu: tuple[bytes, int, int, int] = (b"Orin", 8, 7, 16)
) -> dict[str, types.ModuleType]:
    """Stand-in ``cuda.bindings.runtime`` (and its parent packages) for ``sys.modules``."""
    rt = types.ModuleType("cuda.bindings.runtime")

    class MemcpyKind:
        cudaMemcpyHostToDevice = 1
        cudaMemcpyDeviceToHost = 2

    def memcpy(dst: int, src: int, n: int, kind: int, stream: int = 0) -> tuple[int]:
        calls.append("H2D" if kind == 1 else "D2H")
        ctypes.memmove(dst, src, n)
        return (0,)

    props = types.SimpleNamespace(name=gpu[0], major=gpu[1], minor=gpu[2], multiProcessorCount=gpu[3])
    rt.cudaMemcpyKind = MemcpyKind
    rt.cudaMemcpyAsync = memcpy
    rt.cudaMemcpy = memcpy
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
    return {"cuda": cuda, "cuda.bindings": bindings, "cuda.bindings.runtime": rt}


_NP = {"float32": np.float32, "float16": np.float16, "int32": np.int32, "int8": np.int8}
_ONNX_DTYPE = {1: "float32", 10: "float16"}


class StandInTensorRT:
    """A stand-in ``tensorrt`` module (build and run sides). ``module`` goes into ``sys.modules``.

    Args:
        version: ``tensorrt.__version__`` to report (``"8.6.2"``, ``"10.3.0"``).
        engine_onnx: ONNX file the runtime's "engine" executes (with ONNX Runtime).
        profile: ``(min, opt, max)`` batch of the engine's optimization profile (dynamic batch).
    """

    def __init__(
        self,
        version: str = "10.3.0",
        engine_onnx: Path | None = None,
        profile: tuple[int, int, int] = (1, 1, 8),
    ) -> None:
        self.version = version
        self.major = int(version.split(".")[0])
        self.mem = _Memory()
        self.calls: list[str] = []
        self.deprecated_calls: list[str] = []
        self.log: list[str] = []
        self.plugins_initialised = False
        self.calibration_inputs: list[np.ndarray] = []
        self.builds: list[dict[str, Any]] = []
        self.runtime_dla_core: int | None = None
        self.engine_onnx = engine_onnx
        self.profile = profile
        self.timing_cache_blob = f"STANDIN-TIMING-CACHE {version}".encode()
        self.module = self._make_module()

    # ------------------------------------------------------------------------------- the module
    def _make_module(self) -> types.ModuleType:
        st = self
        trt = types.ModuleType("tensorrt")
        trt.__version__ = self.version

        class Logger:
            WARNING = 2
            ERROR = 1

            def __init__(self, level: int = 2) -> None:
                self.level = level

            def log(self, severity: int, msg: str) -> None:
                st.log.append(msg)

        class NetworkDefinitionCreationFlag:
            EXPLICIT_BATCH = 0
            STRONGLY_TYPED = 1

        class BuilderFlag:
            FP16, INT8, GPU_FALLBACK = "FP16", "INT8", "GPU_FALLBACK"

        class DeviceType:
            GPU, DLA = "GPU", "DLA"

        class MemoryPoolType:
            WORKSPACE = "WORKSPACE"

        class LayerType:
            QUANTIZE, DEQUANTIZE, OTHER = "QUANTIZE", "DEQUANTIZE", "OTHER"

        class TensorIOMode:
            INPUT, OUTPUT = "input", "output"

        class IInt8EntropyCalibrator2:
            def __init__(self) -> None:
                pass

        def init_libnvinfer_plugins(logger: Logger, namespace: str) -> bool:
            st.plugins_initialised = True
            st.calls.append("init_libnvinfer_plugins")
            return True

        class _Tensor:
            def __init__(self, name: str, shape: tuple[int, ...], dtype: str) -> None:
                self.name, self.shape, self.dtype = name, shape, dtype

        class _Layer:
            def __init__(self, kind: str) -> None:
                self.type = kind

        class Network:
            def __init__(self, explicit: bool) -> None:
                self.explicit = explicit
                self.inputs: list[_Tensor] = []
                self.layers: list[_Layer] = []

            def get_input(self, i: int) -> _Tensor:
                return self.inputs[i]

            @property
            def num_layers(self) -> int:
                return len(self.layers)

            def get_layer(self, i: int) -> _Layer:
                return self.layers[i]

        class OnnxParser:
            def __init__(self, network: Network, logger: Logger) -> None:
                self.network = network
                self.errors: list[str] = []

            @property
            def num_errors(self) -> int:
                return len(self.errors)

            def get_error(self, i: int) -> str:
                return self.errors[i]

            def parse_from_file(self, path: str) -> bool:
                import onnx

                if not self.network.explicit:
                    self.errors.append("Network must have explicit batch dimensions (implicit-batch network)")
                    return False
                proto = onnx.load(path, load_external_data=False)
                for node in proto.graph.node:
                    if node.op_type.endswith(PLUGIN_SUFFIX) and not st.plugins_initialised:
                        self.errors.append(f"node {node.name}: plugin {node.op_type} not in the registry")
                        return False
                    kind = {"QuantizeLinear": "QUANTIZE", "DequantizeLinear": "DEQUANTIZE"}.get(node.op_type)
                    self.network.layers.append(_Layer(kind or "OTHER"))
                vi = proto.graph.input[0]
                dims = tuple(d.dim_value if d.dim_value > 0 else -1 for d in vi.type.tensor_type.shape.dim)
                self.network.inputs.append(_Tensor(vi.name, dims, _ONNX_DTYPE[vi.type.tensor_type.elem_type]))
                return True

        class TimingCache:
            def __init__(self, blob: bytes) -> None:
                self.blob = blob

            def serialize(self) -> bytes:
                return st.timing_cache_blob

        class Profile:
            def __init__(self) -> None:
                self.shapes: dict[str, tuple] = {}

            def set_shape(self, name: str, lo: tuple, opt: tuple, hi: tuple) -> None:
                self.shapes[name] = (lo, opt, hi)

        class Config:
            def __init__(self) -> None:
                self.flags: set[str] = set()
                self.profiles: list[Profile] = []
                self.default_device_type = DeviceType.GPU
                self.DLA_core = -1
                self._calibrator = None
                self.calibration_profile = None
                self.timing_cache: TimingCache | None = None
                self.pool: dict[str, int] = {}

            def set_memory_pool_limit(self, pool: str, n: int) -> None:
                self.pool[pool] = n

            def set_flag(self, flag: str) -> None:
                self.flags.add(flag)

            def add_optimization_profile(self, p: Profile) -> int:
                self.profiles.append(p)
                return len(self.profiles) - 1

            @property
            def int8_calibrator(self) -> Any:
                return self._calibrator

            @int8_calibrator.setter
            def int8_calibrator(self, c: Any) -> None:
                if st.major >= 10:
                    st.deprecated_calls.append("int8_calibrator")
                self._calibrator = c

            def set_calibration_profile(self, p: Profile) -> bool:
                if st.major >= 10:
                    st.deprecated_calls.append("set_calibration_profile")
                self.calibration_profile = p
                return True

            def create_timing_cache(self, blob: bytes) -> TimingCache | None:
                if blob and not bytes(blob).startswith(b"STANDIN-TIMING-CACHE"):
                    return None  # not a timing cache at all
                return TimingCache(bytes(blob))

            def set_timing_cache(self, cache: TimingCache, ignore_mismatch: bool) -> bool:
                if cache.blob and cache.blob != st.timing_cache_blob and not ignore_mismatch:
                    return False  # written by another TensorRT version
                self.timing_cache = cache
                return True

            def get_timing_cache(self) -> TimingCache | None:
                return self.timing_cache

        class Builder:
            num_DLA_cores = 2

            def __init__(self, logger: Logger) -> None:
                pass

            @property
            def platform_has_fast_fp16(self) -> bool:
                if st.major >= 10:
                    st.deprecated_calls.append("platform_has_fast_fp16")
                return True

            def create_network(self, flags: int = 0) -> Network:
                st.calls.append(f"create_network({flags})")
                explicit = st.major >= 10 or bool(flags & (1 << NetworkDefinitionCreationFlag.EXPLICIT_BATCH))
                return Network(explicit)

            def create_builder_config(self) -> Config:
                return Config()

            def create_optimization_profile(self) -> Profile:
                return Profile()

            def build_serialized_network(self, network: Network, config: Config) -> bytes | None:
                cal = config.int8_calibrator
                if "INT8" in config.flags and cal is not None:
                    cached = cal.read_calibration_cache()
                    if not cached:
                        inp = network.get_input(0)
                        shape = (cal.get_batch_size(), *inp.shape[1:])
                        dtype = np.dtype(_NP[inp.dtype])
                        nbytes = int(np.prod(shape)) * dtype.itemsize
                        while True:
                            try:  # the real binding swallows exceptions raised in Python callbacks
                                ptrs = cal.get_batch([inp.name])
                            except Exception as e:
                                st.log.append(f"calibrator raised {e!r} (swallowed)")
                                ptrs = None
                            if not ptrs:
                                break
                            raw = st.mem.read(int(ptrs[0]), nbytes)
                            st.calibration_inputs.append(np.frombuffer(raw, dtype).reshape(shape).copy())
                        cal.write_calibration_cache(b"STANDIN-CALIBRATION")
                st.builds.append({"flags": set(config.flags), "device": config.default_device_type,
                                  "dla_core": config.DLA_core, "profiles": config.profiles,
                                  "calibrator": cal is not None})
                return b"STANDIN-ENGINE"

        # ---------------------------------------------------------------------- runtime side
        class Context:
            def __init__(self, engine: Engine) -> None:
                self.engine = engine
                self.addr: dict[str, int] = {}
                self.shape: tuple[int, ...] | None = None

            def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
                st.calls.append("set_input_shape")
                lo, _, hi = st.profile
                if self.engine.in_shape[0] == -1 and not lo <= shape[0] <= hi:
                    return False
                self.shape = tuple(shape)
                return True

            def get_tensor_shape(self, name: str) -> tuple[int, ...]:
                if name == self.engine.in_name:
                    return self.shape or self.engine.in_shape
                b = self.shape[0] if self.shape else -1
                return (b, *self.engine.out_shapes[name][1:])

            def set_tensor_address(self, name: str, ptr: int) -> bool:
                self.addr[name] = int(ptr)
                return True

            def execute_async_v3(self, stream: int) -> bool:
                st.calls.append("execute")
                e = self.engine
                if set(self.addr) != {e.in_name, *e.out_names}:
                    st.log.append(f"execute_async_v3: no address for {set(e.out_names) - set(self.addr)}")
                    return False
                n_in = int(np.prod(self.shape)) * 4
                x = np.frombuffer(ctypes.string_at(self.addr[e.in_name], n_in), np.float32)
                ys = e.sess.run(e.out_names, {e.in_name: x.reshape(self.shape).copy()})
                for name, y in zip(e.out_names, ys, strict=True):
                    y = np.ascontiguousarray(y, np.float32)
                    ctypes.memmove(self.addr[name], y.ctypes.data, y.nbytes)
                return True

        class Engine:
            def __init__(self) -> None:
                import onnxruntime as ort

                self.sess = ort.InferenceSession(str(st.engine_onnx), providers=["CPUExecutionProvider"])
                i = self.sess.get_inputs()[0]
                self.in_name = i.name
                self.in_shape = tuple(d if isinstance(d, int) else -1 for d in i.shape)
                self.out_names = [o.name for o in self.sess.get_outputs()]
                self.out_shapes = {
                    o.name: tuple(d if isinstance(d, int) else -1 for d in o.shape)
                    for o in self.sess.get_outputs()
                }

            @property
            def num_io_tensors(self) -> int:
                return 1 + len(self.out_names)

            def get_tensor_name(self, i: int) -> str:
                return [self.in_name, *self.out_names][i]

            def get_tensor_mode(self, name: str) -> str:
                return TensorIOMode.INPUT if name == self.in_name else TensorIOMode.OUTPUT

            def get_tensor_shape(self, name: str) -> tuple[int, ...]:
                return self.in_shape if name == self.in_name else self.out_shapes[name]

            def get_tensor_dtype(self, name: str) -> str:
                return "float32"

            def get_tensor_profile_shape(self, name: str, profile: int) -> list[tuple[int, ...]]:
                assert name == self.in_name and profile == 0
                return [(b, *self.in_shape[1:]) for b in st.profile]

            def create_execution_context(self) -> Context:
                return Context(self)

        class Runtime:
            def __init__(self, logger: Logger) -> None:
                self._dla = -1

            @property
            def DLA_core(self) -> int:
                return self._dla

            @DLA_core.setter
            def DLA_core(self, core: int) -> None:
                st.runtime_dla_core = core
                self._dla = core

            def deserialize_cuda_engine(self, data: bytes) -> Engine | None:
                st.calls.append("deserialize")
                return Engine() if data == b"STANDIN-ENGINE" else None

        for obj in (Logger, NetworkDefinitionCreationFlag, BuilderFlag, DeviceType, MemoryPoolType, LayerType,
                    TensorIOMode, IInt8EntropyCalibrator2, Builder, OnnxParser, Runtime):
            setattr(trt, obj.__name__, obj)
        trt.init_libnvinfer_plugins = init_libnvinfer_plugins
        trt.nptype = lambda dt: _NP[dt]
        return trt

    def install(self, monkeypatch: Any, gpu: tuple[bytes, int, int, int] = (b"Orin", 8, 7, 16)) -> None:
        """Put this stand-in and a stand-in cuda-python into ``sys.modules`` for one test."""
        import sys

        monkeypatch.setitem(sys.modules, "tensorrt", self.module)
        for name, mod in standin_cuda(self.mem, self.calls, gpu).items():
            monkeypatch.setitem(sys.modules, name, mod)
