"""ShuffleNet V2 1x for CIFAR (RepDistiller's ``ShuffleV2``: widths 116/232/464, head 1024).

``stem = conv1x1(24) -> BN -> ReLU``; three stages, each a stride-2 down block followed by
``[3, 7, 3]`` split blocks; ``embed = conv1x1(1024) -> BN -> ReLU -> global average pooling``;
``Linear(1024, classes)``. Stage outputs are channel-shuffled concatenations (no final ReLU on the
untouched half), exactly RepDistiller's ``feat[1:-1]``; pre-activation features are not offered.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nasdistill.registry import register
from nasdistill.models.resnet import pooled_embedding
from nasdistill.models.shufflenetv1 import channel_shuffle
from nasdistill.models.staged import StagedModel


class SplitBlock(nn.Module):
    """Keep the first half of the channels, transform the second half, concat, shuffle."""

    def __init__(self, channels: int):
        super().__init__()
        c = channels // 2
        self.conv1 = nn.Conv2d(c, c, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, 1, 1, groups=c, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.conv3 = nn.Conv2d(c, c, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1] // 2
        keep, work = x[:, :c], x[:, c:]
        out = F.relu(self.bn1(self.conv1(work)))
        out = F.relu(self.bn3(self.conv3(self.bn2(self.conv2(out)))))
        return channel_shuffle(torch.cat([keep, out], 1), 2)


class DownBlock(nn.Module):
    """Stride-2 block: two branches (dw3x3 -> 1x1, and 1x1 -> dw3x3 -> 1x1), concat, shuffle."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        mid = out_channels // 2
        self.conv1 = nn.Conv2d(in_channels, in_channels, 3, 2, 1, groups=in_channels, bias=False)
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv2 = nn.Conv2d(in_channels, mid, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(in_channels, mid, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv4 = nn.Conv2d(mid, mid, 3, 2, 1, groups=mid, bias=False)
        self.bn4 = nn.BatchNorm2d(mid)
        self.conv5 = nn.Conv2d(mid, mid, 1, bias=False)
        self.bn5 = nn.BatchNorm2d(mid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left = F.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        right = F.relu(self.bn3(self.conv3(x)))
        right = F.relu(self.bn5(self.conv5(self.bn4(self.conv4(right)))))
        return channel_shuffle(torch.cat([left, right], 1), 2)


class ShuffleNetV2(StagedModel):
    """ShuffleNet V2 with stage widths ``widths[:3]``, head width ``widths[3]``."""

    def __init__(self, widths=(116, 232, 464, 1024), num_blocks=(3, 7, 3),
                 num_classes: int = 100, in_channels: int = 3):
        stem = nn.Sequential(nn.Conv2d(in_channels, 24, 1, bias=False), nn.BatchNorm2d(24),
                             nn.ReLU(inplace=True))
        stages, in_ch = [], 24
        for out_ch, n in zip(widths[:3], num_blocks):
            stages.append(nn.Sequential(DownBlock(in_ch, out_ch),
                                        *[SplitBlock(out_ch) for _ in range(n)]))
            in_ch = out_ch
        embed = nn.Sequential(nn.Conv2d(in_ch, widths[3], 1, bias=False),
                              nn.BatchNorm2d(widths[3]), nn.ReLU(inplace=True),
                              *pooled_embedding())
        super().__init__(stem, stages, embed, nn.Linear(widths[3], num_classes))


@register("model", "ShuffleV2")
def shufflev2(num_classes: int = 100, in_channels: int = 3) -> ShuffleNetV2:
    """RepDistiller's ``ShuffleV2`` (net size 1: widths 116/232/464, blocks 3/7/3, head 1024)."""
    return ShuffleNetV2(num_classes=num_classes, in_channels=in_channels)
