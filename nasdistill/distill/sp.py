"""Similarity-preserving KD (Tung & Mori 2019) on the last stage outputs (RepDistiller: feat[-2]).

``L_feat = ||normalize(F_s F_s^T) - normalize(F_t F_t^T)||_F^2 / B^2``, weight 3000.
"""
from __future__ import annotations

from dataclasses import dataclass

from .base import FeatureDistiller, FeatureKDConfig
from ..registry import register
from .losses import sp_loss

__all__ = ["SPConfig", "SPDistiller"]


@dataclass
class SPConfig(FeatureKDConfig):
    feat_weight: float = 3000.0


@register("distiller", "sp", config=SPConfig, display_name="SP")
class SPDistiller(FeatureDistiller):
    config_class = SPConfig

    def feature_loss(self, feats_s, feats_t, y, idx):
        return sp_loss(feats_s.stages[-1], feats_t.stages[-1])
