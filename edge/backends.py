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
from typing import Any

import numpy as np

from edge.artifact import ArtifactError, ModelMetadata, sidecar_path
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


def _cuda_runtime() -> Any:
    """The cuda-python runtime module (``cuda.bindings.runtime`` or the older ``cuda.cudart``)."""
    try:
        from cuda.bindings import runtime as cudart  # type: ignore[import-not-found]
    except ImportError:
        try:
            from cuda import cudart  # type: ignore[import-not-found,no-redef]
        except ImportError:
            require("cuda", "running a TensorRT engine (pip install cuda-python)")
            raise
    return cudart


def _cuda_ok(result: Any, what: str) -> Any:
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise RuntimeError(f"CUDA call {what} failed with error {err}")
    return rest[0] if len(rest) == 1 else tuple(rest)


def gpu_identity() -> tuple[str, str]:
    """Name and compute capability (``"8.7"``) of CUDA device 0."""
    cudart = _cuda_runtime()
    props = _cuda_ok(cudart.cudaGetDeviceProperties(0), "cudaGetDeviceProperties")
    name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
    return name.strip("\x00 "), f"{props.major}.{props.minor}"


def _trt_release(version: str) -> tuple[str, ...]:
    """``"10.3.0.30"`` -> ``("10", "3", "0")``: trtexec prints 3 parts, ``tensorrt.__version__`` 4."""
    return tuple(version.strip().split(".")[:3])


def check_engine_compat(
    meta: ModelMetadata, engine_path: Path, trt_version: str, gpu: tuple[str, str]
) -> None:
    """Refuse an engine built with another TensorRT version or for another GPU.

    Args:
        meta: The engine's sidecar metadata (with ``engine`` info).
        engine_path: The engine file (for the message).
        trt_version: TensorRT version installed here.
        gpu: ``(name, compute capability)`` of the GPU here.

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
    name, cc = gpu
    if info.compute_capability and info.compute_capability != cc:
        raise EngineMismatchError(
            f"{engine_path} was built for GPU {info.gpu_name!r} (compute capability "
            f"{info.compute_capability}) but this GPU is {name!r} (compute capability {cc}) — {rebuild}"
        )
    if info.gpu_name and name and info.gpu_name != name:
        raise EngineMismatchError(
            f"{engine_path} was built for GPU {info.gpu_name!r} but this GPU is {name!r} — {rebuild}"
        )


def read_sidecar(engine_path: str | Path) -> ModelMetadata:
    """Metadata of a TensorRT engine from ``<engine>.json``."""
    side = sidecar_path(engine_path)
    if not side.is_file():
        raise ArtifactError(
            f"{engine_path}: missing sidecar {side.name} (scale spec, input size, TensorRT version); "
            "build engines with `grimace convert trt` so they carry it"
        )
    return ModelMetadata.from_json(side.read_text(), source=str(side))


class TensorRTBackend(Backend):
    """A serialized TensorRT engine (TensorRT 10 tensor API) with cuda-python buffers.

    Args:
        path: ``model.engine``; its sidecar ``model.engine.json`` must exist.
        meta: Sidecar metadata (read when not given).
    """

    def __init__(self, path: str | Path, meta: ModelMetadata | None = None) -> None:
        self.path = Path(path)
        self.meta = meta or read_sidecar(self.path)
        trt = require("tensorrt", "running a TensorRT engine")
        self._cudart = _cuda_runtime()
        check_engine_compat(self.meta, self.path, trt.__version__, gpu_identity())
        self._trt = trt
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise ArtifactError(f"{self.path}: TensorRT could not deserialize this engine")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        ins = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(ins) != 1 or not outs:
            raise ArtifactError(
                f"{self.path}: expected 1 input and >= 1 output, got inputs {ins}, outputs {outs}"
            )
        self.input_name, self.output_name = ins[0], outs[0]
        self.input_shape = _dims(tuple(self.engine.get_tensor_shape(self.input_name)))
        self.input_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(self.input_name)))
        self._out_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(self.output_name)))
        self._stream = _cuda_ok(self._cudart.cudaStreamCreate(), "cudaStreamCreate")
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, bytes)
        self.device = f"tensorrt:{gpu_identity()[0]}"

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
        self.context.set_input_shape(self.input_name, batch.shape)
        out_shape = tuple(self.context.get_tensor_shape(self.output_name))
        out = np.empty(out_shape, dtype=self._out_dtype)
        d_in = self._buffer(self.input_name, batch.nbytes)
        d_out = self._buffer(self.output_name, out.nbytes)
        self.context.set_tensor_address(self.input_name, d_in)
        self.context.set_tensor_address(self.output_name, d_out)
        _cuda_ok(
            cudart.cudaMemcpyAsync(
                d_in, batch.ctypes.data, batch.nbytes, kind.cudaMemcpyHostToDevice, self._stream
            ),
            "cudaMemcpyAsync(H2D)",
        )
        if not self.context.execute_async_v3(self._stream):
            raise RuntimeError(f"{self.path}: TensorRT execution failed")
        _cuda_ok(
            cudart.cudaMemcpyAsync(
                out.ctypes.data, d_out, out.nbytes, kind.cudaMemcpyDeviceToHost, self._stream
            ),
            "cudaMemcpyAsync(D2H)",
        )
        _cuda_ok(cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
        return out

    def close(self) -> None:
        for ptr, _ in self._buffers.values():
            self._cudart.cudaFree(ptr)
        self._buffers.clear()
        if getattr(self, "_stream", None) is not None:
            self._cudart.cudaStreamDestroy(self._stream)
            self._stream = None
