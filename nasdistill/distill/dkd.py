"""Decoupled knowledge distillation (Zhao et al. 2022), mdistiller's training form.

``L = ce_weight * CE + min(epoch / warmup_epochs, 1) * (alpha * TCKD + beta * NCKD)`` (see
:func:`nasdistill.distill.losses.dkd_loss`). CIFAR defaults: alpha 1, beta 8, T 4, warm-up 20
epochs. REFERENCE.md lists beta per teacher/student pair (2 or 6 for some CIFAR pairs) and
beta 0.5, T 1, warm-up 1 on ImageNet. ``standardize`` z-scores both logits first (logit
standardization, Sun et al. CVPR 2024).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from .base import Distiller
from ..registry import register
from .losses import dkd_loss

__all__ = ["DKDConfig", "DKDDistiller", "dkd_warmup_factor"]


@dataclass
class DKDConfig:

    __bounds__ = {"alpha": ">= 0", "beta": ">= 0", "temperature": "> 0", "ce_weight": ">= 0",
                  "warmup_epochs": ">= 0"}
    alpha: float = 1.0
    beta: float = 8.0
    temperature: float = 4.0
    ce_weight: float = 1.0
    warmup_epochs: float = 20.0
    standardize: bool = False     # logit standardization of teacher and student logits


def dkd_warmup_factor(epoch: float, warmup_epochs: float) -> float:
    """``min(epoch / warmup_epochs, 1)``; a warm-up of 0 means the full weight from the start."""
    if warmup_epochs <= 0:
        return 1.0
    return min(float(epoch) / warmup_epochs, 1.0)


@register("distiller", "dkd", config=DKDConfig, display_name="DKD", order=20, reads_features=False, graph_safe=True)
class DKDDistiller(Distiller):
    """Keys: ``loss_ce``, ``loss_kd`` (the warm-up-scaled DKD term)."""

    def forward_train(self, x, y, idx=None, epoch=0):
        logits = self.student(x)
        logits_t = self.teacher_features(x).logits
        cfg = self.cfg
        factor = dkd_warmup_factor(epoch, cfg.warmup_epochs)
        return logits, {
            "loss_ce": cfg.ce_weight * F.cross_entropy(logits, y),
            "loss_kd": factor * dkd_loss(logits, logits_t, y, cfg.alpha, cfg.beta, cfg.temperature,
                                       cfg.standardize),
        }
