"""``report.md``: the run's tables, plots and an honest sentence about the GTN vs CE teacher gain."""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Optional, Sequence

from .plots import plot_accuracy_vs_macs, plot_branch_accuracy, plot_gain, plot_phi_entropy
from .stats import significant
from .tables import (DISPLAY_NAMES, MeanCI, accuracy_table, as_float, choose_metric, comparison_table,
                     conditions, gain_table, stage_table, students_table, teacher_table, validate_results,
                     write_results_csv)

ALPHA = 0.05
METRIC_TEXT = {"test_acc": "test top-1 accuracy (%), measured once at the end of training",
               "best_acc": "best validation top-1 accuracy (%) over training",
               "last_acc": "validation top-1 accuracy (%) after the last epoch"}


# ------------------------------------------------------------------------------------ formatting
def fmt_acc(x) -> str:
    x = as_float(x)
    return "—" if x is None else f"{x:.2f}"


def fmt_signed(x) -> str:
    x = as_float(x)
    return "—" if x is None else f"{x:+.2f}"


def fmt_mean_ci(m: MeanCI, signed: bool = False) -> str:
    """``72.31 ± 0.45``; ``72.31 ± n/a`` with a single value; ``—`` with none."""
    if not m.n or not math.isfinite(m.mean):
        return "—"
    mean = f"{m.mean:+.2f}" if signed else f"{m.mean:.2f}"
    return f"{mean} ± {m.half_width:.2f}" if math.isfinite(m.half_width) else f"{mean} ± n/a"


def fmt_p(p) -> str:
    p = as_float(p)
    if p is None:
        return "n/a"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def _p_eq(p) -> str:
    """``p = 0.410`` / ``p < 0.001`` / ``p n/a``."""
    s = fmt_p(p)
    return "p n/a" if s == "n/a" else (f"p {s}" if s.startswith("<") else f"p = {s}")


def fmt_count(x) -> str:
    """MACs / parameter counts: ``12.35M``, ``850.2K``, ``1.20G``, ``512``."""
    x = as_float(x)
    if x is None:
        return "—"
    for scale, unit in ((1e9, "G"), (1e6, "M")):
        if abs(x) >= scale:
            return f"{x / scale:.2f}{unit}"
    if abs(x) >= 1e3:
        return f"{x / 1e3:.1f}K"
    return f"{x:,.0f}"


def fmt_seconds(s) -> str:
    s = as_float(s)
    if s is None:
        return "—"
    if s < 59.95:
        return f"{s:.1f} s"
    if s < 3599.5:
        minutes, secs = divmod(int(round(s)), 60)
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(int(round(s / 60)), 60)
    return f"{hours} h {minutes:02d} min"


def _table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    def cell(v):
        return str(v).replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def _flatten(d: dict, prefix: str = "") -> list[tuple[str, object]]:
    out = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out += _flatten(v, key + ".")
        else:
            out.append((key, v))
    return out


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _verdict(p, alpha: float = ALPHA) -> str:
    if as_float(p) is None:
        return "not tested"
    return f"significant at {alpha:g}" if significant(p, alpha) else f"not significant at {alpha:g}"


def _grid(overall: dict) -> str:
    """``4 students x 3 seeds``."""
    return f"{_plural(overall['n_students'], 'student')} x {_plural(overall['n_seeds'], 'seed')}"


