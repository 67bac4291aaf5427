"""Plain building blocks of networks built from a search space.

Exported and extracted students contain only these classes and ordinary torch modules, never
supernet machinery.
"""
from __future__ import annotations

import torch
from torch import nn

from ..models.staged import PreactStage


class ConvBNReLU(nn.Sequential):
    """``Conv2d(bias=False) -> BatchNorm2d -> ReLU`` (ProxylessNAS' ``ConvLayer``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class BasicBlock(nn.Module):
    """ResNet basic block: two kxk convolutions with BN, a shortcut, and a final ReLU.

    ``y = relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``; the shortcut is the identity when
    shapes match and ``1x1 conv(stride) -> BN`` otherwise.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1):
        super().__init__()
        pad = kernel_size // 2
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size, stride, pad, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size, 1, pad, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, 0, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        else:
            self.shortcut = nn.Identity()
        self.capture_preact = False
        self.preact_out = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out)) + self.shortcut(x)
        if self.capture_preact:
            self.preact_out = out
        return torch.relu(out)


class ResStack(PreactStage):
    """``n`` basic blocks: the first carries the stride and the in->out change (pre-activation
    capture is the last block's)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int,
                 num_blocks: int):
        blocks = [BasicBlock(in_channels, out_channels, kernel_size, stride)]
        blocks += [BasicBlock(out_channels, out_channels, kernel_size, 1)
                   for _ in range(num_blocks - 1)]
        super().__init__(*blocks)


class ShapeIdentity(nn.Module):
    """Parameter-free identity mapping onto a layer's nominal shape.

    ``y = pad_channels(x[:, :, ::stride, ::stride], out_channels)``: spatial subsampling by the
    stride and zero channels appended up to ``out_channels`` (the ResNet "option A" shortcut).
    With ``stride == 1`` and equal widths it is exactly ``y = x``.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        if out_channels < in_channels:
            raise ValueError(f"identity cannot map {in_channels} channels onto {out_channels}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        extra = self.out_channels - x.shape[1]
        if extra > 0:
            x = torch.nn.functional.pad(x, (0, 0, 0, 0, 0, extra))
        return x

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}"


class Skip(nn.Identity):
    """A skipped layer (the ``zero`` candidate): its input passes through unchanged."""


class SpaceHead(nn.Sequential):
    """Optional ``1x1 ConvBNReLU`` to the head width, then global average pooling and flatten."""

    def __init__(self, in_channels: int, head_width: int | None):
        layers: list[nn.Module] = []
        if head_width:
            layers.append(ConvBNReLU(in_channels, head_width, 1, 1))
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(1)]
        super().__init__(*layers)
