"""Train a teacher network.

    nasdistill teacher CONFIG [key=value ...] [--out-dir DIR] [--resume]

The method is ``method=`` (ce, and mse/soteacher/sftn/gtn where installed); each method has its own
config section (e.g. ``ce.label_smoothing=0.1``). The run directory receives config.yaml,
model.json, metrics.csv/.jsonl, last.ckpt, model.safetensors and result.json; another command can
rebuild the trained teacher from it (``nasdistill distill teacher=RUN_DIR``).
Under ``torchrun --nproc_per_node N`` the global batch ``train.batch_size`` is split over ranks.

Example:
    nasdistill teacher examples/digits_teacher.yaml train.epochs=5 --out-dir runs/t1
"""
from __future__ import annotations

import json

from ..engine.config import add_config_arguments, config_from_args
from ..engine.distributed import init_distributed, shutdown_distributed
from ..engine.rundir import prepare_run_dir

HELP = "train a teacher (cross-entropy; other methods as registered)"


def add_arguments(parser) -> None:
    add_config_arguments(parser)


def run(args) -> int:
    from ..teachers import teacher_config_class
    from ..teachers.runner import run_teacher

    cfg = config_from_args(teacher_config_class(), args)
    world, device = init_distributed(cfg.train.device)
    try:
        run_dir = prepare_run_dir(cfg.out_dir, resume=args.resume, is_main=world.is_main)
        result = run_teacher(cfg, run_dir, resume=args.resume, device=device, world=world)
        if world.is_main:
            print(json.dumps({k: v for k, v in result.items() if k != "run_dir"}))
            print(f"teacher written to {run_dir}")
    finally:
        shutdown_distributed()
    return 0
