"""Run a distillation end to end (used by `nasdistill distill` and the main job)::

    result = run_distill(cfg, "runs/kd1")      # cfg: a DistillConfig

The run directory receives ``config.yaml`` (with the student resolved to its record),
``run.json``, ``metrics.csv``/``.jsonl`` (with every named loss), ``last.ckpt``,
``model.safetensors`` + ``model.json`` of the STUDENT (``nasdistill.load(run_dir)`` rebuilds it) and
``result.json`` (best/last/test accuracy, the method, the teacher and its test accuracy on the same
split). The run's identity includes the teacher's weights digest: a retrained teacher is another
run.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Optional

import torch

from ..engine.run import NOT_IDENTITY, RunMethod, run_training
from ..engine.rundir import RunDirectory
from ..network import ModelRecord, build_with_weights, read_model_source, read_record, verify_file
from .task import DistillTask
from .teacher_cache import TeacherLogitCache

__all__ = ["DISTILL_RUN", "build_distill_task", "load_teacher", "prepare_distill", "run_distill",
           "student_source"]


# ---------------------------------------------------------------------------- the student
def student_source(student) -> Optional[dict]:
    """What ``student.arch`` names, as data (a model record mapping, or ``{"arch", "space"}``), or
    None for a zoo student: the part of the student's identity that a file path would hide."""
    if student.arch is None:
        return None
    found = read_model_source(student.arch, "student.arch")
    if found.record is not None:
        return found.record.to_json()
    return {"arch": found.arch, "space": student.space or found.space}


# ---------------------------------------------------------------------------- the teacher
def finished_teacher(run_dir) -> dict:
    """The ``result.json`` of the finished teacher run ``run_dir``; clear errors otherwise (weights
    that differ from the digest ``result.json`` records are named, see
    :func:`nasdistill.network.verify_file`)."""
    run_dir = Path(run_dir)
    hint = "train one with `nasdistill teacher CONFIG --out-dir DIR` and pass teacher=DIR"
    if not run_dir.is_dir():
        raise FileNotFoundError(f"teacher run directory {str(run_dir)!r} does not exist; {hint}")
    if not (run_dir / "model.json").is_file():
        raise FileNotFoundError(f"teacher {run_dir}: no model.json, so it is not a run directory of "
                                f"`nasdistill teacher`; {hint}")
    if (run_dir / "model.safetensors").is_file():
        verify_file(run_dir / "model.safetensors")
    result = RunDirectory(run_dir).finished_result()
    if result is None:
        raise FileNotFoundError(f"teacher {run_dir} has not finished (no result.json that agrees with its "
                                f"weights); finish it with `nasdistill teacher --resume --out-dir {run_dir}`")
    return result


def load_teacher(run_dir, splits, device="cpu", verbose: bool = True, data_cfg=None):
    """The trained teacher of ``run_dir`` (``model.json`` + ``model.safetensors``), on ``device``.

    Refuses a teacher whose classes or input size differ from the data's, or whose weights differ
    from their recorded digest; warns when the teacher was trained on another dataset or another
    train/val/test split (its training set may then contain the student's test images). Returns
    ``(teacher, record mapping)``.
    """
    run_dir = Path(run_dir)
    finished_teacher(run_dir)
    record = read_record(run_dir)
    d_classes, d_size = int(splits.num_classes), tuple(int(v) for v in splits.input_size)
    if record.num_classes != d_classes or tuple(record.input_size) != d_size:
        raise ValueError(
            f"teacher {run_dir} was built for {record.num_classes} classes and inputs {record.input_size}, "
            f"but the data {splits.name!r} has {d_classes} classes and inputs {d_size}; use a teacher "
            "trained on this dataset (or set data.* to the teacher's dataset)")
    if verbose:
        _warn_other_data(run_dir, splits, data_cfg)
    teacher = build_with_weights(record, run_dir, device)  # the weights checked against their digest
    return teacher, record.to_json()


