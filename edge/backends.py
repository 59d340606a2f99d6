"""Inference backends behind one small interface (model loading and the frame predictor live in
:mod:`edge.predictor`).

A backend is a context manager with ``infer(batch) -> output``; ``infer`` checks the input's shape and
dtype against the model and says what it expected. Two backends exist:

* :class:`OnnxRuntimeBackend`: ONNX Runtime on the CPU, or CUDA when its provider is installed.
* :class:`TensorRTBackend`: a serialized TensorRT engine plus its sidecar JSON
  (:func:`edge.artifact.sidecar_path`); ``tensorrt`` and ``cuda-python`` are imported only when an
  engine is opened, and an engine built with another TensorRT version or for another GPU is refused
  with the command that rebuilds it.

A third backend, for PyTorch fused checkpoints, lives in ``train.fused.backend`` (``edge`` never
imports torch). Each backend says the largest batch it takes (:attr:`Backend.max_batch`); the one
:class:`edge.predictor.Predictor` feeds it batches no larger than that.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from edge.artifact import ArtifactError, ModelMetadata, normalize_gpu_name, sidecar_path
from edge.deps import require

STAGES = ("decode", "pre", "infer", "post")


class InputError(ValueError):
    """A batch does not fit the model's input (shape or dtype)."""


class EngineMismatchError(ArtifactError):
    """A TensorRT engine was built with another TensorRT version or for another GPU."""


def _dims(shape: Sequence[Any]) -> tuple[int | None, ...]:
    """Model input dims with symbolic/unknown axes as ``None``."""
    return tuple(d if isinstance(d, int) and d > 0 else None for d in shape)


def check_input(batch: np.ndarray, shape: Sequence[int | None], dtype: np.dtype, name: str) -> None:
    """Raise :class:`InputError` unless ``batch`` fits ``shape`` (``None`` = any) and ``dtype``.

    Args:
        batch: The array about to be fed.
        shape: Expected shape, ``None`` for dynamic axes.
        dtype: Expected dtype.
        name: Model input name (for the message).
    """
    if not isinstance(batch, np.ndarray):
        raise InputError(f"input {name!r}: expected a numpy array, got {type(batch).__name__}")
    want = "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"
    if batch.ndim != len(shape) or any(
        d is not None and d != b for d, b in zip(shape, batch.shape, strict=False)
    ):
        raise InputError(f"input {name!r}: expected shape {want}, got {tuple(batch.shape)}")
    if batch.dtype != dtype:
        raise InputError(f"input {name!r}: expected dtype {np.dtype(dtype).name}, got {batch.dtype.name}")


