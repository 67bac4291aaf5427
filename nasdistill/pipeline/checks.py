"""Everything the main job refuses before any file of it is written or any run trains.

A value the configuration alone can refuse is refused when it is read (each section's own checks,
then ``PipelineConfig.check``). :func:`check_job_inputs` then checks, once the data is loaded:

- the space loads for the data's classes and input size, and every ``search.targets`` entry is a
  MACs cost the space can reach (:meth:`~nasdistill.space.SearchSpace.cost_range`, exact: a target
  outside it could only give the smallest or the largest network after the whole search);
- the counts are possible: ``students.random_per_target`` distinct networks besides the searched
  one in each target's MACs band (counted exactly, :mod:`nasdistill.space.band`), and
  ``students.sampled`` networks besides the searched and random ones in the whole space;
- the distillation methods that need a teacher have one, and the job trains some student;
- the ONNX export asked for (``export.onnx=true``) can be written;
- every run the job will launch -- each search, each teacher method, each distillation method and
  the baseline -- passes its kind's own checks (:meth:`~nasdistill.engine.run.RunMethod.check_config`
  and ``check_loaded``: the device of its ``train`` section available, every model section buildable
  for the data, the method's cross-key checks), with stand-in students for the ones the search will
  find; each teacher's task and each distiller are built once on the meta device (no memory, no
  weights), which is where a method checks that its sections fit the model and the space.

Each refusal is a :class:`~nasdistill.config.ConfigError` naming the main job's key
(``distill.train.device``, not the run's ``train.device``), so the command can say where its value
came from (the command line, or the YAML file and its line).
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..config import ConfigError
from ..search.checks import check_cost_targets, check_held_out_split, check_search_targets  # noqa: F401

#: The folder the stand-in runs are configured in: nothing is ever written there.
_NOWHERE = Path("<job>")


def check_job_inputs(cfg, splits):
    """The main job's checks of the loaded data (the module docstring), before its folder is
    touched; return the space adapted to the data."""
    from ..space import load_space

    try:
        space = load_space(cfg.space, splits.num_classes, splits.input_size)
    except ConfigError as err:
        raise err if err.key else ConfigError(f"config key 'space': {err}", "space") from None
    except (ValueError, FileNotFoundError, ImportError, TypeError) as err:
        raise ConfigError(f"config key 'space' ({cfg.space!r}): {err}", "space") from None
    check_cost_targets(space, cfg.search.targets, "macs", "search.targets")
    if cfg.search.targets:
        check_held_out_split(cfg, splits, ", or search.targets=[] to skip the search")
    if cfg.teachers.calibrate and (len(splits.val) == 0 or splits.val is splits.test):
        raise ConfigError.for_key("teachers.calibrate", f"needs a validation split (each teacher's "
                                  f"temperature is fitted on it, never on the test split), and data "
                                  f"{cfg.data.name!r} has none of its own; set data.val_size, e.g. "
                                  "data.val_size=5000")
    check_methods(cfg)
    check_counts(cfg, space)
    check_export(cfg)
    check_backend(cfg)
    check_runs(cfg, splits, space)
    return space


def augmented(cfg, splits) -> bool:
    """Whether the training images are randomly augmented (``data.augment``, else the dataset's
    default)."""
    return bool(splits.augment if cfg.data.augment is None else cfg.data.augment)


def check_methods(cfg) -> None:
    """The distillation methods that read a teacher have one, and the job trains a student."""
    from ..distill.registry import get_distiller

    with_teacher = [m for m in cfg.distill.methods if get_distiller(m).needs_teacher]
    if with_teacher and not cfg.teachers.methods:
        raise ConfigError.for_key("teachers.methods", f"is empty, but distill.methods {with_teacher} distil "
                                  "from a teacher: add one (e.g. teachers.methods=[ce]), or set "
                                  "distill.methods=[] to train the students alone")
    if not cfg.distill.methods and not cfg.distill.baseline:
        raise ConfigError.for_key("distill.methods", "is empty and distill.baseline is false: the job would "
                                  "train no student; give a method (e.g. distill.methods=[kd]) or set "
                                  "distill.baseline=true")


def check_counts(cfg, space) -> None:
    """``students.random_per_target`` and ``students.sampled`` within what the space holds."""
    from ..space.band import band_networks

    targets = [float(t) for t in cfg.search.targets]
    per_target = cfg.students.random_per_target
    tol = cfg.search.search.tolerance
    if targets and per_target:
        for t in targets:
            band = band_networks(space, t * (1 - tol), t * (1 + tol), "macs")
            if band.networks - 1 < per_target:
                raise ConfigError.for_key(
                    "students.random_per_target",
                    f"is {per_target}, but the MACs band {t * (1 - tol):,.0f} to {t * (1 + tol):,.0f} of target "
                    f"{t:,.0f} holds {band.networks} network(s), one of them for the searched student: at most "
                    f"{max(0, band.networks - 1)} random student(s) there; lower it, or widen the band "
                    "(search.search.tolerance)")
    size = space.size()
    taken = len(targets) * (1 + per_target)
    if cfg.students.sampled > size - taken:
        raise ConfigError.for_key(
            "students.sampled", f"is {cfg.students.sampled:,}, but the space {space.name!r} holds {size:,} "
            f"networks for this data and the searched and random students take up to {taken}: at most "
            f"{max(0, size - taken):,} can be sampled besides them")


def check_export(cfg) -> None:
    """``export.onnx=true`` needs the onnx extra (``auto`` writes ONNX only when it imports)."""
    from ..network.export import ONNX_HINT, onnx_available

    if cfg.export.enabled and cfg.export.onnx is True:
        missing = onnx_available()
        if missing:
            raise ConfigError.for_key("export.onnx", f"is true, but {missing}: install it ({ONNX_HINT}), or "
                                      "set export.onnx=auto (ONNX when available) or false")


def check_backend(cfg) -> None:
    """``backend=ray`` needs the ray extra (checked before the job starts anything)."""
    if cfg.backend == "ray":
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            from .ray_pool import MISSING

            raise ConfigError.for_key("backend", MISSING.replace("backend=ray needs", "is ray, which needs"))


# ---------------------------------------------------------------------------- the runs
def check_runs(cfg, splits, space) -> None:
    """Every run the job will launch passes its kind's checks (module docstring), with stand-ins
    for the students the search has not found yet and the teachers not trained yet."""
    from .steps import distill_config, search_configs, teacher_configs

    stand_in = dict(space.sample(seed=0))
    students = [{"arch": stand_in}] if cfg.search.targets else []
    if students:
        _check_grafted_students(cfg)
    for scfg, _ in search_configs(cfg, _NOWHERE):
        _check_run("search", scfg, splits, "search", {"search.targets": "search.targets",
                                                      "search.target": "search.targets"}, cfg)
    checked = set()
    for (method, _), tcfg, _, _ in teacher_configs(cfg, _NOWHERE, students):
        if method in checked:  # the seeds of a method differ in their seed alone
            continue
        checked.add(method)
        _check_run("teacher", tcfg, splits, "teachers", {}, cfg)
        _build_teacher(tcfg, splits, method)
    aug = augmented(cfg, splits)
    methods = list(cfg.distill.methods) + (["none"] if cfg.distill.baseline else [])
    for method in methods:
        teacher = None if method == "none" else _NOWHERE / "teachers" / "t"
        dcfg = distill_config(cfg, _NOWHERE / "d", stand_in, teacher, method, cfg.distill.seeds[0], aug)
        _check_run("distill", dcfg, splits, "distill", {"calibrate_teacher": "teachers.calibrate"}, cfg)
        if teacher is not None:
            _build_distiller(cfg, dcfg, splits, method)


def _check_grafted_students(cfg) -> None:
    """A teacher built around a student (SFTN) takes the first searched one while
    ``teachers.student_from_search`` holds: a student given in its section would be ignored."""
    import dataclasses

    from ..teachers import TEACHERS

    if not cfg.teachers.student_from_search:
        return
    for name in TEACHERS.having("needs_student"):
        section = getattr(cfg.teachers, name, None)
        default = type(section)() if section is not None else None
        if name in cfg.teachers.methods and default is not None and \
                dataclasses.asdict(section.student) != dataclasses.asdict(default.student):
            raise ConfigError.for_key(f"teachers.{name}.student", f"would be ignored: the {name} teachers take the "
                                      "first searched student (teachers.student_from_search=true); set "
                                      "teachers.student_from_search=false to use this one")


def job_key(cfg, section: str, key: str, renamed: dict) -> str:
    """The main job's key of a run's ``key``: a run of the ``section`` stage (``search``,
    ``teachers``, ``distill``) takes that section's sub-sections (``train.device`` ->
    ``distill.train.device``) and the job's top-level ones as they are (``data.val_size``)."""
    for old, new in renamed.items():
        if key == old or key.startswith(old + ".") or key.startswith(old + "["):
            return new + key[len(old):]
    first = key.split(".")[0].split("[")[0]
    return f"{section}.{key}" if hasattr(getattr(cfg, section), first) else key


