"""The training engine: configuration, one run lifecycle, one training loop, run directories.

- :mod:`.config`: the train section (the parser is :mod:`nasdistill.config`).
- :mod:`.run`: :func:`run_training`, the lifecycle every run goes through (lock, configuration
  identity, reuse/resume/restart, data, seed, build, fit, finish, result).
- :mod:`.runs`: :class:`RunSpec`, a run as data, and :func:`execute`, the one function every
  backend calls to run one (the ``run`` family of run kinds: search, teacher, distill, export).
- :mod:`.task`: :class:`TrainTask` (what is trained), :class:`StepOutput`, :class:`StepContext`,
  :class:`Loaders`.
- :mod:`.evaluation`: the one evaluation loop (:func:`~.evaluation.eval_batches`), :func:`evaluate`
  (top-1/top-5/loss) and BatchNorm recalibration.
- :mod:`.trainer`: :class:`Trainer` (the loop); :mod:`.meter` (on-device
  epoch sums, the non-finite guard); :mod:`.cuda_graphs` (whole-step capture); :mod:`.precision`.
- :mod:`.optim`: SGD/Adam and the lr schedules.
- :mod:`.checkpoint`, :mod:`.rundir`: atomic checkpoints, metrics, the run directory and its lock.
- :mod:`.distributed`: torchrun support (DDP for fixed models, one flat all-reduce for supernets).

The engine knows nothing of search spaces or model families: a method builds its task.
"""
from .checkpoint import load_checkpoint, save_checkpoint, seed_everything
from .config import TrainConfig
from .distributed import World, init_distributed, resolve_device, sync_gradients, world
from .optim import build_optimizer, lr_at
from .precision import autocast_for
from .run import ConfigMismatch, RunMethod, run_training
from .runs import RUNS, RunSpec, execute
from .rundir import RunDirectory, RunLocked, read_metrics, read_result
from .task import Loaders, StepContext, StepOutput, TrainTask
from .trainer import Trainer, apply_step, evaluate

__all__ = [
    "ConfigMismatch", "Loaders", "RUNS", "RunDirectory", "RunLocked", "RunMethod", "RunSpec", "StepContext", "StepOutput",
    "TrainConfig", "TrainTask", "Trainer", "World", "apply_step", "autocast_for", "build_optimizer", "evaluate",
    "execute", "init_distributed", "load_checkpoint", "lr_at", "read_metrics", "read_result", "resolve_device",
    "run_training", "save_checkpoint", "seed_everything", "sync_gradients", "world",
]