def _warn_other_data(run_dir: Path, splits, data_cfg=None) -> None:
    path = run_dir / "config.yaml"
    if not path.is_file():
        return
    import yaml

    with open(path) as f:
        data = (yaml.safe_load(f) or {}).get("data") or {}
    from ..data.registry import same_dataset

    name = data.get("name")
    if name and not same_dataset(str(name), splits.name):
        print(f"warning: teacher {run_dir} was trained on {data.get('name')!r}, distilling on "
              f"{splits.name!r}", flush=True)
    elif data_cfg is not None:
        theirs = (data.get("split_seed", 0), data.get("val_size"))
        ours = (data_cfg.split_seed, data_cfg.val_size)
        if theirs != ours:
            print(f"warning: teacher {run_dir} used data.split_seed/val_size {theirs}, this run "
                  f"{ours}: the teacher may have trained on this run's val/test images", flush=True)


# ---------------------------------------------------------------------------- the run
def build_distill_task(cfg, splits, loaders, device, world) -> DistillTask:
    """Student (seeded by the lifecycle), teacher, distiller, optional logit cache: the task."""
    from . import build_distiller
    from .registry import get_distiller

    augment = splits.augment if cfg.data.augment is None else bool(cfg.data.augment)
    if cfg.cache_teacher_logits and augment:
        raise ValueError(
            f"cache_teacher_logits=true needs a run without random augmentation, but data "
            f"{splits.name!r} is augmented (data.augment={cfg.data.augment}, dataset default "
            f"{splits.augment}): a cached logit would belong to another crop/flip of the image. "
            "Set data.augment=false or cache_teacher_logits=false")
    record = ModelRecord.from_config(cfg.student, splits.num_classes, splits.input_size, "student")
    rng = torch.get_rng_state()
    teacher = None
    if get_distiller(cfg.method).needs_teacher:
        teacher, _ = load_teacher(cfg.teacher, splits, device, verbose=world.is_main, data_cfg=cfg.data)
    temperature = None
    if teacher is not None and cfg.calibrate_teacher:
        temperature = calibrate(teacher, splits, device)
    torch.set_rng_state(rng)  # the student's weights depend on cfg.seed only
    student = record.build()
    distiller = build_distiller(cfg.method, student, teacher, num_data=len(splits.train),
                                input_size=tuple(splits.input_size), cfg=cfg.method_config())
    cache, cache_s = None, None
    if cfg.cache_teacher_logits:
        t0 = time.perf_counter()
        cache = TeacherLogitCache.build(teacher, splits.train, splits.mean, splits.std, device,
                                        batch_size=max(cfg.train.batch_size, 256))
        cache_s = time.perf_counter() - t0
    task = DistillTask(student, distiller, cache)
    task.network_record = record
    task.info = {"method": cfg.method, "student": record.to_json(),
                 # relative to the run's folder: records hold no absolute paths
                 "teacher": relative_path(cfg.teacher, cfg.out_dir) if teacher is not None else None,
                 "cache_teacher_logits": cfg.cache_teacher_logits}
    if temperature is not None:
        task.info["teacher_temperature"] = temperature
    if cache_s is not None:
        task.info["teacher_cache_build_s"] = cache_s
    return task


def calibrate(teacher, splits, device) -> float:
    """Fit the teacher's temperature ``T_cal`` on the validation split (:func:`~nasdistill.analysis.
    fit_temperature`) and divide its logits by it from now on: the classifier's weight and bias are
    scaled by ``1 / T_cal`` (the teacher is a frozen copy loaded for this run), so every loss, the
    logit cache and the teacher's features agree. Returns ``T_cal``."""
    from ..analysis import fit_temperature, predict

    out = predict(teacher, splits.val, device, mean=splits.mean, std=splits.std)
    temperature = fit_temperature(out["logits"], out["labels"])
    with torch.no_grad():
        teacher.classifier.weight.div_(temperature)
        if teacher.classifier.bias is not None:
            teacher.classifier.bias.div_(temperature)
    return temperature


