"""Relational KD (Park et al. 2019) on the pooled embeddings (RepDistiller: feat[-1]).

``L_feat = feat_weight * (distance_weight * L_distance + angle_weight * L_angle)``,
defaults 1, 25, 50 (see :func:`nasdistill.distill.losses.rkd_loss`).
"""
from __future__ import annotations

from dataclasses import dataclass

from .base import FeatureDistiller, FeatureKDConfig
from ..registry import register
from .losses import rkd_loss

__all__ = ["RKDConfig", "RKDDistiller"]


@dataclass
class RKDConfig(FeatureKDConfig):

    __bounds__ = {"distance_weight": ">= 0", "angle_weight": ">= 0"}
    feat_weight: float = 1.0
    distance_weight: float = 25.0
    angle_weight: float = 50.0


@register("distiller", "rkd", config=RKDConfig, display_name="RKD")
class RKDDistiller(FeatureDistiller):
    config_class = RKDConfig

    def feature_loss(self, feats_s, feats_t, y, idx):
        return rkd_loss(feats_s.embedding, feats_t.embedding,
                        self.cfg.distance_weight, self.cfg.angle_weight)
