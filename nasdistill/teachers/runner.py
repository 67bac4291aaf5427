"""Train a teacher end to end (used by `nasdistill teacher` and the main job)."""
from __future__ import annotations

from ..engine.run import RunMethod, run_training
from ..record import ModelRecord
from .registry import get_teacher


def build_teacher_task(cfg, splits, loaders, device, world):
    """The task of ``cfg.method`` around a fresh ``cfg.model`` (seeded by the lifecycle)."""
    method = get_teacher(cfg.method)
    record = ModelRecord.from_config(cfg.model, splits.num_classes, splits.input_size)
    task = method.task_factory(cfg, record.build(), splits)
    task.network_record = record
    task.info = {"method": cfg.method, "model": record.describe()}
    return task


TEACHER_RUN = RunMethod("teacher", build_teacher_task)


def run_teacher(cfg, run_dir=None, mode: str = "resume", splits=None, device=None, world=None,
                verbose: bool = True) -> dict:
    """Train (or reuse) the teacher ``cfg`` describes (a ``teacher_config_class()`` instance).

    ``run_dir`` receives config.yaml, run.json, metrics, last.ckpt, model.safetensors (the plain
    teacher), model.json and result.json; ``mode`` is one of ``new``, ``resume``, ``amend``,
    ``restart`` (:func:`~nasdistill.engine.run.run_training`).
    """
    result = run_training(cfg, TEACHER_RUN, run_dir, mode=mode, splits=splits, device=device,
                          world=world, verbose=verbose)
    return result
