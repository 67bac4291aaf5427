"""Measure what cached teacher logits save: KD on digits with and without `cache_teacher_logits`.

    python examples/bench_teacher_cache.py                       # trains a resnet8x4 teacher first
    python examples/bench_teacher_cache.py --teacher runs/digits_teacher --epochs 2 --repeats 3

Both runs train the same student (an architecture of the digits_small space) with KD for
``--epochs`` epochs from the same seed; the cached run adds one teacher pass over the train split
(reported separately, and included in its total). Each configuration is run ``--repeats`` times and
the fastest is kept (the machine may be shared). Printed: training time (epochs, incl. evaluation)
and total time (incl. the cache build) of both, and the ratios cached / live.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
from pathlib import Path

import torch

STUDENT_ARCH = {"layer1": "k3_d2", "layer2": "identity", "layer3": "k3_d2", "layer4": "identity",
                "layer5": "k3_d2", "layer6": "identity"}


def train_teacher(out: Path, model: str) -> Path:
    from nasdistill.cli import main

    rc = main(["teacher", f"model.name={model}", "train.epochs=1", "train.batch_size=128",
               "train.lr=0.1", "--out-dir", str(out)])
    if rc != 0:
        raise SystemExit(f"teacher training failed (exit {rc})")
    return out


def timed_run(cfg, splits) -> dict:
    from nasdistill.distill.runner import run_distill

    t0 = time.perf_counter()
    result = run_distill(cfg, None, splits=splits, device="cpu", verbose=False)
    result["total_s"] = time.perf_counter() - t0
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", default=None, help="teacher run dir (default: train one)")
    parser.add_argument("--teacher-model", default="resnet8x4", help="zoo model of the trained teacher")
    parser.add_argument("--method", default="kd", choices=["kd", "dkd"])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch default)")
    args = parser.parse_args()

    os.environ.setdefault("NASDISTILL_PROGRESS", "0")
    os.environ.setdefault("NASDISTILL_TENSORBOARD", "0")
    if args.threads:
        torch.set_num_threads(args.threads)
    from nasdistill.data import load_dataset
    from nasdistill.distill.config import DistillConfig
    from nasdistill.models.config import ModelConfig
    from nasdistill.engine import TrainConfig

    with tempfile.TemporaryDirectory() as tmp:
        teacher = Path(args.teacher) if args.teacher else train_teacher(Path(tmp) / "teacher",
                                                                        args.teacher_model)
        splits = load_dataset("digits", seed=0)
        base = DistillConfig(
            teacher=str(teacher), method=args.method,
            student=ModelConfig(space="digits_small", arch=dict(STUDENT_ARCH)),
            train=TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=0.05,
                              schedule="cosine", milestones=[], device="cpu"))
        runs = {}
        for cached in (False, True):
            cfg = dataclasses.replace(base, cache_teacher_logits=cached)
            best = min((timed_run(cfg, splits) for _ in range(args.repeats)),
                       key=lambda r: r["total_s"])
            runs[cached] = best
    live, cache = runs[False], runs[True]
    print(f"threads {torch.get_num_threads()}, teacher {teacher if args.teacher else args.teacher_model}, "
          f"method {args.method}, {args.epochs} epochs, batch {args.batch_size}, "
          f"{len(splits.train)} train images, best of {args.repeats}")
    print(f"live teacher : train {live['wall_time_s']:.3f} s, total {live['total_s']:.3f} s, "
          f"test acc {live['test_acc']:.2f}")
    print(f"cached logits: train {cache['wall_time_s']:.3f} s, total {cache['total_s']:.3f} s "
          f"(cache build {cache['teacher_cache_build_s']:.3f} s), test acc {cache['test_acc']:.2f}")
    print(f"ratio cached/live: train {cache['wall_time_s'] / live['wall_time_s']:.3f}, "
          f"total {cache['total_s'] / live['total_s']:.3f}")


if __name__ == "__main__":
    main()
