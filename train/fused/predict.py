"""``grimace predict``: a fused PyTorch checkpoint scored like ``grimace score`` scores an ONNX model.

Frames come from :func:`edge.sources.iter_inputs` (images, and videos sampled at ``fps``), go through
the one :class:`edge.predictor.Predictor` with the PyTorch backend (:mod:`train.fused.backend`), and
are written as :mod:`edge.records` frame records — the same columns and meanings as every other
command.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.predictor import Predictor
from edge.quality import frame_quality
from edge.records import (
    FrameRecord,
    JsonlWriter,
    frame_columns,
    json_line,
    record_from_frame,
    table_row,
    write_table,
)
from edge.sources import Frame, ItemError, iter_inputs
from train.fused.backend import load_torch_model

OUT_SUFFIXES = (".jsonl", ".csv", ".xlsx")


@dataclass
class PredictRun:
    """Outcome of :func:`predict_inputs`.

    Attributes:
        records: One frame record per frame.
        errors: Inputs that could not be read.
        device: The torch device used.
    """

    records: list[FrameRecord] = field(default_factory=list)
    errors: list[ItemError] = field(default_factory=list)
    device: str = ""


def predict_inputs(
    model: str | Path,
    inputs: Sequence[str | Path],
    out: str | Path | None = None,
    *,
    fps: float | None = None,
    imgsz: int | None = None,
    conf: float = 0.25,
    iou: float = 0.45,
    device: Any = "cpu",
    batch: int = 8,
    on_frame: Callable[[FrameRecord], None] | None = None,
    on_error: Callable[[ItemError], None] | None = None,
) -> PredictRun:
    """Score images and videos with a fused checkpoint.

    Args:
        model: Checkpoint folder, its ``model.safetensors`` or a training run folder.
        inputs: Files and folders.
        out: ``.jsonl`` (frame records with boxes, written as frames come), ``.csv`` or ``.xlsx``.
        fps: Video sampling rate (``None``: every frame).
        imgsz: Letterbox size (default: the checkpoint's).
        conf: Unit-score threshold.
        iou: NMS IoU.
        device: Torch device.
        batch: Frames per forward pass.
        on_frame: Called with each frame record (e.g. to print it).
        on_error: Called with each input that failed.

    Returns:
        The :class:`PredictRun`.
    """
    m = load_torch_model(model, device=device, imgsz=imgsz)
    spec = m.spec
    pred = Predictor(m, conf=conf, iou=iou, quality_fn=frame_quality, batch=batch)
    run = PredictRun(device=str(m.backend.device))
    out = Path(out) if out is not None else None
    jsonl = JsonlWriter(out) if out is not None and out.suffix.lower() == ".jsonl" else None
    chunk: list[Frame] = []

    def flush() -> None:
        results = pred([f.image for f in chunk], [f.source for f in chunk])
        for f, res in zip(chunk, results, strict=True):
            rec = record_from_frame(res, spec, f)
            run.records.append(rec)
            if jsonl is not None:
                jsonl.write(json_line(rec, spec, res))
            if on_frame is not None:
                on_frame(rec)
        chunk.clear()

    try:
        for item in iter_inputs(inputs, fps=fps):
            if isinstance(item, ItemError):
                run.errors.append(item)
                if on_error is not None:
                    on_error(item)
                continue
            chunk.append(item)
            if len(chunk) >= pred.batch_size:
                flush()
        if chunk:
            flush()
    finally:
        if jsonl is not None:
            jsonl.close()
        m.close()
    if out is not None and jsonl is None:
        write_table(out, frame_columns(spec), [table_row(r, spec) for r in run.records])
    return run
