"""A scale ladder for GTN in training steps: does GTN+KD catch up with CE+KD as its teacher trains
longer, and what do logit standardization and temperature calibration do to the comparison?

Each rung is the synthetic known-posterior task (``examples/synthetic_gtn.yaml``: 10 overlapping
Gaussian classes of 8x8 images, Bayes accuracy 80%) at a number of GTN *weight steps* (GTN spends
every other iteration on phi, so its teacher trains ``2 x steps`` iterations of batch 64), with
enough training images that the teacher does not run over them many times. Every teacher gets the
same number of epochs as GTN; the distillations get as many steps of batch 64 as GTN's weight steps.
Per rung, one main job trains CE, MSE, SFTN and GTN teachers (every teacher at the main job's
teacher settings, gradient clipping included) and distills the same sampled students with plain KD
and alone; two more jobs reuse its teachers and baselines (copied in: the same configuration, so
they are reused) and distill with KD on standardized logits (``distill.kd.standardize=true``, T 2,
weight 9, the authors' CIFAR pairing) and from calibrated teachers (``teachers.calibrate=true``):
the same rule for every teacher.

Printed per rung (and written to ``OUT/ladder.json``): the mean over students of every condition,
each teacher's KD minus CE's KD per variant with the student as the unit (bootstrap 95% CI, paired
t p-value), each variant minus plain KD per teacher, and at the end of each GTN teacher the sampled
branches' training accuracy and the teacher's logit spread.

    python examples/gtn_scale.py --out runs/gtn_scale                          # the CPU ladder
    python examples/gtn_scale.py --rungs 50000:100000 --device cuda            # a GPU rung
    python examples/gtn_scale.py --tiny --out /tmp/ladder                      # a smoke run (~3 min)
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARK = HERE / "synthetic_gtn.yaml"
BATCH = 64
#: The default CPU rungs, ``weight steps:training images``.
RUNGS = ["500:2000", "2500:8000", "12500:20000"]
TEACHERS = ["ce", "mse", "sftn", "gtn"]
#: KD variants: name -> the overrides of its job (plain KD is the benchmark's).
VARIANTS = {"plain": [],
            "standardized": ["distill.kd.standardize=true", "distill.kd.temperature=2", "distill.kd.kd_weight=9"],
            "calibrated": ["teachers.calibrate=true"]}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/gtn_scale", help="folder of the ladder (one sub-folder per rung)")
    p.add_argument("--rungs", nargs="+", default=RUNGS, metavar="STEPS:IMAGES",
                   help="GTN weight steps and training images of each rung")
    p.add_argument("--teacher", default="vgg8", help="the teachers' zoo model")
    p.add_argument("--students", type=int, default=8, help="students sampled from the pool")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--device", default="auto", help="train.device of every run (auto, cpu, cuda)")
    p.add_argument("--workers", default="2", help="runs in parallel (processes)")
    p.add_argument("--tiny", action="store_true", help="smoke run: 20 steps on 400 images, 2 students, 2 seeds")
    return p.parse_args(argv)


def rung_schedule(steps: int, images: int) -> tuple[int, int]:
    """``(teacher epochs, distillation epochs)`` giving GTN ``steps`` weight steps (one iteration in
    two) and the distillations ``steps`` steps, at batch 64."""
    per_epoch = math.ceil(images / BATCH)
    return max(1, math.ceil(2 * steps / per_epoch)), max(1, math.ceil(steps / per_epoch))


def job_overrides(args, steps: int, images: int) -> list[str]:
    t_epochs, d_epochs = rung_schedule(steps, images)
    students = 2 if args.tiny else args.students
    seeds = args.seeds[:2] if args.tiny else args.seeds
    seed_list = ",".join(map(str, seeds))
    out = [f"data.options.n_train={images}", f"students.sampled={students}", f"teachers.model.name={args.teacher}",
           f"teachers.methods=[{','.join(TEACHERS)}]", f"teachers.seeds=[{seed_list}]",
           f"distill.seeds=[{seed_list}]", f"teachers.train.epochs={t_epochs}",
           f"distill.train.epochs={d_epochs}", f"teachers.train.device={args.device}",
           f"distill.train.device={args.device}", f"workers={args.workers}", "export.enabled=false"]
    if args.tiny:
        out += ["data.options.n_test=500", "data.val_size=100"]
    return out


def run_job(folder: Path, overrides: list[str]) -> float:
    """``nasdistill run`` into ``folder`` (finished runs reused); its wall time in seconds."""
    cmd = [sys.executable, "-m", "nasdistill", "run", str(BENCHMARK), *overrides, "--out-dir", str(folder)]
    print("$", " ".join(cmd[2:]), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t0


def share_runs(src: Path, dst: Path) -> int:
    """Copy ``src``'s finished teachers and baselines into ``dst``: the same configuration, so the
    variant's job reuses them (each run's fingerprint is checked, and a distillation's includes its
    teacher's weights digest). Returns the number of runs copied."""
    copied = 0
    for run in [*src.glob("teachers/*_s*"), *src.glob("distill/*/none_s*")]:
        target = dst / run.relative_to(src)
        if (run / "result.json").is_file() and not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(run, target, ignore=shutil.ignore_patterns("*.lock", "last.ckpt"))
            copied += 1
    return copied