class Backend(ABC):
    """One inference engine. Use as a context manager; :meth:`infer` checks its input.

    Attributes:
        input_name: Name of the model's image input.
        input_shape: ``(B, 3, H, W)`` with ``None`` for dynamic axes.
        input_dtype: numpy dtype the input must have.
        device: Human-readable device description.
    """

    input_name: str = "images"
    input_shape: tuple[int | None, ...] = ()
    input_dtype: np.dtype = np.dtype(np.float32)
    device: str = "cpu"
    max_batch: int | None = None
    """Largest batch the backend takes (``None``: no limit of its own; a fixed batch axis is one)."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (idempotent)."""

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Run the model.

        Args:
            batch: ``(B, 3, H, W)`` of :attr:`input_dtype`.

        Returns:
            The first output as float32, e.g. ``(B, N, 4 + nc + nc*ng)``.

        Raises:
            InputError: When the batch's shape or dtype does not fit (message: expected vs actual).
        """
        check_input(batch, self.input_shape, self.input_dtype, self.input_name)
        return np.asarray(self._run(np.ascontiguousarray(batch)), dtype=np.float32)

    @abstractmethod
    def _run(self, batch: np.ndarray) -> np.ndarray: ...


_ORT_DTYPES = {
    "tensor(float)": np.dtype(np.float32),
    "tensor(float16)": np.dtype(np.float16),
    "tensor(uint8)": np.dtype(np.uint8),
}


class OnnxRuntimeBackend(Backend):
    """ONNX Runtime session (CPU; CUDA first when ``onnxruntime-gpu`` provides it).

    Args:
        path: ONNX file, or the serialized model itself (bytes, e.g. a graph built in memory).
        providers: Execution providers in order of preference; default CUDA (when available) then CPU.
        threads: Intra-op threads (0 = ONNX Runtime's default, all cores).
    """

    def __init__(
        self, path: str | Path | bytes, providers: Sequence[str] | None = None, threads: int = 0
    ) -> None:
        ort = require("onnxruntime", "running an ONNX model")
        model_src = path if isinstance(path, bytes) else str(path)
        self.path = Path("<in-memory ONNX model>") if isinstance(path, bytes) else Path(path)
        available = ort.get_available_providers()
        if providers is None:
            providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        else:
            missing = [p for p in providers if p not in available]
            if missing:
                raise ValueError(
                    f"{self.path}: execution provider(s) {missing} not available; this onnxruntime "
                    f"offers {available}"
                )
        opts = ort.SessionOptions()
        opts.log_severity_level = 3  # errors only: our own messages name the file and the problem
        # idle worker threads sleep instead of spinning: the decode/pre-processing threads of the
        # scoring pipeline (edge.pipeline) and a camera's grabber need those cores between inferences
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            opts.intra_op_num_threads = int(threads)
            opts.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(model_src, sess_options=opts, providers=list(providers))
        except Exception as e:  # onnxruntime raises its own exception types
            raise ArtifactError(f"{self.path}: ONNX Runtime cannot load this model: {e}") from None
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_shape = _dims(inp.shape)
        if inp.type not in _ORT_DTYPES:
            raise ArtifactError(f"{self.path}: unsupported input type {inp.type}")
        self.input_dtype = _ORT_DTYPES[inp.type]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.device = self.session.get_providers()[0].replace("ExecutionProvider", "").lower()

    def metadata_props(self) -> dict[str, str]:
        """The model's custom metadata properties."""
        return dict(self.session.get_modelmeta().custom_metadata_map)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(self.output_names[:1], {self.input_name: batch})[0]

    def close(self) -> None:
        self.session = None  # type: ignore[assignment]


TENSORRT_HINT = (
    "on a Jetson the TensorRT Python bindings come from JetPack's apt repository: "
    "sudo apt-get install python3-libnvinfer (and a virtual environment made with "
    "--system-site-packages, as jetson/install.sh does); on a desktop/server GPU: "
    "pip install 'grimace-edge[trt]'. Without them, build with jetson/build_engine.sh (trtexec)"
)
CUDA_PYTHON_HINT = (
    "install cuda-python for the device's CUDA 12 (JetPack 6.0 has CUDA 12.2, JetPack 6.1/6.2 have 12.6): "
    "pip install 'cuda-python>=12.2,<13' — cuda-python 13 needs a CUDA 13 driver"
)


def require_tensorrt(what: str) -> Any:
    """Import ``tensorrt`` or raise :class:`~edge.deps.MissingDependencyError` saying where it comes from."""
    from edge.deps import MissingDependencyError

    try:
        import tensorrt  # type: ignore[import-not-found]
    except ImportError as e:
        raise MissingDependencyError(
            f"{what} needs TensorRT's Python bindings (module 'tensorrt'), which are not installed: "
            f"{TENSORRT_HINT}"
        ) from e
    return tensorrt


def cuda_runtime(what: str = "running a TensorRT engine") -> Any:
    """The cuda-python runtime module: ``cuda.bindings.runtime`` (cuda-python >= 12.6) or the older
    ``cuda.cudart`` (removed in cuda-python 13).

    Raises:
        edge.deps.MissingDependencyError: cuda-python is not installed (message says which to install).
    """
    from edge.deps import MissingDependencyError

    try:
        from cuda.bindings import runtime as cudart  # type: ignore[import-not-found]
    except ImportError:
        try:
            from cuda import cudart  # type: ignore[import-not-found,no-redef]
        except ImportError as e:
            raise MissingDependencyError(
                f"{what} needs cuda-python (module cuda.bindings.runtime or cuda.cudart) for device "
                f"memory, which is not installed: {CUDA_PYTHON_HINT}"
            ) from e
    return cudart


_cuda_runtime = cuda_runtime  # the name older callers use


def _cuda_ok(result: Any, what: str) -> Any:
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise RuntimeError(f"CUDA call {what} failed with error {err}")
    return rest[0] if len(rest) == 1 else tuple(rest)


class GpuInfo(NamedTuple):
    """CUDA device 0 as the runtime sees it (``cudaGetDeviceProperties``).

    Attributes:
        name: CUDA device name (``"Orin"`` on every Orin module).
        compute_capability: ``"8.7"``.
        sm_count: Streaming multiprocessors (16 on AGX Orin 64 GB, 8 on Orin Nano 8 GB).
    """

    name: str
    compute_capability: str
    sm_count: int | None = None


def gpu_identity(cudart: Any = None) -> GpuInfo:
    """Name, compute capability and SM count of CUDA device 0."""
    cudart = cudart or cuda_runtime("detecting the GPU")
    props = _cuda_ok(cudart.cudaGetDeviceProperties(0), "cudaGetDeviceProperties")
    name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
    sm = getattr(props, "multiProcessorCount", None)
    return GpuInfo(name.strip("\x00 "), f"{props.major}.{props.minor}", int(sm) if sm else None)


def _trt_release(version: str) -> tuple[str, ...]:
    """``"10.3.0.30"`` -> ``("10", "3", "0")``: trtexec prints 3 parts, ``tensorrt.__version__`` 4."""
    return tuple(version.strip().split(".")[:3])


def check_engine_compat(
    meta: ModelMetadata, engine_path: Path, trt_version: str, gpu: Sequence[Any]
) -> None:
    """Refuse an engine built with another TensorRT version or for another GPU.

    The GPU is the same when the compute capability and the SM count agree; when the sidecar has no SM
    count (older sidecars) the names are compared after :func:`~edge.artifact.normalize_gpu_name`
    (``"Orin (nvgpu)"`` from nvidia-smi is CUDA's ``"Orin"``).

    Args:
        meta: The engine's sidecar metadata (with ``engine`` info).
        engine_path: The engine file (for the message).
        trt_version: TensorRT version installed here.
        gpu: ``(name, compute capability[, SM count])`` of the GPU here (a :class:`GpuInfo`).

    Raises:
        EngineMismatchError: With the command that rebuilds the engine on this machine.
    """
    info = meta.engine
    if info is None:
        raise ArtifactError(f"{sidecar_path(engine_path)}: sidecar has no 'engine' section")
    onnx_guess = engine_path.with_suffix(".onnx")
    rebuild = f"rebuild it on this device: grimace convert trt {onnx_guess} --out {engine_path}"
    if _trt_release(info.tensorrt_version) != _trt_release(trt_version):
        raise EngineMismatchError(
            f"{engine_path} was built with TensorRT {info.tensorrt_version} but this machine has TensorRT "
            f"{trt_version}; engines are not portable across TensorRT versions — {rebuild}"
        )
    name, cc, *rest = tuple(gpu)
    sm = rest[0] if rest else None
    if info.compute_capability and info.compute_capability != cc:
        raise EngineMismatchError(
            f"{engine_path} was built for GPU {info.gpu_name!r} (compute capability "
            f"{info.compute_capability}) but this GPU is {name!r} (compute capability {cc}) — {rebuild}"
        )
    if info.sm_count and sm:
        if int(info.sm_count) != int(sm):
            raise EngineMismatchError(
                f"{engine_path} was built for a GPU with {info.sm_count} SMs ({info.gpu_name!r}, compute "
                f"{info.compute_capability}) but this GPU has {sm} SMs ({name!r}): another module of the "
                f"same family (e.g. AGX Orin vs Orin Nano) — {rebuild}"
            )
        return
    if info.gpu_name and name and normalize_gpu_name(info.gpu_name) != normalize_gpu_name(name):
        raise EngineMismatchError(
            f"{engine_path} was built for GPU {info.gpu_name!r} but this GPU is {name!r} — {rebuild}"
        )


def read_sidecar(engine_path: str | Path) -> ModelMetadata:
    """Metadata of a TensorRT engine from ``<engine>.json``."""
    side = sidecar_path(engine_path)
    if not side.is_file():
        raise ArtifactError(
            f"{engine_path}: missing sidecar {side.name} (scale spec, input size, TensorRT version); "
            "build engines with `grimace convert trt` or jetson/build_engine.sh so they carry it"
        )
    return ModelMetadata.from_json(side.read_text(), source=str(side))


def init_trt_plugins(trt: Any, logger: Any) -> None:
    """Register TensorRT's bundled plugins (``EfficientNMS_TRT``...) before parsing or deserializing.

    An engine or ONNX graph that uses a plugin layer cannot be loaded until the plugin registry holds
    it; trtexec does this on every run, the Python API only when asked.
    """
    init = getattr(trt, "init_libnvinfer_plugins", None)
    if init is not None and not init(logger, ""):
        raise ArtifactError("TensorRT could not initialise its plugin library (libnvinfer_plugin)")


class TensorRTBackend(Backend):
    """A serialized TensorRT engine (tensor API of TensorRT 8.6 and 10.x) with cuda-python buffers.

    Every I/O tensor gets a device address (``execute_async_v3`` needs all of them); :meth:`infer`
    returns the first output, all outputs of the last call are in :attr:`last_outputs`. A dynamic
    batch axis is bounded by the engine's optimization profile: :attr:`max_batch` is the profile's
    largest batch (the :class:`~edge.predictor.Predictor` never sends more), and a batch outside
    ``[min_batch, max_batch]`` is refused with both limits.

    Args:
        path: ``model.engine``; its sidecar ``model.engine.json`` must exist.
        meta: Sidecar metadata (read when not given).
    """

    def __init__(self, path: str | Path, meta: ModelMetadata | None = None) -> None:
        self.path = Path(path)
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, bytes)
        self._stream = None
        self.meta = meta or read_sidecar(self.path)
        trt = require_tensorrt("running a TensorRT engine")
        self._cudart = cuda_runtime("running a TensorRT engine")
        gpu = gpu_identity(self._cudart)
        check_engine_compat(self.meta, self.path, trt.__version__, gpu)
        self._trt = trt
        self._logger = trt.Logger(trt.Logger.WARNING)
        init_trt_plugins(trt, self._logger)
        self._runtime = trt.Runtime(self._logger)
        info = self.meta.engine
        if info is not None and info.dla_core is not None:
            self._runtime.DLA_core = int(info.dla_core)  # the DLA core the engine was built for
        self.engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise ArtifactError(f"{self.path}: TensorRT could not deserialize this engine (see the log)")
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise ArtifactError(f"{self.path}: TensorRT could not create an execution context (GPU memory?)")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        ins = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(ins) != 1 or not outs:
            raise ArtifactError(
                f"{self.path}: expected 1 input and >= 1 output, got inputs {ins}, outputs {outs}"
            )
        self.input_name, self.output_names = ins[0], outs
        self.output_name = outs[0]
        self.input_shape = _dims(tuple(self.engine.get_tensor_shape(self.input_name)))
        self.input_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(self.input_name)))
        self._out_dtypes = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))) for n in outs}
        self.min_batch = 1
        if self.input_shape and self.input_shape[0] is None:
            lo, _opt, hi = (tuple(d) for d in self.engine.get_tensor_profile_shape(self.input_name, 0))
            self.min_batch, self.max_batch = int(lo[0]), int(hi[0])
        self.last_outputs: dict[str, np.ndarray] = {}
        self._stream = _cuda_ok(self._cudart.cudaStreamCreate(), "cudaStreamCreate")
        self.device = f"tensorrt:{gpu.name}"

    def _buffer(self, name: str, nbytes: int) -> int:
        ptr, size = self._buffers.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                _cuda_ok(self._cudart.cudaFree(ptr), "cudaFree")
            ptr = _cuda_ok(self._cudart.cudaMalloc(nbytes), "cudaMalloc")
            self._buffers[name] = (ptr, nbytes)
        return ptr

    def _run(self, batch: np.ndarray) -> np.ndarray:
        cudart = self._cudart
        kind = cudart.cudaMemcpyKind
        b = int(batch.shape[0])
        if self.max_batch is not None and not self.min_batch <= b <= self.max_batch:
            raise InputError(
                f"input {self.input_name!r}: batch of {b} is outside the optimization profile of "
                f"{self.path} ({self.min_batch}..{self.max_batch}); feed at most {self.max_batch} frames "
                f"per call or rebuild with a larger --max-batch"
            )
        if not self.context.set_input_shape(self.input_name, tuple(int(d) for d in batch.shape)):
            raise InputError(
                f"input {self.input_name!r}: {self.path} refused shape {tuple(batch.shape)} "
                f"(engine input {self.input_shape}, profile batch {self.min_batch}..{self.max_batch})"
            )
        d_in = self._buffer(self.input_name, batch.nbytes)
        if not self.context.set_tensor_address(self.input_name, d_in):
            raise RuntimeError(f"{self.path}: TensorRT refused the address of input {self.input_name!r}")
        outs: dict[str, tuple[np.ndarray, int]] = {}
        for name in self.output_names:
            shape = tuple(int(d) for d in self.context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise ArtifactError(f"{self.path}: output {name!r} has no concrete shape ({shape}) "
                                    f"for input shape {tuple(batch.shape)}")
            arr = np.empty(shape, dtype=self._out_dtypes[name])
            ptr = self._buffer(name, max(arr.nbytes, 1))
            if not self.context.set_tensor_address(name, ptr):
                raise RuntimeError(f"{self.path}: TensorRT refused the address of output {name!r}")
            outs[name] = (arr, ptr)
        _cuda_ok(
            cudart.cudaMemcpyAsync(
                d_in, batch.ctypes.data, batch.nbytes, kind.cudaMemcpyHostToDevice, self._stream
            ),
            "cudaMemcpyAsync(H2D)",
        )
        if not self.context.execute_async_v3(self._stream):
            raise RuntimeError(f"{self.path}: TensorRT execution failed (see the log above)")
        for arr, ptr in outs.values():
            if arr.nbytes:
                _cuda_ok(
                    cudart.cudaMemcpyAsync(
                        arr.ctypes.data, ptr, arr.nbytes, kind.cudaMemcpyDeviceToHost, self._stream
                    ),
                    "cudaMemcpyAsync(D2H)",
                )
        _cuda_ok(cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
        self.last_outputs = {name: arr for name, (arr, _) in outs.items()}
        return self.last_outputs[self.output_name]

    def close(self) -> None:
        for ptr, _ in self._buffers.values():
            self._cudart.cudaFree(ptr)
        self._buffers.clear()
        if getattr(self, "_stream", None) is not None:
            self._cudart.cudaStreamDestroy(self._stream)
            self._stream = None
