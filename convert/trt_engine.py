"""TensorRT engine build (TensorRT 8.6 and 10.x Python API), INT8, engine-vs-ONNX check.

``tensorrt`` and ``cuda-python`` are imported lazily inside the functions that need them, so this
module imports on a machine without them. **None of the TensorRT calls here has run against a real
TensorRT**: TensorRT cannot be installed in the development/CI environment and no NVIDIA GPU was
available. What does not need TensorRT is plain code with tests (version rules :func:`trt_api`,
calibration batches, the engine+sidecar write); the TensorRT calling sequence is tested against
stand-ins for the TensorRT/CUDA objects (``tests/trt_standins.py``), and ``jetson/acceptance.sh`` is
the real check on a device.

Versions (``tensorrt.__version__``):

* **8.6** (JetPack 6.0): ``create_network(1 << EXPLICIT_BATCH)`` (without the flag 8.x makes an
  implicit-batch network, which the ONNX parser rejects); INT8 either from a QDQ model (explicit
  quantization) or by entropy calibration (``IInt8EntropyCalibrator2`` fed by the runtime's own
  pre-processing, in the network input's dtype).
* **10.x** (JetPack 6.1/6.2 ship 10.3): ``create_network(0)`` (explicit batch is the only mode;
  the flag is deprecated and ignored); INT8 only from a QDQ model (``grimace convert onnx --int8``):
  implicit calibration and ``int8_calibrator`` are deprecated since 10.1, ``platform_has_fast_fp16``
  since 10.5, so neither is called.
* below 8.6 and 11+ are refused with what to do (11 drops ``BuilderFlag.FP16/INT8`` and calibrators).

Other rules: the plugin library is initialised before parsing when the graph has TensorRT plugin
ops (``EfficientNMS_TRT``); the timing cache is checked when read and when set (an unusable one is
replaced by a fresh one, with a warning); a DLA build forces FP16 when neither FP16 nor INT8 was
asked (DLA runs nothing else) and records the core in the sidecar, which the runtime sets as
``runtime.DLA_core``; the engine is written to a temporary name, then the sidecar, then renamed, so
there is never an engine without its sidecar.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from edge.artifact import EngineInfo, ModelMetadata, sidecar_path
from edge.fileio import atomic_write_bytes, atomic_write_text, fsync_dir

TRT_OLDEST = (8, 6)
TRT_NEWEST_MAJOR = 10
PLUGIN_OPS = ("EfficientNMS_TRT", "BatchedNMSDynamic_TRT", "BatchedNMS_TRT")


class EngineBuildError(RuntimeError):
    """TensorRT could not parse the ONNX file or build the engine, or the request cannot be built."""


# ------------------------------------------------------------------------ pure (no TensorRT needed)
def parse_trt_version(version: str) -> tuple[int, int, int]:
    """``"10.3.0.30"`` / ``"8.6.2"`` → ``(10, 3, 0)`` / ``(8, 6, 2)``.

    Raises:
        EngineBuildError: Not a dotted version.
    """
    m = re.match(r"^\s*(\d+)\.(\d+)(?:\.(\d+))?", str(version))
    if not m:
        raise EngineBuildError(f"cannot read the TensorRT version {version!r}")
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


@dataclass(frozen=True)
class TrtApi:
    """Which TensorRT Python API calls a version needs (see the module docstring).

    Attributes:
        version: ``(major, minor, patch)``.
    """

    version: tuple[int, int, int]

    @property
    def explicit_batch_flag(self) -> bool:
        """``create_network`` needs ``1 << EXPLICIT_BATCH`` (8.x); 10.x has only explicit batch."""
        return self.version[0] < 10

    @property
    def calibrator(self) -> bool:
        """Implicit INT8 calibration is offered (8.x only; deprecated in 10.1 for explicit quantization)."""
        return self.version[0] < 10

    @property
    def fast_fp16_query(self) -> bool:
        """``builder.platform_has_fast_fp16`` may be asked (deprecated in 10.5)."""
        return self.version[0] < 10


def trt_api(version: str) -> TrtApi:
    """The API rules of an installed TensorRT, refusing versions this code was not written for.

    Raises:
        EngineBuildError: TensorRT < 8.6 or >= 11, with what to do.
    """
    v = parse_trt_version(version)
    if v[:2] < TRT_OLDEST:
        raise EngineBuildError(
            f"TensorRT {version} is older than 8.6, which this build path needs (tensor I/O API, ONNX "
            "opset 17): use JetPack 6.0 (TensorRT 8.6.2) or newer, or build with trtexec "
            "(jetson/build_engine.sh)"
        )
    if v[0] > TRT_NEWEST_MAJOR:
        raise EngineBuildError(
            f"TensorRT {version} is not supported yet (TensorRT 11 removed BuilderFlag.FP16/INT8 and the "
            "INT8 calibrators this code uses): install TensorRT 10.x (pip install 'tensorrt>=10,<11') "
            "or build with trtexec (jetson/build_engine.sh)"
        )
    return TrtApi(v)


def network_flags(trt: Any, api: TrtApi) -> int:
    """The ``create_network`` argument: explicit batch on 8.x, ``0`` on 10.x."""
    if api.explicit_batch_flag:
        return 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    return 0


def onnx_ops(onnx_path: str | Path) -> set[str] | None:
    """Op types of the main graph and its subgraphs, or ``None`` when ``onnx`` is not installed."""
    try:
        import onnx
    except ImportError:
        return None
    proto = onnx.load(str(onnx_path), load_external_data=False)
    ops: set[str] = set()
    graphs = [proto.graph]
    while graphs:
        g = graphs.pop()
        for node in g.node:
            ops.add(node.op_type)
            graphs += [a.g for a in node.attribute if a.type == onnx.AttributeProto.GRAPH]
    return ops


def is_qdq(ops: set[str]) -> bool:
    """Explicitly quantized (QuantizeLinear/DequantizeLinear), as ``grimace convert onnx --int8`` writes."""
    return {"QuantizeLinear", "DequantizeLinear"} <= ops


def calibration_batches(
    images: Sequence[np.ndarray], meta: ModelMetadata, batch: int, dtype: np.dtype | type = np.float32
) -> Iterator[np.ndarray]:
    """Network-input batches for INT8 calibration, made by the runtime's own pre-processing.

    :func:`edge.postprocess.preprocess` is what :meth:`edge.predictor.Predictor.prepare` runs, so a
    calibration batch is exactly what the engine will be fed.

    Args:
        images: BGR uint8 images.
        meta: Model metadata (input size, normalisation).
        batch: Images per batch; a last incomplete batch is dropped (TensorRT wants a fixed size).
        dtype: The network input's dtype (``float16`` for ``--half`` exports): the calibrator hands
            TensorRT raw bytes, so they must be in the input's own format.

    Yields:
        ``(batch, 3, H, W)`` contiguous arrays of ``dtype``.
    """
    from edge.postprocess import preprocess

    if batch < 1:
        raise ValueError(f"calibration batch must be >= 1, got {batch}")
    for s in range(0, len(images) - batch + 1, batch):
        x = preprocess(list(images[s : s + batch]), meta, dtype=dtype)
        yield np.ascontiguousarray(x, dtype=dtype)


def engine_info(meta: ModelMetadata, info: EngineInfo) -> ModelMetadata:
    """The sidecar metadata: the ONNX model's metadata plus the engine build facts."""
    return replace(meta, engine=info)