def read_results(folder: Path) -> list[dict]:
    with open(folder / "results.csv") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["test_acc"] = float(r["test_acc"]) if r.get("test_acc") not in (None, "") else None
    return rows


def by_student(rows, teacher: str, method: str) -> dict:
    """``{(student, seed): test_acc}`` of one condition."""
    return {(r["student"], r["seed"]): r["test_acc"] for r in rows
            if r["teacher"] == teacher and r["method"] == method and r["test_acc"] is not None}


def compare(a: dict, b: dict) -> dict:
    """``a - b`` paired by (student, seed), tested with the student as the unit."""
    from nasdistill.report.stats import student_level_test

    diffs: dict = {}
    for key, value in a.items():
        if key in b:
            diffs.setdefault(key[0], []).append(value - b[key])
    test = student_level_test(diffs)
    return {k: test.get(k) for k in ("n_students", "mean_diff", "boot_ci_low", "boot_ci_high", "t_pvalue")}


def mean_over_students(values: dict):
    per: dict = {}
    for (student, _), v in values.items():
        per.setdefault(student, []).append(v)
    means = [sum(v) / len(v) for v in per.values()]
    return sum(means) / len(means) if means else None


def teacher_end(folder: Path, method: str) -> dict:
    """Mean over teacher seeds at the last epoch: sampled-branch training accuracy, logit std,
    training accuracy; and the runs flagged unstable."""
    rows, unstable = [], 0
    for run in sorted((folder / "teachers").glob(f"{method}_s*")):
        lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
        if lines:
            rows.append(lines[-1])
        result = json.loads((run / "result.json").read_text()) if (run / "result.json").is_file() else {}
        unstable += bool(result.get("instability"))

    def mean(key_filter):
        values = [v for r in rows for k, v in r.items() if key_filter(k) and isinstance(v, (int, float))]
        return sum(values) / len(values) if values else None

    return {"sampled_branch_acc": mean(lambda k: k.startswith("sampled_branch") and k.endswith("_acc")),
            "teacher_logit_std": mean(lambda k: k == "teacher_logit_std"),
            "teacher_train_acc": mean(lambda k: k == "train_acc"), "unstable_runs": unstable}


def rung(args, steps: int, images: int) -> dict:
    root = Path(args.out) / f"steps{steps}_n{images}"
    base = job_overrides(args, steps, images)
    times, results = {}, {}
    for variant in args.variants:
        folder = root / variant
        if variant != "plain" and "plain" in args.variants:
            print(f"{variant}: {share_runs(root / 'plain', folder)} teacher and baseline runs taken from plain",
                  flush=True)
        times[variant] = run_job(folder, base + VARIANTS[variant])
        results[variant] = read_results(folder)
    first = results[args.variants[0]]
    alone = by_student(first, "none", "none")
    conditions = {"students alone": alone}
    for variant, rows in results.items():
        for t in TEACHERS:
            conditions[f"{t.upper()}+KD ({variant})"] = by_student(rows, t, "kd")
    out = {"weight_steps": steps, "n_train": images,
           "epochs": dict(zip(("teacher", "distill"), rung_schedule(steps, images))),
           "means": {k: mean_over_students(v) for k, v in conditions.items()},
           "minus_ce": {}, "minus_plain": {}, "minus_alone": {},
           "teachers": {t: teacher_end(root / args.variants[0], t) for t in TEACHERS},
           "wall_s": times}
    for variant, rows in results.items():
        ce = by_student(rows, "ce", "kd")
        for t in TEACHERS:
            mine = by_student(rows, t, "kd")
            if t != "ce":
                out["minus_ce"][f"{t} {variant}"] = compare(mine, ce)
            out["minus_alone"][f"{t} {variant}"] = compare(mine, alone)
            if variant != "plain" and "plain" in results:
                out["minus_plain"][f"{t} {variant}"] = compare(mine, by_student(results["plain"], t, "kd"))
    return out