def _rekeyed(err: ConfigError, cfg, section: str, renamed: dict) -> ConfigError:
    return err.rekeyed(job_key(cfg, section, err.key, renamed)) if err.key else err


def _check_run(kind: str, run_cfg, splits, section: str, renamed: dict, cfg) -> None:
    from ..engine.runs import RUNS

    method = RUNS.get(kind)
    try:
        method.check_config(run_cfg, inputs=False)
        method.check_loaded(run_cfg, splits)
    except ConfigError as err:
        raise _rekeyed(err, cfg, section, renamed) from None


def _build_teacher(tcfg, splits, method: str) -> None:
    """Build the teacher task of ``method`` on the meta device (on the CPU when an operation has no
    meta kernel): a section that does not fit the model or the space is refused now."""
    from ..engine.distributed import World
    from ..engine.runs import RUNS

    build = RUNS.get("teacher").build
    _built(lambda device: build(tcfg, splits, None, device, World()), f"teachers.{method}",
           f"the {method} teacher")


def _build_distiller(cfg, dcfg, splits, method: str) -> None:
    """Build the distiller of ``method`` between a stand-in student and the teachers' network on
    the meta device: a method that cannot pair them (feature shapes, stages) is refused now."""
    from ..distill import build_distiller
    from ..network.record import ModelRecord

    def build(device):
        with device:
            student = ModelRecord.from_config(dcfg.student, splits.num_classes, splits.input_size,
                                              "student").build()
            teacher = ModelRecord.from_config(cfg.teachers.model, splits.num_classes, splits.input_size,
                                              "teachers.model").build(for_weights=True)
            return build_distiller(method, student, teacher, num_data=len(splits.train),
                                   input_size=tuple(splits.input_size), cfg=dcfg.method_config())
    _built(build, f"distill.{method}", f"the {method} distillation")


def _built(build, key: str, what: str) -> None:
    """``build(device)`` on the meta device, or on the CPU when an operation has no meta kernel;
    what it raises becomes a refusal of ``key``."""
    for device in ("meta", "cpu"):
        try:
            with torch.device(device):
                build(torch.device(device))
            return
        except ConfigError as err:
            raise err.prefixed(key.split(".")[0] + ".") if err.key else ConfigError(f"{what}: {err}", key) from None
        except (ValueError, TypeError, KeyError, RuntimeError, NotImplementedError) as err:
            if device == "meta" and isinstance(err, (RuntimeError, NotImplementedError)):
                continue  # an operation without a meta kernel: build it for real, on the CPU
            raise ConfigError(f"config key {key!r}: {what} cannot be built: {err}", key) from None


__all__ = ["augmented", "check_cost_targets", "check_counts", "check_export", "check_job_inputs",
           "check_methods", "check_runs", "check_search_targets", "job_key"]
