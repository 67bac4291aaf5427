"""A run as data, and the one function that executes it.

Every run of the main job -- a search, a teacher, a distillation, an export -- is a
:class:`RunSpec`: its kind, its configuration as plain data, its folder and how to treat what the
folder holds. :func:`execute` runs one, wherever it is called (the main process, a local worker
process, a Ray task on another machine): it looks the kind up in the ``run`` family (:data:`RUNS`),
rebuilds the configuration, and hands it to the kind's lifecycle, which owns everything about the
folder -- the lock, the configuration's fingerprint, reusing a finished run, resuming an
interrupted one or refusing another configuration, and the result written last
(:func:`~.run.run_training` for the training kinds). Backends only move specs to where they run;
they decide nothing about reuse.

A kind registers its lifecycle with its configuration class (a callable returning it, as the
teacher and distillation configs grow with their registered methods)::

    register("run", "teacher", TEACHER_RUN, config=teacher_config_class)

where ``TEACHER_RUN.execute(cfg, spec)`` returns the run's result (``result.json``) and whether
the folder's finished run was reused.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

from ..config import from_dict, to_dict
from ..registry import Registry
from .runtime import use_threads


def _run_entry(name: str, kind, meta: dict):
    config = meta.get("config")
    if not callable(getattr(kind, "execute", None)):
        raise TypeError(f"run kind {name!r}: register an object with execute(cfg, spec) -> (result, reused)")
    if config is None or not callable(config):
        raise TypeError(f"run kind {name!r}: give config=, a callable returning its configuration class")
    unknown = sorted(set(meta) - {"config"})
    if unknown:
        raise TypeError(f"run kind {name!r}: unknown metadata {unknown}")
    return kind


#: The kinds of run, by name: their lifecycle (``execute``) and configuration class (``config``).
RUNS: Registry = Registry("run", make_entry=_run_entry, replace=True, what="run kind")


@dataclass
class RunSpec:
    """One run, as data (serialisable: plain values only).

    ``kind``: a registered run kind; ``config``: its configuration (``to_dict``); ``run_dir``: its
    folder; ``mode``: what to do with a run already there (:data:`~.run.MODES`); ``threads``: CPU
    threads of the process that runs it; ``job``: the main job's folder when the run is one of its
    runs (it may write inside the job's folder, which refuses other writers); ``name``: how
    progress lines name it (its folder relative to the job's)."""

    kind: str
    config: dict
    run_dir: str
    mode: str = "resume"
    threads: Optional[int] = None
    job: Optional[str] = None
    name: Optional[str] = None

    @classmethod
    def of(cls, kind: str, cfg, run_dir, **kwargs) -> "RunSpec":
        """The spec of a run of ``kind`` with the configuration object ``cfg``."""
        return cls(kind=kind, config=to_dict(cfg), run_dir=str(run_dir), **kwargs)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "RunSpec":
        return cls(**data)

    def build_config(self):
        """The configuration object of this run (checked like a config file)."""
        return from_dict(RUNS.meta(self.kind, "config")(), self.config)


def execute(spec: RunSpec) -> dict:
    """Run (or reuse) the run ``spec`` describes; return its result (``result.json``) with
    ``reused`` (whether the folder's finished run was taken as it is). See the module docstring."""
    if isinstance(spec, dict):
        spec = RunSpec.from_dict(spec)
    kind = RUNS.get(spec.kind)
    use_threads(spec.threads)
    cfg = spec.build_config()
    result, reused = kind.execute(cfg, spec)
    return {**result, "reused": bool(reused)}


__all__ = ["RUNS", "RunSpec", "execute"]
