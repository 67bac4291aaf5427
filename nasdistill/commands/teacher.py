"""Train a teacher network.

    nasdistill teacher CONFIG [key=value ...] [--out-dir DIR] [--resume [--amend] | --restart]

The method is ``method=`` (ce, mse, soteacher, sftn, gtn, and any registered method); each method
has its own config section (e.g. ``ce.label_smoothing=0.1``). The run directory receives
config.yaml, run.json, model.json, metrics.csv/.jsonl, last.ckpt, model.safetensors and
result.json; another command can rebuild the trained teacher from it
(``nasdistill distill teacher=RUN_DIR``, ``nasdistill.load(RUN_DIR)``).
Under ``torchrun --nproc_per_node N`` the global batch ``train.batch_size`` is split over ranks.

Example:
    nasdistill teacher examples/digits_teacher.yaml train.epochs=5 --out-dir runs/t1
    nasdistill teacher examples/digits_teacher.yaml method=gtn --out-dir runs/t_gtn
"""
from __future__ import annotations

import json

from ..engine.config import add_config_arguments, config_from_args, run_mode
from ..engine.distributed import init_distributed, shutdown_distributed

HELP = "train a teacher (ce, mse, soteacher, sftn, gtn)"


def add_arguments(parser) -> None:
    add_config_arguments(parser)


def run(args) -> int:
    from ..teachers import teacher_config_class
    from ..teachers.runner import run_teacher

    cfg = config_from_args(teacher_config_class(), args)
    mode = run_mode(args)
    world, device = init_distributed(cfg.train.device)
    try:
        result = run_teacher(cfg, cfg.out_dir, mode=mode, device=device, world=world)
        if world.is_main:
            print(json.dumps({k: v for k, v in result.items() if k not in ("run_dir", "student")}))
            print(f"teacher written to {cfg.out_dir}")
    finally:
        shutdown_distributed()
    return 0