# -------------------------------------------------------------------------------------- sections
def gain_sentence(gain: Optional[dict], has_gtn: bool, alpha: float = ALPHA) -> str:
    """The Summary's verdict on GTN+KD minus CE+KD, stated plainly (see :func:`gain_table`)."""
    if gain is None:
        why = ("no GTN teacher was distilled from" if not has_gtn else
               "no student has both a GTN-teacher and a CE-teacher KD run with the same seed")
        return (f"This run cannot compare the GTN teacher with the CE teacher: {why}, "
                f"so there is no gain to report.")
    o = gain["overall"]
    m = gain["method"].upper()
    text = (f"Distilling with {m} from the GTN teacher instead of the CE teacher changed the students' "
            f"accuracy by **{fmt_signed(o['mean_diff'])} points** on average over {_plural(o['n'], 'pair')} "
            f"(same student, same seed) from {_grid(o)}")
    if o["n"] < 2:
        return text + (". With a single pair there is no confidence interval and no test: this run "
                       "cannot tell the teachers apart.")
    wp = o["wilcoxon_pvalue"]
    wtxt = (f"Wilcoxon signed-rank {_p_eq(wp)}" if math.isfinite(wp) else
            "Wilcoxon signed-rank test not run with fewer than 6 pairs")
    ci = (f"95% CI {fmt_signed(o['ci_low'])} to {fmt_signed(o['ci_high'])}"
          if math.isfinite(o["half_width"]) else "95% CI n/a")
    text += f" ({ci}; paired t-test {_p_eq(o['t_pvalue'])}; {wtxt}). "
    if significant(o["t_pvalue"], alpha):
        better = "better" if o["mean_diff"] > 0 else "worse"
        text += (f"The difference is statistically significant at {alpha:g} (paired t-test "
                 f"{_p_eq(o['t_pvalue'])}): in this run the GTN teacher gave {better} students than the "
                 f"CE teacher.")
        if math.isfinite(wp) and not significant(wp, alpha):
            text += f" The Wilcoxon signed-rank test does not confirm it ({_p_eq(wp)}); treat it with care."
    else:
        text += (f"The difference is not statistically significant ({_p_eq(o['t_pvalue'])}); with "
                 f"{_grid(o)} this run cannot tell the teachers apart.")
        if significant(wp, alpha):
            text += f" (The Wilcoxon signed-rank test alone gives {_p_eq(wp)}.)"
    return text


def _baseline_sentence(comparisons: list[dict]) -> str:
    parts = [f"{c['condition']} {fmt_signed(c['mean_diff'])} points ({_p_eq(c['t_pvalue'])}, "
             f"{_verdict(c['t_pvalue'])})"
             for c in comparisons if c["reference"] == "baseline"]
    if not parts:
        return ""
    return " Against the students trained alone (baseline), distillation changed accuracy by: " + \
        "; ".join(parts) + "."


def _teachers_section(teachers) -> str:
    rows = teacher_table(teachers)
    if not rows:
        return "No teacher was trained in this run."
    extras = [k for k in ("ece", "posterior_mse") if k in rows[0]]
    header = ["Teacher", "Model", "Epochs", "Test acc (%)", "Best val acc (%)", "Wall time", "Cost vs CE"]
    header += [{"ece": "ECE", "posterior_mse": "Posterior MSE"}[k] for k in extras]
    body = []
    for r in rows:
        cost = f"{r['cost_vs_ce']:.2f}x" if math.isfinite(r["cost_vs_ce"]) else "—"
        name = DISPLAY_NAMES.get(r["teacher"], r["teacher"].upper())
        line = [name, r["model"] or "—", r["epochs"] if r["epochs"] is not None else "—",
                fmt_mean_ci(r["test_acc"]) if r["n"] > 1 else fmt_acc(r["test_acc"].mean),
                fmt_acc(r["best_acc"]), fmt_seconds(r["wall_time_s"]), cost]
        line += [f"{r[k]:.4f}" if as_float(r[k]) is not None else "—" for k in extras]
        body.append(line)
    return _table(header, body) + "\n\nCost vs CE = the teacher's wall time divided by the CE teacher's."


def _arch_text(arch_json: str) -> str:
    if not arch_json:
        return "—"
    arch = json.loads(arch_json)
    return "`" + " ".join(str(v) for v in arch.values()) + "`" if isinstance(arch, dict) else f"`{arch_json}`"


