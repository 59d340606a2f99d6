"""Model artifact metadata carried by every exported model (ONNX metadata, TensorRT sidecar JSON).

An ONNX file stores one custom metadata property, ``grimace`` = the JSON of :class:`ModelMetadata`.
A TensorRT engine ``model.engine`` has the same JSON in ``model.engine.json`` plus an ``engine``
section (TensorRT version, GPU name, compute capability, precision, build time).

The runtime reads this with ``onnxruntime`` (``session.get_modelmeta().custom_metadata_map``) or from
the sidecar, so it needs neither ``onnx`` nor ``torch``.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edge.scales import ScaleSpec

METADATA_KEY = "grimace"
METADATA_VERSION = 1


class ArtifactError(ValueError):
    """A model artifact is missing metadata, has invalid metadata or does not fit the request."""


@dataclass
class EngineInfo:
    """What a TensorRT engine was built with; an engine only runs where these match.

    The device is identified by compute capability plus streaming-multiprocessor count (an AGX Orin
    has 16 SMs, an Orin Nano 8 or 4: same compute capability 8.7, same CUDA name ``"Orin"``); the
    name is kept for people and compared (normalised, :func:`normalize_gpu_name`) only when the SM
    count is unknown (sidecars written before it was recorded).

    Attributes:
        tensorrt_version: e.g. ``"10.3.0"``.
        gpu_name: CUDA device name, e.g. ``"Orin"``.
        compute_capability: e.g. ``"8.7"``.
        precision: ``"fp32"``, ``"fp16"`` or ``"int8"``.
        build_time_s: Seconds the build took.
        built_at: ISO timestamp.
        dla_core: DLA core used, or ``None`` for the GPU.
        sm_count: Streaming multiprocessors of the GPU (CUDA ``multiProcessorCount``); ``None`` when
            unknown.
    """

    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    precision: str
    build_time_s: float = 0.0
    built_at: str = ""
    dla_core: int | None = None
    sm_count: int | None = None


def normalize_gpu_name(name: str) -> str:
    """One spelling per GPU for comparisons: what ``nvidia-smi``, trtexec and CUDA print differ.

    ``"Orin (nvgpu)"`` (nvidia-smi on JetPack 6) and ``"Orin"`` (CUDA) → ``"orin"``;
    ``"NVIDIA GeForce RTX 3090"`` and ``"GeForce RTX 3090"`` → ``"geforce rtx 3090"``.
    """
    s = re.sub(r"\s*\([^)]*\)\s*$", "", str(name).strip("\x00 \t\n"))
    s = re.sub(r"^nvidia\s+", "", s, flags=re.IGNORECASE)
    return re.sub(r"\s+", " ", s).strip().lower()


@dataclass
class ModelMetadata:
    """Everything needed to pre/post-process a fused model's I/O and to refuse a wrong model.

    Attributes:
        scale: The scale spec as a dict (:meth:`edge.scales.ScaleSpec.to_dict`).
        imgsz: Network input ``(height, width)`` in pixels.
        stride: Largest model stride (letterbox sizes are multiples of it).
        mean: Per-channel mean subtracted after scaling to ``[0, 1]`` (RGB order).
        std: Per-channel std divided after mean subtraction (RGB order).
        channel_order: ``"RGB"`` (images are converted from OpenCV's BGR).
        pad_value: Letterbox border value (0-255).
        output: ``"raw"``: ``(B, N, 4 + nc + nc*ng)`` candidates, boxes ``x1 y1 x2 y2`` in input
            pixels; ``"nms"``: ``(B, max_det, 6 + ng)`` = ``x1 y1 x2 y2 conf unit | grade probs``.
        max_det: Rows per image of an ``"nms"`` output.
        batch: Fixed batch size, or ``None`` for a dynamic batch axis.
        half: FP16 weights/IO.
        model_name: e.g. ``"yolov5n-grade"``.
        source_sha256: SHA-256 of the checkpoint the model was exported from.
        metrics: Validation metrics of that checkpoint.
        package_version: grimace-edge version that exported it.
        created: ISO timestamp.
        engine: Set for TensorRT engines only.
        format_version: Version of this metadata schema.
    """

    scale: dict[str, Any]
    imgsz: tuple[int, int] = (640, 640)
    stride: int = 32
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    channel_order: str = "RGB"
    pad_value: int = 114
    output: str = "raw"
    max_det: int = 300
    batch: int | None = 1
    half: bool = False
    model_name: str = ""
    source_sha256: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    package_version: str = ""
    created: str = ""
    engine: EngineInfo | None = None
    format_version: int = METADATA_VERSION

    def __post_init__(self) -> None:
        self.imgsz = tuple(int(v) for v in self.imgsz)  # type: ignore[assignment]
        self.mean = tuple(float(v) for v in self.mean)  # type: ignore[assignment]
        self.std = tuple(float(v) for v in self.std)  # type: ignore[assignment]
        if len(self.imgsz) != 2 or min(self.imgsz) <= 0:
            raise ArtifactError(f"metadata imgsz must be (height, width) > 0, got {self.imgsz}")
        if self.output not in ("raw", "nms"):
            raise ArtifactError(f"metadata output must be 'raw' or 'nms', got {self.output!r}")
        if isinstance(self.engine, dict):
            self.engine = EngineInfo(**self.engine)
        self.spec  # validates the scale  # noqa: B018

    @property
    def spec(self) -> ScaleSpec:
        """The scale spec object."""
        return ScaleSpec.from_dict(self.scale, source="model metadata")

    @property
    def num_outputs(self) -> int:
        """Columns per candidate of a raw output: ``4 + nc + nc*ng``."""
        s = self.spec
        return 4 + s.nc + s.nc * s.ng

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-safe)."""
        d = asdict(self)
        d["imgsz"] = list(self.imgsz)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        return d

    def to_json(self) -> str:
        """JSON text."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<metadata>") -> ModelMetadata:
        """Parse metadata; unknown keys are an error so typos do not pass silently."""
        if not isinstance(data, dict) or "scale" not in data:
            raise ArtifactError(f"{source}: model metadata has no 'scale'; was it exported by grimace?")
        version = int(data.get("format_version", METADATA_VERSION))
        if version > METADATA_VERSION:
            raise ArtifactError(
                f"{source}: metadata format {version} is newer than this runtime supports "
                f"({METADATA_VERSION}); update grimace-edge"
            )
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ArtifactError(f"{source}: unknown metadata keys {sorted(unknown)}")
        try:
            return cls(**data)
        except (TypeError, ValueError) as e:
            raise ArtifactError(f"{source}: invalid model metadata: {e}") from None

    @classmethod
    def from_json(cls, text: str, source: str = "<metadata>") -> ModelMetadata:
        """Parse the JSON form."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ArtifactError(f"{source}: metadata is not valid JSON: {e}") from None
        return cls.from_dict(data, source)

    def to_onnx_props(self) -> dict[str, str]:
        """Custom ONNX metadata properties (``{"grimace": json}``)."""
        return {METADATA_KEY: self.to_json()}

    @classmethod
    def from_onnx_props(cls, props: dict[str, str], source: str = "<onnx>") -> ModelMetadata:
        """Inverse of :meth:`to_onnx_props`."""
        if METADATA_KEY not in props:
            raise ArtifactError(
                f"{source}: ONNX file has no '{METADATA_KEY}' metadata; export it with "
                "`grimace convert onnx` so it carries its scale spec"
            )
        return cls.from_json(props[METADATA_KEY], source)

    def check_scale(self, requested: ScaleSpec | None, what: str) -> None:
        """Refuse a model made for another scale than the one requested."""
        if requested is not None:
            requested.check_compatible(self.spec, what=what)


def sidecar_path(engine_path: str | Path) -> Path:
    """``model.engine`` -> ``model.engine.json``."""
    p = Path(engine_path)
    return p.with_name(p.name + ".json")