def write_sidecar(engine_path: str | Path, meta: ModelMetadata, info: EngineInfo) -> Path:
    """Write ``ENGINE.json`` atomically: the ONNX model's metadata plus the engine build info."""
    text = json.dumps(engine_info(meta, info).to_dict(), indent=2, sort_keys=True) + "\n"
    return atomic_write_text(sidecar_path(engine_path), text)


def write_engine_with_sidecar(
    engine_path: str | Path, blob: bytes, meta: ModelMetadata, info: EngineInfo
) -> Path:
    """Write an engine and its sidecar so that an engine never exists without its sidecar.

    The engine goes to a temporary name in its folder (fsynced), the sidecar is written (atomically)
    beside the final name, then the engine is renamed into place. A failure before the rename leaves
    no engine under the final name (and no temporary file).

    Returns:
        The sidecar path.
    """
    engine_path = Path(engine_path)
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = engine_path.with_name(f".{engine_path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        side = write_sidecar(engine_path, meta, info)
        os.replace(tmp, engine_path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(engine_path.parent)
    return side


def now_iso() -> str:
    """UTC timestamp."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# --------------------------------------------------------------------------- CUDA / TensorRT side
def detect_gpu() -> Any:
    """:class:`edge.backends.GpuInfo` of device 0 (the runtime's own detection: name, CC, SM count)."""
    from edge.backends import gpu_identity

    return gpu_identity()


class _DeviceBuffer:
    """A cudaMalloc'd buffer (freed on close)."""

    def __init__(self, nbytes: int) -> None:
        from edge.backends import _cuda_ok, cuda_runtime

        self._ok = _cuda_ok
        self.cudart = cuda_runtime("INT8 calibration")
        self.nbytes = int(nbytes)
        self.ptr = int(self._ok(self.cudart.cudaMalloc(self.nbytes), "cudaMalloc"))

    def upload(self, arr: np.ndarray) -> None:
        arr = np.ascontiguousarray(arr)
        if arr.nbytes > self.nbytes:
            raise ValueError(f"upload of {arr.nbytes} bytes into a {self.nbytes}-byte buffer")
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._ok(self.cudart.cudaMemcpy(self.ptr, arr.ctypes.data, arr.nbytes, kind), "cudaMemcpy(H2D)")

    def close(self) -> None:
        if self.ptr:
            self._ok(self.cudart.cudaFree(self.ptr), "cudaFree")
            self.ptr = 0


def make_calibrator(
    images: Sequence[np.ndarray],
    meta: ModelMetadata,
    batch: int,
    cache_file: str | Path,
    dtype: np.dtype | type = np.float32,
) -> Any:
    """An ``IInt8EntropyCalibrator2`` (TensorRT 8.6) fed by :func:`calibration_batches`.

    When ``cache_file`` exists TensorRT reads the scales from it and never asks for batches. TensorRT's
    binding swallows exceptions raised in ``get_batch`` (calibration then just ends), so the calibrator
    records the first one in ``.error`` and :func:`build_engine` raises it after the build.
    """
    from edge.backends import require_tensorrt

    trt = require_tensorrt("INT8 calibration")
    cache_file = Path(cache_file)

    class _EntropyCalibrator(trt.IInt8EntropyCalibrator2):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.batches = calibration_batches(images, meta, batch, dtype)
            self.buffer: _DeviceBuffer | None = None
            self.error: BaseException | None = None
            self.n_batches = 0
            self.cache_read = False

        def get_batch_size(self) -> int:
            return batch

        def get_batch(self, names: list[str]) -> list[int] | None:
            if self.error is not None:
                return None
            try:
                data = next(self.batches, None)
                if data is None:
                    return None
                if self.buffer is None:
                    self.buffer = _DeviceBuffer(data.nbytes)
                self.buffer.upload(data)
                self.n_batches += 1
                return [self.buffer.ptr]
            except BaseException as e:  # re-raised by build_engine after the build
                self.error = e
                return None

        def read_calibration_cache(self) -> bytes | None:
            if cache_file.is_file():
                self.cache_read = True
                return cache_file.read_bytes()
            return None

        def write_calibration_cache(self, cache: Any) -> None:
            try:
                atomic_write_bytes(cache_file, bytes(cache))
            except BaseException as e:  # same as get_batch
                self.error = self.error or e

        def close(self) -> None:
            if self.buffer is not None:
                self.buffer.close()

    return _EntropyCalibrator()


@dataclass
class BuildOptions:
    """Options of :func:`build_engine`.

    Attributes:
        fp16: Allow FP16 kernels.
        int8: Allow INT8 kernels. A QDQ model (``grimace convert onnx --int8``) is INT8 by itself;
            otherwise TensorRT 8.6 calibrates (needs calibration images or an existing cache) and
            TensorRT 10 refuses (use a QDQ model).
        calib_images: BGR images for INT8 calibration (TensorRT 8.6).
        calib_batch: Images per calibration batch.
        workspace_gb: Workspace memory pool limit in GiB.
        dla_core: DLA core (Jetson Xavier/Orin), GPU fallback allowed; ``None`` for the GPU.
        max_batch: Largest batch of the optimization profile of a dynamic-batch model.
        opt_batch: Batch the profile is tuned for.
        timing_cache: Timing cache file (read when present, written after the build).
        calib_cache: Calibration cache file.
    """

    fp16: bool = False
    int8: bool = False
    calib_images: Sequence[np.ndarray] = ()
    calib_batch: int = 8
    workspace_gb: float = 2.0
    dla_core: int | None = None
    max_batch: int = 8
    opt_batch: int = 1
    timing_cache: Path | None = None
    calib_cache: Path | None = None


def _warn(trt: Any, logger: Any, msg: str) -> None:
    logger.log(trt.Logger.WARNING, f"grimace: {msg}")


def _set_timing_cache(trt: Any, logger: Any, config: Any, path: Path) -> None:
    """Read, check and set the timing cache; an unusable file is replaced by a fresh cache."""
    blob = path.read_bytes() if path.is_file() else b""
    cache = config.create_timing_cache(blob)
    if cache is not None and config.set_timing_cache(cache, False):
        return
    if not blob:
        raise EngineBuildError("TensorRT could not create an empty timing cache")
    _warn(trt, logger, f"timing cache {path} is unusable here (another TensorRT or GPU?); starting a new one")
    cache = config.create_timing_cache(b"")
    if cache is None or not config.set_timing_cache(cache, False):
        raise EngineBuildError("TensorRT could not create an empty timing cache")


def build_engine(onnx_path: str | Path, engine_path: str | Path, opts: BuildOptions) -> ModelMetadata:
    """Build a serialized TensorRT engine from an exported ONNX file and write its sidecar.

    The GPU is identified (cuda-python) before anything is built, so a missing cuda-python fails first
    with what to install, and nothing is written.

    Returns:
        The sidecar metadata (the ONNX metadata plus :class:`EngineInfo`).

    Raises:
        EngineBuildError: Unsupported TensorRT, parse errors (each listed), a request the version cannot
            build, a calibration error, or a failed build.
        edge.deps.MissingDependencyError: TensorRT or cuda-python is not installed.
    """
    from convert.export import read_onnx_metadata
    from edge.backends import init_trt_plugins, require_tensorrt

    trt = require_tensorrt("grimace convert trt")
    api = trt_api(trt.__version__)
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    gpu = detect_gpu()
    meta = read_onnx_metadata(onnx_path)
    ops = onnx_ops(onnx_path)
    logger = trt.Logger(trt.Logger.WARNING)
    if ops is None or ops & set(PLUGIN_OPS):
        init_trt_plugins(trt, logger)  # before parsing: the parser looks plugins up in the registry
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt, api))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errs = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EngineBuildError(f"{onnx_path}: TensorRT's ONNX parser failed:\n  " + "\n  ".join(errs))
    if ops is None:  # no onnx package: look for Q/DQ layers in what TensorRT parsed
        kinds = {network.get_layer(i).type for i in range(network.num_layers)}
        qdq = trt.LayerType.QUANTIZE in kinds and trt.LayerType.DEQUANTIZE in kinds
    else:
        qdq = is_qdq(ops)

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(opts.workspace_gb * (1 << 30)))
    inp = network.get_input(0)
    in_dtype = np.dtype(trt.nptype(inp.dtype))
    h, w = meta.imgsz
    dynamic = int(inp.shape[0]) == -1
    profile = None
    if dynamic:
        if not 1 <= opts.opt_batch <= opts.max_batch:
            raise EngineBuildError(f"need 1 <= opt batch ({opts.opt_batch}) <= max batch ({opts.max_batch})")
        profile = builder.create_optimization_profile()
        profile.set_shape(inp.name, (1, 3, h, w), (opts.opt_batch, 3, h, w), (opts.max_batch, 3, h, w))
        config.add_optimization_profile(profile)

    fp16 = opts.fp16
    int8 = qdq or opts.int8
    if opts.dla_core is not None and not (fp16 or int8):
        _warn(trt, logger, "DLA runs only FP16 and INT8 layers: building with FP16")
        fp16 = True
    calibrator = None
    if qdq:
        # Explicit quantization: the Q/DQ scales are in the graph; the INT8 flag, no calibrator.
        config.set_flag(trt.BuilderFlag.INT8)
        if opts.calib_images:
            _warn(trt, logger, "the model is already quantized (Q/DQ): calibration images are not used")
    elif opts.int8:
        if not api.calibrator:
            raise EngineBuildError(
                f"TensorRT {trt.__version__} builds INT8 from an explicitly quantized model only (implicit "
                f"calibration is deprecated since TensorRT 10.1): {onnx_path} has no Q/DQ nodes. Make one "
                "with `grimace convert onnx CHECKPOINT --int8 --calib FRAMES --out model-int8.onnx`, then "
                "`grimace convert trt model-int8.onnx`"
            )
        cache = Path(opts.calib_cache or engine_path.with_suffix(".calib"))
        if not opts.calib_images and not cache.is_file():
            raise EngineBuildError(
                "--int8 needs calibration images (--calib DIR) or an existing calibration cache"
            )
        calib_batch = opts.calib_batch if dynamic else int(inp.shape[0])
        if opts.calib_images and len(opts.calib_images) < calib_batch:
            raise EngineBuildError(f"INT8 calibration needs at least {calib_batch} images")
        config.set_flag(trt.BuilderFlag.INT8)
        calibrator = make_calibrator(opts.calib_images, meta, calib_batch, cache, dtype=in_dtype)
        config.int8_calibrator = calibrator
        if profile is not None:
            cal_profile = builder.create_optimization_profile()
            shape = (calib_batch, 3, h, w)
            cal_profile.set_shape(inp.name, shape, shape, shape)
            config.set_calibration_profile(cal_profile)
    if fp16:
        if api.fast_fp16_query and not builder.platform_has_fast_fp16:
            _warn(trt, logger, "this GPU has no fast FP16; building FP16 anyway")
        config.set_flag(trt.BuilderFlag.FP16)
    precision = "int8" if int8 else "fp16" if fp16 else "fp32"

    if opts.dla_core is not None:
        if builder.num_DLA_cores <= opts.dla_core:
            raise EngineBuildError(f"DLA core {opts.dla_core} requested, device has {builder.num_DLA_cores}")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(opts.dla_core)
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)

    cache_path = Path(opts.timing_cache or engine_path.with_name(engine_path.name + ".timing.cache"))
    _set_timing_cache(trt, logger, config, cache_path)

    t0 = time.perf_counter()
    try:
        serialized = builder.build_serialized_network(network, config)
    finally:
        if calibrator is not None:
            calibrator.close()
    build_s = time.perf_counter() - t0
    if calibrator is not None and calibrator.error is not None:
        err = calibrator.error
        raise EngineBuildError(
            f"INT8 calibration failed after {calibrator.n_batches} batch(es): {type(err).__name__}: {err}"
        ) from err
    if calibrator is not None and calibrator.n_batches == 0 and not calibrator.cache_read:
        raise EngineBuildError("INT8 calibration received no batch (too few images for one batch?)")
    if serialized is None:
        raise EngineBuildError(f"{onnx_path}: TensorRT failed to build the engine (see the log above)")

    info = EngineInfo(
        tensorrt_version=trt.__version__,
        gpu_name=gpu.name,
        compute_capability=gpu.compute_capability,
        precision=precision,
        build_time_s=round(build_s, 2),
        built_at=now_iso(),
        dla_core=opts.dla_core,
        sm_count=gpu.sm_count,
    )
    write_engine_with_sidecar(engine_path, bytes(serialized), meta, info)
    timing = config.get_timing_cache()
    data = timing.serialize() if timing is not None else None
    if data is None:
        _warn(trt, logger, f"could not serialize the timing cache; {cache_path} not updated")
    else:
        atomic_write_bytes(cache_path, bytes(data))
    return engine_info(meta, info)


