"""Probabilistic knowledge transfer (Passalis & Tefas 2018) on the pooled embeddings.

``L_feat = mean_ij P_t,ij log((P_t,ij + eps) / (P_s,ij + eps))`` with cosine-kernel conditionals
(see :func:`nasdistill.distill.losses.pkt_loss`); weight 30000 (RepDistiller's ``-b``).
"""
from __future__ import annotations

from dataclasses import dataclass

from .base import FeatureDistiller, FeatureKDConfig
from ..registry import register
from .losses import pkt_loss

__all__ = ["PKTConfig", "PKTDistiller"]


@dataclass
class PKTConfig(FeatureKDConfig):

    __bounds__ = {"eps": "> 0"}
    feat_weight: float = 30000.0
    eps: float = 1e-7


@register("distiller", "pkt", config=PKTConfig, display_name="PKT")
class PKTDistiller(FeatureDistiller):
    config_class = PKTConfig

    def feature_loss(self, feats_s, feats_t, y, idx):
        return pkt_loss(feats_s.embedding, feats_t.embedding, self.cfg.eps)
