"""Wide ResNets (wrn_16_1, wrn_16_2, wrn_40_1, wrn_40_2), as in RepDistiller.

Pre-activation network: ``stem = conv3x3(16)`` (no BN), three stages of ``(depth - 4) / 6``
pre-activation blocks (widths ``16k, 32k, 64k``, strides 1, 2, 2), then ``BN -> ReLU -> global
average pooling -> Linear``.

Because the blocks are pre-activation, a stage output is the raw residual sum (exactly
RepDistiller's ``feat[1:-1]``), not a post-ReLU map. The pre-activation feature of stage ``k``
(``forward_features(x, preact=True)``) is RepDistiller's: the output of the *next* BN that reads
it (the first block's ``bn1`` of stage ``k+1``, or the final BN), before its ReLU. It is captured
during the one forward pass, so BN running statistics are updated once, not twice.
"""
from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import nn

from nasdistill.models.init import he_fan_out_init
from nasdistill.registry import register
from nasdistill.models.resnet import pooled_embedding
from nasdistill.models.staged import StagedModel


class BNReLU(nn.BatchNorm2d):
    """``relu(bn(x))`` that can keep ``bn(x)`` (its pre-activation) in ``preact_out``."""

    def __init__(self, num_features: int):
        super().__init__(num_features)
        self.capture_preact = False
        self.preact_out = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        if self.capture_preact:
            self.preact_out = out
        return F.relu(out)


class WideBlock(nn.Module):
    """Pre-activation block: ``a = relu(bn1(x))``, ``y = conv2(relu(bn2(conv1(a)))) + s``.

    ``s = x`` when widths match, else ``s = conv1x1(a)`` (the shortcut reads the activated input).
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int):
        super().__init__()
        self.bn1 = BNReLU(in_planes)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, 1, 1, bias=False)
        self.shortcut = None
        if in_planes != out_planes:
            self.shortcut = nn.Conv2d(in_planes, out_planes, 1, stride, 0, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.bn1(x)
        out = self.conv2(F.relu(self.bn2(self.conv1(a))))
        return out + (x if self.shortcut is None else self.shortcut(a))


class WideStage(nn.Sequential):
    """A stage of wide blocks; its pre-activation is read from the BN that consumes its output."""

    def attach_consumer(self, bn: BNReLU) -> None:
        # Kept in a tuple so the BN is not registered twice as a submodule.
        self._consumer = (bn,)

    @property
    def capture_preact(self) -> bool:
        return self._consumer[0].capture_preact

    @capture_preact.setter
    def capture_preact(self, value: bool) -> None:
        self._consumer[0].capture_preact = value

    @property
    def preact_out(self):
        return self._consumer[0].preact_out

    @preact_out.setter
    def preact_out(self, value) -> None:
        self._consumer[0].preact_out = value


class WideResNet(StagedModel):
    """WRN-``depth``-``widen_factor`` for 32x32 inputs (any size works: pooling adapts)."""

    def __init__(self, depth: int, widen_factor: int, num_classes: int = 100,
                 in_channels: int = 3):
        if depth < 10 or (depth - 4) % 6 != 0:
            raise ValueError(f"WideResNet: depth must be 6n+4 with n >= 1 (10, 16, 22, 28, 40, ...),"
                             f" got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        stem = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        stages = []
        for in_planes, out_planes, stride in zip(widths[:-1], widths[1:], (1, 2, 2)):
            stages.append(WideStage(*[WideBlock(in_planes if i == 0 else out_planes, out_planes,
                                                stride if i == 0 else 1) for i in range(n)]))
        final = BNReLU(widths[3])
        embed = nn.Sequential(final, *pooled_embedding())
        for stage, consumer in zip(stages, [s[0].bn1 for s in stages[1:]] + [final]):
            stage.attach_consumer(consumer)
        super().__init__(stem, stages, embed, nn.Linear(widths[3], num_classes))
        self._init_weights()

    def _init_weights(self) -> None:
        """RepDistiller's WRN init (:func:`~nasdistill.models.init.he_fan_out_init`)."""
        he_fan_out_init(self)


def _register(depth: int, widen: int) -> None:
    name = f"wrn_{depth}_{widen}"

    def build(num_classes: int = 100, in_channels: int = 3) -> WideResNet:
        return WideResNet(depth, widen, num_classes, in_channels)

    build.__name__ = build.__qualname__ = name
    build.__doc__ = f"RepDistiller's ``{name}``: WRN depth {depth}, widen factor {widen}."
    register("model", name, build)


for _depth, _widen in ((16, 1), (16, 2), (40, 1), (40, 2)):
    _register(_depth, _widen)
