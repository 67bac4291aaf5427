"""Do branch-trained teachers (GTN, SFTN) train stably? A grid of teacher runs on the synthetic task.

Each run is `nasdistill teacher` at the main job's teacher settings (SGD lr 0.1, cosine, 15 epochs,
batch 64) on the synthetic known-posterior task with 2,000 training images, for every zoo teacher
named, each method and each variant (a set of overrides, e.g. gradient clipping), over seeds.
Runs go to ``OUT/<model>/<method>_<variant>_s<seed>`` (a finished run is reused) on two worker
processes. Printed per (model, method, variant): the mean test accuracy and its range over seeds,
the runs the engine flagged as unstable (``result.json`` ``instability``: an epoch whose CE is far
above a uniform guess, a teacher whose logits or training accuracy collapsed), the highest teacher
CE and logit std of any epoch, and the sampled branches' training accuracy at the end.

    python examples/branch_teacher_stability.py --out runs/stability                       # the grid
    python examples/branch_teacher_stability.py --variants none="" clip1="train.clip_grad_norm=1"
    python examples/branch_teacher_stability.py --tiny --out /tmp/stab                      # ~1 min
"""
from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

DATA = {"name": "synthetic", "split_seed": 0, "augment": False, "val_size": 500,
        "options": {"num_classes": 10, "size": 8, "channels": 1, "n_train": 2000, "n_test": 5000,
                    "bayes_accuracy": 0.8, "smoothness": 1.0}}
TRAIN = {"epochs": 15, "batch_size": 64, "lr": 0.1, "schedule": "cosine", "milestones": [],
         "weight_decay": 5e-4, "threads": 1}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/stability")
    p.add_argument("--models", nargs="+", default=["resnet8", "vgg8", "resnet8x4"])
    p.add_argument("--methods", nargs="+", default=["gtn", "sftn"])
    p.add_argument("--variants", nargs="+", default=['none=train.clip_grad_norm=null'],
                   metavar="NAME=OVERRIDES", help="a name and space-separated key=value overrides")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--tiny", action="store_true", help="2 epochs on 400 images, one seed: a smoke run")
    return p.parse_args(argv)


def variants(items) -> dict:
    out = {}
    for item in items:
        name, _, overrides = item.partition("=")
        out[name] = [o for o in overrides.split() if o]
    return out


def payload(args, model: str, method: str, overrides: list, seed: int, run_dir: Path) -> dict:
    from nasdistill.config import apply_override, to_dict
    from nasdistill.config import from_dict
    from nasdistill.space import load_space
    from nasdistill.teachers import teacher_config_class

    data = {"seed": seed, "method": method, "model": {"name": model}, "data": json.loads(json.dumps(DATA)),
            "train": dict(TRAIN), "gtn": {"space": "digits_small", "phi_lr": 0.02}, "out_dir": str(run_dir),
            # SFTN grafts one student of the pool (the main job grafts its first student)
            "sftn": {"student": {"space": "digits_small",
                                 "arch": load_space("digits_small").sample(seed=0)}}}
    if args.tiny:
        data["train"]["epochs"] = 2
        data["data"]["options"].update(n_train=400, n_test=500)
        data["data"]["val_size"] = 100
    for item in overrides:
        apply_override(data, item)
    cfg = from_dict(teacher_config_class(), data)
    return {"kind": "teacher", "config": to_dict(cfg), "run_dir": str(run_dir), "mode": "resume", "threads": 1}


def summary(run_dir: Path) -> dict:
    from nasdistill.engine.health import instability

    result = json.loads((run_dir / "result.json").read_text())
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    last = rows[-1]
    # the health rule of this version, read off the metrics (runs written before it too)
    events = instability(rows, 10, "train_teacher_ce", "teacher_logit_std")
    return {"test_acc": result.get("test_acc"), "unstable": bool(events), "events": events,
            "max_teacher_ce": max((r.get("train_teacher_ce") or 0.0) for r in rows),
            "max_logit_std": max((r.get("teacher_logit_std") or 0.0) for r in rows),
            "branch_acc": [last.get(f"sampled_branch{i}_acc") for i in (1, 2, 3) if last.get(f"sampled_branch{i}_acc") is not None]}


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("NASDISTILL_PROGRESS", "0")
    from nasdistill.pipeline.workers import run_jobs

    out = Path(args.out)
    grid = variants(args.variants)
    seeds = args.seeds[:1] if args.tiny else args.seeds
    jobs, keys = [], []
    for model in args.models:
        for method in args.methods:
            for name, overrides in grid.items():
                for seed in seeds:
                    run_dir = out / model / f"{method}_{name}_s{seed}"
                    jobs.append(payload(args, model, method, overrides, seed, run_dir))
                    keys.append((model, method, name, seed, run_dir))
    done = [0]

    def finished(i, result):
        done[0] += 1
        model, method, name, seed, _ = keys[i]
        print(f"[{done[0]}/{len(jobs)}] {model} {method} {name} s{seed}: test {result.get('test_acc'):.2f}%"
              + (" UNSTABLE" if result.get("instability") else ""), flush=True)

    run_jobs(jobs, args.workers, finished)
    table = {}
    for model, method, name, seed, run_dir in keys:
        table.setdefault((model, method, name), []).append(summary(run_dir))
    print("| teacher | method | variant | test acc (mean, min-max) | unstable runs | max teacher CE | "
          "max logit std | sampled branch train acc (mean over seeds) |")
    print("|---|---|---|---|---|---|---|---|")
    rows = []
    for (model, method, name), runs in table.items():
        accs = [r["test_acc"] for r in runs]
        branches = [sum(x) / len(x) for x in zip(*[r["branch_acc"] for r in runs])] if runs[0]["branch_acc"] else []
        row = {"model": model, "method": method, "variant": name, "seeds": len(runs),
               "test_acc_mean": sum(accs) / len(accs), "test_acc_min": min(accs), "test_acc_max": max(accs),
               "unstable": sum(r["unstable"] for r in runs),
               "max_teacher_ce": max(r["max_teacher_ce"] for r in runs),
               "max_logit_std": max(r["max_logit_std"] for r in runs), "branch_acc": branches,
               "events": [e for r in runs for e in r["events"]]}
        rows.append(row)
        print(f"| {model} | {method} | {name} | {row['test_acc_mean']:.2f} ({row['test_acc_min']:.2f}-"
              f"{row['test_acc_max']:.2f}) | {row['unstable']}/{len(runs)} | {row['max_teacher_ce']:.2f} "
              f"(ln K = {math.log(10):.2f}) | {row['max_logit_std']:.2f} | "
              f"{' / '.join(f'{b:.0f}%' for b in branches) or '-'} |")
    from nasdistill.atomic import write_json

    write_json(out / "stability.json", rows)
    print(f"table: {out / 'stability.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
