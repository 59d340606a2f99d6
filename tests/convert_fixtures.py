"""Test fixtures for the conversion tests: a stand-in fused model and synthetic images.

``StandInFusedModel`` is NOT the product's fused model (that is ``train.fused``). It is an ultralytics
``DetectionModel`` built from ``yolov5n.yaml`` with random weights, wrapped so its eval forward follows
the fused raw output contract ``(B, N, 4 + nc + nc*ng)``: boxes ``x1 y1 x2 y2`` in input pixels, unit
scores (sigmoid), then per-unit grade probabilities from a 1x1 conv over the head's input features
(softmax over each unit's valid levels, masked levels exactly 0). It lets the exporter be developed
and tested before the fused model is merged; the exporter only relies on the contract.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from edge.artifact import ModelMetadata
from edge.scales import ScaleSpec


class StandInFusedModel(nn.Module):
    """Random-weight YOLOv5n detector + per-unit grade branch following the fused raw contract."""

    def __init__(self, spec: ScaleSpec, imgsz: int, seed: int = 0) -> None:
        super().__init__()
        from ultralytics.nn.tasks import DetectionModel

        torch.manual_seed(seed)
        self.spec = spec
        self.det = DetectionModel("yolov5n.yaml", nc=spec.nc, verbose=False)
        head = self.det.model[-1]
        head.xyxy = True  # decoded boxes as x1 y1 x2 y2
        head.export = True  # eval forward returns the decoded tensor only
        # random BatchNorm statistics and a wider last layer so outputs vary between anchors (the stock
        # init gives near-identical boxes and scores ~0.01 everywhere, which makes parity vacuous)
        for mod in self.det.modules():
            if isinstance(mod, nn.BatchNorm2d):
                nn.init.uniform_(mod.weight, 0.5, 1.5)
                nn.init.normal_(mod.bias, 0.0, 0.2)
                mod.running_var.uniform_(0.5, 2.0)
        for seq in (*head.cv2, *head.cv3):
            nn.init.normal_(seq[-1].weight, 0.0, 0.3)
        for seq in head.cv3:
            nn.init.normal_(seq[-1].bias, mean=-1.0, std=0.5)
        chans = [seq[0].conv.in_channels for seq in head.cv3]
        self.grade = nn.ModuleList(nn.Conv2d(c, spec.nc * spec.ng, 1) for c in chans)
        mask = torch.as_tensor(spec.grade_mask.reshape(-1))
        self.register_buffer("grade_bias", torch.where(mask, 0.0, -1e4).float())
        self.register_buffer("grade_keep", mask.float())
        self.stride = int(head.stride.max())
        # Random weights give exactly equal scores wherever the input is flat (letterbox borders), and
        # float rounding then breaks those ties differently in every runtime, so half of each score is a
        # fixed random value per candidate: distinct scores, as a trained model has where it matters.
        n = sum((imgsz // int(s)) ** 2 for s in head.stride)
        gen = torch.Generator().manual_seed(seed)
        self.register_buffer("tiebreak", torch.rand(n, spec.nc, generator=gen))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: ``(B, 3, H, W)`` float in [0, 1]. Returns: ``(B, N, 4 + nc + nc*ng)``."""
        head = self.det.model[-1]
        y: list[torch.Tensor | None] = []
        feats: list[torch.Tensor] = []
        for m in self.det.model:
            if m.f != -1:
                x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
            if m is head:
                feats = list(x)
            x = m(x)
            y.append(x if m.i in self.det.save else None)
        det = x[0] if isinstance(x, tuple) else x  # (B, 4 + nc, N)
        b = det.shape[0]
        c = self.spec.nc * self.spec.ng
        logits = torch.cat([g(f).view(b, c, -1) for g, f in zip(self.grade, feats, strict=True)], 2)
        logits = logits.transpose(1, 2) + self.grade_bias  # (B, N, nc*ng)
        n = logits.shape[1]
        probs = logits.view(b, n, self.spec.nc, self.spec.ng).softmax(-1).view(b, n, -1) * self.grade_keep
        det = det.transpose(1, 2)
        scores = 0.5 * det[..., 4:] + 0.5 * self.tiebreak
        return torch.cat([det[..., :4], scores, probs], 2)


def standin_metadata(spec: ScaleSpec, imgsz: int, model: StandInFusedModel) -> ModelMetadata:
    """Metadata as a fused checkpoint would provide it (the metric value is a placeholder for tests)."""
    return ModelMetadata(
        scale=spec.to_dict(), imgsz=(imgsz, imgsz), stride=model.stride, model_name="standin-yolov5n-grade",
        metrics={"val/grade_acc": 0.81},
    )


def draw_images(folder: Path, n: int = 3, seed: int = 0) -> list[Path]:
    """Draw ``n`` rat-face-like BGR images of varied sizes with OpenCV; returns their paths."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        h, w = int(rng.integers(90, 160)), int(rng.integers(90, 160))
        img = np.full((h, w, 3), rng.integers(60, 200, 3), np.uint8)
        img = cv2.GaussianBlur(img + rng.integers(0, 40, img.shape).astype(np.uint8), (5, 5), 0)
        cx, cy = w // 2, h // 2
        cv2.ellipse(img, (cx, cy), (w // 3, h // 3), 0, 0, 360, (120, 110, 150), -1)
        for dx in (-w // 7, w // 7):
            cv2.circle(img, (cx + dx, cy - h // 10), max(2, w // 20), (20, 20, 20), -1)
            cv2.ellipse(img, (cx + 2 * dx, cy - h // 3), (w // 10, h // 8), 0, 0, 360, (170, 150, 200), -1)
        cv2.circle(img, (cx, cy + h // 8), max(2, w // 25), (90, 80, 200), -1)
        p = folder / f"img{i}.png"
        cv2.imwrite(str(p), img)
        paths.append(p)
    return paths


IMGSZ = 128


@pytest.fixture(scope="module", name="standin")
def standin_fixture() -> tuple[StandInFusedModel, ModelMetadata]:
    """A stand-in fused model for RGS at ``IMGSZ`` and its metadata."""
    from edge.scales import RGS

    model = StandInFusedModel(RGS, IMGSZ).eval()
    return model, standin_metadata(RGS, IMGSZ, model)


@pytest.fixture(scope="module", name="parity_images")
def parity_images_fixture() -> list[np.ndarray]:
    """Synthetic textured BGR images of varied sizes."""
    from convert.parity import synthetic_images

    return synthetic_images(3, seed=1)
