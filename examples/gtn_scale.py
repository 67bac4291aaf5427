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

    python examples/gtn_scale.py --out runs/gtn_scale                          # the CPU ladder (~15 h)
    python examples/gtn_scale.py --rungs 50000:100000 --device cuda --workers auto --runs-per-gpu 8   # a GPU rung
    python examples/gtn_scale.py --tiny --out /tmp/ladder                      # a smoke run (~3 min)

On 2 CPU cores (two runs at a time, one core each) the 12,500-step rung takes about 8.5 h: its 12
teachers about 3.5 h (a GTN or SFTN teacher 45-55 min, CE 30 min, MSE 10 min), its 234
distillations of 2,500 steps about 5 h (~150 s each). The 2,500-step rung distills as long and
trains its teachers a fifth as long (~5.5 h); the 500-step rung takes about 1 h. Every finished run
is reused, so an interrupted ladder continues where it stopped.
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
    p.add_argument("--workers", default="2", help="runs in parallel (processes; auto: GPUs x --runs-per-gpu)")
    p.add_argument("--runs-per-gpu", type=int, default=1, help="runs sharing one GPU at a time (with --workers auto)")
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
           f"distill.train.device={args.device}", f"workers={args.workers}",
           f"runs_per_gpu={args.runs_per_gpu}", "export.enabled=false",
           "search.targets=[]", "students.random_per_target=0"]
    # the report's "Task" paragraph: the benchmark's own one speaks of its 400 images
    about = (f"A rung of the scale ladder (examples/gtn_scale.py), {steps:,} GTN weight steps: the synthetic task "
             f"with {images:,} training images; every teacher trains {t_epochs} epochs, as many as GTN (which "
             f"spends every other iteration on phi), and the distillations {d_epochs} epochs (at most "
             f"{args.distill_steps:,} steps). Since p(y|x) is known, a teacher's calibration and distance to the "
             "posterior can be read next to its students' accuracy.")
    out.append(f"about={json.dumps(about)}")
    if args.tiny:
        out += ["data.options.n_test=500", "data.val_size=100"]
    return out


def teacher_end(folder: Path, method: str) -> dict:
    """Mean over teacher seeds at the last epoch: sampled-branch training accuracy, logit std,
    training accuracy; the test accuracy of the saved teacher; and the runs flagged unstable."""
    rows, unstable, test = [], 0, []
    for run in sorted((folder / "teachers").glob(f"{method}_s*")):
        lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
        if lines:
            rows.append(lines[-1])
        result = json.loads((run / "result.json").read_text()) if (run / "result.json").is_file() else {}
        unstable += bool(result.get("instability"))
        if isinstance(result.get("test_acc"), (int, float)):
            test.append(result["test_acc"])

    def mean(key_filter):
        values = [v for r in rows for k, v in r.items() if key_filter(k) and isinstance(v, (int, float))]
        return sum(values) / len(values) if values else None

    return {"sampled_branch_acc": mean(lambda k: k.startswith("sampled_branch") and k.endswith("_acc")),
            "teacher_logit_std": mean(lambda k: k == "teacher_logit_std"),
            "teacher_train_acc": mean(lambda k: k == "train_acc"), "unstable_runs": unstable,
            "teacher_test_acc": sum(test) / len(test) if test else None}


def rung(args, steps: int, images: int) -> dict:
    folder = f"steps{steps}_n{images}"
    root = Path(args.out) / folder
    overrides = job_overrides(args, steps, images)
    results, times = run_variants(str(BENCHMARK), root, overrides, args.variants)
    analysis = analyse(results, TEACHERS)
    # folder and overrides: what examples/readme_figures.py checks against the benchmark as it is now
    return {"weight_steps": steps, "n_train": images, "teacher": args.teacher, "folder": folder,
            "overrides": overrides, "variants": {v: VARIANTS[v] for v in args.variants},
            "epochs": dict(zip(("teacher", "distill"), rung_schedule(steps, images, args.distill_steps))),
            "means": analysis["means"], "minus_ce": analysis["minus_reference"],
            "minus_plain": analysis["minus_plain"], "minus_alone": analysis["minus_alone"],
            "teachers": {t: teacher_end(root / args.variants[0], t) for t in TEACHERS}, "wall_s": times}


def table(rungs: list[dict], variants: list[str]) -> str:
    """Markdown: one row per rung and KD variant (CE+KD's mean over students, each teacher's KD minus
    CE's KD with the student as the unit), then per rung the teachers' test accuracy and the GTN
    teacher's state at its end."""
    others = [t for t in TEACHERS if t != "ce"]
    lines = ["| weight steps | images | teacher/KD epochs | KD | alone | CE+KD | "
             + " | ".join(f"{t.upper()}+KD - CE+KD" for t in others) + " |",
             "|---|---|---|---|---|---|" + "---|" * len(others)]
    for r in rungs:
        for i, v in enumerate(variants):
            head = [f"{r['weight_steps']:,}", f"{r['n_train']:,}", f"{r['epochs']['teacher']}/{r['epochs']['distill']}"]
            cells = [*(head if i == 0 else ["", "", ""]), v, fmt(r["means"]["students alone"]) if i == 0 else "",
                     fmt(r["means"][f"ce {v}"]), *(diff_text(r["minus_ce"][f"{t} {v}"]) for t in others)]
            lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for r in rungs:
        t, g = r["teachers"], r["teachers"]["gtn"]
        lines.append(f"- {r['weight_steps']:,} weight steps: teachers' test accuracy (mean over seeds) "
                     + ", ".join(f"{m.upper()} {fmt(t[m].get('teacher_test_acc'))}%" for m in TEACHERS)
                     + f"; the GTN teacher at its end: sampled branches {fmt(g['sampled_branch_acc'], '.1f')}% "
                     f"train acc, teacher {fmt(g['teacher_train_acc'], '.1f')}%, logit std {fmt(g['teacher_logit_std'])}; "
                     "unstable teacher runs: " + ", ".join(f"{m} {t[m]['unstable_runs']}" for m in TEACHERS))
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
    print("(README: python examples/readme_figures.py --ladder " + str(out / "ladder.json") + ")")
    plot(rungs, args.variants, out / "ladder.png")
    print(f"ladder: {out / 'ladder.json'}, {out / 'ladder.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
