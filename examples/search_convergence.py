"""Does the main job's search converge? Its shared search, run alone, under settings to compare.

Runs the main job's search stage (one supernet for every MACs target, each target with its own phi)
on the embedded digits data and on the synthetic known-posterior task, once per setting, and prints
per target whether the search converged (the student it would export unchanged over the last
quarter of the phi epochs and the architecture entropy at half of ln N or below;
:mod:`nasdistill.search.convergence`), the final entropy fraction, the exported student's
probability, and the search's wall time. A setting is a name and space-separated overrides of the
main job's ``search.*`` keys. Runs go to ``OUT/<data>/<setting>`` (a finished one is reused).

    python examples/search_convergence.py --out runs/search_convergence
    python examples/search_convergence.py --settings now="" fast="search.search.arch_lr=0.1"
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

SYNTHETIC = ["data.name=synthetic", "data.augment=false", "data.val_size=500",
             "data.options={num_classes: 10, size: 8, channels: 1, n_train: 2000, n_test: 5000, "
             "bayes_accuracy: 0.8, smoothness: 1.0}"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/search_convergence")
    p.add_argument("--data", nargs="+", default=["digits", "synthetic"], choices=["digits", "synthetic"])
    p.add_argument("--settings", nargs="+", default=["default="], metavar="NAME=OVERRIDES")
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    return p.parse_args(argv)


def search_config(overrides: list[str], data: str, seed: int, run_dir: Path):
    """The SearchConfig the main job builds from its configuration (pipeline.steps.start_search)."""
    from nasdistill.config import load_config
    from nasdistill.pipeline.config import PipelineConfig
    from nasdistill.search import SearchConfig

    cfg = load_config(PipelineConfig, None, (SYNTHETIC if data == "synthetic" else []) + overrides
                      + [f"seed={seed}"])
    section = dataclasses.replace(cfg.search.search, space=cfg.space, cost_metric="macs", target=None,
                                  targets=[float(t) for t in cfg.search.targets])
    return SearchConfig(seed=cfg.seed, out_dir=str(run_dir), data=cfg.data, train=cfg.search.train,
                        search=section), cfg.threads


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("NASDISTILL_PROGRESS", "0")
    from nasdistill.engine.runtime import use_threads
    from nasdistill.search.runner import run_search
    from nasdistill.search.students import read_students

    rows = []
    for item in args.settings:
        name, _, text = item.partition("=")
        overrides = [o for o in text.split() if o]
        for data in args.data:
            for seed in args.seeds:
                run_dir = Path(args.out) / data / f"{name}_s{seed}"
                cfg, threads = search_config(overrides, data, seed, run_dir)
                use_threads(threads)
                t0 = time.perf_counter()
                result = run_search(cfg, run_dir, mode="resume", verbose=False)
                wall = result.get("wall_time_s") or (time.perf_counter() - t0)
                for entry in read_students(run_dir, result):
                    conv = entry.get("convergence") or {}
                    rows.append({"setting": name, "data": data, "seed": seed, "target": entry["target"],
                                 "student": entry["arch_id"], "macs": entry["macs"],
                                 "converged": conv.get("converged"), "stable": conv.get("stable_epochs"),
                                 "phi_epochs": conv.get("phi_epochs"), "entropy_frac": conv.get("entropy_frac"),
                                 "prob": conv.get("prob"), "wall_s": wall})
                    r = rows[-1]
                    print(f"{name:>12} {data:>9} s{seed} target {r['target']:>10,.0f}: "
                          f"{'converged' if r['converged'] else 'NOT converged'} (stable {r['stable']}/"
                          f"{r['phi_epochs']}, H {r['entropy_frac']:.2f} ln N, p {r['prob']:.3g}), "
                          f"{r['student']} {r['macs']:,} MACs, search {wall:.1f}s", flush=True)
    out = Path(args.out) / "convergence.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=1))
    print(f"rows: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
