"""``report.md``: the run's tables, plots and an honest sentence about the gain of the headline teacher
(GTN) over the reference teacher (CE); which teachers those are comes from their registered
metadata (``headline``, ``reference``), never from their names."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional, Sequence

from ..atomic import write_text
from .branches import by_teacher
from .exports import exports_section
from .fmt import (ALPHA, flatten, fmt_acc, fmt_count, fmt_mean_ci, fmt_p, fmt_range, fmt_seconds,
                  fmt_signed, join_words, md_table, p_eq, plural, verdict)
from .gates import gate_section, plot_gate_exploration, plot_phi_entropy
from .plots import metric_axis, plot_accuracy_vs_macs, plot_branch_accuracy, plot_gain
from .precondition import branch_teacher_section, precondition_plots
from .search_gain import search_gain, search_gain_section, verdict_sentence
from .stats import significant
from .tables import (INVOCATION, MISSED_TARGET_TOL, OVERLAP, PLACEMENT, SEED_SPREAD, MeanCI, accuracy_table, as_float,
                     choose_metric, comparison_table, conditions, display_name, gain_table, headline_names, reference_name,
                     stage_table, students_table, teacher_table,
                     validate_results, write_results_csv)

METRIC_TEXT = {"test_acc": "test top-1 accuracy (%), measured once at the end of training",
               "best_acc": "best validation top-1 accuracy (%) over training",
               "last_acc": "validation top-1 accuracy (%) after the last epoch"}

__all__ = ["gain_sentence", "write_report", "fmt_acc", "fmt_count", "fmt_mean_ci", "fmt_p", "fmt_seconds",
           "fmt_signed"]


def _seeds(o: dict) -> str:
    """``3 seeds`` / ``1 seed`` / ``2 to 3 seeds``: the seeds per student of a comparison."""
    return (plural(o["seeds_max"], "seed") if o["seeds_min"] == o["seeds_max"]
            else f"{o['seeds_min']} to {o['seeds_max']} seeds")


def basis(o: dict) -> str:
    """What a comparison rests on: ``8 students (each the mean of 3 seeds; teachers trained once
    per seed, 3 teacher seeds)``."""
    nt = o.get("n_teacher_seeds")
    if nt is None:
        teachers = "teacher seeds not recorded"
    elif nt == 1:
        teachers = "one teacher run shared by every seed"
    elif nt == o["n_seeds"]:
        teachers = f"teachers trained once per seed, {nt} teacher seeds"
    else:
        teachers = f"{nt} teacher seeds"
    return f"{plural(o['n_students'], 'student')} (each the mean of {_seeds(o)}; {teachers})"


def _grid(o: dict) -> str:
    """``4 students (3 seeds each)``."""
    return f"{plural(o['n_students'], 'student')} ({_seeds(o)} each)"


# -------------------------------------------------------------------------------------- sections
def gain_sentence(gain: Optional[dict], has_teacher: bool, alpha: float = ALPHA, teacher: Optional[str] = None,
                  reference: Optional[str] = None) -> str:
    """The Summary's verdict on the headline teacher's KD minus the reference teacher's (GTN+KD
    minus CE+KD), stated plainly (see :func:`gain_table`).

    The student is the unit: each student's gain is the mean over its seeds, and the tests and
    intervals are across students.
    """
    teacher = gain["teacher"] if gain is not None else (teacher or (headline_names() or ["gtn"])[0])
    reference = gain["reference"] if gain is not None else (reference or reference_name())
    t, r = display_name(teacher, "teacher"), display_name(reference, "teacher")
    if gain is None:
        why = (f"no {t} teacher was distilled from" if not has_teacher else
               f"no student has both a {t}-teacher and a {r}-teacher KD run with the same seed")
        return (f"This run cannot compare the {t} teacher with the {r} teacher: {why}, "
                f"so there is no gain to report.")
    o = gain["overall"]
    m = display_name(gain["method"])
    text = (f"Distilling with {m} from the {t} teacher instead of the {r} teacher changed the students' "
            f"accuracy by **{fmt_signed(o['mean_diff'])} points** on average over {basis(o)}")
    if o["n_students"] < 2:
        return text + (". With a single student there is no test across students and no confidence "
                       "interval: this run cannot tell the teachers apart.")
    wp = o["wilcoxon_pvalue"]
    wtxt = (f"Wilcoxon signed-rank {p_eq(wp)}" if math.isfinite(wp) else
            "Wilcoxon signed-rank test not run with fewer than 6 students")
    text += (f": bootstrap 95% CI {fmt_range(o['boot_ci_low'], o['boot_ci_high'])}, t 95% CI "
             f"{fmt_range(o['ci_low'], o['ci_high'])}, paired t-test across students {p_eq(o['t_pvalue'])}, "
             f"{wtxt}. ")
    if significant(o["t_pvalue"], alpha):
        better = "better" if o["mean_diff"] > 0 else "worse"
        text += (f"The difference is statistically significant at {alpha:g} (paired t-test "
                 f"{p_eq(o['t_pvalue'])}): in this run the {t} teacher gave {better} students than the "
                 f"{r} teacher.")
        if math.isfinite(wp) and not significant(wp, alpha):
            text += f" The Wilcoxon signed-rank test does not confirm it ({p_eq(wp)}); treat it with care."
    else:
        text += (f"The difference is not statistically significant ({p_eq(o['t_pvalue'])}); with "
                 f"{_grid(o)} this run cannot tell the teachers apart.")
        if significant(wp, alpha):
            text += f" (The Wilcoxon signed-rank test alone gives {p_eq(wp)}.)"
    return text


def _baseline_sentence(comparisons: list[dict]) -> str:
    parts = [f"{c['condition']} {fmt_signed(c['mean_diff'])} points ({p_eq(c['t_pvalue'])}, "
             f"{verdict(c['t_pvalue'])})"
             for c in comparisons if c["reference"] == "baseline"]
    if not parts:
        return ""
    return (" Against the students trained alone (baseline), distillation changed accuracy (mean over "
            "students of each student's mean over seeds) by: " + "; ".join(parts) + ".")


def _teachers_section(teachers) -> str:
    rows = teacher_table(teachers)
    if not rows:
        return "No teacher was trained in this run."
    extras = [k for k in ("ece", "posterior_mse", "temperature") if k in rows[0]]
    several = any(r["n_seeds"] > 1 for r in rows)
    header = ["Teacher", "Model"] + (["Seeds"] if several else []) + [
        "Epochs", "Test acc (%)" + (", mean ± 95% CI" if several else ""), "Best val acc (%)", "Wall time",
        "Cost vs CE"]
    header += [{"ece": "ECE", "posterior_mse": "Posterior MSE", "temperature": "T_cal"}[k] for k in extras]
    body = []
    for r in rows:
        cost = f"{r['cost_vs_ce']:.2f}x" if math.isfinite(r["cost_vs_ce"]) else "—"
        name = display_name(r["teacher"])
        line = [name, r["model"] or "—"] + ([r["n_seeds"]] if several else []) + [
            r["epochs"] if r["epochs"] is not None else "—",
            fmt_mean_ci(r["test_acc"]) if r["n"] > 1 else fmt_acc(r["test_acc"].mean),
            fmt_acc(r["best_acc"]), fmt_seconds(r["wall_time_s"]), cost]
        line += [f"{r[k]:.4f}" if as_float(r[k]) is not None else "—" for k in extras]
        body.append(line)
    notes = "Cost vs CE = the teacher's wall time divided by the CE teacher's."
    if "temperature" in extras:
        notes += (" T_cal = the temperature that minimises the teacher's NLL on the validation split "
                  "(above 1: overconfident, below 1: flat); `teachers.calibrate=true` distills from "
                  "logits / T_cal.")
    if several:
        notes = ("Teachers trained once per seed: accuracies, wall times and costs are means over the seeds "
                 "(95% Student-t CI for test accuracy). " + notes)
    for r in rows:
        if r["seeds_disagree"]:
            notes += (f"\n\n**{display_name(r['teacher'])}: the seeds disagree by more than "
                      f"{SEED_SPREAD:g} points** (test accuracy per seed: "
                      + ", ".join(f"seed {seed} {fmt_acc(a)}" for seed, a in r["per_seed"])
                      + "); the mean hides it.")
    return md_table(header, body) + "\n\n" + notes + _instability_text(rows)


def _instability_text(rows) -> str:
    """The teacher runs the engine flagged as unstable (``result.json`` ``instability``)."""
    lines = [f"- {display_name(r['teacher'])}, seed {seed}: " + "; ".join(e["text"] for e in events[:3])
             + (f" (and {len(events) - 3} more)" if len(events) > 3 else "")
             for r in rows for seed, events in r["unstable"]]
    if not lines:
        return ""
    return ("\n\n**Unstable teacher runs** (a blow-up: mean training CE above 1.5 ln K; a collapse: logit "
            "spread below half its earlier maximum, or training accuracy 20 points below it):\n\n"
            + "\n".join(lines))


def _arch_text(arch_json: str) -> str:
    if not arch_json:
        return "—"
    arch = json.loads(arch_json)
    return "`" + " ".join(str(v) for v in arch.values()) + "`" if isinstance(arch, dict) else f"`{arch_json}`"


def _ratio_cell(r: dict) -> str:
    """``1.02``, or ``1.35 ⚠ missed by +35%`` when the MACs miss the target by more than 10%."""
    ratio = r["macs_over_target"]
    if not math.isfinite(ratio):
        return "—"
    return f"{ratio:.2f} ⚠ missed by {100 * (ratio - 1):+.0f}%" if r["missed_target"] else f"{ratio:.2f}"


def _convergence_cell(conv) -> str:
    if not conv:
        return "—"
    head = "yes" if conv.get("converged") else "**no**"
    off = "" if conv.get("mode_in_band", True) else ", mode outside the band"
    return (f"{head} (stable {conv.get('stable_epochs')}/{conv.get('phi_epochs')} epochs, "
            f"H {conv.get('entropy_frac', math.nan):.2f} ln N, p {conv.get('prob', math.nan):.2g}{off})")


def _students_section(students, results) -> str:
    rows = students_table(students, results)
    searched = [r for r in rows if r["kind"] == "searched"]
    randoms = [r for r in rows if r["kind"] == "random"]
    others = [r for r in rows if r["kind"] not in ("searched", "random")]
    conv = {s["student"]: s.get("convergence") for s in students}
    out = []
    if searched:
        text = "Discovered by the search:\n\n" + md_table(
            ["Student", "Target MACs", "MACs", "MACs / target", "Params", "Converged", "Choices (in label order)"],
            [[r["student"], fmt_count(r["target_macs"]), fmt_count(r["macs"]), _ratio_cell(r),
              fmt_count(r["params"]), _convergence_cell(conv.get(r["student"])), _arch_text(r["arch"])]
             for r in searched])
        text += ("\n\nConverged: the search's most probable architecture was the same over the last quarter of "
                 "its phi epochs (at least two) and the entropy of its architecture distribution H fell to "
                 "half of ln N (N label assignments) or below; p is the exported student's probability (the "
                 "most probable architecture within the target's MACs band).")
        missed = [r for r in searched if r["missed_target"]]
        if missed:
            text += (f"\n\n{plural(len(missed), 'searched student')} missed {'its' if len(missed) == 1 else 'their'} "
                     f"MACs target by more than {100 * MISSED_TARGET_TOL:.0f}%: " + join_words(
                         [f"{r['student']} ({fmt_count(r['macs'])} for a target of {fmt_count(r['target_macs'])}, "
                          f"{100 * (r['macs_over_target'] - 1):+.0f}%)" for r in missed])
                     + (". Compare it with care: it is not" if len(missed) == 1 else
                        ". Compare them with care: they are not") + " at the cost the search was asked for.")
        out.append(text)
    if randoms:
        out.append("Drawn at random from the networks of each target's MACs band (the baseline of \"Did "
                   "the search help?\"):\n\n" + md_table(
                       ["Student", "Target MACs", "MACs", "Params", "Choices (in label order)"],
                       [[r["student"], fmt_count(r["target_macs"]), fmt_count(r["macs"]), fmt_count(r["params"]),
                         _arch_text(r["arch"])] for r in randoms]))
    if others:
        out.append("Sampled at random from the space:\n\n" + md_table(
            ["Student", "Kind", "MACs", "Params", "Choices (in label order)"],
            [[r["student"], r["kind"] or "—", fmt_count(r["macs"]), fmt_count(r["params"]),
              _arch_text(r["arch"])] for r in others]))
    return "\n\n".join(out) if out else "No students in this run."


def _unit_sentence() -> str:
    return ("The unit of analysis is the student: each student's difference is the mean over its seeds of "
            "the paired differences (same student, same seed), and the tests and intervals treat the "
            "students as the independent observations.")


def _accuracy_section(results, students, metric, comps: Optional[list] = None) -> str:
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
            f"[results.csv](results.csv).\n\n" + md_table(["Student", "Kind", "MACs"] + labels, body))
    if comps is None:
        comps = comparison_table(results, metric)
    if comps:
        text += ("\n\nComparisons (difference = condition minus reference, points). " + _unit_sentence()
                 + "\n\n" + md_table(
                     ["Condition", "Reference", "Students", "Seeds", "Mean diff", "Bootstrap 95% CI", "t 95% CI",
                      "t-test p", "Wilcoxon p", f"Significant at {ALPHA:g}"],
                     [[c["condition"], c["reference"], c["n_students"], c["n_seeds"], fmt_signed(c["mean_diff"]),
                       fmt_range(c["boot_ci_low"], c["boot_ci_high"]), fmt_range(c["ci_low"], c["ci_high"]),
                       fmt_p(c["t_pvalue"]), fmt_p(c["wilcoxon_pvalue"]),
                       "yes" if significant(c["t_pvalue"]) else "no"] for c in comps]))
    return text


def _gain_section(results, gains: dict, head: str) -> str:
    if not gains:
        return gain_sentence(None, any(r["teacher"] == head for r in results), teacher=head)
    out = []
    for gain in gains.values():
        o = gain["overall"]
        body = [[r["student"], r["kind"] or "", fmt_count(r["macs"]), fmt_mean_ci(r["gain"], signed=True),
                 r["gain"].n, fmt_p(r["t_pvalue"])] for r in gain["rows"]]
        body.append(["**mean over students**", "", "",
                     fmt_mean_ci(MeanCI(o["mean_diff"], o["half_width"], o["n_students"]), signed=True),
                     plural(o["n_students"], "student"), fmt_p(o["t_pvalue"])])
        out.append(f"### {gain['label']} minus {gain['reference_label']}\n\n" + md_table(
            ["Student", "Kind", "MACs", "Gain (points, mean ± 95% CI)", "Seeds", "t-test p"], body)
            + "\n\n" + gain_sentence(gain, True))
    out.append("Per-student rows: mean over seeds, Student-t CI and paired t-test over that student's seeds. "
               + _unit_sentence())
    return "\n\n".join(out)


def _plot_lines(made) -> str:
    return "\n\n".join(f"**{title}**\n\n![{title}]({p.name})" if p is not None
                       else f"**{title}**: not drawn ({why} in this run)." for title, p, why in made)


def _plots_section(run_dir: Path, results, students, metric, branch_history=(), gains: Optional[dict] = None,
                   head: str = "gtn", ref: str = "ce", gates_title: str = "Gate exploration") -> str:
    """``gains``: :func:`gain_table` of the headline teacher ``head`` over the reference ``ref`` per
    method, when already computed. A gain plot per distillation method of the run."""
    made = [("Accuracy vs MACs", plot_accuracy_vs_macs(results, run_dir / "accuracy_vs_macs.png", metric,
                                                      students), "no student runs with MACs")]
    h, r = display_name(head, "teacher"), display_name(ref, "teacher")
    methods = [m for _, m in conditions(results) if m != "none"] or ["kd"]
    for method in dict.fromkeys(methods):
        path = plot_gain(results, run_dir / f"gain_{head}_vs_{ref}_{method}.png", head, ref, method, metric,
                         students, gain=(gains or {}).get(method))
        shown = display_name(method, "method")
        made.append((f"Gain {h}+{shown} minus {r}+{shown} per student", path,
                     f"no matched {h} and {r} teacher runs"))
    if branch_history:
        which = " and ".join(display_name(t, "teacher") for t in by_teacher(branch_history))
        made.append((f"Teacher and branch accuracy during {which} training",
                     plot_branch_accuracy(branch_history, run_dir / "branch_accuracy.png"),
                     "no branch accuracy history"))
    return (f"Accuracies are the {metric_axis(metric)}. The gate plots are in \"{gates_title}\".\n\n"
            + _plot_lines(made))


def _gate_teachers(phi_history) -> str:
    """How the report names the teachers whose gates ``phi_history`` follows (``GTN``)."""
    names = list(dict.fromkeys(r.get("teacher") for r in phi_history if r.get("teacher")))
    if not names:
        from ..teachers.registry import TEACHERS

        names = [n for n in TEACHERS.names() if "gates" in TEACHERS.meta(n, "histories", ())][:1]
    return " and ".join(display_name(n, "teacher") for n in names) or "gate"


def _gates_section(run_dir: Path, phi_history, gate_info) -> tuple[str, bool]:
    who = _gate_teachers(phi_history)
    plots = [(f"Gate entropy during {who} training", plot_phi_entropy(phi_history, run_dir / "phi_entropy.png",
                                                                     gate_info, who)),
             (f"Parameter-free mass and sampled-student MACs during {who} training",
              plot_gate_exploration(phi_history, run_dir / "gate_exploration.png", gate_info, who))]
    return gate_section(phi_history, gate_info, plots, who)


def _stages_section(stage_times) -> str:
    rows = stage_table(stage_times)
    if not rows:
        return "No stage times were recorded."
    table = md_table(["Stage", "Wall time", "Share"],
                     [[f"**{r['stage']}**" if r["stage"] == "total" else r["stage"], fmt_seconds(r["seconds"]),
                       f"{100 * r['share']:.0f}%" if math.isfinite(r["share"]) else "—"] for r in rows])
    overlap = as_float((stage_times or {}).get(OVERLAP))
    if overlap:
        table += (f"\n\nThe teachers that need no searched student trained while the search ran, on the "
                  f"worker the search left free: the two stages overlap by {fmt_seconds(overlap)}, counted "
                  "once in the total (the shares add up to more than 100%).")
    placement = (stage_times or {}).get(PLACEMENT)
    if placement:
        table += f"\n\nThe runs ran on {placement}."
    total = rows[-1]["seconds"]
    spent = as_float((stage_times or {}).get(INVOCATION))
    if spent is not None and total and spent < 0.9 * total:
        table += (f"\n\nThis invocation took {fmt_seconds(spent)}: it reused runs that an earlier one "
                  "finished, and the table gives each stage the time it took when it ran.")
    return table


def _config_section(config_summary) -> str:
    items = flatten(config_summary or {})
    if not items:
        return "No configuration was given."
    return md_table(["Key", "Value"], [[f"`{k}`", f"`{v}`"] for k, v in items])


# ---------------------------------------------------------------------------------------- report
def write_report(run_dir, results: Sequence[dict], teachers: Sequence[dict] = (),
                 students: Sequence[dict] = (), stage_times: Optional[dict] = None,
                 phi_history: Sequence[dict] = (), config_summary: Optional[dict] = None,
                 title: str = "nasdistill report", metric: Optional[str] = None,
                 branch_history: Sequence[dict] = (), *, gate_info: Optional[dict] = None,
                 exports: Optional[Sequence[dict]] = None, about: Optional[str] = None,
                 num_classes: Optional[int] = None, kd_temperature=None) -> Path:
    """Write ``report.md``, ``results.csv`` and the PNG plots into ``run_dir``; return report.md's path.

    ``metric`` is the accuracy compared (default: ``test_acc`` when the runs have it, else
    ``best_acc``). ``gate_info`` describes the GTN gates (labels, choices, thresholds) for the
    "GTN gate exploration" section; ``exports`` adds the "Exported students" section; ``about`` (text)
    opens the report as its "Task" section: what the data is and why the comparison means something.
    ``num_classes`` (K, for ln K) and ``kd_temperature`` (the temperature of the teachers' logged
    ``teacher_entropy_kd``: one number or ``{teacher: T}``; a logged ``kd_temperature`` wins) serve the
    "Branch-trained teachers" section, drawn from ``branch_history``'s precondition keys
    (:mod:`.branches`, :mod:`.precondition`). Every file is written atomically with ordinary
    permissions. See :mod:`nasdistill.report` for the input formats.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    results = list(results)
    validate_results(results)
    metric = metric or choose_metric(results)
    write_results_csv(results, run_dir / "results.csv")

    methods = [m for _, m in conditions(results) if m != "none"]
    methods = list(dict.fromkeys(methods))
    ref = reference_name()
    heads = headline_names()
    present = [h for h in heads if any(r["teacher"] == h for r in results)]
    head = (present or heads or ["gtn"])[0]
    h, r_name = display_name(head, "teacher"), display_name(ref, "teacher")
    gains = {m: g for m in methods if (g := gain_table(results, head, ref, m, metric, students)) is not None}
    summary = gain_sentence(gains.get(methods[0]) if methods else None, bool(present), teacher=head, reference=ref)
    for m, g in gains.items():
        if methods and m != methods[0]:
            o = g["overall"]
            summary += (f" With {display_name(m)} the {h} minus {r_name} gain is "
                        f"{fmt_signed(o['mean_diff'])} points over {plural(o['n_students'], 'student')} "
                        f"(bootstrap 95% CI {fmt_range(o['boot_ci_low'], o['boot_ci_high'])}; "
                        f"{p_eq(o['t_pvalue'])}, {verdict(o['t_pvalue'])}).")
    comps = comparison_table(results, metric, known={((head, m), (ref, m)): g for m, g in gains.items()})
    summary += _baseline_sentence(comps)
    searched_gain = search_gain(results, students, metric)
    if searched_gain is not None:
        summary += "\n\n" + verdict_sentence(searched_gain)
    unconverged = [s for s in students if s.get("kind") == "searched" and s.get("convergence")
                   and not s["convergence"].get("converged")]
    if unconverged:
        summary += (f"\n\n**Warning:** the search did not converge for {plural(len(unconverged), 'target')} ("
                    + "; ".join(f"{fmt_count(s.get('target_macs'))}: {s['convergence']['why']}" for s in unconverged)
                    + "): its students are closer to a draw from a still-broad distribution than to an optimum.")
    off_band = [s for s in students if s.get("kind") == "searched" and s.get("convergence")
                and not s["convergence"].get("mode_in_band", True)]
    if off_band:
        summary += (f"\n\n**Note:** for {plural(len(off_band), 'target')} the search's most probable architecture "
                    "lies outside the target's MACs band, so the exported student (the most probable one within "
                    "the band) is an improbable architecture of its distribution: "
                    + "; ".join(f"{fmt_count(s.get('target_macs'))}: p {s['convergence']['prob']:.2g}"
                                for s in off_band) + ".")
    unstable = [t for t in teachers if t.get("instability")]
    if unstable:
        summary += ("\n\n**Warning:** " + plural(len(unstable), "teacher run") + " trained unstably ("
                    + "; ".join(f"{display_name(t['teacher'])} seed {t.get('seed')}: {t['instability'][0]['text']}"
                                for t in unstable) + "); see \"Teachers\".")
    gates_text, collapsed = _gates_section(run_dir, phi_history, gate_info)
    gate_who = _gate_teachers(phi_history)
    gates_title = f"{gate_who} gate exploration"
    if collapsed:
        summary += (f"\n\n**Warning:** the {gate_who} gates collapsed during teacher training, so the {gate_who} "
                    f"teacher saw a narrow part of the student pool; see \"{gates_title}\".")
    branch_text, warning = branch_teacher_section(
        branch_history, num_classes, kd_temperature,
        precondition_plots(run_dir, branch_history, num_classes, kd_temperature))
    if warning:
        summary += "\n\n" + warning

    sections = ([("Task", about)] if about else []) + [
        ("Summary", summary),
        ("Teachers", _teachers_section(teachers)),
        ("Students", _students_section(students, results)),
    ] + ([("Did the search help?", search_gain_section(results, students, metric))]
         if searched_gain is not None else []) + [
        ("Accuracy by teacher", _accuracy_section(results, students, metric, comps)),
        (f"Gain {h} − {r_name}", _gain_section(results, gains, head)),
        (gates_title, gates_text),
    ] + ([("Branch-trained teachers", branch_text)] if branch_text else []) + [
        ("Plots", _plots_section(run_dir, results, students, metric, branch_history, gains, head, ref, gates_title)),
    ]
    if exports is not None:
        sections.append(("Exported students", exports_section(exports)))
    sections += [("Time per stage", _stages_section(stage_times)),
                 ("Configuration", _config_section(config_summary))]
    text = f"# {title}\n\n" + "\n\n".join(f"## {name}\n\n{body}" for name, body in sections) + "\n"
    path = run_dir / "report.md"
    write_text(path, text)
    return path
