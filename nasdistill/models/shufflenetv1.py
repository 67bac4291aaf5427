"""ShuffleNet V1 for CIFAR (RepDistiller's ``ShuffleV1``: groups 3, widths 240/480/960).

``stem = conv1x1(24) -> BN -> ReLU``; three stages of ``[4, 8, 4]`` bottlenecks, each stage opening
with a stride-2 block whose output concatenates the residual branch with a 3x3 average-pooled
shortcut; global average pooling; ``Linear(960, classes)``. Stage outputs are post-ReLU and
``forward_features(x, preact=True)`` reports the last block's map before its ReLU.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nasdistill.registry import register
from nasdistill.models.resnet import PreactStage, pooled_embedding
from nasdistill.models.staged import StagedModel


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """``[N, g*c, H, W] -> [N, c*g, H, W]``: interleave the channels of the ``g`` groups."""
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleV1Block(nn.Module):
    """Grouped 1x1 -> shuffle -> depthwise 3x3 (stride) -> grouped 1x1, plus shortcut.

    Stride 1: ``relu(branch + x)``. Stride 2: ``relu(cat(branch, avgpool3x3(x)))``. The first
    1x1 is ungrouped when it reads the 24-channel stem (as in the reference).
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int, groups: int):
        super().__init__()
        self.stride = stride
        mid = out_planes // 4
        g1 = 1 if in_planes == 24 else groups
        self.groups1 = g1
        self.conv1 = nn.Conv2d(in_planes, mid, 1, groups=g1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, out_planes, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = nn.AvgPool2d(3, stride=2, padding=1) if stride == 2 else nn.Identity()
        self.capture_preact = False
        self.preact_out = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = channel_shuffle(F.relu(self.bn1(self.conv1(x))), self.groups1)
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        res = self.shortcut(x)
        pre = torch.cat([out, res], 1) if self.stride == 2 else out + res
        if self.capture_preact:
            self.preact_out = pre
        return F.relu(pre)


class ShuffleNetV1(StagedModel):
    """ShuffleNet V1 with stage widths ``out_planes`` and ``num_blocks`` blocks per stage."""

    def __init__(self, out_planes=(240, 480, 960), num_blocks=(4, 8, 4), groups: int = 3,
                 num_classes: int = 100, in_channels: int = 3):
        stem = nn.Sequential(nn.Conv2d(in_channels, 24, 1, bias=False), nn.BatchNorm2d(24),
                             nn.ReLU(inplace=True))
        stages, in_planes = [], 24
        for planes, n in zip(out_planes, num_blocks):
            blocks = []
            for i in range(n):
                # The stride-2 block concatenates its input, so its branch makes the difference.
                branch = planes - in_planes if i == 0 else planes
                blocks.append(ShuffleV1Block(in_planes, branch, 2 if i == 0 else 1, groups))
                in_planes = planes
            stages.append(PreactStage(*blocks))
        super().__init__(stem, stages, pooled_embedding(), nn.Linear(out_planes[-1], num_classes))


@register("model", "ShuffleV1")
def shufflev1(num_classes: int = 100, in_channels: int = 3) -> ShuffleNetV1:
    """RepDistiller's ``ShuffleV1``: groups 3, widths 240/480/960, blocks 4/8/4."""
    return ShuffleNetV1(num_classes=num_classes, in_channels=in_channels)
