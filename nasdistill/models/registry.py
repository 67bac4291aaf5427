"""Models by name (:data:`MODELS`): ``create_model`` / ``list_models``.

A family module registers each builder, ``builder(num_classes, in_channels, **kwargs)`` returning
a :class:`~nasdistill.models.staged.StagedModel`::

    @register("model", "resnet8")
    def build(num_classes=100, in_channels=3): ...

Registering another builder under a taken name is an error (it would silently shadow a model).
"""
from __future__ import annotations

from typing import Callable

from nasdistill.models.staged import StagedModel
from nasdistill.registry import Registry

ModelBuilder = Callable[..., StagedModel]

MODELS: Registry[ModelBuilder] = Registry("model")


def list_models() -> list[str]:
    """Names of all registered models, sorted case-insensitively."""
    return sorted(MODELS.names(), key=str.lower)


def create_model(name: str, num_classes: int = 100, in_channels: int = 3, **kwargs) -> StagedModel:
    """Build the model registered as ``name`` with fresh weights.

    ``in_channels`` changes only the first convolution (1 for digits). Extra keyword arguments go
    to the family's builder (e.g. ``weights=`` for the torchvision adapters).
    Raises ``ValueError`` naming close matches when ``name`` is unknown.
    """
    builder = MODELS.get(name)
    if num_classes < 1 or in_channels < 1:
        raise ValueError(f"create_model({name!r}): num_classes and in_channels must be >= 1, "
                         f"got num_classes={num_classes}, in_channels={in_channels}")
    return builder(num_classes=num_classes, in_channels=in_channels, **kwargs)
