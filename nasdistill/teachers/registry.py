"""Teacher-training methods by name (:data:`TEACHERS`), and the teacher config that grows with them.

A method is one module of :mod:`nasdistill.teachers` that registers a config section (a dataclass,
or None), a task factory and its metadata::

    register_teacher("mse", MSEConfig, make_mse_task, display_name="MSE", order=40)

``order`` places it in listings and reports (CE, GTN, SFTN, MSE, SoTeacher); ``display_name`` is
how reports write it (default: the name upper-cased); ``pipeline_defaults`` overrides fields of
its section in the main job's short embedded run (:func:`pipeline_section_defaults`).

:func:`teacher_config_class` returns :class:`TeacherConfig` extended with one field per registered
section (``ce``, ``mse``, ``soteacher``, ...), so ``mse.some_knob=...`` is type-checked like every
other key and an unknown key is still refused by name. The factory is called as
``task_factory(cfg, model, splits) -> TrainTask`` with the built teacher network ``model``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable, Optional

from ..config import ConfigError
from ..data.config import DataConfig
from ..models.config import ModelConfig
from ..engine.config import TrainConfig
from ..registry import Registry, sectioned_config


@dataclass(frozen=True)
class TeacherMethod:
    name: str
    config_class: Optional[type]
    task_factory: Callable
    help: str = ""
    display_name: Optional[str] = None
    order: Optional[float] = None
    pipeline_defaults: Optional[dict] = field(default=None, hash=False)


TEACHERS: Registry[TeacherMethod] = Registry("teacher method")


@dataclass
class TeacherConfig:
    """Common part of every teacher run; method sections are added by :func:`teacher_config_class`."""

    seed: int = 0
    out_dir: str = "runs/teacher"
    method: str = "ce"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self):
        if self.method not in TEACHERS:
            raise ConfigError.for_key("method", f"names no teacher method: {TEACHERS.unknown_message(self.method)}")


def register_teacher(name: str, config_cls: Optional[type], task_factory: Callable, help: str = "",
                     display_name: Optional[str] = None, order: Optional[float] = None,
                     pipeline_defaults: Optional[dict] = None) -> None:
    """Register teacher method ``name`` with its config section ``config_cls`` (dataclass or None),
    its report name ``display_name``, its place ``order`` in listings and reports, and
    ``pipeline_defaults`` (fields of its section the main job sets differently)."""
    if config_cls is not None and not dataclasses.is_dataclass(config_cls):
        raise TypeError(f"register_teacher({name!r}): config_cls must be a dataclass or None")
    if name in {f.name for f in dataclasses.fields(TeacherConfig)}:
        raise ValueError(f"register_teacher: {name!r} clashes with a TeacherConfig field")
    if pipeline_defaults:
        fields = {f.name for f in dataclasses.fields(config_cls)} if config_cls is not None else set()
        unknown = sorted(set(pipeline_defaults) - fields)
        if unknown:
            raise ValueError(f"register_teacher({name!r}): pipeline_defaults names {unknown}, not fields of "
                             f"its config section ({', '.join(sorted(fields)) or 'none'})")
    TEACHERS.register(name, TeacherMethod(name, config_cls, task_factory, help, display_name, order,
                                          dict(pipeline_defaults) if pipeline_defaults else None),
                      replace=True)


def pipeline_section_defaults() -> dict:
    """``{method: {field: value}}``: the ``pipeline_defaults`` every registered method declares
    (the ``defaults`` of the main job's teacher sections)."""
    return {name: dict(entry.pipeline_defaults) for name, entry in TEACHERS.items() if entry.pipeline_defaults}


def get_teacher(name: str) -> TeacherMethod:
    """The registered method ``name``; a ValueError names the closest and the available ones."""
    return TEACHERS.get(name)


def available_teachers() -> list[str]:
    return TEACHERS.names()


def teacher_config_class() -> type:
    """``TeacherConfig`` plus one section field per registered method that has a config class."""
    return sectioned_config("TeacherConfig", TeacherConfig, TEACHERS)
