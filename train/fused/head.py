"""Grade head: the ultralytics ``Detect`` head plus one branch of class-conditional grade logits.

Built like ultralytics' ``Pose(Detect)``, which adds a ``cv4`` branch for keypoints: :class:`GradeDetect`
adds a ``cv4`` branch that emits, for every anchor, ``nc * ng`` grade logits (unit-major: unit ``i``'s
logits are channels ``i*ng:(i+1)*ng``). Grade levels a unit does not have are masked (logit set to a
large negative number before the softmax, probability exactly 0 afterwards).

Outputs:

* training: the ultralytics prediction dict with one more key, ``"grades"`` ``(B, nc*ng, N)`` raw logits.
* eval / export: the grimace **raw contract** ``(B, N, 4 + nc + nc*ng)`` float32: ``x1 y1 x2 y2`` in
  letterboxed input pixels, ``nc`` sigmoid unit scores, ``nc*ng`` per-unit softmax grade probabilities.
  In export mode (``head.export = True``) the tensor is returned alone; otherwise as
  ``(raw, prediction_dict)`` like every ultralytics head, so the loss can be computed in eval mode.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from ultralytics.nn.modules import Conv, Detect

MASKED_LOGIT = -1.0e4
"""Logit given to grade levels a unit does not have (softmax probability underflows to exactly 0)."""


def default_grade_channels(ch: list[int] | tuple[int, ...], nc: int, ng: int) -> int:
    """The default grade-branch width: ``max(ch[0] // 4, min(nc·ng, 128), 16)``.

    16 channels for yolov5n, 32 for s and 48 for m with the RGS scale. Checkpoints written before the
    width was a setting were all built with it.
    """
    return max(ch[0] // 4, min(nc * ng, 128), 16)


class GradeDetect(Detect):
    """YOLO detect head with per-box, class-conditional grade logits.

    Attributes:
        ng: Number of grade columns per unit (the largest grade count of the scale).
        cv4: One conv branch per detection level emitting ``nc * ng`` logits per anchor.
        grade_mask: Buffer ``(nc, ng)`` bool, True for valid grade levels.

    Args:
        nc: Number of units (detector classes).
        ng: Grade columns per unit.
        reg_max: DFL channels (ultralytics default 16).
        end2end: Not supported (the grimace contract uses NMS); must be False.
        ch: Input channels per detection level.
        grade_mask: Optional ``(nc, ng)`` boolean mask (nested lists accepted); default all valid.
        grade_channels: Width of the grade branch's two 3×3 convolutions; ``None`` gives the original
            width :func:`default_grade_channels` (what checkpoints without the setting were built with).
    """

    def __init__(
        self,
        nc: int = 4,
        ng: int = 3,
        reg_max: int = 16,
        end2end: bool = False,
        ch: list[int] | tuple[int, ...] = (),
        grade_mask: list[list[bool]] | torch.Tensor | None = None,
        grade_channels: int | None = None,
    ) -> None:
        if end2end:
            raise ValueError("GradeDetect does not support end2end (NMS-free) heads")
        if ng < 1:
            raise ValueError(f"GradeDetect needs ng >= 1, got {ng}")
        super().__init__(nc, reg_max, False, ch)
        self.ng = ng
        c4 = default_grade_channels(ch, nc, ng) if grade_channels is None else int(grade_channels)
        if c4 < 1:
            raise ValueError(f"grade_channels must be >= 1, got {c4}")
        self.grade_channels = c4
        self.cv4 = nn.ModuleList(
            nn.Sequential(Conv(x, c4, 3), Conv(c4, c4, 3), nn.Conv2d(c4, nc * ng, 1)) for x in ch
        )
        mask = torch.ones(nc, ng, dtype=torch.bool) if grade_mask is None else torch.as_tensor(grade_mask)
        if tuple(mask.shape) != (nc, ng):
            raise ValueError(f"grade_mask must have shape ({nc}, {ng}), got {tuple(mask.shape)}")
        self.register_buffer("grade_mask", mask.bool().clone())

    @property
    def one2many(self) -> dict[str, nn.Module]:
        """Head components, with the grade branch."""
        return {"box_head": self.cv2, "cls_head": self.cv3, "grade_head": self.cv4}

    def forward_head(
        self,
        x: list[torch.Tensor],
        box_head: nn.Module | None = None,
        cls_head: nn.Module | None = None,
        grade_head: nn.Module | None = None,
    ) -> dict[str, torch.Tensor]:
        """Detect outputs plus ``"grades"`` ``(B, nc*ng, N)`` raw logits."""
        preds = super().forward_head(x, box_head, cls_head)
        if grade_head is not None:
            bs = x[0].shape[0]
            preds["grades"] = torch.cat(
                [grade_head[i](x[i]).view(bs, self.nc * self.ng, -1) for i in range(self.nl)], 2
            )
        return preds

    def grade_probs(self, logits: torch.Tensor) -> torch.Tensor:
        """Masked per-unit softmax.

        Args:
            logits: ``(B, nc*ng, N)`` grade logits.

        Returns:
            ``(B, nc*ng, N)`` probabilities; each unit's valid levels sum to 1, masked levels are 0.
        """
        b, _, n = logits.shape
        z = logits.view(b, self.nc, self.ng, n)
        mask = self.grade_mask.view(1, self.nc, self.ng, 1)
        z = torch.where(mask, z, torch.full_like(z, MASKED_LOGIT))
        return z.softmax(2).view(b, self.nc * self.ng, n)

    def _inference(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        """Raw contract ``(B, N, 4 + nc + nc*ng)``: xyxy input pixels, sigmoid scores, grade probs."""
        dbox = self._get_decode_boxes(x)  # (B, 4, N), centre-size unless the head was set to xyxy
        if getattr(self, "xyxy", False):
            xyxy = dbox
        else:
            xy, wh = dbox[:, :2], dbox[:, 2:4]
            xyxy = torch.cat((xy - wh / 2, xy + wh / 2), 1)
        out = torch.cat((xyxy, x["scores"].sigmoid(), self.grade_probs(x["grades"])), 1)
        return out.permute(0, 2, 1)

    def forward(self, x: list[torch.Tensor]) -> dict[str, torch.Tensor] | torch.Tensor | tuple:
        """Training: prediction dict. Eval: ``(raw, dict)``. Export: ``raw`` ``(B, N, 4+nc+nc*ng)``."""
        preds = self.forward_head(x, **self.one2many)
        if self.training:
            return preds
        y = self._inference(preds)
        return y if self.export else (y, preds)

    def bias_init(self) -> None:
        """Detect bias init plus :meth:`grade_bias_init`."""
        super().bias_init()
        self.grade_bias_init()

    def grade_bias_init(self) -> None:
        """Grade logits start near uniform: zero bias, small final weights."""
        for c in self.cv4:
            c[-1].bias.data.zero_()
            c[-1].weight.data.mul_(math.sqrt(0.1))
