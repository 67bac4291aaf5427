"""The one run lifecycle: search, teacher and distillation runs (and the main job's stages) all go
through :func:`run_training`; a method supplies only how to build its task (:class:`RunMethod`).

Steps: checks -> device and world -> threads -> data (and the method's checks of it) -> run directory
(lock, configuration identity, what is already there) -> seed -> build -> the run's files
(``run.json``, ``config.yaml``) -> fit -> finish -> result. Everything that can refuse a run (a
value, the data, the model that cannot be built) does so before the first file is written: a
refused command leaves its folder as it was, and the corrected command simply runs.

**Reuse modes** (``mode``; the CLI flags in brackets):

- ``new`` (no flag): the folder must not hold a run yet;
- ``resume`` (``--resume``): a finished run is reused as it is, an interrupted one continues from
  its last checkpoint, a checkpoint that holds every epoch is finished (evaluation, weights,
  result); refused when the configuration differs from the run's;
- ``amend`` (``--resume --amend``): like ``resume``, but continues with changed keys (e.g. a lower
  ``train.lr`` after a non-finite loss); ``config.yaml`` then states the new values and
  ``run.json`` records which keys changed at which epoch;
- ``restart`` (``--restart``): everything the run wrote is removed and it starts over; an
  unreadable checkpoint is moved aside (``last.ckpt.unreadable-<time>``, said on stderr) rather
  than deleted;
- ``update`` (the main job's ``--restart``): ``resume`` when the configuration is the run's,
  ``restart`` when it differs or when the run cannot be continued (a damaged ``run.json`` or
  ``metrics.jsonl``; an unreadable checkpoint, moved aside as above, or one the model or method
  cannot use, moved aside to ``last.ckpt.unused-<time>``).

**A full disk** while the run writes is one paragraph naming the run folder, the last good
checkpoint kept and how to continue (:func:`disk_full_error`).

**Configuration identity.** Every run directory records in ``run.json`` the keys that decide its
result (the whole configuration but :data:`NOT_IDENTITY`: where it runs, how fast, where it writes)
and their fingerprint; a method adds what else its result depends on (a distillation adds its
teacher's fingerprint). Reusing or resuming with other values is refused with the keys named.

**One writer.** The directory's lock is held for the run's life; a second process is refused at
once with the holder's PID.

**One owner of the folder.** This module decides everything about the run folder (lock,
fingerprint, reuse, wipe) and hands the :class:`~.trainer.Trainer` a :class:`RunFolder`: where its
checkpoint goes, the metrics log, and the finish (weights, ``model.json``, the task's declared
artifacts, ``result.json`` last). The files a task writes are the names it declares
(:attr:`~.task.TrainTask.artifacts`), recorded in ``run.json``: a restart removes them even before
the task is built, and a finished run is reused only when they exist. The device and CPU threads
of a run are set in one place, :func:`runtime`, also for the main job and a bare ``Trainer``.
"""
from __future__ import annotations

import hashlib
import json
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional


from ..atomic import is_disk_full, reworded
from . import distributed
from .checkpoint import UnusableCheckpoint, seed_everything
from ..config import ConfigError, flatten, save_yaml, to_dict
from .rundir import MetricsLog, RunDirectory, check_artifact_names, write_weights
from .task import Loaders, TrainTask
from .trainer import Trainer
from .runtime import runtime

MODES = ("new", "resume", "amend", "restart", "update")
#: Keys that never change a run's result: where it runs, how fast, where it writes.
NOT_IDENTITY = ("out_dir", "train.threads", "train.device", "train.compile", "train.cuda_graphs",
                "train.check_every", "data.root")


class ConfigMismatch(ConfigError):
    """The run directory was written with another configuration."""


def config_identity(cfg, ignore=NOT_IDENTITY) -> dict:
    """The keys of ``cfg`` that decide a run's result, flattened (see :data:`NOT_IDENTITY`)."""
    return drop_keys(flatten(to_dict(cfg)), ignore)


