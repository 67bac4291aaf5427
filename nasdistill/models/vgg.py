"""VGG with batch norm for CIFAR (vgg8, vgg11, vgg13, vgg16, vgg19), as in RepDistiller.

Five units of ``conv3x3(bias) -> BN -> ReLU`` layers; units 1-3 start with a 2x2 max-pool, unit 4
max-pools only when its input is at least 8x8 (RepDistiller pools there only for 64x64 inputs),
then global average pooling and ``Linear(512, classes)``. No fully connected hidden layers.
The stem is unit 0. Inputs must be at least 8x8 (three 2x2 max-pools).
"""
from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import nn

from nasdistill.models.init import he_fan_out_init
from nasdistill.registry import register
from nasdistill.models.resnet import pooled_embedding
from nasdistill.models.staged import StagedModel

MIN_INPUT_SIZE = 8

CONFIGS: dict[str, list[list[int]]] = {
    "vgg8": [[64], [128], [256], [512], [512]],
    "vgg11": [[64], [128], [256, 256], [512, 512], [512, 512]],
    "vgg13": [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
    "vgg16": [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]],
    "vgg19": [[64, 64], [128, 128], [256] * 4, [512] * 4, [512] * 4],
}


class LargeInputMaxPool(nn.MaxPool2d):
    """2x2 max-pool applied only when the map is at least 8x8 (identity otherwise)."""

    def __init__(self):
        super().__init__(kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) if min(x.shape[-2:]) >= 8 else x


class VGGUnit(nn.Module):
    """Optional pool, then ``conv -> BN -> ReLU`` layers; keeps the last pre-ReLU map on demand."""

    def __init__(self, in_channels: int, widths: list[int], pool: nn.Module | None):
        super().__init__()
        self.pool = pool
        layers: list[nn.Module] = []
        for i, w in enumerate(widths):
            layers += [nn.Conv2d(in_channels, w, 3, padding=1), nn.BatchNorm2d(w)]
            if i < len(widths) - 1:
                layers.append(nn.ReLU(inplace=True))
            in_channels = w
        self.layers = nn.Sequential(*layers)
        self.capture_preact = False
        self.preact_out = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool is not None:
            x = self.pool(x)
        out = self.layers(x)
        if self.capture_preact:
            self.preact_out = out
        return F.relu(out)


class VGGStem(VGGUnit):
    """Unit 0; checks the input is large enough for the three max-pools that follow."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if min(x.shape[-2:]) < MIN_INPUT_SIZE:
            raise ValueError(f"VGG needs inputs of at least {MIN_INPUT_SIZE}x{MIN_INPUT_SIZE} "
                             f"(three 2x2 max-pools), got {tuple(x.shape[-2:])}; upsample the "
                             "input or pick a ResNet/WRN")
        return super().forward(x)


class VGG(StagedModel):
    """VGG-BN over ``cfg`` (five lists of widths), RepDistiller layout."""

    def __init__(self, cfg: list[list[int]], num_classes: int = 100, in_channels: int = 3):
        stem = VGGStem(in_channels, cfg[0], pool=None)
        pools = [nn.MaxPool2d(2, 2), nn.MaxPool2d(2, 2), nn.MaxPool2d(2, 2), LargeInputMaxPool()]
        stages = [VGGUnit(cfg[i][-1], cfg[i + 1], pools[i]) for i in range(4)]
        super().__init__(stem, stages, pooled_embedding(), nn.Linear(cfg[4][-1], num_classes))
        self._init_weights()

    def _init_weights(self) -> None:
        """RepDistiller's VGG init (:func:`~nasdistill.models.init.he_fan_out_init`)."""
        he_fan_out_init(self, linear_std=0.01)


def _register(name: str) -> None:
    def build(num_classes: int = 100, in_channels: int = 3) -> VGG:
        return VGG(CONFIGS[name], num_classes, in_channels)

    build.__name__ = build.__qualname__ = name
    build.__doc__ = f"RepDistiller's ``{name}`` (= ``{name}_bn``), widths {CONFIGS[name]}."
    register("model", name, build)


for _name in CONFIGS:
    _register(_name)
