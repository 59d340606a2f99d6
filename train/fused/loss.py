"""Grade loss: ultralytics' detection loss unchanged, plus a grade term on assigned anchors.

:class:`GradeLoss` follows ``v8PoseLoss``: it runs the detector's task-aligned assigner once through
``v8DetectionLoss.get_assigned_targets_and_loss`` and gathers per-box grade targets with the assigner's
``fg_mask`` (which anchors are matched) and ``target_gt_idx`` (to which ground-truth box). Only matched
anchors contribute grade loss. For each matched anchor the logits of the assigned box's unit are used
(class-conditional head); grade levels the unit does not have are masked.

* ``grade_ce``: cross-entropy to the human grade, on boxes that have one (grade ≥ 0), weighted per
  (unit, grade) by ``grade_class_weights`` (class-imbalance weighting; mean over those anchors).
* ``grade_kd``: ``T²·KL(p_teacher^T ‖ p_student^T)`` to the teacher's soft grades, on boxes that have
  them, where ``p^T = softmax(log p / T)`` (teacher) and ``softmax(z / T)`` (student logits ``z``).
  Multiplying by ``T²`` keeps gradient magnitudes comparable across temperatures (Hinton et al.). The
  KL term is exactly 0 when the student's grade distribution equals the teacher's, for every ``T``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from ultralytics.utils.loss import v8DetectionLoss

from train.fused.config import GradeLossConfig
from train.fused.head import MASKED_LOGIT


def pad_per_image(batch_idx: torch.Tensor, values: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Pad per-box values into ``(B, M, ...)`` in the same order ultralytics pads its targets.

    Args:
        batch_idx: ``(n,)`` image index of each box (sorted, as ultralytics' collate produces).
        values: ``(n, ...)`` per-box values.
        batch_size: ``B``.

    Returns:
        ``(B, M, ...)`` with ``M`` the most boxes in one image; padding is -1.
    """
    n = values.shape[0]
    tail = values.shape[1:]
    if n == 0:
        return values.new_full((batch_size, 0, *tail), -1)
    bi = batch_idx.long()
    counts = torch.bincount(bi, minlength=batch_size)
    out = values.new_full((batch_size, int(counts.max()), *tail), -1)
    offsets = torch.zeros(batch_size + 1, dtype=torch.long, device=values.device)
    offsets[1:] = counts.cumsum(0)
    within = torch.arange(n, device=values.device) - offsets[bi]
    out[bi, within] = values
    return out


