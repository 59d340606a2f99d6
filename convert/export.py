"""Fused model → ONNX export with metadata (``grimace convert onnx``).

The exporter is generic over any ``nn.Module`` whose eval forward maps a float32 NCHW RGB image batch in
``[0, 1]`` (after letterbox) to the fused raw output ``(B, N, 4 + nc + nc*ng)``, together with an
:class:`edge.artifact.ModelMetadata` describing it. Steps:

1. check the model's output against the contract on a dummy batch;
2. ``torch.onnx.export`` (TorchScript exporter, opset >= 17), fixed batch or dynamic batch axis;
3. simplify with onnxslim (and convert to FP16 with ``--half``);
4. optionally append the in-graph NMS tail (:mod:`convert.nms_graph`);
5. ``onnx.checker`` + embed the metadata as ONNX ``metadata_props`` (key ``grimace``).
"""

from __future__ import annotations

import copy
import datetime as _dt
import hashlib
import io
from dataclasses import replace
from pathlib import Path
from typing import Any

from edge import __version__
from edge.artifact import ModelMetadata

MIN_OPSET = 17
INPUT_NAME = "images"
OUTPUT_NAME = "output0"
RAW_NAME = "raw"


class ExportError(RuntimeError):
    """The model cannot be exported as asked."""


def sha256_file(path: str | Path) -> str:
    """SHA-256 hex digest of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_fused_checkpoint(path: str | Path) -> tuple[Any, ModelMetadata]:
    """Load a fused checkpoint and describe it as :class:`ModelMetadata`.

    Uses ``train.fused.checkpoint.load_checkpoint`` (weights-only: a checkpoint is a directory with
    ``model.safetensors`` + ``config.json``), then fills the metadata from the checkpoint's config
    (scale spec, image size, stride, metrics) plus the SHA-256 of its weights file.

    Raises:
        ExportError: The fused model package is not available or the checkpoint lacks a scale.
    """
    path = Path(path)
    if not path.exists():
        raise ExportError(f"{path}: no such checkpoint (file or directory)")
    try:
        from train.fused.checkpoint import checkpoint_dir, load_checkpoint
    except ImportError as e:
        raise ExportError(
            f"cannot load {path}: the fused model package (train.fused.checkpoint) is not available ({e})"
        ) from None
    try:
        model, meta = load_checkpoint(path)
    except (ValueError, OSError) as e:
        raise ExportError(f"{path}: cannot load the fused checkpoint: {e}") from None
    path = checkpoint_dir(path)  # a training run directory means its best checkpoint
    md = metadata_from_checkpoint_meta(meta, source=str(path))
    md.source_sha256 = checkpoint_sha256(path)
    return model, md


def checkpoint_sha256(path: str | Path) -> str:
    """SHA-256 identifying a checkpoint: of the file, or of a directory's ``model.safetensors``."""
    path = Path(path)
    if path.is_dir():
        weights = sorted(path.glob("*.safetensors")) or sorted(p for p in path.iterdir() if p.is_file())
        if not weights:
            raise ExportError(f"{path}: checkpoint directory holds no weights file")
        return sha256_file(weights[0])
    return sha256_file(path)


def metadata_from_checkpoint_meta(meta: Any, source: str = "<checkpoint>") -> ModelMetadata:
    """Turn a checkpoint's meta (a ModelMetadata, or a dict with at least ``scale``) into metadata."""
    if isinstance(meta, ModelMetadata):
        return replace(meta)
    if not isinstance(meta, dict):
        raise ExportError(f"{source}: checkpoint meta must be a dict, got {type(meta).__name__}")
    scale = meta.get("scale") or meta.get("scale_spec")
    if scale is None:
        raise ExportError(f"{source}: checkpoint has no scale spec; cannot export a model without one")
    if hasattr(scale, "to_dict"):
        scale = scale.to_dict()
    imgsz = meta.get("imgsz", 640)
    if isinstance(imgsz, int):
        imgsz = (imgsz, imgsz)
    fields: dict[str, Any] = {"scale": scale, "imgsz": tuple(imgsz)}
    stride = meta.get("stride")
    if stride is not None:  # a list of per-level strides in fused checkpoints: keep the largest
        fields["stride"] = int(max(stride)) if isinstance(stride, list | tuple) else int(stride)
    for key in ("mean", "std", "pad_value", "model_name", "channel_order"):
        if meta.get(key) is not None:
            fields[key] = meta[key]
    if "model_name" not in fields and meta.get("size"):
        fields["model_name"] = f"fused-yolov5{meta['size']}-grade"
    metrics = meta.get("metrics") or {}
    fields["metrics"] = {
        k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)
    }
    return ModelMetadata(**fields)


