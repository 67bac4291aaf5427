"""One supernet for all MACs targets against one search per target, side by side on digits.

With the main job's search settings (``nasdistill run``'s defaults: digits, digits_small, targets
600K / 1.5M / 3M MACs), this runs

1. the separate searches: one search run per target (``search.shared=false``), each a
   one-target search,
2. the shared search: one run, one supernet, each target its own phi (``search.shared=true``),
3. one CE teacher, then every student found (both ways) trained alone and with KD from that teacher,
   with the main job's distillation settings, over ``--seeds``,

and prints two tables: search time (wall and CPU seconds of the process; ``--repeat R`` runs the
searches R times in alternating order and keeps each one's least time) against the mean of the
one-target searches, and, per target, each student's MACs, its argmax's, and its test accuracy
after the same distillation.

    python examples/shared_search_bench.py                      # ~5 minutes on 2 idle cores
    python examples/shared_search_bench.py --repeat 2           # the README's table
    python examples/shared_search_bench.py --quick --out /tmp/b  # seconds (smoke test)
    python examples/shared_search_bench.py --quick --batch-size 256 --out /tmp/b  # fewer steps still
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

import torch

from nasdistill.atomic import write_json
from nasdistill.distill import distill_config_class, run_distill
from nasdistill.models.config import ModelConfig
from nasdistill.pipeline import PipelineConfig
from nasdistill.search import SearchConfig, run_search, target_folder
from nasdistill.search.students import read_students
from nasdistill.teachers import teacher_config_class
from nasdistill.teachers.runner import run_teacher


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def search(cfg, targets, shared: bool, run_dir, seed: int, splits=None):
    section = dataclasses.replace(cfg.search.search, space=cfg.space, cost_metric="macs", target=None,
                                  targets=[float(t) for t in targets], shared=shared)
    scfg = SearchConfig(seed=seed, out_dir=str(run_dir), data=cfg.data, train=cfg.search.train, search=section)
    result, wall, cpu = timed(lambda: run_search(scfg, run_dir, mode="restart", splits=splits, verbose=False))
    if run_dir is None:
        return [], wall, cpu
    if shared:
        students = read_students(run_dir, result)
    else:
        students = [json.loads((run_dir / target_folder(t) / "result.json").read_text()) for t in targets]
    return students, wall, cpu


def fmt(xs) -> str:
    if not xs:
        return "n/a"
    if len(xs) == 1:
        return f"{xs[0]:.2f}"
    return f"{statistics.mean(xs):.2f} ± {statistics.stdev(xs):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/shared_search_bench")
    parser.add_argument("--search-seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="distillation seeds")
    parser.add_argument("--repeat", type=int, default=1, help="search rounds (least time of each kept)")
    parser.add_argument("--quick", action="store_true", help="tiny epochs on a tenth of digits (smoke test)")
    parser.add_argument("--readme", action="store_true",
                        help="also write the two tables into README.md (its 'shared-search' block)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="one batch size for search, teacher and distillation (default: the main job's)")
    args = parser.parse_args()
    if args.readme and (args.quick or args.batch_size is not None):
        parser.error("--readme writes the figures of the main job's settings: leave out --quick and --batch-size")
    torch.set_num_threads(1)
    out = Path(args.out)
    cfg = PipelineConfig()
    if args.quick:
        cfg.data = dataclasses.replace(cfg.data, options={**cfg.data.options, "test_size": 0.2, "train_size": 180})
        cfg.search.train = dataclasses.replace(cfg.search.train, epochs=2)
        cfg.search.search = dataclasses.replace(cfg.search.search, warmup_epochs=1)
        cfg.teachers.train = dataclasses.replace(cfg.teachers.train, epochs=1)
        cfg.distill.train = dataclasses.replace(cfg.distill.train, epochs=1)
    if args.batch_size is not None:
        for section in (cfg.search, cfg.teachers, cfg.distill):
            section.train = dataclasses.replace(section.train, batch_size=args.batch_size)
    targets = [int(t) for t in cfg.search.targets]
    one = targets[len(targets) // 2]  # (the warm-up run's target)

    # 1-2. the searches, after a short warm-up run so that the first timed run pays no one-off costs
    splits = cfg.data.load()
    warm = dataclasses.replace(cfg, search=dataclasses.replace(
        cfg.search, train=dataclasses.replace(cfg.search.train, epochs=cfg.search.search.warmup_epochs + 1)))
    search(warm, [one], True, None, args.search_seed, splits)
    runs = [(f"separate {target_folder(t)}", [t], False, out / "separate") for t in targets]
    runs.append(("shared, all targets", targets, True, out / "shared"))
    best: dict = {}
    found = {}
    for rep in range(args.repeat):  # alternate the order; keep each run's least time (busy machines)
        for name, ts, shared, run_dir in (runs if rep % 2 == 0 else runs[::-1]):
            students, wall, cpu = search(cfg, ts, shared, run_dir, args.search_seed, splits)
            old = best.get(name, (len(ts), float("inf"), float("inf")))
            best[name] = (len(ts), min(old[1], wall), min(old[2], cpu))
            key = "shared" if shared else "separate"
            found[key] = students if shared else [e for e in found.get(key, []) if e["target"] not in ts] + students
    found["separate"].sort(key=lambda e: e["target"])
    times = {name: best[name] for name, *_ in runs[:-1]}
    times["separate, all targets"] = (len(targets), sum(v[1] for v in times.values()),
                                      sum(v[2] for v in times.values()))
    times["shared, all targets"] = best["shared, all targets"]

    # 3. one CE teacher, then every student alone and with KD from it
    tcfg = teacher_config_class()(seed=0, method="ce", model=cfg.teachers.model, data=cfg.data,
                                  train=cfg.teachers.train)
    teacher_dir = out / "teacher_ce"
    run_teacher(tcfg, teacher_dir, mode="resume", verbose=False)
    dcls = distill_config_class()
    acc: dict = {}
    for entries in found.values():
        for e in entries:
            if e["arch_id"] in acc:
                continue
            acc[e["arch_id"]] = {}
            for method in ("none", "kd"):
                scores = []
                for seed in args.seeds:
                    dcfg = dcls(seed=seed, teacher=None if method == "none" else str(teacher_dir), method=method,
                                student=ModelConfig(space=cfg.space, arch=dict(e["arch"])), data=cfg.data,
                                train=cfg.distill.train)
                    r = run_distill(dcfg, out / "distill" / e["arch_id"] / f"{method}_s{seed}", mode="resume",
                                    verbose=False)
                    scores.append(r["test_acc"])
                acc[e["arch_id"]][method] = scores

    singles = [times[f"separate {target_folder(t)}"] for t in targets]
    mean_wall = statistics.mean(v[1] for v in singles)
    mean_cpu = statistics.mean(v[2] for v in singles)
    rounds = f"least of {args.repeat} rounds, " if args.repeat > 1 else ""
    lines = [f"Search time (digits, {cfg.search.train.epochs} epochs, one process, 1 thread, {rounds}seed "
             f"{args.search_seed}); ratios against the mean one-target search:", "",
             "| search | targets | wall (s) | CPU (s) | wall ratio | CPU ratio |", "|---|---|---|---|---|---|"]
    for name, (k, wall, cpu) in times.items():
        lines.append(f"| {name} | {k} | {wall:.1f} | {cpu:.1f} | {wall / mean_wall:.2f}x | {cpu / mean_cpu:.2f}x |")
    seeds = len(args.seeds)
    lines += ["", f"Students (test accuracy %, mean ± sd over {seeds} distillation seed{'s' * (seeds > 1)}; "
                  f"{cfg.distill.train.epochs} epochs; KD from one CE {cfg.teachers.model.name} teacher):", "",
              "| search | target MACs | student | MACs | x target | argmax MACs (x target) | alone | CE+KD |",
              "|---|---|---|---|---|---|---|---|"]
    for name, entries in found.items():
        for e in entries:
            a = acc[e["arch_id"]]
            lines.append(f"| {name} | {e['target']:,.0f} | {e['arch_id']} | {e['macs']:,} | "
                         f"{e['cost_over_target']:.2f}x | {e['argmax_cost']:,.0f} ({e['argmax_cost_over_target']:.2f}x) | "
                         f"{fmt(a['none'])} | {fmt(a['kd'])} |")
    print("\n".join(lines))
    if args.readme:
        from readme_figures import README, replace_block

        README.write_text(replace_block(README.read_text(), "shared-search", "default",
                                        "python examples/shared_search_bench.py --repeat 2 --readme", "\n".join(lines)))
        print(f"updated {README}")
    write_json(out / "bench.json", {"times": {k: {"targets": v[0], "wall_s": v[1], "cpu_s": v[2]}
                                               for k, v in times.items()},
                                     "students": {k: [{"target": e["target"], "arch_id": e["arch_id"],
                                                       "macs": e["macs"], "argmax_cost": e["argmax_cost"],
                                                       "accuracy": acc[e["arch_id"]]} for e in v]
                                                  for k, v in found.items()}})


if __name__ == "__main__":
    main()
