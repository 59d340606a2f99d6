"""Test fixtures for the conversion tests: the product's fused model with perturbed weights, saved and
loaded as a real checkpoint, and textured square test images.

The model is :func:`train.fused.model.build_fused_model` (YOLOv5n + grade head, the architecture and
forward of the product). Only its weights are changed, by :func:`perturb_fused_weights`, because a
random-weight fused model gives nearly the same output for every input and keeps no box above conf
0.25, which would make every parity check vacuous:

* BatchNorm statistics are measured on textured images (train-mode pass, exact batch average) and
  the BatchNorm scales and shifts randomised, so activations neither vanish nor saturate;
* the last 1x1 convolution of each head branch is rescaled so that box-distance, unit and grade
  logits have a fixed spread; the box branch favours short distances (boxes of a face part's size);
* the unit-logit biases are raised so that about 5 % of the unit scores of the calibration images
  pass conf 0.25: a few to a few dozen boxes per image after NMS.

:func:`fused_checkpoint` writes it with :func:`train.fused.checkpoint.save_checkpoint` and loads it
back with :func:`convert.export.load_fused_checkpoint`, as ``grimace convert onnx`` does, so the
model, metadata and checkpoint the tests use are the ones a user's checkpoint gives.

Test images fill the square input (no letterbox border) and are textured everywhere: flat regions
give exactly equal scores at many candidates, and runtimes break such ties differently.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np
import pytest

from edge.artifact import ModelMetadata
from edge.scales import RGS, ScaleSpec

IMGSZ = 128
METRICS = {"val/grade_acc": 0.81}
"""Metrics stored in the test checkpoint (a placeholder value; checked to travel into the export)."""

UNIT_QUANTILE = 0.95
"""Unit scores of the calibration images at this quantile (per unit) are set to :data:`CONF`."""
CONF = 0.25
LOGIT_STD = {"boxes": 1.0, "scores": 1.0, "grades": 1.0}
"""Spread of each head branch's output logits on the calibration images."""
BOX_BIN_SLOPE = 0.3
"""Box-distance (DFL) bin ``k`` gets logit bias ``-slope * k``: short distances are likelier."""


class FusedCase(NamedTuple):
    """A perturbed fused model as loaded from its checkpoint.

    Attributes:
        model: The loaded :class:`train.fused.model.GradeModel` (eval, ``head.export = True``).
        meta: Its metadata from :func:`convert.export.load_fused_checkpoint`.
        checkpoint: The checkpoint directory.
    """

    model: Any
    meta: ModelMetadata
    checkpoint: Path


def square_images(n: int, seed: int = 0) -> list[np.ndarray]:
    """``n`` textured rat-face-like BGR images (:func:`convert.parity.synthetic_images`), cropped square."""
    from convert.parity import synthetic_images

    out = []
    for img in synthetic_images(n, seed=seed):
        s = min(img.shape[:2])
        out.append(np.ascontiguousarray(img[:s, :s]))
    return out


def perturb_fused_weights(model: Any, calib: Any, seed: int = 0) -> None:
    """Change a fused model's weights (in place) so it gives varied boxes above conf (module docstring).

    Args:
        model: A :class:`train.fused.model.GradeModel`.
        calib: ``(B, 3, H, W)`` float tensor of letterboxed calibration images in ``[0, 1]``.
        seed: Seed of the random BatchNorm scales and shifts and last-layer weights.
    """
    import torch
    from torch import nn

    gen = torch.Generator().manual_seed(seed)
    head = model.head
    branches = {"boxes": head.cv2, "scores": head.cv3, "grades": head.cv4}
    export = head.export
    with torch.no_grad():
        for seqs in branches.values():
            for seq in seqs:
                seq[-1].weight.normal_(0.0, 1.0, generator=gen)
                seq[-1].bias.zero_()
        bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        momenta = [bn.momentum for bn in bns]
        for bn in bns:
            bn.weight.uniform_(0.3, 0.7, generator=gen)
            bn.bias.normal_(0.0, 0.1, generator=gen)
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average: after one batch, exactly its statistics
        model.train()
        model(calib)
        model.eval()
        for bn, m in zip(bns, momenta, strict=True):
            bn.momentum = m
        head.export = False  # eval forward returns (raw, prediction dict with the logits)
        _, preds = model(calib)
        for key, seqs in branches.items():
            k = LOGIT_STD[key] / float(preds[key].std())
            for seq in seqs:
                seq[-1].weight.mul_(k)
        bins = -BOX_BIN_SLOPE * torch.arange(head.reg_max, dtype=torch.float32)
        for seq in head.cv2:
            seq[-1].bias.copy_(bins.repeat(4))  # DFL channels are side-major: 4 x reg_max
        _, preds = model(calib)
        s = preds["scores"].transpose(0, 1).reshape(head.nc, -1)
        q = torch.quantile(s, UNIT_QUANTILE, dim=1)
        logit_conf = float(np.log(CONF / (1 - CONF)))
        for seq in head.cv3:
            seq[-1].bias.copy_(logit_conf - q)
    head.export = export