def check_contract(model: Any, meta: ModelMetadata, batch: int = 1) -> int:
    """Run the model on a dummy batch and check the raw output contract.

    Returns:
        ``N``, the number of candidates per image.

    Raises:
        ExportError: Output type, rank or width differ from ``(B, N, 4 + nc + nc*ng)``.
    """
    import torch

    h, w = meta.imgsz
    if h % meta.stride or w % meta.stride:
        raise ExportError(f"imgsz {meta.imgsz} must be a multiple of the model stride {meta.stride}")
    with torch.no_grad():
        y = model(torch.zeros(batch, 3, h, w))
    if not isinstance(y, torch.Tensor):
        raise ExportError(
            f"fused model eval forward must return one tensor (B, N, 4+nc+nc*ng), got {type(y).__name__}"
        )
    c = meta.num_outputs
    if y.ndim != 3 or y.shape[0] != batch or y.shape[2] != c:
        spec = meta.spec
        raise ExportError(
            f"fused model output has shape {tuple(y.shape)}, expected ({batch}, N, {c}) for scale "
            f"{spec.name!r} (4 box + {spec.nc} units + {spec.nc}x{spec.ng} grades)"
        )
    return int(y.shape[1])


def export_onnx(
    model: Any,
    meta: ModelMetadata,
    out: str | Path,
    *,
    batch: int = 1,
    dynamic: bool = False,
    half: bool = False,
    nms: bool = False,
    opset: int = MIN_OPSET,
    conf: float = 0.25,
    iou: float = 0.45,
    max_det: int = 300,
    simplify: bool = True,
) -> tuple[Path, ModelMetadata, Any]:
    """Export a fused model to one ONNX file carrying its metadata.

    Args:
        model: ``nn.Module`` following the raw fused contract (put in eval mode here).
        meta: Its metadata (``imgsz``, ``stride``, ``scale``...); a copy is completed and embedded.
        out: Output ``.onnx`` path.
        batch: Fixed batch size (ignored when ``dynamic``).
        dynamic: Dynamic batch axis (spatial dims stay static, as TensorRT profiles want).
        half: FP16 weights and I/O (the NMS output stays float32).
        nms: Append the in-graph NMS tail; output ``(B, max_det, 6 + ng)``.
        opset: ONNX opset, at least 17.
        conf: NMS score threshold (``nms`` only).
        iou: NMS IoU threshold (``nms`` only).
        max_det: Rows per image of the NMS output.
        simplify: Run onnxslim.

    Returns:
        ``(path, metadata, raw_model)``: the written file, the embedded metadata and the in-memory raw
        ONNX graph before the NMS tail (used by the parity check of ``--nms`` exports).
    """
    import onnx
    import torch

    from convert.nms_graph import append_nms

    if opset < MIN_OPSET:
        raise ExportError(f"opset {opset} is too old; use --opset {MIN_OPSET} or newer")
    if batch < 1:
        raise ExportError(f"batch must be >= 1, got {batch}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model = model.float().eval()
    for p in model.parameters():
        p.requires_grad_(False)
    check_contract(model, meta, batch=1 if dynamic else batch)
    h, w = meta.imgsz
    dummy = torch.zeros(1 if dynamic else batch, 3, h, w)
    if half:  # trace in FP16: FP16 weights, compute and I/O (as ultralytics' half export)
        model, dummy = copy.deepcopy(model).half(), dummy.half()
    raw_name = RAW_NAME if nms else OUTPUT_NAME
    dyn_axes = {INPUT_NAME: {0: "batch"}, raw_name: {0: "batch"}} if dynamic else None
    buf = io.BytesIO()
    torch.onnx.export(
        model,
        (dummy,),
        buf,
        opset_version=opset,
        input_names=[INPUT_NAME],
        output_names=[raw_name],
        dynamic_axes=dyn_axes,
        do_constant_folding=True,
        dynamo=False,
    )
    proto = onnx.load_from_string(buf.getvalue())
    if simplify:
        proto = _slim(proto)
    proto = onnx.shape_inference.infer_shapes(proto, strict_mode=True)
    raw_proto = proto
    if nms:
        spec = meta.spec
        proto = append_nms(proto, spec.nc, spec.ng, conf=conf, iou=iou, max_det=max_det,
                           output_name=OUTPUT_NAME)
        proto = onnx.shape_inference.infer_shapes(proto, strict_mode=True)
    md = replace(
        meta,
        output="nms" if nms else "raw",
        max_det=max_det,
        batch=None if dynamic else batch,
        half=half,
        package_version=__version__,
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        engine=None,
    )
    write_metadata(proto, md)
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(out))
    return out, md, raw_proto


def _slim(proto: Any) -> Any:
    import onnxslim

    slimmed = onnxslim.slim(proto)
    if slimmed is None:
        raise ExportError("onnxslim failed to simplify the graph")
    return slimmed


def write_metadata(proto: Any, meta: ModelMetadata) -> None:
    """Set the ``grimace`` metadata property of an ONNX model (replacing an older one)."""
    props = meta.to_onnx_props()
    keep = [p for p in proto.metadata_props if p.key not in props]
    del proto.metadata_props[:]
    for p in keep:
        proto.metadata_props.add(key=p.key, value=p.value)
    for k, v in props.items():
        proto.metadata_props.add(key=k, value=v)


def read_onnx_metadata(path: str | Path) -> ModelMetadata:
    """Metadata of an exported ONNX file (read with ``onnx``, else ONNX Runtime)."""
    try:
        import onnx
    except ImportError:
        import onnxruntime as ort

        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        props = sess.get_modelmeta().custom_metadata_map
    else:
        proto = onnx.load(str(path), load_external_data=False)
        props = {p.key: p.value for p in proto.metadata_props}
    return ModelMetadata.from_onnx_props(props, source=str(path))
