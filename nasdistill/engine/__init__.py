"""The training engine: configuration, one training loop, run directories, checkpoints, ranks.

- :mod:`.config`: dataclass configs from YAML + ``key.sub=value`` overrides.
- :mod:`.task`: :class:`TrainTask` (what is trained), :class:`StepOutput`, :class:`StepContext`.
- :mod:`.trainer`: :class:`Trainer` (the loop) and :func:`evaluate`.
- :mod:`.optim`: SGD/Adam and the lr schedules.
- :mod:`.checkpoint`, :mod:`.rundir`: atomic checkpoints, metrics, result files.
- :mod:`.distributed`: torchrun support with manual gradient all-reduce.
- :mod:`.modelspec`: build a model from config, rebuild a run's model.
"""
from .checkpoint import load_checkpoint, save_checkpoint, seed_everything
from .config import (ConfigError, DataConfig, ModelConfig, TrainConfig, add_config_arguments,
                     config_from_args, load_config, save_yaml, to_dict)
from .distributed import World, init_distributed, resolve_device, sync_gradients, world
from .modelspec import build_model, load_model_record, model_record, save_model_record
from .optim import build_optimizer, lr_at
from .rundir import prepare_run_dir, read_metrics, read_result
from .task import StepContext, StepOutput, TrainTask
from .trainer import Trainer, evaluate

__all__ = [
    "ConfigError", "DataConfig", "ModelConfig", "StepContext", "StepOutput", "TrainConfig",
    "TrainTask", "Trainer", "World", "add_config_arguments", "build_model", "build_optimizer",
    "config_from_args", "evaluate", "init_distributed", "load_checkpoint", "load_config",
    "load_model_record", "lr_at", "model_record", "prepare_run_dir", "read_metrics", "read_result",
    "resolve_device", "save_checkpoint", "save_model_record", "save_yaml", "seed_everything",
    "sync_gradients", "to_dict", "world",
]
