"""Attention transfer (Zagoruyko & Komodakis 2017), RepDistiller's form.

``L_feat = sum over stage pairs (pair_stages) of mean((a(f_s) - a(f_t))^2)``,
``a(f) = normalize(mean_c f^p)``, larger map pooled to the smaller; weight 1000, p = 2.
"""
from __future__ import annotations

from dataclasses import dataclass

from .base import FeatureDistiller, FeatureKDConfig
from ..registry import register
from .losses import at_loss
from .pairing import pair_stages

__all__ = ["ATConfig", "ATDistiller"]


@dataclass
class ATConfig(FeatureKDConfig):

    __bounds__ = {"p": "> 0"}
    feat_weight: float = 1000.0
    p: float = 2.0


@register("distiller", "at", config=ATConfig, display_name="AT")
class ATDistiller(FeatureDistiller):
    config_class = ATConfig

    def __init__(self, student, teacher, cfg=None):
        super().__init__(student, teacher, cfg)
        self.pairs = pair_stages(len(student.stages), len(teacher.stages))

    def feature_loss(self, feats_s, feats_t, y, idx):
        return sum(at_loss(feats_s.stages[i], feats_t.stages[j], self.cfg.p) for i, j in self.pairs)