def _fmt(x, spec=".2f") -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


def _p(p) -> str:
    return "p < 0.001" if isinstance(p, float) and 0 <= p < 0.001 else f"p {_fmt(p, '.3f')}"


def _diff(d: dict) -> str:
    return (f"{_fmt(d['mean_diff'], '+.2f')} ({_fmt(d['boot_ci_low'], '+.2f')} to {_fmt(d['boot_ci_high'], '+.2f')}, "
            f"{_p(d['t_pvalue'])})")


def table(rungs: list[dict], variants: list[str]) -> str:
    lines = []
    for r in rungs:
        lines.append(f"\n### {r['weight_steps']:,} weight steps, {r['n_train']:,} images "
                     f"(teacher/KD epochs {r['epochs']['teacher']}/{r['epochs']['distill']})\n")
        lines.append(f"students alone: {_fmt(r['means']['students alone'])}\n")
        lines.append("| KD | CE+KD | " + " | ".join(f"{t.upper()}+KD - CE+KD" for t in TEACHERS if t != "ce") + " |")
        lines.append("|---|---|" + "---|" * (len(TEACHERS) - 1))
        for v in variants:
            lines.append(f"| {v} | {_fmt(r['means'][f'CE+KD ({v})'])} | "
                         + " | ".join(_diff(r["minus_ce"][f"{t} {v}"]) for t in TEACHERS if t != "ce") + " |")
        g = r["teachers"]["gtn"]
        lines.append(f"\nGTN teacher at the end: sampled branches {_fmt(g['sampled_branch_acc'], '.1f')}% train acc, "
                     f"teacher {_fmt(g['teacher_train_acc'], '.1f')}%, logit std {_fmt(g['teacher_logit_std'])}; "
                     f"unstable teacher runs: " + ", ".join(f"{t} {r['teachers'][t]['unstable_runs']}" for t in TEACHERS))
    return "\n".join(lines)


def plot(rungs: list[dict], variants: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    xs = [r["weight_steps"] for r in rungs]
    for v in variants:
        key = f"gtn {v}"
        ys = [r["minus_ce"][key]["mean_diff"] for r in rungs]
        lo = [r["minus_ce"][key]["mean_diff"] - r["minus_ce"][key]["boot_ci_low"] for r in rungs]
        hi = [r["minus_ce"][key]["boot_ci_high"] - r["minus_ce"][key]["mean_diff"] for r in rungs]
        ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=f"GTN+KD - CE+KD, {v} KD")
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.set_xscale("log")
    ax.set_xticks(xs)
    ax.set_xticklabels([f"{x:,}" for x in xs])
    ax.minorticks_off()
    ax.set_xlabel("GTN weight steps (batch 64)")
    ax.set_ylabel("student test acc. difference (points)")
    ax.set_title("GTN against CE along the ladder (95% CI over students)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    from nasdistill.atomic import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("NASDISTILL_PROGRESS", "0")
    if args.tiny:
        args.rungs = ["20:400"]
    out = Path(args.out)
    rungs = []
    for item in args.rungs:
        steps, _, images = item.partition(":")
        rungs.append(rung(args, int(steps), int(images or 2000)))
        from nasdistill.atomic import write_json

        write_json(out / "ladder.json", rungs)
        print(table(rungs, args.variants), flush=True)
    plot(rungs, args.variants, out / "ladder.png")
    print(f"ladder: {out / 'ladder.json'}, {out / 'ladder.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