def _students_section(students, results) -> str:
    rows = students_table(students, results)
    searched = [r for r in rows if r["kind"] == "searched"]
    others = [r for r in rows if r["kind"] != "searched"]
    out = []
    if searched:
        out.append("Discovered by the search:\n\n" + _table(
            ["Student", "Target MACs", "MACs", "MACs / target", "Params", "Choices (in label order)"],
            [[r["student"], fmt_count(r["target_macs"]), fmt_count(r["macs"]),
              f"{r['macs_over_target']:.2f}" if math.isfinite(r["macs_over_target"]) else "—",
              fmt_count(r["params"]), _arch_text(r["arch"])] for r in searched]))
    if others:
        out.append("Sampled at random from the space:\n\n" + _table(
            ["Student", "Kind", "MACs", "Params", "Choices (in label order)"],
            [[r["student"], r["kind"] or "—", fmt_count(r["macs"]), fmt_count(r["params"]),
              _arch_text(r["arch"])] for r in others]))
    return "\n\n".join(out) if out else "No students in this run."


def _accuracy_section(results, students, metric) -> str:
    labels, rows = accuracy_table(results, students, metric)
    if not rows:
        return "No student runs in this run."
    ns = [r[label].n for r in rows if r["student"] != "mean over students" for label in labels if r[label].n]
    usual = max(set(ns), key=ns.count) if ns else 0

    def cell(m: MeanCI) -> str:
        return fmt_mean_ci(m) + (f" (n={m.n})" if m.n and m.n != usual else "")
    body = [[r["student"], r["kind"] or "", fmt_count(r["macs"]) if r["macs"] is not None else ""]
            + [cell(r[label]) for label in labels] for r in rows]
    text = (f"Accuracy = {METRIC_TEXT.get(metric, metric)}; mean ± half width of the 95% Student-t "
            f"interval over {usual} seed(s) per cell (\"n/a\" with one seed). Every run is in "
            f"[results.csv](results.csv).\n\n" + _table(["Student", "Kind", "MACs"] + labels, body))
    comps = comparison_table(results, metric)
    if comps:
        text += ("\n\nPaired comparisons over all (student, seed) pairs (difference = condition minus "
                 "reference, points):\n\n" + _table(
                     ["Condition", "Reference", "Pairs", "Mean diff", "95% CI", "t-test p", "Wilcoxon p",
                      f"Significant at {ALPHA:g}"],
                     [[c["condition"], c["reference"], c["n"], fmt_signed(c["mean_diff"]),
                       (f"{fmt_signed(c['ci_low'])} to {fmt_signed(c['ci_high'])}"
                        if math.isfinite(c["half_width"]) else "n/a"),
                       fmt_p(c["t_pvalue"]), fmt_p(c["wilcoxon_pvalue"]),
                       "yes" if significant(c["t_pvalue"]) else "no"] for c in comps]))
    return text


def _gain_section(results, students, metric, gains: dict) -> str:
    if not gains:
        return gain_sentence(None, any(r["teacher"] == "gtn" for r in results))
    out = []
    for method, gain in gains.items():
        o = gain["overall"]
        body = [[r["student"], r["kind"] or "", fmt_count(r["macs"]), fmt_mean_ci(r["gain"], signed=True),
                 r["gain"].n, fmt_p(r["t_pvalue"])] for r in gain["rows"]]
        body.append(["**overall**", "", "", fmt_mean_ci(MeanCI(o["mean_diff"], o["half_width"], o["n"]),
                                                       signed=True), o["n"], fmt_p(o["t_pvalue"])])
        out.append(f"### {gain['label']} minus {gain['reference_label']}\n\n" + _table(
            ["Student", "Kind", "MACs", "Gain (points, mean ± 95% CI)", "Pairs", "t-test p"], body)
            + "\n\n" + gain_sentence(gain, True))
    out.append("Pairs match a student and a seed. Pairs of the same student are not independent, so "
               "read the overall test together with the per-student rows: a real gain shows up in most "
               "students, not in one.")
    return "\n\n".join(out)


