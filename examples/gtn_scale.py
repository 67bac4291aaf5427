"""A scale ladder for GTN in training steps: does GTN+KD catch up with CE+KD as its teacher trains
longer, and what do logit standardization and temperature calibration do to the comparison?

Each rung is the synthetic known-posterior task (``examples/synthetic_gtn.yaml``: 10 overlapping
Gaussian classes of 8x8 images, Bayes accuracy 80%) at a number of GTN *weight steps* (GTN spends
every other iteration on phi, so its teacher trains ``2 x steps`` iterations of batch 64), with
enough training images that the teacher does not run over them many times. Every teacher gets the
same number of epochs as GTN; the distillations get as many steps as GTN's weight steps, at most
``--distill-steps``. Per rung, the three jobs of ``examples/kd_variants.py``: CE, MSE, SFTN and GTN
teachers at the main job's teacher settings (gradient clipping included), the same sampled students
distilled with plain KD and alone, then with KD on standardized logits and from calibrated
teachers (the teachers and baselines reused): the same rule for every teacher.

Printed per rung (and written to ``OUT/ladder.json``): the mean over students of every condition,
each teacher's KD minus CE's KD per variant with the student as the unit (bootstrap 95% CI, paired
t p-value), each variant minus plain KD per teacher, and at the end of each GTN teacher the sampled
branches' training accuracy and the teacher's logit spread.

    python examples/gtn_scale.py --out runs/gtn_scale                          # the CPU ladder (~5 h)
    python examples/gtn_scale.py --teacher vgg8 --rungs 50000:100000 --distill-steps 20000 --device cuda
    python examples/gtn_scale.py --tiny --out /tmp/ladder                      # a smoke run (~3 min)
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from kd_variants import VARIANTS, analyse, diff_text, fmt, run_variants

BENCHMARK = HERE / "synthetic_gtn.yaml"
BATCH = 64
#: The default CPU rungs, ``weight steps:training images``.
RUNGS = ["500:2000", "2500:8000", "12500:20000"]
TEACHERS = ["ce", "mse", "sftn", "gtn"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/gtn_scale", help="folder of the ladder (one sub-folder per rung)")
    p.add_argument("--rungs", nargs="+", default=RUNGS, metavar="STEPS:IMAGES",
                   help="GTN weight steps and training images of each rung")
    p.add_argument("--teacher", default="resnet8",
                   help="the teachers' zoo model (resnet8: a vgg8 GTN iteration costs 2.5x, and the top CPU rung "
                        "would take a day on 2 cores)")
    p.add_argument("--students", type=int, default=6, help="students sampled from the pool")
    p.add_argument("--distill-steps", type=int, default=2500, help="the distillations' steps at most")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--device", default="auto", help="train.device of every run (auto, cpu, cuda)")
    p.add_argument("--workers", default="2", help="runs in parallel (processes)")
    p.add_argument("--tiny", action="store_true", help="smoke run: 20 steps on 400 images, 2 students, 2 seeds")
    return p.parse_args(argv)


def rung_schedule(steps: int, images: int, distill_steps: int = 2500) -> tuple[int, int]:
    """``(teacher epochs, distillation epochs)`` giving GTN ``steps`` weight steps (one iteration in
    two) and the distillations ``min(steps, distill_steps)`` steps, at batch 64."""
    per_epoch = math.ceil(images / BATCH)
    return max(1, math.ceil(2 * steps / per_epoch)), max(1, math.ceil(min(steps, distill_steps) / per_epoch))


def job_overrides(args, steps: int, images: int) -> list[str]:
    t_epochs, d_epochs = rung_schedule(steps, images, args.distill_steps)
    students = 2 if args.tiny else args.students
    seeds = args.seeds[:2] if args.tiny else args.seeds
    seed_list = ",".join(map(str, seeds))
    out = [f"data.options.n_train={images}", f"students.sampled={students}", f"teachers.model.name={args.teacher}",
           f"teachers.methods=[{','.join(TEACHERS)}]", f"teachers.seeds=[{seed_list}]",
           f"distill.seeds=[{seed_list}]", f"teachers.train.epochs={t_epochs}",
           f"distill.train.epochs={d_epochs}", f"teachers.train.device={args.device}",
           f"distill.train.device={args.device}", f"workers={args.workers}", "export.enabled=false",
           "search.targets=[]", "students.random_per_target=0"]
    if args.tiny:
        out += ["data.options.n_test=500", "data.val_size=100"]
    return out


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
    results, times = run_variants(str(BENCHMARK), root, job_overrides(args, steps, images), args.variants)
    analysis = analyse(results, TEACHERS)
    return {"weight_steps": steps, "n_train": images, "teacher": args.teacher,
            "epochs": dict(zip(("teacher", "distill"), rung_schedule(steps, images, args.distill_steps))),
            "means": analysis["means"], "minus_ce": analysis["minus_reference"],
            "minus_plain": analysis["minus_plain"], "minus_alone": analysis["minus_alone"],
            "teachers": {t: teacher_end(root / args.variants[0], t) for t in TEACHERS}, "wall_s": times}


def table(rungs: list[dict], variants: list[str]) -> str:
    lines = []
    for r in rungs:
        lines.append(f"\n### {r['weight_steps']:,} weight steps, {r['n_train']:,} images "
                     f"(teacher/KD epochs {r['epochs']['teacher']}/{r['epochs']['distill']})\n")
        lines.append(f"students alone: {fmt(r['means']['students alone'])}\n")
        lines.append("| KD | CE+KD | " + " | ".join(f"{t.upper()}+KD - CE+KD" for t in TEACHERS if t != "ce") + " |")
        lines.append("|---|---|" + "---|" * (len(TEACHERS) - 1))
        for v in variants:
            lines.append(f"| {v} | {fmt(r['means'][f'ce {v}'])} | "
                         + " | ".join(diff_text(r["minus_ce"][f"{t} {v}"]) for t in TEACHERS if t != "ce") + " |")
        g = r["teachers"]["gtn"]
        lines.append(f"\nGTN teacher at the end: sampled branches {fmt(g['sampled_branch_acc'], '.1f')}% train acc, "
                     f"teacher {fmt(g['teacher_train_acc'], '.1f')}%, logit std {fmt(g['teacher_logit_std'])}; "
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