def drop_keys(flat: dict, ignore) -> dict:
    """``flat`` (dotted key -> value) without the keys in ``ignore`` and the keys below them."""
    return {k: v for k, v in flat.items() if not any(k == i or k.startswith(i + ".") for i in ignore)}


def other_method_sections(cfg, base) -> tuple[str, ...]:
    """The config sections of ``cfg`` (a ``base`` dataclass extended with one section per registered
    method) that belong to methods other than ``cfg.method``: a run's result never depends on
    them, so its identity leaves them out (a CE teacher is the same run whatever ``gtn.alpha``)."""
    import dataclasses

    own = {f.name for f in dataclasses.fields(base)}
    return tuple(sorted({f.name for f in dataclasses.fields(cfg)} - own - {cfg.method}))


def fingerprint(identity: dict) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


def identity_diff(old: dict, new: dict) -> list[tuple[str, Any, Any]]:
    """``[(key, run's value, this value), ...]`` for every key that differs."""
    keys = sorted(set(old) | set(new))
    missing = object()
    out = []
    for k in keys:
        a, b = old.get(k, missing), new.get(k, missing)
        if a != b:
            out.append((k, None if a is missing else a, None if b is missing else b))
    return out


def describe_diff(diff) -> str:
    shown = [f"{k} = {json.dumps(a, default=str)} in the run, {json.dumps(b, default=str)} now"
             for k, a, b in diff[:8]]
    more = f" (and {len(diff) - 8} more)" if len(diff) > 8 else ""
    return "; ".join(shown) + more


@dataclass
class RunMethod:
    """What a kind of run supplies to :func:`run_training`.

    ``build(cfg, splits, loaders, device, world) -> TrainTask`` builds the task (the lifecycle has
    seeded every generator with ``cfg.seed`` first). ``identity(cfg) -> dict`` is the run's identity
    (default :func:`config_identity`; a method may drop keys that do not matter to it and add what
    else its result depends on). ``saved_config(cfg)`` is the configuration
    written to ``config.yaml`` (default ``cfg``; e.g. with a student file resolved to its
    architecture).
    ``check(cfg)`` refuses combinations no single key can reject; ``check_inputs(cfg)`` refuses
    missing or unfinished runs this run reads (a distillation's teacher, a warm start's source);
    ``check_data(cfg, splits)`` refuses what only the loaded data can tell (e.g. a cost target the
    space cannot reach for the data's input size). All run before any file is written
    (:meth:`check_config`, then :meth:`check_loaded` once the data is loaded).
    ``verify(rd, result)`` (optional) lists what is wrong with a finished run beyond what the
    lifecycle checks (a search's student folders): a finished run with problems is finished again
    from its checkpoint instead of being reused.
    """

    kind: str
    build: Callable[..., TrainTask]
    identity: Optional[Callable[[Any], dict]] = None
    saved_config: Optional[Callable[[Any], Any]] = None
    check: Optional[Callable[[Any], None]] = None
    check_inputs: Optional[Callable[[Any], None]] = None
    check_data: Optional[Callable[[Any, Any], None]] = None
    verify: Optional[Callable[[RunDirectory, dict], list]] = None

    def identity_of(self, cfg) -> dict:
        """The run's identity: :attr:`identity` or, by default, :func:`config_identity`."""
        return self.identity(cfg) if self.identity is not None else config_identity(cfg)

    def check_config(self, cfg, inputs: bool = True) -> None:
        """What the configuration alone refuses: :attr:`check`, ``train.device`` a device this
        process can use, and (``inputs``) :attr:`check_inputs`. A job that has not trained a run's
        inputs yet checks them later (``inputs=False``)."""
        if self.check is not None:
            self.check(cfg)
        problem = distributed.device_problem(cfg.train.device)
        if problem is not None:
            raise ConfigError.for_key("train.device", problem)
        if inputs and self.check_inputs is not None:
            self.check_inputs(cfg)

    def check_loaded(self, cfg, splits) -> None:
        """What the loaded data lets refuse: :attr:`check_data`, and every model section of the
        configuration buildable for the data (:func:`check_models`)."""
        if self.check_data is not None:
            self.check_data(cfg, splits)
        check_models(cfg, splits)

    def execute(self, cfg, spec) -> tuple[dict, bool]:
        """The run of ``spec`` (a :class:`~.runs.RunSpec` of this kind, ``cfg`` its configuration)
        through the lifecycle, quietly: ``(result, reused)``."""
        return _run(cfg, self, spec.run_dir, mode=spec.mode, verbose=False, job=spec.job)


