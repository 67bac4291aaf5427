"""Distillation methods by name (:data:`DISTILLERS`): adding a method is one module of this package.

A method is a :class:`~.base.Distiller` subclass that declares its ``name``, its hyper-parameter
``config_class`` (a dataclass, exposed as the config section ``<name>.<key>``), whether it reads
teacher features (``reads_features``; methods that read only the logits can use cached teacher
logits) or needs a teacher at all (``needs_teacher``), and, when its constructor needs more than
``(student, teacher, cfg)``, a ``build`` classmethod; then it registers itself::

    @register_distiller
    class KDDistiller(Distiller):
        name = "kd"
        config_class = KDConfig
        reads_features = False
        order = 10                 # its place in listings and reports (optional)
        display_name = "KD"        # how reports write it (optional; default: upper-cased name)
        ...

``order`` and ``display_name`` are read from the class itself, not inherited: a subclass of
``KDDistiller`` is listed and named as itself.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..registry import Registry

DISTILLERS: Registry = Registry("distillation method")


@dataclass(frozen=True)
class BuildContext:
    """What some distillers need besides the models: the training set size (CRD's memory bank)
    and the input size (FitNets' regressor)."""

    num_data: Optional[int] = None
    input_size: Optional[tuple] = None


def register_distiller(cls):
    """Class decorator: register ``cls`` under ``cls.name``."""
    if not getattr(cls, "name", None):
        raise ValueError(f"{cls.__qualname__}: a distiller declares its name (class attribute `name`)")
    for field in ("order", "display_name"):   # metadata of this method, never a parent's
        setattr(cls, field, vars(cls).get(field))
    DISTILLERS.register(cls.name, cls, replace=True)
    return cls


def get_distiller(name: str):
    """The distiller class registered as ``name`` (a ValueError names the closest ones)."""
    return DISTILLERS.get(name)


def logits_only(name: str) -> bool:
    """True when method ``name`` reads only the teacher's logits (cached teacher logits can serve it)."""
    cls = get_distiller(name)
    return cls.needs_teacher and not cls.reads_features


__all__ = ["BuildContext", "DISTILLERS", "get_distiller", "logits_only", "register_distiller"]
