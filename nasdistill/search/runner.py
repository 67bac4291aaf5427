"""Run a ProxylessNAS search end to end (used by `nasdistill search` and the pipeline)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..engine.checkpoint import seed_everything
from ..engine.config import save_yaml
from ..engine.trainer import Trainer
from ..space import load_space
from ..supernet import CostModel, Supernet
from .task import SearchTask


def space_for(name: str, splits):
    """The space ``name`` adapted to the dataset's classes and input size when it allows it."""
    try:
        return load_space(name, num_classes=splits.num_classes, input_size=tuple(splits.input_size))
    except ValueError as err:
        if "make_space" not in str(err):
            raise
        space = load_space(name)
        if space.num_classes != splits.num_classes or tuple(space.input_size) != tuple(splits.input_size):
            raise ValueError(f"space {name!r} is for {space.num_classes} classes and inputs "
                             f"{space.input_size}, the data has {splits.num_classes} classes and "
                             f"{tuple(splits.input_size)}; give the space a make_space(num_classes, "
                             f"input_size) function") from None
        return space


def run_search(cfg, run_dir: Optional[Path], resume: bool = False, splits=None, device=None,
               world=None, verbose: bool = True) -> dict:
    """Search with ``cfg`` (a :class:`~.config.SearchConfig`); return the result dictionary."""
    from ..data import DeviceLoader, load_dataset, loaders_for
    from ..engine import distributed

    world = world or distributed.world()
    device = device or distributed.resolve_device(cfg.train.device, world.local_rank)
    d = cfg.data
    if splits is None:
        splits = load_dataset(d.name, root=d.root, seed=d.split_seed, val_size=d.val_size)
    if len(splits.val) == 0 or splits.val is splits.test:
        raise ValueError(f"the search needs a held-out split for phi steps, but data {d.name!r} has no "
                         f"validation split of its own (phi must not be tuned on test data); set data.val_size, "
                         f"e.g. data.val_size=5000")
    s = cfg.search
    space = space_for(s.space, splits)
    cost_model = (CostModel.from_file(space, s.latency_table) if s.cost_metric == "latency"
                  else CostModel(space, s.cost_metric))
    seed_everything(cfg.seed)
    supernet = Supernet(space, mode=s.mode, seed=cfg.seed)
    train, _, test = loaders_for(splits, cfg.train.batch_size, device, seed=cfg.seed, augment=d.augment,
                                 rank=world.rank, world_size=world.world_size)
    val_arch = DeviceLoader(splits.val, cfg.train.batch_size, shuffle=True, augment=False,
                            mean=splits.mean, std=splits.std, device=device, seed=cfg.seed + 1,
                            rank=world.rank, world_size=world.world_size)
    _, val_eval, _ = loaders_for(splits, cfg.train.batch_size, device, seed=cfg.seed)
    task = SearchTask(supernet, s, val_arch, train, cost_model)
    if run_dir is not None and world.is_main and not (Path(run_dir) / "config.yaml").exists():
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        save_yaml(cfg, Path(run_dir) / "config.yaml")
    trainer = Trainer(cfg.train, task, train, val_eval, run_dir, seed=cfg.seed, resume=resume,
                      device=device, verbose=verbose)
    result = trainer.fit()
    if task.student is not None:
        from ..engine.trainer import evaluate

        result["student_test_acc_before_training"] = evaluate(task.student.to(device), test, device)["top1"]
    return result
