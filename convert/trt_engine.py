"""TensorRT engine build, INT8 calibration, engine loading and engine-vs-ONNX check.

Written against the TensorRT 10 Python API (``tensorrt`` >= 10.0) and ``cuda-python`` for device
memory; both are imported lazily inside the functions that need them, so this module imports on a
machine without them. **None of the TensorRT code here has been run**: TensorRT cannot be installed in
the development/CI environment (its wheels come from NVIDIA's own index) and no NVIDIA GPU was
available. The parts that do not need TensorRT are split out and tested: calibration batches
(:func:`calibration_batches`),
sidecar writing (:func:`write_sidecar`) and the detection comparison (``convert.parity``). Engines are
loaded (and refused when built by another TensorRT version or for another GPU) by the runtime's own
:class:`edge.backends.TensorRTBackend` / :func:`edge.backends.check_engine_compat`, which the engine
check below uses.

API used (TensorRT 10): ``trt.Builder``, ``builder.create_network(0)`` (explicit batch is the only
mode in 10), ``trt.OnnxParser.parse_from_file`` + ``parser.get_error(i)``,
``IBuilderConfig.set_memory_pool_limit(MemoryPoolType.WORKSPACE, ...)``, ``BuilderFlag.FP16/INT8/
GPU_FALLBACK``, ``default_device_type = DeviceType.DLA`` + ``DLA_core``,
``builder.create_optimization_profile()`` + ``set_shape`` + ``add_optimization_profile`` (and
``set_calibration_profile`` for INT8 with a dynamic batch), ``create_timing_cache`` /
``set_timing_cache`` / ``get_timing_cache().serialize()``, ``IInt8EntropyCalibrator2`` (deprecated
since TensorRT 10.1 in favour of explicit quantization, still supported),
``build_serialized_network``.
"""

from __future__ import annotations

import datetime as _dt
import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from edge.artifact import EngineInfo, ModelMetadata, sidecar_path
from edge.deps import require


class EngineBuildError(RuntimeError):
    """TensorRT could not parse the ONNX file or build the engine."""


# ------------------------------------------------------------------------ pure (no TensorRT needed)
def calibration_batches(
    images: Sequence[np.ndarray], meta: ModelMetadata, batch: int
) -> Iterator[np.ndarray]:
    """Network-input batches for INT8 calibration, made by the runtime's own pre-processing.

    Args:
        images: BGR uint8 images.
        meta: Model metadata (input size, normalisation).
        batch: Images per batch; a last incomplete batch is dropped (TensorRT wants a fixed size).

    Yields:
        float32 ``(batch, 3, H, W)`` contiguous arrays.
    """
    from convert import postproc

    if batch < 1:
        raise ValueError(f"calibration batch must be >= 1, got {batch}")
    buf: list[np.ndarray] = []
    for img in images:
        buf.append(postproc.preprocess(img, meta)[0])
        if len(buf) == batch:
            yield np.ascontiguousarray(np.stack(buf), dtype=np.float32)
            buf = []


def write_sidecar(engine_path: str | Path, meta: ModelMetadata, info: EngineInfo) -> Path:
    """Write ``ENGINE.json``: the ONNX model's metadata plus the engine build info."""
    side = sidecar_path(engine_path)
    md = replace(meta, engine=info)
    side.write_text(json.dumps(md.to_dict(), indent=2, sort_keys=True) + "\n")
    return side


