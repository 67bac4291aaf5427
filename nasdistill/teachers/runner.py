"""Train a teacher end to end (used by `nasdistill teacher` and the main job).

Warm start (``gtn.init_from`` / ``sftn.init_from`` = a finished teacher run directory): the teacher
starts from that run's ``model.json`` + ``model.safetensors`` instead of fresh weights (the GTN
supplement's and SFTN section 4.6's recipe, with ``freeze_teacher_epochs`` warming the branches
on the frozen teacher first). The source must be a finished run of the same model; a missing or
unfinished one is refused before the run writes anything. The run's identity holds the source's
weights digest, not its path: a retrained source is another run, a moved one the same.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..config import ConfigError
from ..engine.run import NOT_IDENTITY, RunMethod, config_identity, other_method_sections, run_training
from ..network.record import ModelRecord
from ..registry import register
from .registry import get_teacher, teacher_config_class


def init_key(cfg) -> Optional[str]:
    """``<method>.init_from`` when the run's method has that key and it is set, else None."""
    section = getattr(cfg, cfg.method, None)
    return f"{cfg.method}.init_from" if getattr(section, "init_from", None) else None


def init_source(cfg) -> Optional[dict]:
    """The finished run ``<method>.init_from`` names: ``{"dir", "result", "record"}`` (None when
    unset). Refuses, with a sentence naming the key, a missing or unfinished run, and one whose
    recorded model is not ``cfg.model``'s (zoo name and options, or space architecture)."""
    from ..engine.rundir import RunDirectory

    key = init_key(cfg)
    if key is None:
        return None
    src = Path(getattr(cfg, cfg.method).init_from)
    hint = "train it first with `nasdistill teacher CONFIG --out-dir DIR` (e.g. method=ce)"
    if not src.is_dir():
        raise ConfigError(f"config key {key!r}: {str(src)!r} is not a teacher run directory; {hint}")
    if not (src / "model.json").is_file() or not (src / "model.safetensors").is_file():
        raise ConfigError(f"config key {key!r}: {src} holds no model.json + model.safetensors (not a "
                          f"finished teacher run); {hint}")
    result = RunDirectory(src).finished_result()
    if result is None:
        raise ConfigError(f"config key {key!r}: the run {src} has not finished (no result.json that "
                          f"agrees with its weights); finish it with `nasdistill teacher --resume "
                          f"--out-dir {src}`")
    record = ModelRecord.read(src)
    mine = cfg.model
    same = (record.kind == "zoo" and mine.arch is None and record.name == mine.name
            and dict(record.options) == dict(mine.options or {})) or \
           (record.kind == "space" and mine.arch is not None)
    if not same:
        raise ConfigError(f"config key {key!r}: {src} holds a {record.describe()}, but model is "
                          f"{_describe_model(mine)}; start from a run of the same model, or set "
                          "model.* to the run's")
    return {"dir": src, "result": result, "record": record}


def _describe_model(model_cfg) -> str:
    return f"zoo model {model_cfg.name}" if model_cfg.arch is None else "an architecture of a space"


def load_init_weights(cfg, model, record: ModelRecord, source: dict) -> None:
    """Load the source's weights into the fresh ``model`` (whose record is ``record``), refusing
    when the recorded network differs (classes, input size, architecture)."""
    from ..network.loading import load_weights

    key = init_key(cfg)
    theirs, mine = source["record"].to_json(), record.to_json()
    if theirs != mine:
        diff = sorted(k for k in set(theirs) | set(mine) if theirs.get(k) != mine.get(k))
        raise ConfigError(f"config key {key!r}: the network recorded in {source['dir']} differs from "
                          f"this run's model in {', '.join(diff)}; start from a run of the same model "
                          "and data")
    load_weights(model, source["dir"] / "model.safetensors")


def build_teacher_task(cfg, splits, loaders, device, world):
    """The task of ``cfg.method`` around a fresh ``cfg.model`` (seeded by the lifecycle), or one
    loaded from ``<method>.init_from``."""
    method = get_teacher(cfg.method)
    record = ModelRecord.from_config(cfg.model, splits.num_classes, splits.input_size)
    model = record.build()
    source = init_source(cfg)
    if source is not None:
        load_init_weights(cfg, model, record, source)
    task = method.task_factory(cfg, model, splits)
    task.network_record = record
    task.info = {"method": cfg.method, "model": record.describe()}
    if source is not None:
        task.info.update(init_from=str(source["dir"]),
                         init_from_weights_sha256=source["result"].get("weights_sha256"),
                         init_from_wall_time_s=source["result"].get("wall_time_s"))
    return task


def teacher_identity(cfg) -> dict:
    """The configuration but the sections of the other methods, with ``<method>.init_from``'s path
    replaced by the weights digest of the run it names (``init_from_weights``)."""
    from .registry import TeacherConfig

    out = config_identity(cfg, ignore=NOT_IDENTITY + other_method_sections(cfg, TeacherConfig))
    key = init_key(cfg)
    if key is not None:
        out[key] = None
        out["init_from_weights"] = init_source(cfg)["result"].get("weights_sha256")
    return out


def check_teacher(cfg) -> None:
    """Refuse a missing, unfinished or other-model ``<method>.init_from`` before any file is written."""
    init_source(cfg)


TEACHER_RUN = RunMethod("teacher", build_teacher_task, identity=teacher_identity, check_inputs=check_teacher)
register("run", "teacher", TEACHER_RUN, config=teacher_config_class)


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
