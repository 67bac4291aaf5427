"""CIFAR ResNets (resnet8 ... resnet110, resnet8x4, resnet32x4), as in RepDistiller.

``stem = conv3x3 -> BN -> ReLU``, three stages of basic blocks (strides 1, 2, 2), global average
pooling and a linear classifier. Widths ``[16, 16, 32, 64]`` (``x4``: ``[32, 64, 128, 256]``),
depth ``6n + 2``. Stage outputs are post-ReLU; ``forward_features(x, preact=True)`` also reports
the last block's sum before its ReLU (RepDistiller's ``preact``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nasdistill.registry import register
from nasdistill.models.init import draws_values
from nasdistill.models.staged import PreactStage, StagedModel


def pooled_embedding() -> nn.Sequential:
    """Global average pooling to 1x1 (any input size) then flatten."""
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))


class BasicBlock(nn.Module):
    """``relu(bn2(conv2(relu(bn1(conv1(x))))) + downsample(x))``; downsample = 1x1 conv + BN."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False),
                                            nn.BatchNorm2d(planes))
        self.capture_preact = False
        self.preact_out = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + (x if self.downsample is None else self.downsample(x))
        if self.capture_preact:
            self.preact_out = out
        return F.relu(out)


def kaiming_init(model: nn.Module) -> None:
    """RepDistiller's ResNet init: Kaiming-normal (fan_out) convs, BN weight 1 / bias 0 (no draw on
    the meta device: :func:`~nasdistill.models.init.draws_values`)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            if draws_values(m.weight):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)


class CifarResNet(StagedModel):
    """ResNet of depth ``6n + 2`` with basic blocks and widths ``[stem, s1, s2, s3]``."""

    def __init__(self, depth: int, widths: tuple[int, int, int, int], num_classes: int = 100,
                 in_channels: int = 3):
        if depth < 8 or (depth - 2) % 6 != 0:
            raise ValueError(f"CifarResNet: depth must be 6n+2 with n >= 1 (8, 14, 20, ...), "
                             f"got {depth}")
        n = (depth - 2) // 6
        stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False),
                             nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
        stages, in_planes = [], widths[0]
        for planes, stride in zip(widths[1:], (1, 2, 2)):
            blocks = [BasicBlock(in_planes, planes, stride)]
            blocks += [BasicBlock(planes, planes) for _ in range(n - 1)]
            stages.append(PreactStage(*blocks))
            in_planes = planes
        super().__init__(stem, stages, pooled_embedding(), nn.Linear(widths[3], num_classes))
        kaiming_init(self)


_SMALL = (16, 16, 32, 64)
_WIDE = (32, 64, 128, 256)


def _register(name: str, depth: int, widths: tuple[int, int, int, int]) -> None:
    def build(num_classes: int = 100, in_channels: int = 3) -> CifarResNet:
        return CifarResNet(depth, widths, num_classes, in_channels)

    build.__name__ = build.__qualname__ = name
    build.__doc__ = f"RepDistiller's ``{name}``: depth {depth}, widths {list(widths)}."
    register("model", name, build)


for _depth in (8, 14, 20, 32, 44, 56, 110):
    _register(f"resnet{_depth}", _depth, _SMALL)
_register("resnet8x4", 8, _WIDE)
_register("resnet32x4", 32, _WIDE)