def now_iso() -> str:
    """UTC timestamp."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# --------------------------------------------------------------------------- CUDA / TensorRT side
def _cudart() -> Any:
    require("cuda", "TensorRT engine build/run (cuda-python)")
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        from cuda import cudart  # older cuda-python
    return cudart


def _check(result: Any) -> Any:
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise RuntimeError(f"CUDA error {err}")
    return rest[0] if len(rest) == 1 else rest


def detect_gpu() -> tuple[str, str]:
    """``(gpu_name, compute_capability)`` of device 0 (the runtime's own detection)."""
    from edge.backends import gpu_identity

    return gpu_identity()


class _DeviceBuffer:
    """A cudaMalloc'd buffer (freed on close)."""

    def __init__(self, nbytes: int) -> None:
        self.cudart = _cudart()
        self.nbytes = int(nbytes)
        self.ptr = int(_check(self.cudart.cudaMalloc(self.nbytes)))

    def upload(self, arr: np.ndarray) -> None:
        arr = np.ascontiguousarray(arr)
        if arr.nbytes > self.nbytes:
            raise ValueError(f"upload of {arr.nbytes} bytes into a {self.nbytes}-byte buffer")
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        _check(self.cudart.cudaMemcpy(self.ptr, arr.ctypes.data, arr.nbytes, kind))

    def download(self, arr: np.ndarray) -> None:
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        _check(self.cudart.cudaMemcpy(arr.ctypes.data, self.ptr, arr.nbytes, kind))

    def close(self) -> None:
        if self.ptr:
            _check(self.cudart.cudaFree(self.ptr))
            self.ptr = 0


def make_calibrator(
    images: Sequence[np.ndarray], meta: ModelMetadata, batch: int, cache_file: str | Path
) -> Any:
    """An ``IInt8EntropyCalibrator2`` fed by :func:`calibration_batches`, with a calibration cache.

    When ``cache_file`` exists TensorRT reads the scales from it and never asks for batches.
    """
    trt = require("tensorrt", "INT8 calibration")
    cache_file = Path(cache_file)
    h, w = meta.imgsz

    class _EntropyCalibrator(trt.IInt8EntropyCalibrator2):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.batches = calibration_batches(images, meta, batch)
            self.buffer = _DeviceBuffer(batch * 3 * h * w * 4)

        def get_batch_size(self) -> int:
            return batch

        def get_batch(self, names: list[str]) -> list[int] | None:
            try:
                data = next(self.batches)
            except StopIteration:
                return None
            self.buffer.upload(data)
            return [self.buffer.ptr]

        def read_calibration_cache(self) -> bytes | None:
            return cache_file.read_bytes() if cache_file.is_file() else None

        def write_calibration_cache(self, cache: Any) -> None:
            cache_file.write_bytes(bytes(cache))

    return _EntropyCalibrator()


@dataclass
class BuildOptions:
    """Options of :func:`build_engine`.

    Attributes:
        fp16: Allow FP16 kernels.
        int8: Allow INT8 kernels (needs calibration images or an existing calibration cache).
        calib_images: BGR images for INT8 calibration.
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


def build_engine(onnx_path: str | Path, engine_path: str | Path, opts: BuildOptions) -> ModelMetadata:
    """Build a serialized TensorRT engine from an exported ONNX file and write its sidecar.

    Returns:
        The sidecar metadata (the ONNX metadata plus :class:`EngineInfo`).

    Raises:
        EngineBuildError: Parse errors (each listed with its node) or a failed build.
    """
    from convert.export import read_onnx_metadata

    trt = require("tensorrt", "grimace convert trt")
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    meta = read_onnx_metadata(onnx_path)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errs = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EngineBuildError(f"{onnx_path}: TensorRT's ONNX parser failed:\n  " + "\n  ".join(errs))

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(opts.workspace_gb * (1 << 30)))
    precision = "fp32"
    if opts.fp16:
        if not builder.platform_has_fast_fp16:
            logger.log(trt.Logger.WARNING, "this GPU has no fast FP16; building FP16 anyway")
        config.set_flag(trt.BuilderFlag.FP16)
        precision = "fp16"
    if opts.dla_core is not None:
        if builder.num_DLA_cores <= opts.dla_core:
            raise EngineBuildError(f"DLA core {opts.dla_core} requested, device has {builder.num_DLA_cores}")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(opts.dla_core)
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)

    inp = network.get_input(0)
    h, w = meta.imgsz
    profile = None
    if inp.shape[0] == -1:
        profile = builder.create_optimization_profile()
        profile.set_shape(inp.name, (1, 3, h, w), (opts.opt_batch, 3, h, w), (opts.max_batch, 3, h, w))
        config.add_optimization_profile(profile)

    calibrator = None
    if opts.int8:
        cache = opts.calib_cache or engine_path.with_suffix(".calib")
        if not opts.calib_images and not Path(cache).is_file():
            raise EngineBuildError(
                "--int8 needs calibration images (--calib DIR) or an existing calibration cache"
            )
        config.set_flag(trt.BuilderFlag.INT8)
        calib_batch = opts.calib_batch if inp.shape[0] == -1 else int(inp.shape[0])
        if opts.calib_images and len(opts.calib_images) < calib_batch:
            raise EngineBuildError(f"INT8 calibration needs at least {calib_batch} images")
        calibrator = make_calibrator(opts.calib_images, meta, calib_batch, cache)
        config.int8_calibrator = calibrator
        if profile is not None:
            cal_profile = builder.create_optimization_profile()
            shape = (calib_batch, 3, h, w)
            cal_profile.set_shape(inp.name, shape, shape, shape)
            config.set_calibration_profile(cal_profile)
        precision = "int8"

    cache_path = opts.timing_cache or engine_path.with_name(engine_path.name + ".timing.cache")
    blob = cache_path.read_bytes() if cache_path.is_file() else b""
    timing_cache = config.create_timing_cache(blob)
    config.set_timing_cache(timing_cache, ignore_mismatch=False)

    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    build_s = time.perf_counter() - t0
    if calibrator is not None:
        calibrator.buffer.close()
    if serialized is None:
        raise EngineBuildError(f"{onnx_path}: TensorRT failed to build the engine (see the log above)")
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    engine_path.write_bytes(bytes(serialized))
    cache_path.write_bytes(bytes(config.get_timing_cache().serialize()))

    gpu_name, cc = detect_gpu()
    info = EngineInfo(
        tensorrt_version=trt.__version__,
        gpu_name=gpu_name,
        compute_capability=cc,
        precision=precision,
        build_time_s=round(build_s, 2),
        built_at=now_iso(),
        dla_core=opts.dla_core,
    )
    write_sidecar(engine_path, meta, info)
    return replace(meta, engine=info)


def check_engine_against_onnx(
    engine_path: str | Path, onnx_path: str | Path, images: Sequence[np.ndarray],
    conf: float = 0.25, iou: float = 0.45,
) -> Any:
    """Box IoU, unit and grade agreement of an engine against its ONNX model on images.

    The engine is opened with the runtime's :class:`edge.backends.TensorRTBackend`, which refuses an
    engine built by another TensorRT version or for another GPU with the command that rebuilds it.

    Returns:
        A :class:`convert.parity.ParityReport` (raw max |Δ| as well for raw-output models).
    """
    from convert import postproc
    from convert.parity import ParityReport, _ort_session, _run_ort, compare_detections, raw_deltas
    from edge.backends import TensorRTBackend, read_sidecar

    meta = read_sidecar(engine_path)
    spec = meta.spec
    sess = _ort_session(onnx_path)
    precision = meta.engine.precision if meta.engine else "?"
    rep = ParityReport(what=f"TensorRT ({precision}) vs ONNX Runtime", half=True,
                       postprocess=postproc.backend_name())
    deltas = []
    with TensorRTBackend(engine_path, meta) as engine:
        for img in images:
            x = postproc.preprocess(img, meta)
            ref = _run_ort(sess, x)
            b = engine.input_shape[0] if engine.input_shape and engine.input_shape[0] else 1
            xb = np.repeat(x, b, axis=0) if b > 1 else x
            test = engine.infer(xb.astype(engine.input_dtype))[:1]
            if meta.output == "raw":
                deltas.append(raw_deltas(ref, test, spec.nc)["all"])
                r_det = postproc.postprocess(ref[0], spec, conf=conf, iou=iou, max_det=meta.max_det)
                t_det = postproc.postprocess(test[0], spec, conf=conf, iou=iou, max_det=meta.max_det)
            else:
                r_det = postproc.nms_rows_to_detections(ref[0], spec)
                t_det = postproc.nms_rows_to_detections(test[0], spec)
            rep.agreement.add(compare_detections(r_det, t_det))
            rep.n_images += 1
    if deltas:
        rep.raw_max_abs = max(deltas)
    return rep
