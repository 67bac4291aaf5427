"""The training engine: configuration, one run lifecycle, one training loop, run directories.

- :mod:`.config`: the train section; re-exports the config parser (:mod:`nasdistill.config`) and the
  data and model sections (:mod:`nasdistill.data.config`, :mod:`nasdistill.models.config`).
- :mod:`.run`: :func:`run_training`, the lifecycle every run goes through (lock, configuration
  identity, reuse/resume/restart, data, seed, build, fit, finish, result).
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
from .cli_args import add_config_arguments, config_from_args, run_mode
from .config import ConfigError, DataConfig, ModelConfig, TrainConfig, load_config, save_yaml, to_dict
from .distributed import World, init_distributed, resolve_device, sync_gradients, world
from .optim import build_optimizer, lr_at
from .precision import autocast_for
from .run import ConfigMismatch, RunMethod, run_training
from .rundir import RunDirectory, RunLocked, read_metrics, read_result
from .task import Loaders, StepContext, StepOutput, TrainTask
from .trainer import Trainer, apply_step, evaluate

__all__ = [
    "ConfigError", "ConfigMismatch", "DataConfig", "Loaders", "ModelConfig", "RunDirectory", "RunLocked",
    "RunMethod", "StepContext", "StepOutput", "TrainConfig", "TrainTask", "Trainer", "World",
    "add_config_arguments", "apply_step", "autocast_for", "build_optimizer", "config_from_args",
    "evaluate", "init_distributed", "load_checkpoint", "load_config", "lr_at", "read_metrics",
    "read_result", "resolve_device", "run_mode", "run_training", "save_checkpoint", "save_yaml", "seed_everything",
    "sync_gradients", "to_dict", "world",
]
