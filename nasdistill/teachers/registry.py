"""Teacher-training methods by name (:data:`TEACHERS`), and the teacher config that grows with them.

A method is one module of :mod:`nasdistill.teachers` that registers its task factory, its config
section (a dataclass, or None) and its metadata::

    register("teacher", "mse", make_mse_task, config=MSEConfig, display_name="MSE", order=40)

The factory is called as ``task_factory(cfg, model, splits) -> TrainTask`` with the built teacher
network ``model``. Metadata (:class:`TeacherMethod`), read by the main job and the report, which
never test a method's name:

- ``order``, ``display_name``, ``help``: listings and reports (CE, GTN, SFTN, MSE, SoTeacher);
- ``reference``: the teacher every other is compared with (CE): the cost column's unit and the
  reference of every gain;
- ``headline``: a teacher whose gain over the reference the report's Summary states first (GTN);
- ``uses_space``: its section's ``space`` key is the job's search space (GTN);
- ``needs_student``: its section's ``student`` key grafts a student (SFTN): with
  ``teachers.student_from_search`` the main job gives it the first searched student, and it
  trains after the search;
- ``warm_startable``: its section has ``init_from`` (start from a finished teacher run; the main
  job's ``teachers.init_from_ce``);
- ``histories``: what its runs log per epoch and the report draws: ``"branches"`` (teacher and
  branch accuracies, the precondition of distilling from a branch-trained teacher) and
  ``"gates"`` (gate entropy and exploration; the run writes ``phi.json``);
- ``pipeline_defaults``: fields of its section the main job's short embedded run sets differently.

:func:`teacher_config_class` returns :class:`TeacherConfig` extended with one field per registered
section (``ce``, ``mse``, ``soteacher``, ...), so ``mse.some_knob=...`` is type-checked like every
other key and an unknown key is still refused by name.
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
    """A registered teacher method: its task factory, config section and metadata (module docstring)."""

    name: str
    config_class: Optional[type]
    task_factory: Callable
    help: str = ""
    display_name: Optional[str] = None
    order: Optional[float] = None
    pipeline_defaults: Optional[dict] = field(default=None, hash=False)
    reference: bool = False
    headline: bool = False
    uses_space: bool = False
    needs_student: bool = False
    warm_startable: bool = False
    histories: tuple = ()


HISTORIES = ("branches", "gates")


def _teacher_entry(name: str, task_factory, meta: dict) -> "TeacherMethod":
    meta = dict(meta)
    config_cls = meta.pop("config", None)
    if not callable(task_factory):
        raise TypeError(f"teacher {name!r}: the task factory must be callable (cfg, model, splits) -> TrainTask")
    if config_cls is not None and not dataclasses.is_dataclass(config_cls):
        raise TypeError(f"teacher {name!r}: config must be a dataclass or None")
    if name in {f.name for f in dataclasses.fields(TeacherConfig)}:
        raise ValueError(f"teacher {name!r} clashes with a TeacherConfig field")
    fields = {f.name for f in dataclasses.fields(TeacherMethod)} - {"name", "config_class", "task_factory"}
    unknown = sorted(set(meta) - fields)
    if unknown:
        raise TypeError(f"teacher {name!r}: unknown metadata {unknown}; a teacher declares config and "
                        f"{sorted(fields)}")
    section = {f.name for f in dataclasses.fields(config_cls)} if config_cls is not None else set()
    defaults = meta.get("pipeline_defaults")
    if defaults:
        unknown = sorted(set(defaults) - section)
        if unknown:
            raise ValueError(f"teacher {name!r}: pipeline_defaults names {unknown}, not fields of its config "
                             f"section ({', '.join(sorted(section)) or 'none'})")
        meta["pipeline_defaults"] = dict(defaults)
    for flag, key in (("uses_space", "space"), ("needs_student", "student"), ("warm_startable", "init_from")):
        if meta.get(flag) and key not in section:
            raise ValueError(f"teacher {name!r}: {flag}=True needs a {key!r} field in its config section")
    histories = tuple(meta.get("histories") or ())
    if set(histories) - set(HISTORIES):
        raise ValueError(f"teacher {name!r}: histories {histories} must be among {HISTORIES}")
    meta["histories"] = histories
    return TeacherMethod(name, config_cls, task_factory, **meta)


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


def pipeline_section_defaults() -> dict:
    """``{method: {field: value}}``: the ``pipeline_defaults`` every registered method declares
    (the ``defaults`` of the main job's teacher sections)."""
    return {name: dict(entry.pipeline_defaults) for name, entry in TEACHERS.items() if entry.pipeline_defaults}


#: Re-running a definition replaces its entry.
TEACHERS: Registry[TeacherMethod] = Registry("teacher", make_entry=_teacher_entry, replace=True,
                                             what="teacher method")


def reference_teacher() -> Optional[str]:
    """The teacher the others are compared with (metadata ``reference``), if one is registered."""
    names = TEACHERS.having("reference")
    return names[0] if names else None


def get_teacher(name: str) -> TeacherMethod:
    """The registered method ``name``; a ValueError names the closest and the available ones."""
    return TEACHERS.get(name)


def available_teachers() -> list[str]:
    return TEACHERS.names()


def teacher_config_class() -> type:
    """``TeacherConfig`` plus one section field per registered method that has a config class."""
    return sectioned_config("TeacherConfig", TeacherConfig, TEACHERS)
