"""Train a teacher end to end (used by `nasdistill teacher` and the pipeline)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..engine.checkpoint import seed_everything
from ..engine.config import save_yaml
from ..engine.modelspec import build_model, model_record, save_model_record
from ..engine.trainer import Trainer
from .registry import get_teacher


def run_teacher(cfg, run_dir: Optional[Path], resume: bool = False, splits=None, device=None,
                world=None, verbose: bool = True) -> dict:
    """Train the teacher described by ``cfg`` (a ``teacher_config_class()`` instance).

    ``run_dir`` receives config.yaml, model.json, metrics, last.ckpt, model.safetensors (the plain
    teacher) and result.json; with ``resume`` an interrupted run continues and a finished one is
    returned as it is.
    """
    from ..data import load_dataset, loaders_for
    from ..engine import distributed

    method = get_teacher(cfg.method)
    world = world or distributed.world()
    device = device or distributed.resolve_device(cfg.train.device, world.local_rank)
    d = cfg.data
    if splits is None:
        splits = load_dataset(d.name, root=d.root, seed=d.split_seed, val_size=d.val_size)
    seed_everything(cfg.seed)
    model = build_model(cfg.model, splits.num_classes, splits.input_size)
    task = method.task_factory(cfg, model, splits)
    if run_dir is not None and world.is_main and not (Path(run_dir) / "config.yaml").exists():
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        save_yaml(cfg, Path(run_dir) / "config.yaml")
        save_model_record(run_dir, model_record(cfg.model, splits.num_classes, splits.input_size))
    train, val, test = loaders_for(splits, cfg.train.batch_size, device, seed=cfg.seed,
                                   augment=d.augment, rank=world.rank, world_size=world.world_size)
    result = Trainer(cfg.train, task, train, val, run_dir, seed=cfg.seed, resume=resume,
                     test_loader=test, device=device, verbose=verbose).fit()
    result["method"] = cfg.method
    return result
