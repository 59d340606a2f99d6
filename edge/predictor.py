"""Model loading and the one frame predictor: pre-process → infer → post-process → score.

:func:`load_model` opens an ONNX model or a TensorRT engine by file suffix, reads its
:class:`~edge.artifact.ModelMetadata` and refuses a model made for another scale than the requested
one. :class:`Predictor` is the only prediction loop of the project: ``grimace score``, ``watch``, the
station, ``grimace predict`` (PyTorch, through ``train.fused.backend.TorchBackend``), the parity checks
of ``grimace convert`` and the benchmarks all run frames through it, so every path letterboxes,
decodes and scores a frame the same way. It records the time of each stage.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.artifact import ArtifactError, ModelMetadata
from edge.backends import Backend, OnnxRuntimeBackend, TensorRTBackend, read_sidecar
from edge.postprocess import MAX_NMS, LetterboxInfo, postprocess, preprocess
from edge.results import Detections, FrameResult
from edge.scales import ScaleSpec, load_scale
from edge.scoring import score_frame

STAGES = ("decode", "pre", "infer", "post")
DEFAULT_BATCH = 8
"""Frames per inference call when neither the model nor the backend fixes it."""


@dataclass
class Model:
    """A loaded model: its backend and its metadata.

    Attributes:
        path: The model file (or checkpoint folder).
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


def check_input_size(backend: Backend, meta: ModelMetadata, path: Path) -> None:
    """Refuse a backend whose input is not ``(B, 3, H, W)`` at the metadata's ``imgsz``.

    Raises:
        ArtifactError: With expected vs actual shape.
    """
    hw = backend.input_shape[2:] if len(backend.input_shape) == 4 else ()
    if len(backend.input_shape) != 4 or (all(d is not None for d in hw) and tuple(hw) != tuple(meta.imgsz)):
        raise ArtifactError(
            f"{path}: model input shape {backend.input_shape} does not match metadata imgsz {meta.imgsz} "
            "(expected (B, 3, H, W))"
        )


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
    try:
        check_input_size(backend, meta, p)
    except ArtifactError:
        backend.close()
        raise
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


def batch_limit(backend: Backend, default: int = DEFAULT_BATCH) -> int:
    """Frames per inference call: a fixed batch axis, else the backend's :attr:`~Backend.max_batch`,
    else ``default`` (whichever is smallest)."""
    fixed = backend.input_shape[0] if backend.input_shape else None
    if fixed:
        return int(fixed)
    cap = backend.max_batch
    return max(1, min(default, int(cap))) if cap else default


