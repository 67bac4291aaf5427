"""Elastic-width modules: weights allocated for the widest input that can arrive, sliced per call.

Each elastic module has the same parameter names as its plain counterpart in
:mod:`nasdistill.space.blocks`, so extracting a path is "copy every tensor of the plain module from
the same name in the supernet, sliced to the plain module's shape" (Once-for-All
``get_active_subnet(preserve_weight=True)``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..space.blocks import BasicBlock, ConvBNReLU


class ElasticBasicBlock(BasicBlock):
    """First block of a stack: input channels sliced to whatever width arrives.

    The projection shortcut exists when any arriving width differs from ``out_channels`` or the
    stride is not 1; it is used exactly when the plain block for that width would have one.
    """

    def __init__(self, in_widths: list[int], out_channels: int, kernel_size: int, stride: int):
        super().__init__(max(in_widths), out_channels, kernel_size, stride)
        self.out_channels, self.stride_ = out_channels, stride
        needs_projection = stride != 1 or any(w != out_channels for w in in_widths)
        if needs_projection and isinstance(self.shortcut, nn.Identity):
            self.shortcut = nn.Sequential(
                nn.Conv2d(max(in_widths), out_channels, 1, stride, 0, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cin = x.shape[1]
        out = F.conv2d(x, self.conv1.weight[:, :cin], None, self.conv1.stride, self.conv1.padding)
        out = torch.relu(self.bn1(out))
        out = self.bn2(self.conv2(out))
        if self.stride_ == 1 and cin == self.out_channels:
            short = x
        else:
            conv, bn = self.shortcut[0], self.shortcut[1]
            short = bn(F.conv2d(x, conv.weight[:, :cin], None, conv.stride, 0))
        out = out + short
        if self.capture_preact:
            self.preact_out = out
        return torch.relu(out)


class ElasticResStack(nn.Sequential):
    """``num_blocks`` basic blocks; only the first one sees a variable input width."""

    def __init__(self, in_widths: list[int], out_channels: int, kernel_size: int, stride: int,
                 num_blocks: int):
        blocks = [ElasticBasicBlock(in_widths, out_channels, kernel_size, stride)]
        blocks += [BasicBlock(out_channels, out_channels, kernel_size, 1) for _ in range(num_blocks - 1)]
        super().__init__(*blocks)


class ElasticConvBNReLU(ConvBNReLU):
    """``ConvBNReLU`` whose convolution reads only the first ``x.shape[1]`` input channels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv, bn, act = self[0], self[1], self[2]
        y = F.conv2d(x, conv.weight[:, : x.shape[1]], None, conv.stride, conv.padding)
        return act(bn(y))


class ElasticLinear(nn.Linear):
    """``Linear`` reading only the first ``x.shape[1]`` input features (a head without 1x1 conv)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight[:, : x.shape[1]], self.bias)


class PerWidth(nn.Module):
    """A custom op instantiated once per arriving width (custom ops cannot be sliced generically)."""

    def __init__(self, builder, in_widths: list[int], out_channels: int, stride: int):
        super().__init__()
        self.by_width = nn.ModuleDict({f"w{w}": builder(w, out_channels, stride) for w in in_widths})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.by_width[f"w{x.shape[1]}"](x)

    def for_width(self, width: int) -> nn.Module:
        return self.by_width[f"w{width}"]


def copy_sliced(dst: nn.Module, src: nn.Module) -> None:
    """Copy every tensor of ``dst`` from the same name in ``src``, sliced to ``dst``'s shape.

    The copies are deep (``dst`` shares no storage with ``src``).
    """
    src_state = src.state_dict()
    dst_state = dst.state_dict()
    for name, target in dst_state.items():
        if name not in src_state:
            raise KeyError(f"extraction: supernet module has no tensor {name!r}")
        source = src_state[name]
        if source.shape != target.shape:
            if source.dim() != target.dim() or any(s < t for s, t in zip(source.shape, target.shape)):
                raise ValueError(f"extraction: cannot slice {name} {tuple(source.shape)} to "
                                 f"{tuple(target.shape)}")
            source = source[tuple(slice(0, n) for n in target.shape)]
        with torch.no_grad():
            target.copy_(source)
