"""Networks by name, all following the :class:`StagedModel` feature contract.

The CIFAR zoo equals HobbitLong/RepDistiller's ``models/`` (same layers, parameter shapes and
parameter order, same ``feat`` tensors from ``forward_features``), with global pooling that adapts to
the input size; torchvision adapters are registered too and need ``nasdistill[vision]``.

>>> from nasdistill.models import create_model
>>> model = create_model("resnet8x4", num_classes=100)
"""
from nasdistill.models.registry import MODELS, create_model, list_models
from nasdistill.models.staged import Features, StagedModel

from nasdistill.registry import import_submodules

# Every module of this package is imported; a family module registers its models (`register("model", ...)`):
# adding a family is one file here.
import_submodules(__name__)

__all__ = ["MODELS", "create_model", "list_models", "StagedModel", "Features"]
