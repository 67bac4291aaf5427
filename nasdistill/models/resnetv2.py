"""ResNet50 for CIFAR (RepDistiller's ``resnetv2.ResNet50``): bottleneck blocks, 3x3 stride-1 stem.

``stem = conv3x3(64) -> BN -> ReLU``, four stages of ``[3, 4, 6, 3]`` bottlenecks (widths 64, 128,
256, 512, expansion 4, strides 1, 2, 2, 2), global average pooling, ``Linear(2048, classes)``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nasdistill.registry import register
from nasdistill.models.resnet import PreactStage, kaiming_init, pooled_embedding
from nasdistill.models.staged import StagedModel


class Bottleneck(nn.Module):
    """``1x1 -> 3x3(stride) -> 1x1(x4)`` with BN, a projection shortcut when shapes change."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != out:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, out, 1, stride, bias=False),
                                          nn.BatchNorm2d(out))
        self.capture_preact = False
        self.preact_out = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out)) + self.shortcut(x)
        if self.capture_preact:
            self.preact_out = out
        return F.relu(out)


class BottleneckResNet(StagedModel):
    """ResNet with bottleneck blocks, ``num_blocks`` per stage, 64-channel 3x3 stem."""

    def __init__(self, num_blocks: tuple[int, int, int, int], num_classes: int = 100,
                 in_channels: int = 3):
        stem = nn.Sequential(nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False),
                             nn.BatchNorm2d(64), nn.ReLU(inplace=True))
        stages, in_planes = [], 64
        for planes, n, stride in zip((64, 128, 256, 512), num_blocks, (1, 2, 2, 2)):
            blocks = []
            for i in range(n):
                blocks.append(Bottleneck(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes * Bottleneck.expansion
            stages.append(PreactStage(*blocks))
        super().__init__(stem, stages, pooled_embedding(), nn.Linear(in_planes, num_classes))
        kaiming_init(self)


@register("model", "ResNet50")
def resnet50(num_classes: int = 100, in_channels: int = 3) -> BottleneckResNet:
    """RepDistiller's ``ResNet50`` (CIFAR variant, 23.7M parameters at 100 classes)."""
    return BottleneckResNet((3, 4, 6, 3), num_classes, in_channels)
