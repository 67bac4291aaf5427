"""Weight initialisation shared by the RepDistiller model families."""
from __future__ import annotations

import math
from typing import Optional

from torch import nn


def draws_values(tensor) -> bool:
    """Whether an initialiser should draw random values into ``tensor``: not on the meta device,
    where a network is built only to check that it can be (its tensors hold no values, and a normal
    draw there makes torch import its compiler stack, about 2 s)."""
    return not tensor.is_meta


def he_fan_out_init(model: nn.Module, linear_std: Optional[float] = None) -> None:
    """He-normal (fan_out) convolutions with zero bias, BatchNorm weight 1 / bias 0, zero Linear
    bias; Linear weights ~ N(0, ``linear_std``) when given, else left at PyTorch's default. A model
    built on the meta device gets no random draws (see :func:`draws_values`)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            if draws_values(m.weight):
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            if linear_std is not None and draws_values(m.weight):
                nn.init.normal_(m.weight, 0.0, linear_std)
            nn.init.zeros_(m.bias)
