"""torchvision networks as :class:`StagedModel` adapters (ImageNet-200 teachers).

Registered names: ``tv_resnet18``, ``tv_resnet50``, ``tv_efficientnet_b0``. torchvision is an
optional dependency (``pip install "nasdistill[vision]"``): these names are always registered, and
torchvision is imported only when one of them is built.

Split of the torchvision network:

- ResNets: ``stem = conv1, bn1, relu, maxpool``; ``stages = layer1..layer4``;
  ``embed = avgpool, flatten``; ``classifier = Linear(fc.in_features, num_classes)``.
- EfficientNet-B0: ``stem = features[0]``; ``stages = features[1..7]`` (the seven MBConv
  groups); ``embed = features[8]`` (1x1 conv to 1280), avgpool, flatten, dropout (as torchvision
  applies it before its classifier); ``classifier = Linear(1280, num_classes)``.

No pretrained weights unless ``weights=`` is given (any value torchvision's builder accepts, e.g.
``"IMAGENET1K_V1"``). The torchvision classifier is kept only when weights are loaded and
``num_classes`` equals its output count; otherwise a fresh ``Linear`` is made. ``in_channels != 3``
replaces the first convolution (from pretrained weights: their mean over input channels, scaled
by ``3 / in_channels``).
"""
from __future__ import annotations

import importlib

import torch
from torch import nn

from nasdistill.registry import register
from nasdistill.models.staged import StagedModel


def import_torchvision():
    """Import torchvision or raise an ImportError telling how to install it."""
    try:
        return importlib.import_module("torchvision")
    except Exception as err:  # ImportError, or a broken install raising something else
        raise ImportError(
            "the torchvision model adapters (tv_resnet18, tv_resnet50, tv_efficientnet_b0) need "
            f'torchvision, which could not be imported ({type(err).__name__}: {err}); install it '
            'with pip install "nasdistill[vision]"') from err


def _adapt_first_conv(conv: nn.Conv2d, in_channels: int, pretrained: bool) -> nn.Conv2d:
    """A copy of ``conv`` that reads ``in_channels`` channels (``conv`` itself when unchanged)."""
    if in_channels == conv.in_channels:
        return conv
    new = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    conv.dilation, conv.groups, conv.bias is not None)
    if pretrained:
        with torch.no_grad():
            mean = conv.weight.mean(dim=1, keepdim=True)
            new.weight.copy_(mean.repeat(1, in_channels, 1, 1) * (conv.in_channels / in_channels))
            if conv.bias is not None:
                new.bias.copy_(conv.bias)
    return new


def _classifier(linear: nn.Linear, num_classes: int, pretrained: bool) -> nn.Linear:
    if pretrained and linear.out_features == num_classes:
        return linear
    return nn.Linear(linear.in_features, num_classes)


class TorchvisionResNet(StagedModel):
    """A torchvision ResNet split into stem / layer1..4 / pooling / classifier."""

    def __init__(self, net: nn.Module, num_classes: int, in_channels: int, pretrained: bool):
        stem = nn.Sequential(_adapt_first_conv(net.conv1, in_channels, pretrained), net.bn1,
                             net.relu, net.maxpool)
        stages = [net.layer1, net.layer2, net.layer3, net.layer4]
        embed = nn.Sequential(net.avgpool, nn.Flatten(1))
        super().__init__(stem, stages, embed, _classifier(net.fc, num_classes, pretrained))


class TorchvisionEfficientNet(StagedModel):
    """A torchvision EfficientNet split into stem / MBConv groups / head / classifier."""

    def __init__(self, net: nn.Module, num_classes: int, in_channels: int, pretrained: bool):
        features = net.features
        stem_conv = features[0][0]
        features[0][0] = _adapt_first_conv(stem_conv, in_channels, pretrained)
        stages = list(features[1:-1])
        dropout, linear = net.classifier[0], net.classifier[1]
        embed = nn.Sequential(features[-1], net.avgpool, nn.Flatten(1), dropout)
        super().__init__(features[0], stages, embed, _classifier(linear, num_classes, pretrained))


def _build(arch: str, adapter: type, num_classes: int, in_channels: int, weights, **kwargs):
    tv = import_torchvision()
    net = getattr(tv.models, arch)(weights=weights, **kwargs)
    return adapter(net, num_classes, in_channels, pretrained=weights is not None)


@register("model", "tv_resnet18")
def tv_resnet18(num_classes: int = 200, in_channels: int = 3, weights=None, **kwargs):
    """torchvision ``resnet18`` as a StagedModel (4 stages, embedding 512)."""
    return _build("resnet18", TorchvisionResNet, num_classes, in_channels, weights, **kwargs)


@register("model", "tv_resnet50")
def tv_resnet50(num_classes: int = 200, in_channels: int = 3, weights=None, **kwargs):
    """torchvision ``resnet50`` as a StagedModel (4 stages, embedding 2048)."""
    return _build("resnet50", TorchvisionResNet, num_classes, in_channels, weights, **kwargs)


@register("model", "tv_efficientnet_b0")
def tv_efficientnet_b0(num_classes: int = 200, in_channels: int = 3, weights=None, **kwargs):
    """torchvision ``efficientnet_b0`` as a StagedModel (7 stages, embedding 1280)."""
    return _build("efficientnet_b0", TorchvisionEfficientNet, num_classes, in_channels, weights,
                  **kwargs)