def default_loaders(cfg, splits, device, world) -> Loaders:
    """Train (shuffled, augmented as ``data.augment`` says, sharded), val and test loaders."""
    from ..data import loaders_for

    train, val, test = loaders_for(splits, cfg.train.batch_size, device, seed=cfg.seed,
                                   augment=cfg.data.augment, rank=world.rank, world_size=world.world_size)
    return Loaders(train, val, test)


def model_sections(cfg, prefix: str = ""):
    """``(dotted key, ModelConfig)`` of every model section of ``cfg`` (``model``, ``student``,
    ``sftn.student``, ...), found by walking its sections."""
    import dataclasses

    from ..models.config import ModelConfig

    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name, None)
        if isinstance(value, ModelConfig):
            yield prefix + f.name, value
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            yield from model_sections(value, prefix + f.name + ".")


def check_models(cfg, splits) -> None:
    """Every model section of ``cfg`` names a network that can be built for the data (its classes
    and input size): the zoo name and options, or the space and architecture. Built on the meta
    device (no memory, no weights fetched); refused as the section's key."""
    import torch

    from ..network.record import ModelRecord

    for key, model_cfg in model_sections(cfg):
        try:
            record = ModelRecord.from_config(model_cfg, splits.num_classes, splits.input_size, key)
            with torch.device("meta"):
                record.build(for_weights=True)
        except ConfigError as err:
            raise err if err.key else ConfigError(f"config key {key!r}: {err}", key) from None
        except (ValueError, TypeError, KeyError, FileNotFoundError, ImportError) as err:
            field = ("options" if isinstance(err, TypeError) and model_cfg.options else
                     "name" if model_cfg.arch is None else "arch")
            raise ConfigError(f"config key {f'{key}.{field}'!r}: cannot build the network: {err}",
                              f"{key}.{field}") from None


def declared_artifacts(task: TrainTask) -> tuple[str, ...]:
    """The files ``task`` declares its :meth:`~.task.TrainTask.save_artifacts` writes."""
    return check_artifact_names(task.artifacts, f"{type(task).__name__}.artifacts")


class RunFolder:
    """The run folder as the lifecycle hands it to the :class:`~.trainer.Trainer`: where the
    checkpoint goes, the metrics log of the epochs to train, and the finish. Everything about the
    folder is decided before (:func:`run_training`); only rank 0 writes (``writes``)."""

    def __init__(self, rd: RunDirectory, writes: bool = True):
        self.rd, self.writes = rd, writes

    @classmethod
    def at(cls, path) -> "RunFolder":
        """The folder ``path`` for a :class:`~.trainer.Trainer` used from Python, without the
        lifecycle (no lock, no ``run.json``, nothing reused or refused): the trainer continues from
        a checkpoint there, or starts. Only rank 0 writes. :func:`run_training` is the API that
        decides what a folder holds."""
        is_main = distributed.world().is_main
        if is_main:
            Path(path).mkdir(parents=True, exist_ok=True)
        return cls(RunDirectory(path), writes=is_main)

    @property
    def path(self) -> Path:
        return self.rd.path

    @property
    def checkpoint_path(self) -> Path:
        return self.rd.path / "last.ckpt"

    def begin(self, start_epoch: int) -> Optional[MetricsLog]:
        """Before training the epochs after ``start_epoch``: the metrics log (rows up to
        ``start_epoch`` kept), with the result of an earlier finish removed, which must not pass for
        this run."""
        if not self.writes:
            return None
        self.rd.clear_result()
        return MetricsLog(self.rd.path, start_epoch)

    def finish(self, task: TrainTask, result: dict, weights: dict) -> dict:
        """Write ``weights`` (their digest into ``result``), ``model.json``, the task's artifacts
        (each declared name must then exist) and ``result.json`` last; return ``result``."""
        if not self.writes:
            return result
        path = self.rd.path
        result["instability"] = run_health(task, path)
        result["weights_sha256"] = write_weights(path / "model.safetensors", weights)
        record = task.model_record()
        if record is not None:
            record.write(path)  # model.json, and code/ for custom ops
        names = declared_artifacts(task)
        task.save_artifacts(path)
        missing = [n for n in names if not (path / n).exists()]
        if missing:
            raise RuntimeError(f"{type(task).__name__} declares the artifacts {missing} (its `artifacts`) but "
                               f"its save_artifacts did not write them into {path}")
        self.rd.write_result(result)
        return result


