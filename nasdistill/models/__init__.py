"""Networks by name, all following the :class:`StagedModel` feature contract.

The CIFAR zoo equals HobbitLong/RepDistiller's ``models/`` (same layers, parameter shapes and
parameter order, same ``feat`` tensors from ``forward_features``), with global pooling that adapts to
the input size; torchvision adapters are registered too and need ``nasdistill[vision]``.

>>> from nasdistill.models import create_model
>>> model = create_model("resnet8x4", num_classes=100)
"""
from nasdistill.models.registry import MODELS, create_model, list_models, register_model
from nasdistill.models.staged import Features, StagedModel

# Importing the family modules registers their models.
from nasdistill.models import (  # noqa: F401  (imported for registration)
    mobilenetv2,
    resnet,
    resnetv2,
    shufflenetv1,
    shufflenetv2,
    torchvision_models,
    vgg,
    wrn,
)

__all__ = ["MODELS", "create_model", "register_model", "list_models", "StagedModel", "Features"]