def fused_checkpoint(folder: Path, spec: ScaleSpec = RGS, imgsz: int = IMGSZ, seed: int = 0) -> FusedCase:
    """Build the fused model, perturb its weights, save it as a checkpoint and load it back.

    Args:
        folder: Where the checkpoint directory ``fused`` is written.
        spec: Scale.
        imgsz: Training image size recorded in the checkpoint (and used for calibration).
        seed: Seed of the initial and the perturbed weights.

    Returns:
        The loaded model, its export metadata and the checkpoint directory.
    """
    import torch

    from convert.export import load_fused_checkpoint
    from edge.postprocess import preprocess
    from train.fused.checkpoint import save_checkpoint
    from train.fused.model import build_fused_model

    with torch.random.fork_rng():  # the initial weights are seeded without touching the global RNG
        torch.manual_seed(seed)
        model = build_fused_model(spec, "n", imgsz)
    md = ModelMetadata(scale=spec.to_dict(), imgsz=(imgsz, imgsz))
    calib = torch.from_numpy(preprocess(square_images(8, seed=100 + seed), md))
    perturb_fused_weights(model, calib, seed)
    ckpt = save_checkpoint(model, folder / "fused", {"imgsz": imgsz, "metrics": METRICS})
    loaded, meta = load_fused_checkpoint(ckpt)
    return FusedCase(loaded, meta, ckpt)


def draw_images(folder: Path, n: int = 3, seed: int = 0) -> list[Path]:
    """Draw ``n`` textured square rat-face-like BGR images of varied sizes; returns their PNG paths."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        s = int(rng.integers(90, 160))
        img = np.full((s, s, 3), rng.integers(60, 200, 3), np.uint8)
        c = s // 2
        cv2.ellipse(img, (c, c), (s // 3, s // 3), 0, 0, 360, (120, 110, 150), -1)
        for dx in (-s // 7, s // 7):
            cv2.circle(img, (c + dx, c - s // 10), max(2, s // 20), (20, 20, 20), -1)
            cv2.ellipse(img, (c + 2 * dx, c - s // 3), (s // 10, s // 8), 0, 0, 360, (170, 150, 200), -1)
        cv2.circle(img, (c, c + s // 8), max(2, s // 25), (90, 80, 200), -1)
        noise = rng.normal(0, 12, img.shape)  # texture everywhere, after drawing: no flat regions
        img = np.clip(img + noise, 0, 255).astype(np.uint8)
        p = folder / f"img{i}.png"
        cv2.imwrite(str(p), img)
        paths.append(p)
    return paths


@pytest.fixture(scope="module", name="fused")
def fused_fixture(tmp_path_factory: pytest.TempPathFactory) -> FusedCase:
    """The perturbed fused model for RGS at ``IMGSZ``, loaded from its checkpoint (built once per module)."""
    return fused_checkpoint(tmp_path_factory.mktemp("ckpt"))


@pytest.fixture(scope="module", name="parity_images")
def parity_images_fixture() -> list[np.ndarray]:
    """Textured square BGR images of varied sizes (no letterbox border)."""
    return square_images(3, seed=1)
