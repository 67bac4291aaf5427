"""A scale ladder for GTN: at what training-set size do the sampled paths learn, and does GTN+KD
then match or beat CE+KD, with and without the warm-up?

Each rung is the synthetic known-posterior benchmark (``examples/synthetic_gtn.yaml``: 10
overlapping Gaussian classes of 8x8 images, Bayes accuracy 80%) with a larger training set and
fewer epochs to match. Per rung, two main jobs over the same sampled students and seeds:

- ``paper``: CE, SFTN and GTN teachers as the papers train them, KD from each, and the students
  alone;
- ``warmup``: CE and GTN teachers, every GTN teacher of seed s started from the CE teacher of seed
  s (``teachers.init_from_ce=true``) and frozen for the first half of its epochs while the branches
  and phi train (GTN supplement section 2), then KD from each (the baseline is the ``paper`` job's:
  the same students, seeds and schedule; its CE runs are the paper job's, copied in and reused).

Printed per rung (and written to ``OUT/ladder.json``): the mean over students of each condition,
GTN+KD minus CE+KD with the student as the unit (bootstrap 95% CI, paired t p-value), the same
for SFTN and the warmed GTN, and at the end of each GTN teacher the training accuracy of the
branches on the paths it sampled in its last epoch (the paper's precondition) and the standard
deviation of its logits, next to the CE teacher's. ``OUT/ladder.png`` plots GTN-CE per rung.

    python examples/gtn_scale.py --out runs/gtn_scale                  # the CPU ladder (~1 h, 2 cores)
    python examples/gtn_scale.py --sizes 20000 50000 --device cuda     # larger rungs on a GPU
    python examples/gtn_scale.py --tiny --sizes 400 --out /tmp/ladder  # a smoke run (~2 min)
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARK = HERE / "synthetic_gtn.yaml"

#: Epochs per rung (teacher, distillation): more images, fewer epochs; the teacher's weight steps
#: still grow with the rung (190, 375 and 500 steps of 64 images), and the whole CPU ladder fits in
#: about an hour on 2 cores. Sizes between these take the epochs of the nearest (log scale).
EPOCHS = {400: (30, 20), 2000: (12, 8), 8000: (4, 3), 20000: (3, 2), 50000: (2, 2)}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/gtn_scale", help="folder of the ladder (one sub-folder per rung)")
    p.add_argument("--sizes", nargs="+", type=int, default=[400, 2000, 8000], help="training images per rung")
    p.add_argument("--students", type=int, default=8, help="students sampled from the pool")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--device", default="auto", help="train.device of every run (auto, cpu, cuda)")
    p.add_argument("--workers", type=int, default=2, help="runs in parallel (processes)")
    p.add_argument("--freeze-frac", type=float, default=0.5,
                   help="warm-up: fraction of the GTN epochs with the teacher frozen")
    p.add_argument("--tiny", action="store_true", help="smoke run: 2 students, 2 seeds, 2 epochs")
    return p.parse_args(argv)


def rung_epochs(size: int, tiny: bool) -> tuple[int, int]:
    """(teacher epochs, distillation epochs) of a rung: the nearest size of :data:`EPOCHS`."""
    if tiny:
        return 2, 1
    nearest = min(EPOCHS, key=lambda s: abs(math.log(s) - math.log(size)))
    return EPOCHS[nearest]


def job_overrides(args, size: int, variant: str) -> list[str]:
    t_epochs, d_epochs = rung_epochs(size, args.tiny)
    students = 2 if args.tiny else args.students
    seeds = args.seeds[:2] if args.tiny else args.seeds
    common = [f"data.options.n_train={size}", f"students.sampled={students}",
              f"teachers.seeds=[{','.join(map(str, seeds))}]", f"distill.seeds=[{','.join(map(str, seeds))}]",
              f"teachers.train.epochs={t_epochs}", f"distill.train.epochs={d_epochs}",
              f"teachers.train.device={args.device}", f"distill.train.device={args.device}",
              f"workers={args.workers}", "export.enabled=false"]
    if args.tiny:
        common += ["data.options.n_test=500", "data.val_size=100"]
    if variant == "paper":
        return common + ["teachers.methods=[ce,sftn,gtn]"]
    freeze = max(1, int(round(args.freeze_frac * t_epochs)))
    return common + ["teachers.methods=[ce,gtn]", "teachers.init_from_ce=true",
                     f"teachers.gtn.freeze_teacher_epochs={freeze}", "distill.baseline=false"]


def run_job(folder: Path, overrides: list[str]) -> float:
    """``nasdistill run`` into ``folder`` (reused when finished); its wall time in seconds."""
    cmd = [sys.executable, "-m", "nasdistill", "run", str(BENCHMARK), *overrides, "--out-dir", str(folder)]
    print("$", " ".join(cmd[2:]), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t0


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
    return student_level_test(diffs)


def teacher_end(folder: Path, method: str) -> dict:
    """Mean over teacher seeds, at the last epoch: sampled-branch training accuracy, logit std,
    training accuracy of the teacher."""
    rows = []
    for run in sorted((folder / "teachers").glob(f"{method}_s*")):
        lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
        if lines:
            rows.append(lines[-1])

    def mean(key_filter):
        values = [v for r in rows for k, v in r.items() if key_filter(k) and isinstance(v, (int, float))]
        return sum(values) / len(values) if values else None

    return {"sampled_branch_acc": mean(lambda k: k.startswith("sampled_branch") and k.endswith("_acc")),
            "teacher_logit_std": mean(lambda k: k == "teacher_logit_std"),
            "teacher_train_acc": mean(lambda k: k == "train_acc")}


def share_ce_runs(paper: Path, warm: Path) -> int:
    """Copy the ``paper`` job's finished CE teachers and CE+KD distillations into the ``warmup``
    job's folder: the same configuration, so the warm-up job reuses them (the main job checks each
    run's fingerprint, and a distillation's includes its teacher's weights digest) instead of
    training them again. Returns the number of runs copied."""
    import shutil

    copied = 0
    runs = [*paper.glob("teachers/ce_s*"), *paper.glob("distill/*/ce_kd_s*")]
    for src in runs:
        dst = warm / src.relative_to(paper)
        if (src / "result.json").is_file() and not dst.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.lock", "last.ckpt"))
            copied += 1
    return copied


def rung(args, size: int) -> dict:
    root = Path(args.out) / f"n{size}"
    paper, warm = root / "paper", root / "warmup"
    times = {"paper_s": run_job(paper, job_overrides(args, size, "paper"))}
    print(f"warm-up job: {share_ce_runs(paper, warm)} CE runs taken from the paper job", flush=True)
    times["warmup_s"] = run_job(warm, job_overrides(args, size, "warmup"))
    p, w = read_results(paper), read_results(warm)
    alone, ce = by_student(p, "none", "none"), by_student(p, "ce", "kd")
    conditions = {"students alone": alone, "CE+KD": ce, "SFTN+KD": by_student(p, "sftn", "kd"),
                  "GTN+KD": by_student(p, "gtn", "kd"), "GTN+KD (warm-up)": by_student(w, "gtn", "kd")}
    means = {name: _mean_over_students(values) for name, values in conditions.items()}
    return {"n_train": size, "epochs": dict(zip(("teacher", "distill"), rung_epochs(size, args.tiny))),
            "means": means,
            "gtn_minus_ce": _brief(compare(conditions["GTN+KD"], ce)),
            "gtn_warm_minus_ce": _brief(compare(conditions["GTN+KD (warm-up)"], by_student(w, "ce", "kd"))),
            "sftn_minus_ce": _brief(compare(conditions["SFTN+KD"], ce)),
            "ce_minus_alone": _brief(compare(ce, alone)),
            "gtn_teacher": teacher_end(paper, "gtn"), "gtn_warm_teacher": teacher_end(warm, "gtn"),
            "sftn_teacher": teacher_end(paper, "sftn"), **times}


def _mean_over_students(values: dict):
    per: dict = {}
    for (student, _), v in values.items():
        per.setdefault(student, []).append(v)
    means = [sum(v) / len(v) for v in per.values()]
    return sum(means) / len(means) if means else None


def _brief(test: dict) -> dict:
    return {k: test.get(k) for k in ("n_students", "mean_diff", "boot_ci_low", "boot_ci_high", "t_pvalue")}


def _fmt(x, spec=".2f") -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


def _p(p) -> str:
    return "p < 0.001" if isinstance(p, float) and 0 <= p < 0.001 else f"p {_fmt(p, '.3f')}"


def _diff(d: dict) -> str:
    return (f"{_fmt(d['mean_diff'], '+.2f')} ({_fmt(d['boot_ci_low'], '+.2f')} to {_fmt(d['boot_ci_high'], '+.2f')}, "
            f"{_p(d['t_pvalue'])}, n={d['n_students']})")


def table(rungs: list[dict]) -> str:
    head = ("| images | epochs (teacher/KD) | alone | CE+KD | SFTN+KD | GTN+KD | GTN+KD warm-up | GTN - CE | "
            "GTN warm-up - CE | GTN sampled-path train acc / logit std | warm-up |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rungs:
        m, g, gw = r["means"], r["gtn_teacher"], r["gtn_warm_teacher"]
        lines.append(
            f"| {r['n_train']:,} | {r['epochs']['teacher']}/{r['epochs']['distill']} | {_fmt(m['students alone'])} | "
            f"{_fmt(m['CE+KD'])} | {_fmt(m['SFTN+KD'])} | {_fmt(m['GTN+KD'])} | {_fmt(m['GTN+KD (warm-up)'])} | "
            f"{_diff(r['gtn_minus_ce'])} | {_diff(r['gtn_warm_minus_ce'])} | "
            f"{_fmt(g['sampled_branch_acc'], '.1f')}% / {_fmt(g['teacher_logit_std'])} | "
            f"{_fmt(gw['sampled_branch_acc'], '.1f')}% / {_fmt(gw['teacher_logit_std'])} |")
    return "\n".join(lines)


def plot(rungs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    xs = [r["n_train"] for r in rungs]
    for key, label in (("gtn_minus_ce", "GTN+KD - CE+KD"), ("gtn_warm_minus_ce", "GTN+KD (warm-up) - CE+KD"),
                       ("sftn_minus_ce", "SFTN+KD - CE+KD")):
        ys = [r[key]["mean_diff"] for r in rungs]
        lo = [r[key]["mean_diff"] - r[key]["boot_ci_low"] for r in rungs]
        hi = [r[key]["boot_ci_high"] - r[key]["mean_diff"] for r in rungs]
        ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=label)
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.set_xscale("log")
    ax.set_xticks(xs)
    ax.set_xticklabels([f"{x:,}" for x in xs])
    ax.minorticks_off()
    ax.set_xlabel("training images")
    ax.set_ylabel("student test acc. difference (points)")
    ax.set_title("GTN against CE over the scale ladder (95% CI over students)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    from nasdistill.atomic import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("NASDISTILL_PROGRESS", "0")
    out = Path(args.out)
    rungs = []
    for size in sorted(args.sizes):
        rungs.append(rung(args, size))
        from nasdistill.atomic import write_json

        write_json(out / "ladder.json", rungs)
        print(table(rungs), flush=True)
    plot(rungs, out / "ladder.png")
    print(f"ladder: {out / 'ladder.json'}, {out / 'ladder.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
