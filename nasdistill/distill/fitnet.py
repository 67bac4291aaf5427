"""FitNets hints (Romero et al. 2015) on the middle stage pair.

``L_feat = mean((r(f_s) - f_t)^2)`` with ``f_s, f_t`` the hint stage pair and ``r`` a trained
regressor to the teacher's channels; weight 100 plus CE weight 1 (RepDistiller's ``-b 100 -r 1``).

Hint pair: ``pair_stages(n_s, n_t)[hint_pair]``, by default the middle pair ``len(pairs) // 2``
(RepDistiller's ``hint_layer = 2`` = the second of three ResNet stages).

Regressor :class:`HintRegressor` = conv -> BN -> ReLU from student to teacher channels (teacher
hints are post-ReLU). The conv handles the spatial sizes like RepDistiller's ``ConvReg``:
equal -> 1x1 conv; student twice as large -> 3x3 conv stride 2; half as large -> 4x4 transposed
conv stride 2. Any other ratio: 1x1 conv, then adaptive average pooling down to the teacher size
or bilinear resizing up to it (RepDistiller would use a large-kernel conv or fail).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .base import FeatureDistiller, FeatureKDConfig
from ..registry import register
from .losses import fitnet_loss
from .pairing import pair_stages

__all__ = ["FitNetConfig", "FitNetDistiller", "HintRegressor"]


@dataclass
class FitNetConfig(FeatureKDConfig):

    __bounds__ = {"hint_pair": ">= 0"}
    feat_weight: float = 100.0
    hint_pair: Optional[int] = None  # index into pair_stages(...); None = the middle pair


class HintRegressor(nn.Module):
    """Maps a student map ``(C_s, H_s, W_s)`` to the teacher's ``(C_t, H_t, W_t)`` (see module doc)."""

    def __init__(self, s_shape: tuple, t_shape: tuple):
        super().__init__()
        (c_s, h_s, w_s), (c_t, h_t, w_t) = tuple(s_shape), tuple(t_shape)
        self.out_size = (h_t, w_t)
        if (h_s, w_s) == (h_t, w_t):
            self.conv = nn.Conv2d(c_s, c_t, 1)
        elif (h_s, w_s) == (2 * h_t, 2 * w_t):
            self.conv = nn.Conv2d(c_s, c_t, 3, stride=2, padding=1)
        elif (2 * h_s, 2 * w_s) == (h_t, w_t):
            self.conv = nn.ConvTranspose2d(c_s, c_t, 4, stride=2, padding=1)
        else:
            self.conv = nn.Conv2d(c_s, c_t, 1)
        self.bn = nn.BatchNorm2d(c_t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        h, w = x.shape[2:]
        if (h, w) != self.out_size:
            if h >= self.out_size[0] and w >= self.out_size[1]:
                x = F.adaptive_avg_pool2d(x, self.out_size)
            else:
                x = F.interpolate(x, size=self.out_size, mode="bilinear", align_corners=False)
        return F.relu(self.bn(x))


@register("distiller", "fitnet", config=FitNetConfig, display_name="FitNets")
class FitNetDistiller(FeatureDistiller):
    config_class = FitNetConfig

    @classmethod
    def build(cls, student, teacher, cfg=None, context=None):
        return cls(student, teacher, cfg, input_size=getattr(context, "input_size", None))

    def __init__(self, student, teacher, cfg: Optional[FitNetConfig] = None,
                 input_size: Optional[tuple] = None):
        super().__init__(student, teacher, cfg)
        if input_size is None:
            raise ValueError("fitnet needs input_size=(C, H, W) to size its hint regressor: "
                             "build_distiller('fitnet', ..., input_size=(3, 32, 32))")
        pairs = pair_stages(len(student.stages), len(teacher.stages))
        k = len(pairs) // 2 if self.cfg.hint_pair is None else self.cfg.hint_pair
        if not -len(pairs) <= k < len(pairs):
            raise ValueError(f"fitnet.hint_pair={k} is out of range: there are {len(pairs)} stage "
                             f"pairs {pairs}; use 0..{len(pairs) - 1} or None for the middle one")
        self.hint = pairs[k]
        s_shapes = student.feature_shapes(tuple(input_size))["stages"]
        t_shapes = teacher.feature_shapes(tuple(input_size))["stages"]
        self.regressor = HintRegressor(s_shapes[self.hint[0]], t_shapes[self.hint[1]])

    def extra_modules(self):
        return [self.regressor]

    def feature_loss(self, feats_s, feats_t, y, idx):
        i, j = self.hint
        return fitnet_loss(self.regressor(feats_s.stages[i]), feats_t.stages[j])
