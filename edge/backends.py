"""Inference backends behind one small interface, model loading and the frame predictor.

A backend is a context manager with ``infer(batch) -> output``; ``infer`` checks the input's shape and
dtype against the model and says what it expected. Two backends exist:

* :class:`OnnxRuntimeBackend`: ONNX Runtime on the CPU, or CUDA when its provider is installed.
* :class:`TensorRTBackend`: a serialized TensorRT engine plus its sidecar JSON
  (:func:`edge.artifact.sidecar_path`); ``tensorrt`` and ``cuda-python`` are imported only when an
  engine is opened, and an engine built with another TensorRT version or for another GPU is refused
  with the command that rebuilds it.

:func:`load_model` picks the backend by file suffix, reads the model's
:class:`~edge.artifact.ModelMetadata` and refuses a model made for another scale than the requested
one. :class:`Predictor` runs pre-processing → inference → post-processing → scale scoring on frames
and records the time of each stage.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.artifact import ArtifactError, ModelMetadata, sidecar_path
from edge.deps import require
from edge.postprocess import LetterboxInfo, postprocess, preprocess
from edge.results import Detections, FrameResult
from edge.scales import ScaleSpec, load_scale
from edge.scoring import score_frame

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
        path: ONNX file.
        providers: Execution providers in order of preference; default CUDA (when available) then CPU.
        threads: Intra-op threads (0 = ONNX Runtime's default, all cores).
    """

    def __init__(self, path: str | Path, providers: Sequence[str] | None = None, threads: int = 0) -> None:
        ort = require("onnxruntime", "running an ONNX model")
        self.path = Path(path)
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
        if threads:
            opts.intra_op_num_threads = int(threads)
            opts.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=opts, providers=list(providers))
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


@dataclass
class Model:
    """A loaded model: its backend and its metadata.

    Attributes:
        path: The model file.
        meta: Its :class:`~edge.artifact.ModelMetadata`.
        backend: The inference backend.
    """

    path: Path
    meta: ModelMetadata
    backend: Backend

    @property
    def spec(self) -> ScaleSpec:
        """The scale the model was made for."""
        return self.meta.spec

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Run the backend (shape/dtype checked)."""
        return self.backend.infer(batch)

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc: object) -> None:
        self.backend.close()

    def close(self) -> None:
        """Release the backend."""
        self.backend.close()


def load_model(
    path: str | Path,
    scale: ScaleSpec | str | None = None,
    providers: Sequence[str] | None = None,
    threads: int = 0,
) -> Model:
    """Open an ONNX model or a TensorRT engine with its metadata.

    Args:
        path: ``*.onnx`` or ``*.engine``/``*.plan`` (with sidecar JSON).
        scale: The scale the caller wants (name, path or spec); ``None`` accepts the model's own.
        providers: ONNX Runtime execution providers.
        threads: ONNX Runtime intra-op threads (0 = default).

    Returns:
        The :class:`Model`.

    Raises:
        FileNotFoundError: No such file.
        ArtifactError: Missing/invalid metadata, or the input size disagrees with the metadata.
        edge.scales.ScaleMismatchError: The model was made for another scale.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"model file not found: {p}")
    backend: Backend
    if p.suffix.lower() in (".engine", ".plan", ".trt"):
        meta = read_sidecar(p)
        if scale is not None:
            meta.check_scale(load_scale(scale), what=str(p))
        backend = TensorRTBackend(p, meta)
    elif p.suffix.lower() == ".onnx":
        backend = OnnxRuntimeBackend(p, providers=providers, threads=threads)
        try:
            meta = ModelMetadata.from_onnx_props(backend.metadata_props(), source=str(p))
            if scale is not None:
                meta.check_scale(load_scale(scale), what=str(p))
        except Exception:
            backend.close()
            raise
    else:
        raise ArtifactError(f"{p}: unknown model type {p.suffix!r}; expected .onnx or .engine")
    hw = backend.input_shape[2:] if len(backend.input_shape) == 4 else ()
    if len(backend.input_shape) != 4 or (all(d is not None for d in hw) and tuple(hw) != tuple(meta.imgsz)):
        backend.close()
        raise ArtifactError(
            f"{p}: model input shape {backend.input_shape} does not match metadata imgsz {meta.imgsz} "
            "(expected (B, 3, H, W))"
        )
    return Model(p, meta, backend)


