"""MobileNetV2 for CIFAR (RepDistiller's ``mobile_half``: expansion T=6, width 0.5).

``stem = conv3x3(16, stride 2) -> BN -> ReLU``; seven inverted-residual groups ``(t, c, n, s)``
paired into four stages as RepDistiller reads its features (groups 0-1, 2, 3-4, 5-6); ``embed =
conv1x1(1280) -> BN -> ReLU -> global average pooling``; ``Linear(1280, classes)``. Stage outputs
are linear-bottleneck outputs (no ReLU), as in the reference; no pre-activation features.
"""
from __future__ import annotations


import torch
from torch import nn

from nasdistill.models.init import he_fan_out_init
from nasdistill.registry import register
from nasdistill.models.resnet import pooled_embedding
from nasdistill.models.staged import StagedModel


def conv_bn_relu(inp: int, oup: int, kernel: int, stride: int, groups: int = 1) -> list[nn.Module]:
    """``[Conv2d(bias=False), BatchNorm2d, ReLU]`` with 'same' padding."""
    return [nn.Conv2d(inp, oup, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(oup), nn.ReLU(inplace=True)]


class InvertedResidual(nn.Module):
    """1x1 expand (x t) -> depthwise 3x3 (stride) -> 1x1 project (linear); residual if shapes match."""

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden = inp * expand_ratio
        self.use_residual = stride == 1 and inp == oup
        self.conv = nn.Sequential(*conv_bn_relu(inp, hidden, 1, 1),
                                  *conv_bn_relu(hidden, hidden, 3, stride, groups=hidden),
                                  nn.Conv2d(hidden, oup, 1, bias=False), nn.BatchNorm2d(oup))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


# (expansion t, channels c, repeats n, stride s); t=None means "the model's T".
SETTING = [(1, 16, 1, 1), (None, 24, 2, 1), (None, 32, 3, 2), (None, 64, 4, 2),
           (None, 96, 3, 1), (None, 160, 3, 2), (None, 320, 1, 1)]
# Which groups of SETTING form each stage (RepDistiller's feat[1..4]).
STAGE_GROUPS = [(0, 1), (2,), (3, 4), (5, 6)]


class MobileNetV2(StagedModel):
    """MobileNetV2 with expansion ``T`` and width multiplier ``width_mult``."""

    def __init__(self, T: int = 6, width_mult: float = 0.5, num_classes: int = 100,
                 in_channels: int = 3):
        channels = int(32 * width_mult)
        stem = nn.Sequential(*conv_bn_relu(in_channels, channels, 3, 2))
        groups = []
        for t, c, n, s in SETTING:
            out = int(c * width_mult)
            blocks = []
            for i in range(n):
                blocks.append(InvertedResidual(channels, out, s if i == 0 else 1, t or T))
                channels = out
            groups.append(nn.Sequential(*blocks))
        stages = [nn.Sequential(*[groups[g] for g in idx]) for idx in STAGE_GROUPS]
        last = int(1280 * width_mult) if width_mult > 1.0 else 1280
        embed = nn.Sequential(*conv_bn_relu(channels, last, 1, 1), *pooled_embedding())
        super().__init__(stem, stages, embed, nn.Linear(last, num_classes))
        self._init_weights()

    def _init_weights(self) -> None:
        """RepDistiller's init (:func:`~nasdistill.models.init.he_fan_out_init`)."""
        he_fan_out_init(self, linear_std=0.01)


@register("model", "MobileNetV2")
def mobilenetv2(num_classes: int = 100, in_channels: int = 3) -> MobileNetV2:
    """RepDistiller's ``mobile_half``: MobileNetV2 with T=6 and width 0.5."""
    return MobileNetV2(6, 0.5, num_classes, in_channels)
