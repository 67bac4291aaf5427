"""The model section of a config: a zoo model by name, or an architecture of a search space."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional


@dataclass
class ModelConfig:
    """A zoo model by ``name``, or an architecture ``arch`` of the search space ``space``.

    ``arch`` is a mapping label -> choice, a JSON string, or a path to a JSON file holding the
    mapping or ``{"arch": mapping}``. ``space`` is a module of ``search_spaces`` or a ``.py`` path.
    """

    name: str = "resnet8"
    space: Optional[str] = None
    arch: Optional[Any] = None
    options: dict = field(default_factory=dict)   # zoo keyword arguments, e.g. {weights: DEFAULT}
