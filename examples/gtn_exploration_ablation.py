"""Ablation of GTN's exploration mechanisms: does each keep the gates balanced, at what cost?

Trains the GTN teacher of the main job (its data, model and schedule: the embedded digits default,
or ``examples/synthetic_gtn.yaml``; phi Adam lr 0.02, mode two) under each setting for several
seeds and reports, at the end of training, over the labels the branches use:

- ``min H/lnK``: the smallest entropy of a label's gate distribution, as a fraction of uniform's;
- ``max pf``: the largest parameter-free mass (P(identity) + P(zero));
- ``mean H/lnK``: how far from uniform the gates are on average (1 = no preference left);
- ``MACs q50``: the median MACs of the students trained in the last epoch over the pool's median;
- the teacher's test accuracy and ECE, and its wall time.

Each is a mean with a 95% t-interval over the seeds. The requirement the default must meet: every
used label keeps ``H >= 0.5 ln K`` and parameter-free mass ``<= 0.6``.

    python examples/gtn_exploration_ablation.py                       # digits, 3 seeds (~10 min)
    python examples/gtn_exploration_ablation.py --data synthetic_gtn  # the benchmark's data
    python examples/gtn_exploration_ablation.py --epochs 3 --seeds 0 --settings none default   # smoke
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time

import torch

SETTINGS = {
    "none": {},                                                   # L_phi alone, as written
    "entropy 0.1": {"explore_entropy_weight": 0.1},
    "entropy 0.3": {"explore_entropy_weight": 0.3},
    "entropy 1.0": {"explore_entropy_weight": 1.0},
    "cap 0.5": {"param_free_cap": 0.5},
    "floor+cap": {"entropy_floor": 0.6, "param_free_cap": 0.5},
    "entropy 0.1+cap": {"explore_entropy_weight": 0.1, "param_free_cap": 0.5},
    "mix 0.5": {"explore_uniform_mix": 0.5},
    "bound 1.0": {"logit_bound": 1.0},
    "default": None,                                              # GTNConfig's defaults
}
DATA = {"digits": None, "synthetic_gtn": "synthetic_gtn.yaml"}  # teacher, data: as the main job's


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="digits", choices=sorted(DATA))
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--json", default=None, help="also write the per-run rows to this file")
    return p.parse_args(argv)


def job_settings(name: str, epochs: int) -> dict:
    """Data, teacher model and schedule of the GTN teacher in the main job on ``name``."""
    from nasdistill.config import load_config
    from nasdistill.pipeline import PipelineConfig

    here = os.path.dirname(os.path.abspath(__file__))
    path = None if DATA[name] is None else os.path.join(here, DATA[name])
    job = load_config(PipelineConfig, path, [f"teachers.train.epochs={epochs}"])
    train = dict(vars(job.teachers.train), device="cpu", threads=1)
    return {"data": vars(job.data), "model": vars(job.teachers.model), "train": train}


def one_run(setting: str, seed: int, args) -> dict:
    from nasdistill.analysis import evaluate_teacher_quality
    from nasdistill.engine import Trainer, world
    from nasdistill.engine.checkpoint import seed_everything
    from nasdistill.config import from_dict
    from nasdistill.engine.run import default_loaders
    from nasdistill.teachers import teacher_config_class
    from nasdistill.teachers.runner import build_teacher_task

    gtn = {"phi_lr": 0.02}  # the main job's short-run phi step (mode two, the GTNConfig default)
    if SETTINGS[setting] is None:
        pass  # the defaults of GTNConfig
    else:
        off = {"explore_entropy_weight": 0.0, "entropy_floor": None, "param_free_cap": None,
               "explore_uniform_mix": 0.0, "logit_bound": None}
        gtn.update(off)
        gtn.update(SETTINGS[setting])
    job = job_settings(args.data, args.epochs)
    cfg = from_dict(teacher_config_class(), {"seed": seed, "method": "gtn", "model": job["model"],
                                             "data": job["data"], "train": job["train"], "gtn": gtn})
    splits = cfg.data.load()
    seed_everything(seed)
    loaders = default_loaders(cfg, splits, torch.device("cpu"), world())
    task = build_teacher_task(cfg, splits, loaders, torch.device("cpu"), world())
    t0 = time.perf_counter()
    trainer = Trainer(cfg.train, task, loaders.train, loaders.val, seed=seed, test_loader=loaders.test,
                      device=torch.device("cpu"), verbose=False)
    # keep the last epoch's sampled-MACs quartiles (epoch_metrics resets them)
    last = {}
    original = task.epoch_metrics

    def capture(epoch, ls):
        out = original(epoch, ls)
        last.clear()
        last.update(out)
        return out

    task.epoch_metrics = capture
    result = trainer.fit()
    wall = time.perf_counter() - t0
    g, monitor = task.gates[0], task.monitors[0]
    stats = monitor.label_stats(g)
    q = evaluate_teacher_quality(task.eval_model(), splits)
    return {"setting": setting, "seed": seed, "data": args.data,
            "min_h": min(h / lnk for h, lnk, _ in stats.values()),
            "mean_h": sum(h / lnk for h, lnk, _ in stats.values()) / len(stats),
            "max_pf": max(m for _, _, m in stats.values()),
            "macs_q50": last.get("sampled_macs_q50", math.nan) / last.get("pool_macs_q50", math.nan),
            "test_acc": result["test_acc"], "ece": q["ece"], "wall_s": wall,
            "branch_acc": [last.get(f"branch{i}_acc") for i in (1, 2, 3)]}


def mean_ci(values):
    from nasdistill.report import mean_ci as ci

    return ci([v for v in values if v is not None and math.isfinite(v)])


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("NASDISTILL_PROGRESS", "0")
    os.environ.setdefault("NASDISTILL_TENSORBOARD", "0")
    torch.set_num_threads(1)
    rows = []
    for setting in args.settings:
        for seed in args.seeds:
            rows.append(one_run(setting, seed, args))
            r = rows[-1]
            print(f"  {setting:<12} seed {seed}: min H/lnK {r['min_h']:.2f}, max pf {r['max_pf']:.2f}, "
                  f"test {r['test_acc']:.2f}%, {r['wall_s']:.0f}s", flush=True)
    print(f"\nGTN exploration ablation on {args.data}, {args.epochs} epochs, seeds {args.seeds} "
          "(mean ± 95% CI over seeds; requirement: min H/lnK >= 0.5 and max pf <= 0.6)\n")
    cols = [("min H/lnK", "min_h", 2), ("max pf", "max_pf", 2), ("mean H/lnK", "mean_h", 2),
            ("MACs q50 / pool", "macs_q50", 2), ("test acc %", "test_acc", 2), ("ECE", "ece", 3),
            ("time s", "wall_s", 0)]
    print("| setting | " + " | ".join(c for c, _, _ in cols) + " | meets |")
    print("|---|" + "---|" * (len(cols) + 1))
    for setting in args.settings:
        mine = [r for r in rows if r["setting"] == setting]
        cells = []
        for _, key, digits in cols:
            m, h = mean_ci([r[key] for r in mine])
            cells.append(f"{m:.{digits}f} ± {h:.{digits}f}" if math.isfinite(h) else f"{m:.{digits}f}")
        meets = all(r["min_h"] >= 0.5 and r["max_pf"] <= 0.6 for r in mine)
        print(f"| {setting} | " + " | ".join(cells) + f" | {'yes' if meets else 'no'} ({sum(r['min_h'] >= 0.5 and r['max_pf'] <= 0.6 for r in mine)}/{len(mine)}) |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
