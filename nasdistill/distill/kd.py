"""Vanilla knowledge distillation (Hinton et al. 2015).

``L = ce_weight * CE(z_s, y) + kd_weight * KL(softmax(z_t/T) || softmax(z_s/T)) * T^2``,
RepDistiller's CIFAR defaults ``0.1 * CE + 0.9 * KD`` at ``T = 4``.

``standardize`` (logit standardization, Sun et al. CVPR 2024) z-scores both logits before the
softmax (:func:`~.losses.standardize_logits`); the authors pair it with ``T = 2`` and
``kd_weight = 9`` on CIFAR-100 (``kd.standardize=true kd.temperature=2 kd.kd_weight=9``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from .base import Distiller
from ..registry import register
from .losses import kd_loss

__all__ = ["KDConfig", "KDDistiller"]


@dataclass
class KDConfig:

    __bounds__ = {"temperature": "> 0", "ce_weight": ">= 0", "kd_weight": ">= 0"}
    temperature: float = 4.0
    ce_weight: float = 0.1
    kd_weight: float = 0.9
    standardize: bool = False     # logit standardization of teacher and student logits


@register("distiller", "kd", config=KDConfig, display_name="KD", order=10, reads_features=False, graph_safe=True)
class KDDistiller(Distiller):
    """Keys: ``loss_ce``, ``loss_kd`` (both weighted)."""

    def forward_train(self, x, y, idx=None, epoch=0):
        logits = self.student(x)
        logits_t = self.teacher_features(x).logits
        cfg = self.cfg
        return logits, {
            "loss_ce": cfg.ce_weight * F.cross_entropy(logits, y),
            "loss_kd": cfg.kd_weight * kd_loss(logits, logits_t, cfg.temperature, cfg.standardize),
        }
