"""Discover a student with a cost-aware, path-binarized (ProxylessNAS) search.

    nasdistill search CONFIG [key=value ...] [--out-dir DIR] [--resume]

Weight steps of one sampled path alternate with phi steps (Adam, lr 1e-3, betas (0, 0.999)) on the
held-out split every `search.arch_every` steps after `search.warmup_epochs`. The loss is
`search.penalty` (mul#log or add#linear) of CE and the expected cost against `search.target`.
The run directory gets arch.json (the argmax architecture), result.json (arch, macs, params,
target_macs, ...), model.safetensors (the extracted student, BN recalibrated), metrics with the
expected cost and the phi entropy per label, and last.ckpt for --resume.

Example:
    nasdistill search examples/digits_search.yaml --out-dir runs/search1
"""
from __future__ import annotations

import json

from ..engine.config import add_config_arguments, config_from_args
from ..engine.distributed import init_distributed, shutdown_distributed
from ..engine.rundir import prepare_run_dir

HELP = "discover a student architecture with a ProxylessNAS search"


def add_arguments(parser) -> None:
    add_config_arguments(parser)


def run(args) -> int:
    from ..search import SearchConfig, run_search

    cfg = config_from_args(SearchConfig, args)
    world, device = init_distributed(cfg.train.device)
    try:
        run_dir = prepare_run_dir(cfg.out_dir, resume=args.resume, is_main=world.is_main)
        result = run_search(cfg, run_dir, resume=args.resume, device=device, world=world)
        if world.is_main:
            keys = ("arch", "arch_id", "macs", "params", "target_macs", "cost_over_target", "best_acc",
                    "student_test_acc_before_training")
            print(json.dumps({k: result.get(k) for k in keys}))
            print(f"search written to {run_dir}")
    finally:
        shutdown_distributed()
    return 0
