"""The PyTorch backend of :class:`edge.predictor.Predictor`: a fused checkpoint run by torch.

It lives in ``train`` so ``edge`` stays torch-free; with it, ``grimace predict``, ``train evaluate``,
the parity check of ``grimace convert`` and the benchmarks run PyTorch models through the same
pre-process → infer → post-process → score loop as the edge runtime.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edge.artifact import ModelMetadata
from edge.backends import Backend
from edge.predictor import Model


class TorchBackend(Backend):
    """A fused model (``model(x)`` -> raw ``(B, N, 4 + nc + nc*ng)``) as a backend.

    Args:
        model: The torch module (eval mode is set here; its head in export mode).
        meta: The model's metadata (input size, normalisation, scale).
        device: Torch device the module runs on (the module is moved there).
        half: Run in FP16 (CUDA only).
    """

    def __init__(self, model: Any, meta: ModelMetadata, device: Any = "cpu", half: bool = False) -> None:
        import torch

        self._torch = torch
        self.torch_device = torch.device(device)
        self.half = bool(half) and self.torch_device.type == "cuda"
        self.model = model.to(self.torch_device).eval()
        if self.half:
            self.model = self.model.half()
        self.input_name = "images"
        self.input_shape = (None, 3, int(meta.imgsz[0]), int(meta.imgsz[1]))
        self.input_dtype = np.dtype(np.float32)
        self.device = f"torch:{self.torch_device}"

    def _run(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        x = torch.from_numpy(batch).to(self.torch_device)
        if self.half:
            x = x.half()
        with torch.inference_mode():
            out = self.model(x)
        out = out[0] if isinstance(out, (tuple, list)) else out
        return out.float().cpu().numpy()

    def close(self) -> None:
        self.model = None


def load_torch_model(path: str | Path, device: Any = "cpu", imgsz: int | None = None) -> Model:
    """Open a fused checkpoint (folder, ``model.safetensors`` or training run folder) as a
    :class:`edge.predictor.Model` with a :class:`TorchBackend`.

    Args:
        path: The checkpoint.
        device: Torch device.
        imgsz: Letterbox size (default: the size it was trained at).

    Raises:
        convert.export.ExportError: Not a fused checkpoint, or one without a scale.
    """
    from dataclasses import replace

    from convert.export import load_fused_checkpoint

    model, meta = load_fused_checkpoint(path)
    if imgsz is not None:
        meta = replace(meta, imgsz=(int(imgsz), int(imgsz)))
    return Model(Path(path), meta, TorchBackend(model, meta, device=device))
