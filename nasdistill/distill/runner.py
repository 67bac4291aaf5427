"""Run a distillation end to end (used by `nasdistill distill` and the pipeline).

::

    result = run_distill(cfg, "runs/kd1")      # cfg: a DistillConfig

The run directory receives ``config.yaml`` (with the student resolved), ``model.json`` of the
STUDENT (so :func:`nasdistill.engine.modelspec.load_model_record` rebuilds the trained student),
``metrics.csv``/``.jsonl`` (with every named loss), ``last.ckpt``, ``model.safetensors`` (the
student's weights) and ``result.json`` (best/last/test accuracy, the method, the teacher and its
test accuracy on the same split).
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Optional

import torch

from ..engine.checkpoint import seed_everything
from ..engine.config import save_yaml
from ..engine.modelspec import build_from_record, model_record, save_model_record
from ..engine.rundir import prepare_run_dir, write_json
from ..engine.trainer import Trainer, evaluate
from .task import DistillTask
from .teacher_cache import TeacherLogitCache

__all__ = ["DistillSetup", "load_teacher", "prepare_distill", "resolve_student", "run_distill"]


# ---------------------------------------------------------------------------- the student
def _read_arch_source(arch: Any) -> Any:
    """The raw JSON content of ``arch`` (a mapping, a JSON string or a JSON file path)."""
    if isinstance(arch, str):
        if os.path.isfile(arch):
            with open(arch) as f:
                try:
                    return json.load(f)
                except json.JSONDecodeError as err:
                    raise ValueError(f"student.arch: {arch} is not valid JSON ({err})") from None
        if arch.strip().startswith("{"):
            try:
                return json.loads(arch)
            except json.JSONDecodeError as err:
                raise ValueError(f"student.arch: not valid JSON ({err}): {arch!r}") from None
        raise ValueError(f"student.arch: {arch!r} is neither an existing JSON file nor a JSON mapping")
    return arch


def _space_key(space: str) -> str:
    return os.path.splitext(os.path.basename(space))[0]


def resolve_student(student):
    """``student`` (a ModelConfig) with ``space`` filled from an arch file that names its space.

    A search run's ``arch.json`` holds ``{"space": ..., "arch": {...}, ...}``, so
    ``student.arch=runs/search/arch.json`` alone names a student. ``student.space`` given too must
    agree with the file.
    """
    if student.arch is None:
        if student.space is not None:
            raise ValueError(f"student.space={student.space!r} needs student.arch (a mapping, a JSON "
                             "string, or a path to a JSON file such as a search run's arch.json)")
        return student
    raw = _read_arch_source(student.arch)
    named = raw.get("space") if isinstance(raw, dict) and isinstance(raw.get("arch"), dict) else None
    if student.space is None:
        if not isinstance(named, str):
            raise ValueError("student.arch is given but not student.space: name the search space the "
                             "architecture belongs to (e.g. student.space=digits_small)")
        return dataclasses.replace(student, space=named)
    if isinstance(named, str) and _space_key(named) != _space_key(student.space):
        raise ValueError(f"student.space={student.space!r} but the architecture file names space "
                         f"{named!r}; drop student.space or give the matching file")
    return student


# ---------------------------------------------------------------------------- the teacher
def _read_json(path: Path) -> dict:
    with open(path) as f:
        return json.load(f)


def load_teacher(run_dir, splits, device="cpu", verbose: bool = True, data_cfg=None):
    """The trained teacher of ``run_dir`` (``model.json`` + ``model.safetensors``), on ``device``.

    Refuses a teacher whose classes or input size differ from the data's; warns when the teacher
    was trained on another dataset or another train/val/test split (its training set may then
    contain the student's test images).
    """
    from safetensors.torch import load_file

    run_dir = Path(run_dir)
    hint = "train one with `nasdistill teacher CONFIG --out-dir DIR` and pass teacher=DIR"
    if not run_dir.is_dir():
        raise FileNotFoundError(f"teacher run directory {str(run_dir)!r} does not exist; {hint}")
    record_path = run_dir / "model.json"
    if not record_path.is_file():
        raise FileNotFoundError(f"teacher {run_dir}: no model.json, so it is not a run directory of "
                                f"`nasdistill teacher`; {hint}")
    weights = run_dir / "model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"teacher {run_dir}: no model.safetensors, the teacher run has not "
                                "finished; finish it with `nasdistill teacher --resume --out-dir "
                                f"{run_dir}`")
    record = _read_json(record_path)
    t_classes, t_size = record.get("num_classes"), tuple(record.get("input_size") or ())
    d_classes, d_size = int(splits.num_classes), tuple(int(v) for v in splits.input_size)
    if t_classes != d_classes or t_size != d_size:
        raise ValueError(
            f"teacher {run_dir} was built for {t_classes} classes and inputs {t_size}, but the data "
            f"{splits.name!r} has {d_classes} classes and inputs {d_size}; use a teacher trained on "
            "this dataset (or set data.* to the teacher's dataset)")
    if verbose:
        _warn_other_data(run_dir, splits, data_cfg)
    teacher = build_from_record(record)
    teacher.load_state_dict(load_file(str(weights), device="cpu"))
    return teacher.to(device).eval(), record


def _warn_other_data(run_dir: Path, splits, data_cfg=None) -> None:
    path = run_dir / "config.yaml"
    if not path.is_file():
        return
    import yaml

    with open(path) as f:
        data = (yaml.safe_load(f) or {}).get("data") or {}
    name = str(data.get("name", "")).lower().replace("-", "").replace("_", "")
    if name and name != splits.name.lower().replace("-", "").replace("_", ""):
        print(f"warning: teacher {run_dir} was trained on {data.get('name')!r}, distilling on "
              f"{splits.name!r}", flush=True)
    elif data_cfg is not None:
        theirs = (data.get("split_seed", 0), data.get("val_size"))
        ours = (data_cfg.split_seed, data_cfg.val_size)
        if theirs != ours:
            print(f"warning: teacher {run_dir} used data.split_seed/val_size {theirs}, this run "
                  f"{ours}: the teacher may have trained on this run's val/test images", flush=True)


# ---------------------------------------------------------------------------- the task
@dataclasses.dataclass
class DistillSetup:
    """What :func:`prepare_distill` builds: the task and the records the run directory needs."""

    task: DistillTask
    student_record: dict
    teacher_record: Optional[dict]
    augment: bool
    cache_build_s: Optional[float] = None


def prepare_distill(cfg, splits, device, verbose: bool = True) -> DistillSetup:
    """Student, teacher, distiller, optional logit cache and the :class:`DistillTask`.

    The student (and the method's extra modules) are initialized from ``cfg.seed``.
    """
    import time

    from . import build_distiller

    cfg.check()
    device = torch.device(device)
    augment = splits.augment if cfg.data.augment is None else bool(cfg.data.augment)
    if cfg.cache_teacher_logits and augment:
        raise ValueError(
            f"cache_teacher_logits=true needs a run without random augmentation, but data "
            f"{splits.name!r} is augmented (data.augment={cfg.data.augment}, dataset default "
            f"{splits.augment}): a cached logit would belong to another crop/flip of the image. "
            "Set data.augment=false or cache_teacher_logits=false")
    student_cfg = resolve_student(cfg.student)
    student_record = model_record(student_cfg, splits.num_classes, splits.input_size)
    teacher, teacher_record = None, None
    if cfg.method != "none":
        teacher, teacher_record = load_teacher(cfg.teacher, splits, device, verbose=verbose,
                                               data_cfg=cfg.data)
    seed_everything(cfg.seed)
    student = build_from_record(student_record)
    distiller, cache, cache_s = None, None, None
    if cfg.method != "none":
        distiller = build_distiller(cfg.method, student, teacher, num_data=len(splits.train),
                                    input_size=tuple(splits.input_size), cfg=cfg.method_config())
        if cfg.cache_teacher_logits:
            t0 = time.perf_counter()
            cache = TeacherLogitCache.build(teacher, splits.train, splits.mean, splits.std, device,
                                            batch_size=max(cfg.train.batch_size, 256))
            cache_s = time.perf_counter() - t0
    task = DistillTask(student, distiller, cache)
    return DistillSetup(task, student_record, teacher_record, augment, cache_s)


# ---------------------------------------------------------------------------- the run
def run_distill(cfg, run_dir, resume: bool = False, splits=None, device=None, verbose: bool = True,
                world=None) -> dict:
    """Distill with ``cfg`` (a :class:`~.config.DistillConfig`) into ``run_dir``; return the result.

    ``run_dir=None`` trains without writing anything. ``splits``: a loaded
    :class:`~nasdistill.data.DatasetSplits` (default: load ``cfg.data``). ``resume=True`` continues
    ``run_dir/last.ckpt``; a finished run returns its ``result.json``.
    """
    from ..data import load_dataset, loaders_for
    from ..engine import distributed

    cfg.check()
    world = world or distributed.world()
    device = torch.device(device) if device is not None else distributed.resolve_device(
        cfg.train.device, world.local_rank)
    d = cfg.data
    if cfg.method != "none" and not Path(cfg.teacher).is_dir():  # before loading any data
        raise FileNotFoundError(f"teacher run directory {cfg.teacher!r} does not exist; train one with "
                                "`nasdistill teacher CONFIG --out-dir DIR` and pass teacher=DIR")
    if run_dir is not None:
        run_dir = prepare_run_dir(run_dir, resume=resume, is_main=world.is_main)
    if splits is None:
        splits = load_dataset(d.name, root=d.root, seed=d.split_seed, val_size=d.val_size)
    if getattr(cfg.train, "threads", None):
        torch.set_num_threads(cfg.train.threads)  # before the teacher cache pass (Trainer does it too)
    setup = prepare_distill(cfg, splits, device, verbose=verbose and world.is_main)
    resolved = dataclasses.replace(cfg, student=resolve_student(cfg.student))
    if run_dir is not None and world.is_main and not (run_dir / "config.yaml").exists():
        save_yaml(resolved, run_dir / "config.yaml")
        save_model_record(run_dir, setup.student_record)
    train_cfg = cfg.train
    if train_cfg.compile:
        if verbose and world.is_main:
            print("train.compile ignored: distillation does not compile the student/teacher pair yet",
                  flush=True)
        train_cfg = dataclasses.replace(train_cfg, compile=False)
    train, val, test = loaders_for(splits, cfg.train.batch_size, device, seed=cfg.seed,
                                   augment=setup.augment, rank=world.rank, world_size=world.world_size)
    result = Trainer(train_cfg, setup.task, train, val, run_dir, seed=cfg.seed, resume=resume,
                     test_loader=test, device=device, verbose=verbose).fit()
    if "method" in result:  # a finished run resumed: its result.json is complete
        return result
    student = setup.task.student
    result.update(method=cfg.method,
                  student=setup.student_record,
                  student_params=sum(p.numel() for p in student.parameters()),
                  teacher=str(Path(cfg.teacher).resolve()) if cfg.method != "none" else None,
                  cache_teacher_logits=cfg.cache_teacher_logits)
    if setup.task.teacher is not None:
        result["teacher_test_acc"] = evaluate(setup.task.teacher, test, device, cfg.train.amp)["top1"]
    if setup.cache_build_s is not None:
        result["teacher_cache_build_s"] = setup.cache_build_s
    if run_dir is not None and world.is_main:
        write_json(Path(run_dir) / "result.json", result)
    return result