def run_health(task: TrainTask, path: Path) -> list:
    """The instability events of the run in ``path`` (:mod:`.health`), from its metrics rows."""
    from .health import instability
    from .rundir import read_metrics

    try:
        rows = read_metrics(path)
    except (OSError, ValueError):
        return []
    record = task.model_record()
    num_classes = getattr(record, "num_classes", None)
    ce_key = None if task.ce_log is None else f"train_{task.ce_log}"
    return instability(rows, num_classes, ce_key, task.logit_std_metric)


@contextmanager
def holding(rd: RunDirectory, disk_full: Callable[[OSError], OSError]):
    """Hold ``rd``'s lock (already taken) for the block, then release it; a full disk in the block
    becomes ``disk_full(err)``, one paragraph saying what is kept and how to continue."""
    try:
        yield rd
    except OSError as err:
        if is_disk_full(err):
            raise disk_full(err) from None
        raise
    finally:
        rd.unlock()


def write_run_files(rd: RunDirectory, manifest: dict, saved_config) -> None:
    """A run's (or the main job's) ``run.json`` and ``config.yaml``, written once nothing can refuse it."""
    rd.write_manifest(manifest)
    save_yaml(saved_config, rd.path / "config.yaml")


def run_training(cfg, method: RunMethod, run_dir=None, mode: str = "resume", splits=None,
                 device=None, world=None, verbose: bool = True) -> dict:
    """Run (or reuse) the run ``cfg`` describes in ``run_dir``; return its result.

    ``run_dir=None`` trains without writing anything. ``splits``: an already loaded dataset
    (default: ``cfg.data``). See the module docstring for ``mode``. Fresh and reused runs return
    the same mapping: the content of ``result.json``.
    """
    return _run(cfg, method, run_dir, mode, splits, device, world, verbose)[0]


def _run(cfg, method: RunMethod, run_dir=None, mode: str = "resume", splits=None, device=None, world=None,
         verbose: bool = True, job=None) -> tuple[dict, bool]:
    """:func:`run_training`, and whether the result is a finished run's, reused."""
    if mode not in MODES:
        raise ValueError(f"run mode must be one of {MODES}, got {mode!r}")
    method.check_config(cfg)
    world = world or distributed.world()
    device = runtime(cfg.train.device, cfg.train.threads, world, device)
    if splits is None:
        splits = cfg.data.load()  # missing files are refused before the folder is touched
    method.check_loaded(cfg, splits)
    if run_dir is None:
        return _train(cfg, method, None, splits, device, world, verbose), False
    rd = RunDirectory(run_dir)
    if not world.is_main:  # rank 0 prepares the folder and says whether there is work
        decision = distributed.broadcast_object(None)
        if "error" in decision:
            raise RuntimeError(f"rank 0 stopped: {decision['error']}")
        if decision["reused"] is not None:
            return decision["reused"], True
        return _train(cfg, method, rd, splits, device, world, verbose, mode=mode), False
    try:
        rd.lock(job=job)
        identity = method.identity_of(cfg)  # rank 0 only (a distillation's hashes its teacher's weights)
        plan = _decide(cfg, method, rd, identity, mode)
    except Exception as err:
        rd.unlock()
        if world.distributed:
            distributed.broadcast_object({"error": str(err)})
        raise
    with holding(rd, lambda err: disk_full_error(err, rd)):
        reused = plan.get("reused")
        if world.distributed:
            distributed.broadcast_object({"reused": reused})
        if reused is not None:
            if verbose:
                print(f"{rd.path}: finished run reused (same configuration)", flush=True)
            return reused, True
        return _train(cfg, method, rd, splits, device, world, verbose, plan=plan, mode=mode), False


