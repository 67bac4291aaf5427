"""KD that does not take a teacher's logit scale as given: plain KD, KD on standardized logits and KD
from calibrated teachers, for every teacher of one main job, with the same rule for every teacher.

Runs a main job (default ``examples/synthetic_gtn.yaml``, the synthetic benchmark where teachers
differ) three times into ``OUT/<variant>``: ``plain`` (the configuration as it is), ``standardized``
(``distill.kd.standardize=true`` with T 2 and KD weight 9, the pairing of the logit-standardization
authors on CIFAR-100) and ``calibrated`` (``teachers.calibrate=true``: every teacher's logits
divided by the temperature that minimises its NLL on the validation split). The second and third
jobs reuse the first one's search, teachers and baselines (copied in: the same configuration, so
the lifecycle reuses them) and run only their own KD distillations.

Printed (and written to ``OUT/variants.json``): per variant, the mean over students of every
teacher's KD, each teacher's KD minus CE's KD, each teacher's KD minus the students alone, and
each variant minus plain KD per teacher -- all with the student as the unit (bootstrap 95% CI,
paired t p-value) -- and each teacher's calibration temperature.

    python examples/kd_variants.py --out runs/kd_variants                       # ~40 min on 2 cores
    python examples/kd_variants.py --config my.yaml --set teachers.model.name=resnet8 --out runs/v
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
#: KD variants: name -> the overrides of its job (plain KD is the configuration's own).
VARIANTS = {"plain": [],
            "standardized": ["distill.kd.standardize=true", "distill.kd.temperature=2", "distill.kd.kd_weight=9"],
            "calibrated": ["teachers.calibrate=true"]}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(BENCHMARK), help="the main job's YAML")
    p.add_argument("--out", default="runs/kd_variants")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides of every job")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    return p.parse_args(argv)


def run_job(config: str, folder: Path, overrides: list[str]) -> float:
    """``nasdistill run`` into ``folder`` (finished runs reused); its wall time in seconds."""
    cmd = [sys.executable, "-m", "nasdistill", "run", config, *overrides, "--out-dir", str(folder)]
    print("$", " ".join(cmd[2:]), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t0


def share_runs(src: Path, dst: Path) -> int:
    """Copy ``src``'s finished search, teachers and baselines into ``dst``: the same configuration,
    so the variant's job reuses them (each run's fingerprint is checked, and a distillation's
    includes its teacher's weights digest). Returns the number of runs copied."""
    copied = 0
    for run in [*src.glob("search/*"), *src.glob("teachers/*_s*"), *src.glob("distill/*/none_s*")]:
        target = dst / run.relative_to(src)
        if (run / "result.json").is_file() and not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(run, target, ignore=shutil.ignore_patterns("*.lock"))
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


def temperatures(folder: Path) -> dict:
    """Each teacher's mean calibration temperature over its seeds (from the job's summary)."""
    summary = json.loads((folder / "summary.json").read_text())
    out: dict = {}
    for row in summary.get("teachers") or []:
        if row.get("temperature") is not None:
            out.setdefault(row["teacher"], []).append(row["temperature"])
    return {t: sum(v) / len(v) for t, v in out.items()}


def analyse(results: dict, teachers: list[str], reference: str = "ce") -> dict:
    """The comparisons of the module docstring from ``{variant: results.csv rows}``."""
    first = next(iter(results.values()))
    alone = by_student(first, "none", "none")
    out = {"means": {"students alone": mean_over_students(alone)}, "minus_reference": {}, "minus_alone": {},
           "minus_plain": {}}
    for variant, rows in results.items():
        ref = by_student(rows, reference, "kd")
        for t in teachers:
            mine = by_student(rows, t, "kd")
            out["means"][f"{t} {variant}"] = mean_over_students(mine)
            if t != reference:
                out["minus_reference"][f"{t} {variant}"] = compare(mine, ref)
            out["minus_alone"][f"{t} {variant}"] = compare(mine, alone)
            if variant != "plain" and "plain" in results:
                out["minus_plain"][f"{t} {variant}"] = compare(mine, by_student(results["plain"], t, "kd"))
    return out


def fmt(x, spec=".2f") -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


def p_text(p) -> str:
    return "p < 0.001" if isinstance(p, float) and 0 <= p < 0.001 else f"p {fmt(p, '.3f')}"


def diff_text(d: dict) -> str:
    return (f"{fmt(d['mean_diff'], '+.2f')} ({fmt(d['boot_ci_low'], '+.2f')} to {fmt(d['boot_ci_high'], '+.2f')}, "
            f"{p_text(d['t_pvalue'])})")


def table(analysis: dict, teachers: list[str], variants: list[str], reference: str = "ce") -> str:
    """Markdown: per variant, each teacher's KD (mean over students) and minus the reference's."""
    others = [t for t in teachers if t != reference]
    lines = ["| KD | " + " | ".join(f"{t.upper()}+KD" for t in teachers) + " | "
             + " | ".join(f"{t.upper()}+KD - {reference.upper()}+KD" for t in others) + " |",
             "|---|" + "---|" * (len(teachers) + len(others))]
    for v in variants:
        lines.append(f"| {v} | " + " | ".join(fmt(analysis["means"].get(f"{t} {v}")) for t in teachers) + " | "
                     + " | ".join(diff_text(analysis["minus_reference"][f"{t} {v}"]) for t in others) + " |")
    if any(analysis["minus_plain"].values()):
        lines += ["", "| variant minus plain KD | " + " | ".join(t.upper() for t in teachers) + " |",
                  "|---|" + "---|" * len(teachers)]
        for v in variants[1:]:
            lines.append(f"| {v} | " + " | ".join(diff_text(analysis["minus_plain"][f"{t} {v}"]) for t in teachers)
                         + " |")
    return "\n".join(lines)


def run_variants(config: str, root: Path, overrides: list[str], variants: list[str]) -> tuple[dict, dict]:
    """The jobs of every variant (the first one's runs shared with the others); ``(results by
    variant, wall time by variant)``."""
    times, results = {}, {}
    for variant in variants:
        folder = root / variant
        if variant != variants[0]:
            print(f"{variant}: {share_runs(root / variants[0], folder)} runs taken from {variants[0]}", flush=True)
        times[variant] = run_job(config, folder, overrides + VARIANTS[variant])
        results[variant] = read_results(folder)
    return results, times


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("NASDISTILL_PROGRESS", "0")
    root = Path(args.out)
    results, times = run_variants(args.config, root, list(args.set), args.variants)
    teachers = sorted({r["teacher"] for rows in results.values() for r in rows if r["teacher"] != "none"},
                      key=lambda t: (t != "ce", t))
    analysis = analyse(results, teachers)
    analysis.update(wall_s=times, temperature=temperatures(root / args.variants[0]) if "calibrated" not in
                    args.variants else temperatures(root / "calibrated"))
    print(table(analysis, teachers, args.variants))
    print("calibration temperature T_cal per teacher:",
          ", ".join(f"{t} {v:.2f}" for t, v in analysis["temperature"].items()))
    from nasdistill.atomic import write_json

    write_json(root / "variants.json", analysis)
    print(f"analysis: {root / 'variants.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
