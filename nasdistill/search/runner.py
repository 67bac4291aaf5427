"""Run a ProxylessNAS search end to end (used by `nasdistill search` and the main job)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from ..engine.run import RunMethod, run_training
from ..registry import register
from ..space import load_space
from ..space.cost import CostModel
from ..supernet import Supernet
from .checks import check_search_data
from .config import SearchConfig, target_folder
from .students import describe, read_students, student_problems
from .task import SearchTask


def build_search_task(cfg, splits, loaders, device, world) -> SearchTask:
    """The supernet of ``search.space`` (adapted to the data), its cost model and the task."""
    from ..data import DeviceLoader

    s = cfg.search  # (check_search_data refused data without a held-out split)
    space = load_space(s.space, splits.num_classes, splits.input_size)
    cost_model = (CostModel.from_file(space, s.latency_table) if s.cost_metric == "latency"
                  else CostModel(space, s.cost_metric))
    supernet = Supernet(space, mode=s.mode, seed=cfg.seed)
    # the held-out split, shuffled and sharded, feeds the phi steps (evaluation uses loaders.val)
    val_arch = DeviceLoader(splits.val, cfg.train.batch_size, shuffle=True, augment=False,
                            mean=splits.mean, std=splits.std, device=device, seed=cfg.seed + 1,
                            rank=world.rank, world_size=world.world_size)
    return SearchTask(supernet, s, val_arch, cost_model, seed=cfg.seed)


def _check(cfg) -> None:
    if cfg.search.targets is not None and not cfg.search.shared:
        raise ValueError("search.shared=false runs one search per target: call run_search (or "
                         "`nasdistill search`), which gives each target its own run in RUN_DIR/target_<T>/")


def _verify(rd, result) -> list[str]:
    """What is missing or differs in a finished search's student folders (the lifecycle checks that
    they exist; whether each student's weights match its own ``result.json`` is the search's to say)."""
    return student_problems(rd.path, result)


SEARCH_RUN = RunMethod("search", build_search_task, check=_check, check_data=check_search_data, verify=_verify)
register("run", "search", SEARCH_RUN, config=lambda: SearchConfig)


def separate_configs(cfg) -> list:
    """``search.shared=false``: the configuration of each target's own search (one target each)."""
    return [dataclasses.replace(cfg, search=dataclasses.replace(cfg.search, target=t, targets=None))
            for t in cfg.search.target_list()]


def run_search(cfg, run_dir=None, mode: str = "resume", splits=None, device=None, world=None,
               verbose: bool = True) -> dict:
    """Search with ``cfg`` (a :class:`~.config.SearchConfig`); return the result dictionary.

    ``search.target``: the run directory gets the extracted student (``model.safetensors`` +
    ``model.json``) and ``result.json`` (arch, arch_id, macs, params, cost_over_target, the argmax
    architecture beside it, phi, ...).

    ``search.targets``: each target's student goes to ``run_dir/target_<T>/`` (``model.json``,
    ``model.safetensors``, ``result.json``). With ``search.shared`` (default) the targets share one
    run (one supernet training) whose ``result.json`` lists the students under ``students``;
    otherwise each target is a run of its own in its folder, and the returned mapping lists their
    results the same way.
    """
    s = cfg.search
    if s.targets is not None and not s.shared:
        if run_dir is None:
            results = [run_training(c, SEARCH_RUN, None, mode=mode, splits=splits, device=device, world=world,
                                    verbose=verbose) for c in separate_configs(cfg)]
        else:
            results = [run_search(c, Path(run_dir) / target_folder(c.search.target), mode=mode, splits=splits,
                                  device=device, world=world, verbose=verbose) for c in separate_configs(cfg)]
        students = [{"folder": target_folder(t), **{k: v for k, v in r.items() if k != "phi"}}
                    for t, r in zip(s.target_list(), results)]
        return {"space": s.space, "cost_metric": s.cost_metric, "targets": s.target_list(),
                "tolerance": s.tolerance, "shared": False, "students": students,
                "wall_time_s": sum(r.get("wall_time_s") or 0.0 for r in results)}
    result = run_training(cfg, SEARCH_RUN, run_dir, mode=mode, splits=splits, device=device, world=world,
                          verbose=verbose)
    if verbose and (world is None or world.is_main):
        for entry in (read_students(run_dir, result) if s.targets is not None and run_dir is not None
                      else result.get("students") or [result]):
            if "arch_id" in entry:
                print(describe(entry), flush=True)
    return result


__all__ = ["SEARCH_RUN", "build_search_task", "run_search", "separate_configs"]