def disk_full_error(err: OSError, rd: "RunDirectory") -> OSError:
    """One paragraph for a full disk during a run: the folder, what is kept, how to continue."""
    epoch = rd.checkpoint_epoch()
    failed = f"{err.filename} could not be written" if err.filename else "a write failed"
    if epoch:
        kept, then = (f"its last good checkpoint, last.ckpt (epoch {epoch}), and the files written before are "
                      "kept unchanged"), f"continues from epoch {epoch}"
    else:
        kept, then = "no epoch was checkpointed yet; the files written before are kept", "starts at epoch 1"
    return reworded(err, f"no space left on the device holding the run folder {rd.path}: {failed}. The run "
                         f"stopped; {kept}, and no partial file is left. Free some space, then run the same "
                         f"command again with --resume: the run {then}", err.filename or rd.path)


def _decide(cfg, method: RunMethod, rd: RunDirectory, identity: dict, mode: str) -> dict:
    """Decide what happens in ``rd`` (holding its lock), writing nothing: ``{"reused": result}``
    for a reusable run, else what :func:`_commit` writes (``wipe``, ``clear_result``, ``amendments``,
    ``set_aside``) before training."""
    plan: dict = {"identity": identity, "amendments": [], "wipe": False, "clear_result": False,
                  "set_aside": False}
    ckpt = rd.path / "last.ckpt"
    unreadable = ckpt.is_file() and rd.checkpoint_epoch() is None
    if mode == "restart" or (not rd.holds_run() and rd.present()):
        # (a folder whose run never trained an epoch holds nothing to keep)
        return _start_over(plan, unreadable)
    if not rd.holds_run():
        return plan
    if mode == "new":
        raise FileExistsError(
            f"{rd.path} already holds a run ({', '.join(rd.present())}); continue or reuse it with "
            "--resume, start it over with --restart, or choose another --out-dir")
    recorded = _recorded_run(rd, method, mode, unreadable)
    if recorded is None:  # cannot be continued: start over
        return _start_over(plan, unreadable)
    old, plan["amendments"] = recorded
    diff = identity_diff(old, identity)
    if not diff:
        done = rd.finished_result()
        problems = method.verify(rd, done) if done is not None and method.verify is not None else []
        if done is not None and not problems:
            return {"reused": done}
        if problems:  # finished, but not as it says: finished again from its checkpoint
            print(f"{rd.path}: {problems[0]}; the run is finished again from its checkpoint", file=sys.stderr,
                  flush=True)
            plan["clear_result"] = True
    elif mode == "update":
        plan.update(wipe=True, amendments=[])
    elif mode == "amend":
        plan["amendments"].append({"at_epoch": rd.checkpoint_epoch() or 0,
                                   "time": time.strftime("%Y-%m-%d %H:%M:%S"),
                                   "changed": {k: [a, b] for k, a, b in diff}})
        plan["clear_result"] = True
    else:
        raise ConfigMismatch(
            f"{rd.path} was written with another configuration: {describe_diff(diff)}. Rerun with "
            "the run's values, choose another --out-dir for the new ones, continue this run with "
            "--resume --amend (the change is recorded), or start it over with --restart")
    return plan


def _start_over(plan: dict, unreadable: bool) -> dict:
    plan.update(wipe=True, set_aside=unreadable and "is unreadable")
    return plan