def check_calibration_data(cfg, splits, key: str = "calibrate_teacher") -> None:
    """``calibrate_teacher`` fits on the validation split: refuse data without one of its own."""
    from ..config import ConfigError

    if cfg.calibrate_teacher and (len(splits.val) == 0 or splits.val is splits.test):
        raise ConfigError.for_key(key, f"needs a validation split (the temperature is fitted on it, never on "
                                       f"the test split), and data {cfg.data.name!r} has none of its own; set "
                                       "data.val_size, e.g. data.val_size=5000")


def relative_path(path, start) -> str:
    """``path`` relative to the folder ``start`` (as both are given, relative or absolute)."""
    import os

    return os.path.relpath(os.path.abspath(path), os.path.abspath(start))


def prepare_distill(cfg, splits, device="cpu", verbose: bool = False) -> DistillTask:
    """The :class:`DistillTask` of ``cfg`` on ``device`` without training it (seeded by
    ``cfg.seed`` like a run)."""
    from ..engine.checkpoint import seed_everything
    from ..engine.distributed import World

    DISTILL_RUN.check_config(cfg)
    seed_everything(cfg.seed)
    task = build_distill_task(cfg, splits, None, torch.device(device), World() if verbose else _QuietWorld())
    return task.to(torch.device(device))


class _QuietWorld:
    is_main = False


def _identity(cfg) -> dict:
    """The configuration but the teacher's path (its weights' digest instead), the student's file
    path (its content instead) and the sections of methods this run does not use."""
    from ..engine.run import config_identity, other_method_sections
    from .registry import get_distiller

    unused = other_method_sections(cfg, DistillConfigBase)
    # a run without a teacher does not depend on what would be done to one
    teacherless = () if get_distiller(cfg.method).needs_teacher else ("calibrate_teacher", "cache_teacher_logits")
    out = config_identity(cfg, ignore=NOT_IDENTITY + ("teacher", "student.arch", *unused, *teacherless))
    out["student.arch"] = student_source(cfg.student)
    out["teacher_weights"] = (finished_teacher(cfg.teacher).get("weights_sha256")
                              if get_distiller(cfg.method).needs_teacher else None)
    return out


def _saved_config(cfg):
    source = student_source(cfg.student)
    if source is None:
        return cfg
    if "format" in source:  # a full record: the space travels as data
        return dataclasses.replace(cfg, student=dataclasses.replace(cfg.student, arch=source, space=None))
    return dataclasses.replace(cfg, student=dataclasses.replace(cfg.student, arch=source["arch"],
                                                                space=source["space"]))


def _check_teacher(cfg) -> None:
    """The teacher run must have finished (before loading any data)."""
    from .registry import get_distiller

    if cfg.teacher is not None and get_distiller(cfg.method).needs_teacher:
        finished_teacher(cfg.teacher)


from ..registry import register  # noqa: E402
from .config import DistillConfigBase, distill_config_class  # noqa: E402

DISTILL_RUN = RunMethod("distill", build_distill_task, identity=_identity, saved_config=_saved_config,
                        check=lambda cfg: cfg.check(), check_inputs=_check_teacher,
                        check_data=check_calibration_data)
register("run", "distill", DISTILL_RUN, config=distill_config_class)


def run_distill(cfg, run_dir=None, mode: str = "resume", splits=None, device=None, verbose: bool = True,
                world=None) -> dict:
    """Distill with ``cfg`` (a :class:`~.config.DistillConfig`) into ``run_dir``; return the result.

    ``run_dir=None`` trains without writing anything. ``splits``: a loaded
    :class:`~nasdistill.data.DatasetSplits` (default: load ``cfg.data``). ``mode``: ``new``,
    ``resume``, ``amend`` or ``restart`` (:func:`~nasdistill.engine.run.run_training`).
    """
    return run_training(cfg, DISTILL_RUN, run_dir, mode=mode, splits=splits, device=device, world=world,
                        verbose=verbose)