def _plots_section(run_dir: Path, results, students, phi_history, metric, branch_history=()) -> str:
    made = [("Accuracy vs MACs", plot_accuracy_vs_macs(results, run_dir / "accuracy_vs_macs.png", metric,
                                                      students), "no student runs with MACs")]
    for method in ("kd", "dkd"):
        path = plot_gain(results, run_dir / f"gain_gtn_vs_ce_{method}.png", "gtn", "ce", method, metric,
                         students)
        if path is not None or method == "kd":
            made.append((f"Gain GTN+{method.upper()} minus CE+{method.upper()} per student", path,
                         "no matched GTN and CE teacher runs"))
    made.append(("Gate (phi) entropy during GTN training", plot_phi_entropy(phi_history,
                                                                           run_dir / "phi_entropy.png"),
                 "no GTN phi history"))
    if branch_history:
        made.append(("Teacher and branch accuracy during GTN training",
                     plot_branch_accuracy(branch_history, run_dir / "branch_accuracy.png"),
                     "no branch accuracy history"))
    return "\n\n".join(f"**{title}**\n\n![{title}]({p.name})" if p is not None
                       else f"**{title}**: not drawn ({why} in this run)." for title, p, why in made)


def _stages_section(stage_times) -> str:
    rows = stage_table(stage_times)
    if not rows:
        return "No stage times were recorded."
    return _table(["Stage", "Wall time", "Share"],
                  [[f"**{r['stage']}**" if r["stage"] == "total" else r["stage"], fmt_seconds(r["seconds"]),
                    f"{100 * r['share']:.0f}%" if math.isfinite(r["share"]) else "—"] for r in rows])


def _config_section(config_summary) -> str:
    items = _flatten(config_summary or {})
    if not items:
        return "No configuration was given."
    return _table(["Key", "Value"], [[f"`{k}`", f"`{v}`"] for k, v in items])


# ---------------------------------------------------------------------------------------- report
def write_report(run_dir, results: Sequence[dict], teachers: Sequence[dict] = (),
                 students: Sequence[dict] = (), stage_times: Optional[dict] = None,
                 phi_history: Sequence[dict] = (), config_summary: Optional[dict] = None,
                 title: str = "nasdistill report", metric: Optional[str] = None,
                 branch_history: Sequence[dict] = ()) -> Path:
    """Write ``report.md``, ``results.csv`` and the PNG plots into ``run_dir``; return report.md's path.

    ``metric`` is the accuracy compared (default: ``test_acc`` when the runs have it, else
    ``best_acc``). See :mod:`nasdistill.report` for the input formats.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    results = list(results)
    validate_results(results)
    metric = metric or choose_metric(results)
    write_results_csv(results, run_dir / "results.csv")

    methods = sorted({m for _, m in conditions(results) if m != "none"}, key=lambda m: (m != "kd", m))
    gains = {m: g for m in methods if (g := gain_table(results, "gtn", "ce", m, metric, students)) is not None}
    has_gtn = any(r["teacher"] == "gtn" for r in results)
    summary = gain_sentence(gains.get("kd"), has_gtn)
    for m, g in gains.items():
        if m != "kd":
            o = g["overall"]
            summary += (f" With {m.upper()} the GTN minus CE gain is {fmt_signed(o['mean_diff'])} points "
                        f"({_p_eq(o['t_pvalue'])}, "
                        f"{_verdict(o['t_pvalue'])}).")
    summary += _baseline_sentence(comparison_table(results, metric))

    sections = [
        ("Summary", summary),
        ("Teachers", _teachers_section(teachers)),
        ("Students", _students_section(students, results)),
        ("Accuracy by teacher", _accuracy_section(results, students, metric)),
        ("Gain GTN − CE", _gain_section(results, students, metric, gains)),
        ("Plots", _plots_section(run_dir, results, students, phi_history, metric, branch_history)),
        ("Time per stage", _stages_section(stage_times)),
        ("Configuration", _config_section(config_summary)),
    ]
    text = f"# {title}\n\n" + "\n\n".join(f"## {name}\n\n{body}" for name, body in sections) + "\n"
    path = run_dir / "report.md"
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".md", dir=run_dir)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
    return path
