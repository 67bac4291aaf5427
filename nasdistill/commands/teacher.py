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

from ..engine.checkpoint import seed_everything
from ..engine.config import add_config_arguments, config_from_args, save_yaml
from ..engine.distributed import barrier, init_distributed, shutdown_distributed
from ..engine.modelspec import build_model, model_record, save_model_record
from ..engine.rundir import prepare_run_dir
from ..engine.trainer import Trainer

HELP = "train a teacher (cross-entropy; other methods as registered)"


def add_arguments(parser) -> None:
    add_config_arguments(parser)


def run(args) -> int:
    from ..teachers import get_teacher, teacher_config_class

    cfg = config_from_args(teacher_config_class(), args)
    method = get_teacher(cfg.method)
    world, device = init_distributed(cfg.train.device)
    try:
        run_dir = prepare_run_dir(cfg.out_dir, resume=args.resume, is_main=world.is_main)
        barrier()  # every rank has checked the directory before rank 0 writes into it
        from ..data import load_dataset, loaders_for

        d = cfg.data
        splits = load_dataset(d.name, root=d.root, seed=d.split_seed, val_size=d.val_size)
        seed_everything(cfg.seed)
        model = build_model(cfg.model, splits.num_classes, splits.input_size)
        task = method.task_factory(cfg, model, splits)
        if world.is_main and not (run_dir / "config.yaml").exists():
            save_yaml(cfg, run_dir / "config.yaml")
            save_model_record(run_dir, model_record(cfg.model, splits.num_classes, splits.input_size))
        train, val, test = loaders_for(splits, cfg.train.batch_size, device, seed=cfg.seed,
                                       augment=d.augment, rank=world.rank, world_size=world.world_size)
        result = Trainer(cfg.train, task, train, val, run_dir, seed=cfg.seed, resume=args.resume,
                         test_loader=test, device=device).fit()
        if world.is_main:
            print(json.dumps({k: v for k, v in result.items() if k != "run_dir"}))
            print(f"teacher written to {run_dir}")
    finally:
        shutdown_distributed()
    return 0
