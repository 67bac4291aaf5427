"""Distillation methods by name (:data:`DISTILLERS`): adding a method is one module of this package.

A method is a :class:`~.base.Distiller` subclass registered with its metadata::

    @register("distiller", "kd", config=KDConfig, display_name="KD", order=10, reads_features=False,
              graph_safe=True)
    class KDDistiller(Distiller): ...

- ``config``: its hyper-parameter dataclass, exposed as the config section ``<name>.<key>``;
- ``reads_features``: whether it reads teacher features (methods that read only the logits can use
  cached teacher logits); ``needs_teacher`` (False for the baseline, ``none``); ``graph_safe``
  (one step is a fixed kernel sequence: CUDA-graph capture allowed);
- ``order`` and ``display_name``: its place and name in listings and reports; they are the
  method's own, never a parent class's (a subclass of ``KDDistiller`` is listed and named as
  itself).

The metadata become class attributes of the registered class; a method whose constructor needs more
than ``(student, teacher, cfg)`` defines a ``build`` classmethod.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..registry import Registry



@dataclass(frozen=True)
class BuildContext:
    """What some distillers need besides the models: the training set size (CRD's memory bank)
    and the input size (FitNets' regressor)."""

    num_data: Optional[int] = None
    input_size: Optional[tuple] = None


#: Metadata a distiller declares, with the class attribute each becomes.
_FIELDS = {"config": "config_class", "display_name": "display_name", "order": "order",
           "reads_features": "reads_features", "needs_teacher": "needs_teacher", "graph_safe": "graph_safe"}


def _distiller_entry(name: str, cls, meta: dict):
    """The registered class, its ``name`` and metadata set as class attributes (``order`` and
    ``display_name`` always: a parent's are not inherited)."""
    if not isinstance(cls, type):
        raise TypeError(f"distiller {name!r}: register a Distiller subclass, got {cls!r}")
    unknown = sorted(set(meta) - set(_FIELDS))
    if unknown:
        raise TypeError(f"distiller {name!r}: unknown metadata {unknown}; a distiller declares {sorted(_FIELDS)}")
    cls.name = name
    for key in ("order", "display_name"):
        setattr(cls, key, meta.get(key))
    for key, attr in _FIELDS.items():
        if key in meta:
            setattr(cls, attr, meta[key])
    return cls


#: Re-running a definition replaces its entry.
DISTILLERS: Registry = Registry("distiller", make_entry=_distiller_entry, replace=True, what="distillation method")


def get_distiller(name: str):
    """The distiller class registered as ``name`` (a ValueError names the closest ones)."""
    return DISTILLERS.get(name)


def logits_only(name: str) -> bool:
    """True when method ``name`` reads only the teacher's logits (cached teacher logits can serve it)."""
    cls = get_distiller(name)
    return cls.needs_teacher and not cls.reads_features


__all__ = ["BuildContext", "DISTILLERS", "get_distiller", "logits_only"]
