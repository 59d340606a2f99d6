"""``grimace convert inspect``: what an exported model carries (metadata, I/O, opset, ops, size)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from edge.artifact import ModelMetadata, sidecar_path


def _fmt_dims(vi: Any) -> list[int | str]:
    dims = vi.type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]


def inspect_model(path: str | Path) -> dict[str, Any]:
    """Describe an ONNX file or a TensorRT engine (through its sidecar JSON).

    Returns:
        ``{"path", "kind", "size_bytes", "metadata", ...}``; ONNX adds ``opset``, ``inputs``,
        ``outputs``, ``op_counts``, ``nodes``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model file")
    info: dict[str, Any] = {"path": str(path), "size_bytes": path.stat().st_size}
    if path.suffix.lower() == ".onnx":
        import onnx
        from onnx import TensorProto

        proto = onnx.load(str(path), load_external_data=False)
        props = {p.key: p.value for p in proto.metadata_props}
        info["kind"] = "onnx"
        info["metadata"] = ModelMetadata.from_onnx_props(props, source=str(path))
        if "grimace_quantization" in props:  # convert.quantize.QUANT_KEY (INT8 exports)
            import json

            info["quantization"] = json.loads(props["grimace_quantization"])
        info["opset"] = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
        info["producer"] = f"{proto.producer_name} {proto.producer_version}".strip()
        inits = {t.name for t in proto.graph.initializer}
        info["inputs"] = [
            (vi.name, TensorProto.DataType.Name(vi.type.tensor_type.elem_type), _fmt_dims(vi))
            for vi in proto.graph.input if vi.name not in inits
        ]
        info["outputs"] = [
            (vi.name, TensorProto.DataType.Name(vi.type.tensor_type.elem_type), _fmt_dims(vi))
            for vi in proto.graph.output
        ]
        info["op_counts"] = dict(sorted(Counter(n.op_type for n in proto.graph.node).items()))
        info["nodes"] = len(proto.graph.node)
        info["parameters"] = sum(int(_numel(t)) for t in proto.graph.initializer)
    else:
        from edge.backends import read_sidecar

        info["kind"] = "tensorrt-engine"
        info["sidecar"] = str(sidecar_path(path))
        info["metadata"] = read_sidecar(path)
    return info


def _numel(t: Any) -> int:
    n = 1
    for d in t.dims:
        n *= int(d)
    return n


def format_inspection(info: dict[str, Any]) -> list[str]:
    """Printable lines of :func:`inspect_model`'s result."""
    md: ModelMetadata = info["metadata"]
    spec = md.spec
    size = info["size_bytes"]
    lines = [
        f"{info['path']}  ({info['kind']}, {size / 1e6:.2f} MB)",
        f"  scale        {spec.name} ({spec.species}), fingerprint {spec.fingerprint}, "
        f"aggregation {spec.aggregation}",
    ]
    for i, u in enumerate(spec.units):
        names = f" ({', '.join(u.grade_names)})" if u.grade_names else ""
        lines.append(f"    unit {i}: {u.name:<10} {u.label}; grades 0..{u.grades - 1}{names}; "
                     f"per frame {u.per_frame}{'' if u.required else ', optional'}")
    lines += [
        f"  input        {md.imgsz[0]}x{md.imgsz[1]} {md.channel_order}, stride {md.stride}, "
        f"pad {md.pad_value}, mean {list(md.mean)}, std {list(md.std)}",
        f"  output       {md.output}"
        + (f" (B, {md.max_det}, 6+{spec.ng})" if md.output == "nms" else f" (B, N, {md.num_outputs})"),
        f"  batch        {md.batch if md.batch is not None else 'dynamic'}; "
        f"{'FP16' if md.half else 'FP32'}",
        f"  model        {md.model_name or '-'}",
        f"  source       sha256 {md.source_sha256 or '-'}",
        "  metrics      " + (", ".join(f"{k} {v:.4g}" for k, v in md.metrics.items()) or "-"),
        f"  created      {md.created or '-'} by grimace-edge {md.package_version or '?'}",
    ]
    if info["kind"] == "onnx":
        lines.append(f"  opset        {info['opset']}  ({info['producer']})")
        lines += [f"  graph input  {n}: {t} {d}" for n, t, d in info["inputs"]]
        lines += [f"  graph output {n}: {t} {d}" for n, t, d in info["outputs"]]
        lines.append(f"  nodes        {info['nodes']}, parameters {info['parameters']:,}")
        lines.append("  ops          " + ", ".join(f"{k} {v}" for k, v in info["op_counts"].items()))
    qr = info.get("quantization")
    if qr:
        ag = qr.get("agreement", {})
        lines.append(
            f"  quantized    {qr.get('format')} {qr.get('int8_format')}: weights {qr.get('weights')}, "
            f"activations {qr.get('activations')}, bias {qr.get('bias')}; {qr['calibration']['method']} "
            f"calibration on {qr['calibration']['frames']} frames; {len(qr.get('fp32_nodes', []))} nodes "
            f"FP32 ({qr.get('keep_fp32')})"
        )
        if ag.get("frames"):
            icc = ag.get("icc")
            lines.append(
                f"  vs FP32      {ag['frames']} held-out frames: box match {ag['box_match']:.1%}, argmax "
                f"grade {ag['grade_agreement']:.1%}, frame-score ICC "
                f"{'-' if icc is None else f'{icc:.4f}'}; created {qr.get('created', '-')}"
            )
    if md.engine is not None:
        e = md.engine
        lines.append(
            f"  engine       TensorRT {e.tensorrt_version}, {e.precision}, GPU {e.gpu_name} "
            f"(compute {e.compute_capability}){f', DLA {e.dla_core}' if e.dla_core is not None else ''}, "
            f"built {e.built_at} in {e.build_time_s:.1f} s"
        )
    return lines