def _recorded_run(rd: RunDirectory, method: RunMethod, mode: str, unreadable: bool):
    """``(identity, amendments)`` that ``run.json`` records for the run in ``rd``; None when (the
    main job's ``update``) the run cannot be continued: a damaged ``run.json`` or ``metrics.jsonl``,
    none at all, or an unreadable checkpoint."""
    try:
        manifest = rd.read_manifest()
    except ValueError:
        if mode != "update":
            raise
        return None
    if mode == "update" and (unreadable or manifest is None or rd.damaged_metrics()):
        return None
    if manifest is None:
        if mode != "amend":
            raise ConfigMismatch(
                f"{rd.path} holds a run without run.json (written by an earlier version or another "
                "tool), so its configuration cannot be checked; continue it with --resume --amend "
                "(taking this configuration), start it over with --restart, or use another --out-dir")
        return {}, []
    if manifest.get("kind") not in (None, method.kind):
        raise ConfigMismatch(f"{rd.path} holds a {manifest.get('kind')} run, not a {method.kind} "
                             "run; use another --out-dir")
    return manifest.get("identity") or {}, list(manifest.get("amendments") or [])


def _commit(cfg, method: RunMethod, rd: RunDirectory, plan: dict, task: TrainTask) -> None:
    """Write what :func:`_decide` planned (``task`` was built: nothing refused the run); ``run.json``
    lists the files the task declares it writes."""
    artifacts = declared_artifacts(task)
    if plan["set_aside"]:
        aside = rd.set_aside("last.ckpt", "unreadable" if "unreadable" in plan["set_aside"] else "unused")
        print(f"{rd.path / 'last.ckpt'} {plan['set_aside']}: moved aside to {aside}; the run starts over",
              file=sys.stderr, flush=True)
    if plan["wipe"]:
        rd.wipe(artifacts)  # (and those the run's run.json lists)
    if plan["clear_result"]:
        rd.clear_result()
    from ..version import __version__

    identity = plan["identity"]
    write_run_files(rd, {"kind": method.kind, "fingerprint": fingerprint(identity), "identity": identity,
                         "amendments": plan["amendments"], "artifacts": list(artifacts),
                         "nasdistill": __version__},
                    method.saved_config(cfg) if method.saved_config is not None else cfg)


def _build(cfg, method: RunMethod, splits, device, world) -> tuple[TrainTask, Loaders]:
    seed_everything(cfg.seed)
    loaders = default_loaders(cfg, splits, device, world)
    return method.build(cfg, splits, loaders, device, world), loaders


def _fit(cfg, task: TrainTask, loaders: Loaders, folder: Optional[RunFolder], device, verbose: bool) -> dict:
    return Trainer(cfg.train, task, loaders.train, loaders.val, seed=cfg.seed, test_loader=loaders.test,
                   device=device, verbose=verbose, folder=folder).fit()


def _train(cfg, method: RunMethod, rd: Optional[RunDirectory], splits, device, world, verbose: bool,
           plan: Optional[dict] = None, mode: str = "resume") -> dict:
    task, loaders = _build(cfg, method, splits, device, world)
    if rd is not None:
        if plan is not None:  # rank 0
            _commit(cfg, method, rd, plan, task)
        distributed.barrier()  # every rank sees the folder as rank 0 left it
    folder = RunFolder(rd, writes=world.is_main) if rd is not None else None
    try:
        result = _fit(cfg, task, loaders, folder, device, verbose)
    except UnusableCheckpoint:
        if rd is None or mode != "update":
            raise
        # the main job's --restart: a checkpoint this model or method cannot use is moved aside
        # and the run starts over (the task, partly loaded from it, is built again)
        if plan is not None:
            _commit(cfg, method, rd, {**plan, "set_aside": "cannot be used by this run's model or method",
                                      "wipe": True, "clear_result": False, "amendments": []}, task)
        distributed.barrier()
        task, loaders = _build(cfg, method, splits, device, world)
        result = _fit(cfg, task, loaders, folder, device, verbose)
    if rd is not None:
        saved = rd.read_result()
        if saved is not None:
            return saved
    return result


__all__ = ["ConfigMismatch", "MODES", "NOT_IDENTITY", "RunFolder", "RunMethod", "config_identity",
           "declared_artifacts", "default_loaders", "disk_full_error", "fingerprint", "holding",
           "identity_diff", "run_training", "write_run_files"]