def check_engine_against_onnx(
    engine_path: str | Path, onnx_path: str | Path, images: Sequence[np.ndarray],
    conf: float = 0.25, iou: float = 0.45,
) -> Any:
    """Box IoU, unit and grade agreement of an engine against its ONNX model on images.

    Both sides run through the runtime's :class:`edge.predictor.Predictor` stages: the ONNX side's
    ``prepare`` makes the one input both models get, each side's ``infer`` runs it, ``decode`` turns
    both outputs into detections the same way. The engine is opened with
    :class:`edge.backends.TensorRTBackend`, which refuses an engine built by another TensorRT version
    or for another GPU with the command that rebuilds it.

    Returns:
        A :class:`convert.parity.ParityReport` (raw max |Δ| as well for raw-output models).
    """
    from convert.parity import ParityReport, _fit_batch, compare_detections, raw_deltas
    from edge.backends import OnnxRuntimeBackend, TensorRTBackend, read_sidecar
    from edge.predictor import Model, Predictor

    meta = read_sidecar(engine_path)
    spec = meta.spec
    precision = meta.engine.precision if meta.engine else "?"
    rep = ParityReport(what=f"TensorRT ({precision}) vs ONNX Runtime", half=True,
                       postprocess="edge.predictor.Predictor")
    deltas: list[dict[str, float]] = []
    with OnnxRuntimeBackend(onnx_path) as ort_b, TensorRTBackend(engine_path, meta) as trt_b:
        ref = Predictor(Model(Path(onnx_path), meta, ort_b), conf, iou, max_det=meta.max_det)
        test = Predictor(Model(Path(engine_path), meta, trt_b), conf, iou, max_det=meta.max_det)
        for img in images:
            x, infos = ref.prepare([img])
            r = ref.infer(_fit_batch(x, ort_b))[:1]
            t = test.infer(_fit_batch(x, trt_b))[:1]
            if meta.output == "raw":
                deltas.append(raw_deltas(r, t, spec.nc))
            rep.agreement.add(compare_detections(ref.decode(r, infos)[0], test.decode(t, infos)[0]))
            rep.n_images += 1
    if deltas:
        rep.raw_max_abs_parts = {k: max(d[k] for d in deltas) for k in deltas[0]}
        rep.raw_max_abs = rep.raw_max_abs_parts.pop("all")
    return rep
