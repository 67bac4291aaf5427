"""Pool throughput: the same N small distillations with 1, 2, 4, 8 runs on each GPU at a time.

A study at the papers' scale is hundreds of independent small runs; one resnet8-class student at
batch 64 keeps a large GPU a few percent busy, so several runs per GPU should multiply the runs
finished per hour. This bench measures it with the main job's own machinery: one CE teacher is
trained once, then for each ``--runs-per-gpu k`` the same ``--runs`` KD distillations (student
``--student``, each its own seed, ``--epochs`` epochs of ``--n-train`` synthetic images of CIFAR
size by default) go through the local backend's worker processes, ``k`` per visible GPU, each
pinned to its GPU (:mod:`nasdistill.pipeline.placement`); on a machine without a GPU, ``k``
worker processes on the CPU (``--threads`` each). Printed per k: wall seconds, runs per hour and
the ratio to k = 1 (the first value of ``--runs-per-gpu``); ``--json``: the figures on the last line.

    nasdistill bench pool                                     # 16 runs, k = 1 2 4 8, on every GPU
    nasdistill bench pool --runs 4 --runs-per-gpu 1 2 --n-train 256 --size 8 --channels 1 --epochs 1
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from ..registry import register

HELP = "pool throughput: N small distillations with 1, 2, 4, 8 runs per GPU (runs per hour)"


def add_arguments(parser) -> None:
    parser.add_argument("--runs", type=int, default=16, help="distillations per setting (default 16)")
    parser.add_argument("--runs-per-gpu", type=int, nargs="+", default=[1, 2, 4, 8],
                        help="runs on each GPU at a time (on a CPU: worker processes); default 1 2 4 8")
    parser.add_argument("--student", default="resnet8")
    parser.add_argument("--teacher", default="resnet8")
    parser.add_argument("--epochs", type=int, default=2, help="epochs of each distillation")
    parser.add_argument("--n-train", type=int, default=5000, help="synthetic training images")
    parser.add_argument("--size", type=int, default=32, help="image side (default 32, CIFAR)")
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--num-classes", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of each run")
    parser.add_argument("--out", default=None, help="folder of the runs (default: a temporary one)")
    parser.add_argument("--json", action="store_true")


def _check(args) -> None:
    if args.runs < 1 or not args.runs_per_gpu or min(args.runs_per_gpu) < 1:
        raise ValueError("bench pool: --runs and every --runs-per-gpu value must be >= 1")


def run(args) -> int:
    from ..data.config import DataConfig
    from ..distill import distill_config_class
    from ..engine import TrainConfig
    from ..engine.runs import RunSpec
    from ..models.config import ModelConfig
    from ..pipeline.placement import describe, visible_gpus, worker_envs
    from ..pipeline.workers import JobPool
    from ..teachers import teacher_config_class
    from ..teachers.runner import run_teacher

    _check(args)
    gpus = visible_gpus()
    data = DataConfig(name="synthetic", val_size=0, augment=False,
                      options={"num_classes": args.num_classes, "size": args.size, "channels": args.channels,
                               "n_train": args.n_train, "n_test": 500})
    train = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=0.05, schedule="cosine", milestones=[],
                        threads=args.threads, device="auto")
    with tempfile.TemporaryDirectory(prefix="nasdistill-pool-") as tmp:
        root = Path(args.out) if args.out else Path(tmp)
        teacher_dir = root / "teacher"
        tcfg = teacher_config_class()(seed=0, method="ce", model=ModelConfig(name=args.teacher), data=data,
                                      train=TrainConfig(**{**train.__dict__, "epochs": 1}))
        run_teacher(tcfg, teacher_dir, mode="resume", verbose=False)
        dcls = distill_config_class()
        rows = []
        for k in args.runs_per_gpu:
            n = len(gpus) * k if gpus else k
            specs = [RunSpec.of("distill", dcls(seed=i, teacher=str(teacher_dir), method="kd",
                                                student=ModelConfig(name=args.student), data=data, train=train,
                                                cache_teacher_logits=False),
                                root / f"k{k}" / f"run{i}", mode="restart", threads=args.threads)
                     for i in range(args.runs)]
            t0 = time.perf_counter()
            with JobPool(n, worker_envs(n, gpus, k)) as pool:
                results = pool.submit(specs).wait()
            wall = time.perf_counter() - t0
            rows.append({"runs_per_gpu": k, "workers": n, "placement": describe(n, gpus, k), "wall_s": wall,
                         "runs_per_hour": args.runs / wall * 3600,
                         "test_acc": sum(r["test_acc"] for r in results) / len(results)})
    base = rows[0]["runs_per_hour"]
    where = f"{len(gpus)} GPU{'s' if len(gpus) != 1 else ''}" if gpus else "the CPU (no GPU visible)"
    print(f"{args.runs} KD runs of {args.student} from {args.teacher} ({args.epochs} epochs of {args.n_train} "
          f"{args.channels}x{args.size}x{args.size} images, batch {args.batch_size}) on {where}:\n")
    print("| runs per GPU | workers | wall (s) | runs per hour | vs first |")
    print("|---|---|---|---|---|")
    for r in rows:
        r["ratio"] = r["runs_per_hour"] / base
        print(f"| {r['runs_per_gpu']} | {r['workers']} | {r['wall_s']:.1f} | {r['runs_per_hour']:.0f} | "
              f"{r['ratio']:.2f}x |")
    if args.json:
        print(json.dumps({"gpus": len(gpus), "runs": args.runs, "rows": rows}))
    return 0


register("bench", "pool", run, help=HELP, arguments=add_arguments, doc=__doc__)