def grade_loss(
    logits: torch.Tensor,
    fg_mask: torch.Tensor,
    target_gt_idx: torch.Tensor,
    gt_unit: torch.Tensor,
    gt_grade: torch.Tensor,
    gt_soft: torch.Tensor,
    grade_mask: torch.Tensor,
    temperature: float = 2.0,
    class_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy and distillation terms of the grade loss.

    Args:
        logits: ``(B, nc*ng, N)`` raw grade logits (unit-major).
        fg_mask: ``(B, N)`` bool, anchors matched to a ground-truth box.
        target_gt_idx: ``(B, N)`` index of the matched box within its image.
        gt_unit: ``(B, M)`` unit of each padded ground-truth box.
        gt_grade: ``(B, M)`` human grade, -1 where none.
        gt_soft: ``(B, M, ng)`` teacher probabilities; rows with any negative entry have none.
        grade_mask: ``(nc, ng)`` bool valid levels.
        temperature: Distillation temperature ``T`` (> 0).
        class_weights: Optional ``(nc, ng)`` weights of the CE term per (unit, true grade) and of the KL
            term per (unit, teacher argmax).

    Returns:
        ``(ce, kd)`` scalars: mean over matched anchors with a human grade / with a soft target (0 when
        there is none; still attached to the graph).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    b, c, n = logits.shape
    nc, ng = grade_mask.shape
    if c != nc * ng:
        raise ValueError(f"grade logits have {c} channels, expected nc*ng = {nc}*{ng}")
    zero = logits.sum() * 0.0
    if not bool(fg_mask.any()) or gt_unit.shape[1] == 0:
        return zero, zero
    z = logits.view(b, nc, ng, n).permute(0, 3, 1, 2)[fg_mask]  # (F, nc, ng)
    idx = target_gt_idx[fg_mask]  # (F,)
    bi = torch.nonzero(fg_mask, as_tuple=True)[0]
    unit = gt_unit[bi, idx].long().clamp(0, nc - 1)
    grade = gt_grade[bi, idx].long()
    soft = gt_soft[bi, idx].to(z.dtype)  # (F, ng)
    z = z[torch.arange(len(unit), device=z.device), unit]  # (F, ng) logits of the box's own unit
    valid = grade_mask.to(z.device)[unit]  # (F, ng)
    z = torch.where(valid, z, torch.full_like(z, MASKED_LOGIT))

    ce = zero
    has_g = grade >= 0
    if bool(has_g.any()):
        per = F.cross_entropy(z[has_g], grade[has_g], reduction="none")
        if class_weights is not None:
            per = per * class_weights.to(z.device, z.dtype)[unit[has_g], grade[has_g]]
        ce = per.mean()

    kd = zero
    has_s = (soft >= 0).all(1) & (soft.sum(1) > 0)
    if bool(has_s.any()):
        p = torch.where(valid[has_s], soft[has_s].clamp_min(0), torch.zeros_like(soft[has_s]))
        p = p / p.sum(1, keepdim=True)
        logp = torch.where(p > 0, p.clamp_min(1e-12).log(), torch.full_like(p, MASKED_LOGIT))
        pt = (logp / temperature).softmax(1)  # teacher at temperature T
        pt = torch.where(valid[has_s], pt, torch.zeros_like(pt))
        log_ps = (z[has_s] / temperature).log_softmax(1)
        kl = torch.where(pt > 0, pt * (pt.clamp_min(1e-12).log() - log_ps), torch.zeros_like(pt)).sum(1)
        if class_weights is not None:
            kl = kl * class_weights.to(z.device, z.dtype)[unit[has_s], p.argmax(1)]
        kd = kl.mean() * temperature**2
    return ce, kd


class GradeLoss(v8DetectionLoss):
    """Detection loss (box, cls, dfl) + grade CE + grade KD, summed like ultralytics (× batch size).

    The model provides ``grade_config`` (a :class:`~train.fused.config.GradeLossConfig`: weights ``ce``,
    ``kd`` and temperature) and optionally ``grade_class_weights`` ``(nc, ng)``. The batch provides
    ``grade`` ``(n,)`` and ``soft`` ``(n, ng)`` aligned with ``cls``/``bboxes`` (see
    ``train.fused.data.GradeDataset``).
    """

    def __init__(self, model: Any, tal_topk: int = 10) -> None:
        super().__init__(model, tal_topk)
        head = model.model[-1]
        self.ng = head.ng
        self.grade_mask = head.grade_mask.to(self.device)
        cfg: GradeLossConfig = model.grade_config
        self.w_ce, self.w_kd, self.temperature = cfg.ce, cfg.kd, cfg.temperature
        cw = getattr(model, "grade_class_weights", None)
        self.grade_class_weights = (
            None if cw is None else torch.as_tensor(cw, dtype=torch.float32).to(self.device)
        )
        self.loss_names = (*self.loss_names, "grade_ce", "grade_kd")

    def loss(self, preds: dict[str, torch.Tensor], batch: dict[str, Any]) -> tuple[torch.Tensor, dict]:
        """Total loss × batch size and a dict of detached items (box, cls, dfl, grade_ce, grade_kd)."""
        bs = preds["boxes"].shape[0]
        (fg_mask, target_gt_idx, *_), det, _ = self.get_assigned_targets_and_loss(preds, batch)
        bidx = batch["batch_idx"].to(self.device)
        n = bidx.shape[0]
        units = batch["cls"].view(-1).to(self.device)
        grades = batch.get("grade", torch.full((n,), -1.0)).view(-1).to(self.device)
        soft = batch.get("soft", torch.full((n, self.ng), -1.0)).view(n, self.ng).to(self.device)
        ce, kd = grade_loss(
            preds["grades"],
            fg_mask,
            target_gt_idx,
            pad_per_image(bidx, units, bs),
            pad_per_image(bidx, grades, bs),
            pad_per_image(bidx, soft, bs),
            self.grade_mask,
            self.temperature,
            self.grade_class_weights,
        )
        loss = torch.cat([det, (ce * self.w_ce).view(1), (kd * self.w_kd).view(1)])
        return loss * bs, dict(zip(self.loss_names, loss.detach(), strict=False))
