"""Models by name: ``register_model`` / ``create_model`` / ``list_models``.

Every registered builder has the signature ``builder(num_classes, in_channels, **kwargs)`` and
returns a :class:`~nasdistill.models.staged.StagedModel`.
"""
from __future__ import annotations

import difflib
from typing import Callable

from nasdistill.models.staged import StagedModel

ModelBuilder = Callable[..., StagedModel]

_REGISTRY: dict[str, ModelBuilder] = {}


def register_model(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    """Decorator: register ``builder(num_classes, in_channels, **kwargs)`` under ``name``.

    Registering the same name twice is an error (it would silently shadow a model).
    """

    def decorate(builder: ModelBuilder) -> ModelBuilder:
        if name in _REGISTRY and _REGISTRY[name] is not builder:
            raise ValueError(f"model name {name!r} is already registered by "
                             f"{_REGISTRY[name].__module__}.{_REGISTRY[name].__qualname__}; "
                             "pick another name")
        _REGISTRY[name] = builder
        return builder

    return decorate


def list_models() -> list[str]:
    """Names of all registered models, sorted case-insensitively."""
    return sorted(_REGISTRY, key=str.lower)


def create_model(name: str, num_classes: int = 100, in_channels: int = 3, **kwargs) -> StagedModel:
    """Build the model registered as ``name`` with fresh weights.

    ``in_channels`` changes only the first convolution (1 for digits). Extra keyword arguments go
    to the family's builder (e.g. ``weights=`` for the torchvision adapters).
    Raises ``ValueError`` naming close matches when ``name`` is unknown.
    """
    try:
        builder = _REGISTRY[name]
    except KeyError:
        lowered = {n.lower(): n for n in _REGISTRY}
        close = difflib.get_close_matches(name.lower(), list(lowered), n=3, cutoff=0.5)
        hint = (f"did you mean {', '.join(repr(lowered[c]) for c in close)}?" if close
                else "see nasdistill.models.list_models()")
        raise ValueError(f"unknown model {name!r}: {hint} "
                         f"(registered: {', '.join(list_models())})") from None
    if num_classes < 1 or in_channels < 1:
        raise ValueError(f"create_model({name!r}): num_classes and in_channels must be >= 1, "
                         f"got num_classes={num_classes}, in_channels={in_channels}")
    return builder(num_classes=num_classes, in_channels=in_channels, **kwargs)