@dataclass
class StageTimes:
    """Accumulated seconds per stage (decode, pre, infer, post) and frame count."""

    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    frames: int = 0

    def add(self, stage: str, dt: float) -> None:
        """Add ``dt`` seconds to ``stage``."""
        self.seconds[stage] = self.seconds.get(stage, 0.0) + dt

    def per_frame_ms(self) -> dict[str, float]:
        """Mean milliseconds per frame for each stage."""
        n = max(self.frames, 1)
        return {k: 1000.0 * v / n for k, v in self.seconds.items()}

    def summary(self) -> str:
        """One line: ``decode 1.2 ms | pre 3.4 ms | ...``."""
        return " | ".join(f"{k} {v:.1f} ms" for k, v in self.per_frame_ms().items())


class Predictor:
    """Pre-process → infer → post-process → score, with per-stage timing.

    Args:
        model: A loaded :class:`Model`.
        conf: Confidence threshold.
        iou: Per-unit NMS IoU threshold.
        max_det: Most boxes per frame.
        min_quality: Frames whose quality is below this abstain.
        quality_fn: ``f(image_bgr, detections, spec)`` giving frame quality in ``[0, 1]`` as a float or
            a :class:`~edge.quality.QualityReport` (its parts go to ``result.meta``); ``None`` leaves
            quality unset.
    """

    def __init__(
        self,
        model: Model,
        conf: float = 0.25,
        iou: float = 0.45,
        max_det: int = 300,
        min_quality: float | None = None,
        quality_fn: Any = None,
    ) -> None:
        self.model = model
        self.meta = model.meta
        self.spec = model.spec
        self.conf, self.iou, self.max_det = conf, iou, max_det
        self.min_quality = min_quality
        self.quality_fn = quality_fn
        self.times = StageTimes()
        self.batch_size = model.backend.input_shape[0] or 8

    def detect(self, images: Sequence[np.ndarray]) -> list[Detections]:
        """Detections (original pixels) for a list of BGR images."""
        out: list[Detections] = []
        bs = self.batch_size
        for s in range(0, len(images), bs):
            chunk = list(images[s : s + bs])
            t0 = time.perf_counter()
            x, infos = preprocess(chunk, self.meta, dtype=self.model.backend.input_dtype, return_info=True)
            t1 = time.perf_counter()
            raw = self.model.infer(x)
            t2 = time.perf_counter()
            out += [self._post(raw[i], info) for i, info in enumerate(infos)]
            t3 = time.perf_counter()
            self.times.add("pre", t1 - t0)
            self.times.add("infer", t2 - t1)
            self.times.add("post", t3 - t2)
        return out

    def _post(self, raw: np.ndarray, info: LetterboxInfo) -> Detections:
        return postprocess(raw, self.spec, self.conf, self.iou, self.max_det, letterbox_info=info)

    def __call__(
        self, images: Sequence[np.ndarray], sources: Sequence[str] | None = None
    ) -> list[FrameResult]:
        """Score frames.

        Args:
            images: BGR uint8 images ``(H, W, 3)``.
            sources: Name of each frame (kept in the results).

        Returns:
            One :class:`~edge.results.FrameResult` per image (score or abstention with reason).
        """
        dets = self.detect(images)
        results = []
        t0 = time.perf_counter()
        for i, (img, d) in enumerate(zip(images, dets, strict=True)):
            report = self.quality_fn(img, d, self.spec) if self.quality_fn is not None else None
            res = score_frame(
                d,
                self.spec,
                source=sources[i] if sources else "",
                quality=None if report is None else float(report),
                min_quality=self.min_quality,
            )
            if report is not None and hasattr(report, "parts"):
                res.meta["quality_parts"] = report.parts
                res.meta["face_box"] = report.face_box
            results.append(res)
        self.times.add("post", time.perf_counter() - t0)
        self.times.frames += len(images)
        return results