class Predictor:
    """Pre-process → infer → post-process → score, with per-stage timing.

    The stages are public so a caller that must see them (the parity check compares two backends'
    raw outputs on the same input) runs the same code: :meth:`prepare`, :meth:`infer`, :meth:`decode`,
    :meth:`score`; :meth:`detect` and :meth:`__call__` chain them in batches the backend accepts.

    Args:
        model: A loaded :class:`Model` (any backend).
        conf: Confidence threshold.
        iou: Per-unit NMS IoU threshold.
        max_det: Most boxes per frame.
        max_nms: Most candidates (highest scores first) passed to NMS
            (:data:`edge.postprocess.MAX_NMS`; bounds the worst-case post-processing time).
        min_quality: Frames whose quality is below this abstain.
        quality_fn: ``f(image_bgr, detections, spec)`` giving frame quality in ``[0, 1]`` as a float or
            a :class:`~edge.quality.QualityReport` (its parts go to ``result.meta``); ``None`` leaves
            quality unset.
        min_units: Fewest units found for a score.
        batch: Frames per inference call (capped by what the backend takes).
    """

    def __init__(
        self,
        model: Model,
        conf: float = 0.25,
        iou: float = 0.45,
        max_det: int = 300,
        min_quality: float | None = None,
        quality_fn: Any = None,
        min_units: int = 1,
        batch: int = DEFAULT_BATCH,
        max_nms: int = MAX_NMS,
    ) -> None:
        self.model = model
        self.meta = model.meta
        self.spec = model.spec
        self.conf, self.iou, self.max_det, self.max_nms = conf, iou, max_det, max_nms
        self.min_quality = min_quality
        self.quality_fn = quality_fn
        self.min_units = min_units
        self.times = StageTimes()
        self.batch_size = batch_limit(model.backend, batch)

    # ------------------------------------------------------------------------------------ stages
    def prepare(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, list[LetterboxInfo]]:
        """Letterbox and normalise BGR uint8 images into the network input.

        Returns:
            ``(B, 3, H, W)`` of the backend's input dtype and the per-image letterbox info.
        """
        x, infos = preprocess(list(images), self.meta, dtype=self.model.backend.input_dtype, return_info=True)
        return x, infos

    def infer(self, x: np.ndarray) -> np.ndarray:
        """Raw model output of a prepared batch, float32 ``(B, N, C)``."""
        return self.model.infer(x)

    def decode(self, raw: np.ndarray, infos: Sequence[LetterboxInfo]) -> list[Detections]:
        """Per-image detections in original pixels from a raw batch output."""
        layout = self.meta.output if self.meta.output in ("raw", "nms") else "auto"
        return [
            postprocess(
                raw[i],
                self.spec,
                self.conf,
                self.iou,
                self.max_det,
                letterbox_info=inf,
                layout=layout,
                max_nms=self.max_nms,
            )
            for i, inf in enumerate(infos)
        ]

    def score(
        self, images: Sequence[np.ndarray], dets: Sequence[Detections], sources: Sequence[str] | None = None
    ) -> list[FrameResult]:
        """Quality and scale score of each frame (:func:`edge.scoring.score_frame`)."""
        results = []
        for i, (img, d) in enumerate(zip(images, dets, strict=True)):
            report = self.quality_fn(img, d, self.spec) if self.quality_fn is not None else None
            res = score_frame(
                d,
                self.spec,
                min_units=self.min_units,
                source=sources[i] if sources else "",
                quality=None if report is None else float(report),
                min_quality=self.min_quality,
            )
            if report is not None and hasattr(report, "parts"):
                res.meta["quality_parts"] = report.parts
                res.meta["face_box"] = report.face_box
            results.append(res)
        return results

    # -------------------------------------------------------------------------------------- loop
    def detect(self, images: Sequence[np.ndarray]) -> list[Detections]:
        """Detections (original pixels) for a list of BGR images, in batches the backend takes."""
        out: list[Detections] = []
        bs = self.batch_size
        for s in range(0, len(images), bs):
            chunk = list(images[s : s + bs])
            t0 = time.perf_counter()
            x, infos = self.prepare(chunk)
            t1 = time.perf_counter()
            raw = self.infer(x)
            t2 = time.perf_counter()
            out += self.decode(raw, infos)
            t3 = time.perf_counter()
            self.times.add("pre", t1 - t0)
            self.times.add("infer", t2 - t1)
            self.times.add("post", t3 - t2)
        return out

    def score_prepared(
        self,
        images: Sequence[np.ndarray],
        prepared: tuple[np.ndarray, list[LetterboxInfo]],
        sources: Sequence[str] | None = None,
        pre_s: float = 0.0,
    ) -> list[FrameResult]:
        """As :meth:`__call__`, for a batch :meth:`prepare` already made (a pipelined caller prepares
        the next frames in another thread, :func:`edge.pipeline.prepared_stream`).

        Args:
            images: The BGR images ``prepared`` was made from.
            prepared: :meth:`prepare`'s output for them.
            sources: Name of each frame.
            pre_s: Seconds the preparation took (added to the ``pre`` stage).
        """
        x, infos = prepared
        t1 = time.perf_counter()
        raw = self.infer(x)
        t2 = time.perf_counter()
        dets = self.decode(raw, infos)
        t3 = time.perf_counter()
        self.times.add("pre", pre_s)
        self.times.add("infer", t2 - t1)
        self.times.add("post", t3 - t2)
        results = self.score(images, dets, sources)
        self.times.add("post", time.perf_counter() - t3)
        self.times.frames += len(images)
        return results

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
        t0 = time.perf_counter()
        results = self.score(images, dets, sources)
        self.times.add("post", time.perf_counter() - t0)
        self.times.frames += len(images)
        return results
