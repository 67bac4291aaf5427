"""Run a ProxylessNAS search end to end (used by `nasdistill search` and the main job)."""
from __future__ import annotations

from ..engine.run import RunMethod, run_training
from ..space import load_space
from ..supernet import CostModel, Supernet
from .task import SearchTask


def build_search_task(cfg, splits, loaders, device, world) -> SearchTask:
    """The supernet of ``search.space`` (adapted to the data), its cost model and the task."""
    from ..data import DeviceLoader

    d, s = cfg.data, cfg.search
    if len(splits.val) == 0 or splits.val is splits.test:
        raise ValueError(f"the search needs a held-out split for phi steps, but data {d.name!r} has no "
                         f"validation split of its own (phi must not be tuned on test data); set data.val_size, "
                         f"e.g. data.val_size=5000")
    space = load_space(s.space, splits.num_classes, splits.input_size)
    cost_model = (CostModel.from_file(space, s.latency_table) if s.cost_metric == "latency"
                  else CostModel(space, s.cost_metric))
    supernet = Supernet(space, mode=s.mode, seed=cfg.seed)
    # the held-out split, shuffled and sharded, feeds the phi steps (evaluation uses loaders.val)
    val_arch = DeviceLoader(splits.val, cfg.train.batch_size, shuffle=True, augment=False,
                            mean=splits.mean, std=splits.std, device=device, seed=cfg.seed + 1,
                            rank=world.rank, world_size=world.world_size)
    return SearchTask(supernet, s, val_arch, cost_model)


SEARCH_RUN = RunMethod("search", build_search_task)


def run_search(cfg, run_dir=None, mode: str = "resume", splits=None, device=None, world=None,
               verbose: bool = True) -> dict:
    """Search with ``cfg`` (a :class:`~.config.SearchConfig`); return the result dictionary.

    The run directory gets the extracted student (``model.safetensors`` + ``model.json``) and
    ``result.json`` (arch, arch_id, macs, params, cost_over_target, phi, ...).
    """
    return run_training(cfg, SEARCH_RUN, run_dir, mode=mode, splits=splits, device=device, world=world,
                        verbose=verbose)
