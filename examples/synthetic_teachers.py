"""Train CE, MSE, SoTeacher, SFTN and GTN teachers on `synthetic` data; compare them with the true posterior.

The synthetic dataset knows the exact Bayes posterior p(y|x) of every image, so a teacher can be
judged by what its students learn from: how close its softmax is to p(y|x) (MSE, KL), not only by
accuracy. Every teacher is built and trained through the teacher registry (the same factories as
`nasdistill teacher method=...`), with the same model, data, seed and schedule.

    python examples/synthetic_teachers.py              # 10 epochs each, a few minutes on 2 cores
    python examples/synthetic_teachers.py --quick      # 3 epochs, 1000 training images: a smoke run
    python examples/synthetic_teachers.py --epochs 30 --methods ce mse soteacher --json
"""
from __future__ import annotations

import argparse
import json
import os
import time

import torch

from nasdistill.analysis import evaluate_teacher_quality
from nasdistill.data import load_dataset, loaders_for
from nasdistill.engine import Trainer
from nasdistill.engine.checkpoint import seed_everything
from nasdistill.config import from_dict
from nasdistill.network.record import ModelRecord
from nasdistill.teachers import get_teacher, teacher_config_class


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=10, help="epochs per teacher (default 10)")
    p.add_argument("--quick", action="store_true", help="3 epochs on 1000 training images")
    p.add_argument("--methods", nargs="+", default=["ce", "mse", "soteacher", "sftn", "gtn"])
    p.add_argument("--model", default="resnet8", help="zoo model (built with 1 input channel)")
    p.add_argument("--n-train", type=int, default=2000)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="extra teacher config overrides, e.g. mse.reduction=sum_classes")
    p.add_argument("--json", action="store_true", help="also print the rows as one JSON line")
    return p.parse_args(argv)


def teacher_config(args, method: str, epochs: int):
    from nasdistill.config import apply_override

    data = {"seed": args.seed, "method": method, "model": {"name": args.model},
            "data": {"name": "synthetic", "split_seed": args.data_seed},
            "train": {"epochs": epochs, "batch_size": args.batch_size, "lr": args.lr,
                      "schedule": "cosine", "device": "cpu", "amp": "off", "threads": 1}}
    if method == "sftn":  # branches of one student of the digits_small pool
        from nasdistill.space import load_space

        data["sftn"] = {"student": {"space": "digits_small", "arch": load_space("digits_small").sample(seed=0)}}
    if method == "gtn":
        data["gtn"] = {"space": "digits_small"}
    for item in args.set:
        if item.split(".", 1)[0] in (method, "train", "model"):
            apply_override(data, item)
    return from_dict(teacher_config_class(), data)


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("NASDISTILL_PROGRESS", "0")
    epochs = 3 if args.quick else args.epochs
    n_train = 1000 if args.quick else args.n_train
    splits = load_dataset("synthetic", seed=args.data_seed, n_train=n_train)
    print(f"synthetic: {len(splits.train)} train / {len(splits.test)} test images "
          f"{splits.input_size}, {splits.num_classes} classes, sigma={splits.source_model.sigma:.3g}; "
          f"{args.model}, {epochs} epochs per teacher")
    rows = []
    for method in args.methods:
        cfg = teacher_config(args, method, epochs)
        seed_everything(cfg.seed)
        model = ModelRecord.from_config(cfg.model, splits.num_classes, splits.input_size).build()
        task = get_teacher(method).task_factory(cfg, model, splits)
        train, val, _ = loaders_for(splits, cfg.train.batch_size, "cpu", seed=cfg.seed)
        t0 = time.perf_counter()
        Trainer(cfg.train, task, train, val, seed=cfg.seed, device=torch.device("cpu"),
                verbose=False).fit()
        q = evaluate_teacher_quality(task.eval_model(), splits)
        rows.append({"method": method, "acc": q["accuracy"], "ece": q["ece"],
                     "mse": q["posterior_mse"], "kl": q["posterior_kl"],
                     "time_s": time.perf_counter() - t0})
        bayes_acc = q["bayes_accuracy"]
        print(f"  {method}: done in {rows[-1]['time_s']:.0f}s", flush=True)

    print(f"\nTest split ({len(splits.test)} images); Bayes-optimal accuracy {bayes_acc:.1f}%. "
          "MSE = mean_n sum_k (p_teacher - p_true)^2, KL = KL(p_true || p_teacher).")
    print(f"| {'teacher':<10} | {'acc %':>6} | {'ECE':>6} | {'MSE to p(y|x)':>13} | {'KL(p || teacher)':>16} |")
    print(f"|{'-' * 12}|{'-' * 8}|{'-' * 8}|{'-' * 15}|{'-' * 18}|")
    for r in rows:
        print(f"| {r['method']:<10} | {r['acc']:6.1f} | {r['ece']:6.3f} | {r['mse']:13.4f} | {r['kl']:16.4f} |")
    if args.json:
        print(json.dumps({"epochs": epochs, "n_train": n_train, "bayes_accuracy": bayes_acc, "rows": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
