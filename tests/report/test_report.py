"""nasdistill.report: statistics against scipy and hand computations, tables, CSV, plots, report.md.

The unit-of-analysis statistics (bootstrap, per-student tests) are in test_report_stats.py.
"""
import csv
import math
import os

import numpy as np
import pytest
from scipy import stats

from nasdistill.report import (MeanCI, accuracy_table, bootstrap_ci, comparison_table, describe_source,
                               gain_table, gate_table, mean_ci, paired_test, pareto_front, plot_accuracy_vs_macs,
                               plot_gain, plot_gate_exploration, plot_phi_entropy, significant, stage_table,
                               students_table, teacher_table, write_report, write_results_csv)
from nasdistill.report.markdown import fmt_count, fmt_mean_ci, fmt_p, fmt_seconds
from nasdistill.report.tables import RESULT_COLUMNS, conditions

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------------- synthetic data
def make_run(n_students=4, seeds=(0, 1, 2), gtn_gain=1.0, noise=0.3, gtn=True, dkd=False, rng_seed=0,
             teacher_seed=False):
    """Baseline / CE+KD / GTN+KD runs with GTN+KD = CE+KD + gtn_gain + noise, per (student, seed);
    with ``teacher_seed`` the distillation rows record the teacher of their own seed."""
    rng = np.random.default_rng(rng_seed)
    students, results = [], []
    for i in range(n_students):
        kind = "searched" if i < n_students // 2 + 1 else "sampled"
        target = 1e6 * (i + 1) if kind == "searched" else None
        macs = int(1e6 * (i + 1) * 1.05)
        sid = f"arch{i:06d}"
        students.append({"student": sid, "kind": kind, "arch": {"l0": "conv3", "l1": "zero"}, "macs": macs,
                         "params": 10_000 + 500 * i, "target_macs": target})
        for seed in seeds:
            base = 60.0 + 2 * i + rng.normal(0, 0.5)
            ce = base + 1.0 + rng.normal(0, 0.5)
            accs = {("none", "none"): base, ("ce", "kd"): ce}
            if gtn:
                accs[("gtn", "kd")] = ce + gtn_gain + rng.normal(0, noise)
            if dkd:
                accs[("ce", "dkd")] = ce + 0.2
                if gtn:
                    accs[("gtn", "dkd")] = ce + 0.3
            for (teacher, method), acc in accs.items():
                results.append({"student": sid, "student_kind": kind, "target_macs": target, "macs": macs,
                                "params": 10_000 + 500 * i, "teacher": teacher, "method": method, "seed": seed,
                                "best_acc": acc + 0.5, "last_acc": acc + 0.2, "test_acc": acc,
                                "wall_time_s": 1.5})
                if teacher_seed and teacher != "none":
                    results[-1]["teacher_seed"] = seed
    teachers = [{"teacher": "ce", "model": "resnet8", "test_acc": 80.0, "best_acc": 81.0, "wall_time_s": 10.0,
                 "epochs": 4, "ece": 0.03}]
    if gtn:
        teachers.append({"teacher": "gtn", "model": "resnet8+branches", "test_acc": 79.0, "best_acc": 80.0,
                         "wall_time_s": 25.0, "epochs": 4})
    phi = [{"epoch": e, "phi_entropy": 1.0 - 0.1 * e, "l0": 1.1 - 0.1 * e, "l1": 0.9 - 0.1 * e}
           for e in range(5)] if gtn else []
    return results, teachers, students, phi


def paired_arrays(results, a=("gtn", "kd"), b=("ce", "kd")):
    idx = {(r["student"], r["seed"], r["teacher"], r["method"]): r["test_acc"] for r in results}
    keys = sorted({(r["student"], r["seed"]) for r in results})
    keys = [k for k in keys if k + a in idx and k + b in idx]
    return np.array([idx[k + a] for k in keys]), np.array([idx[k + b] for k in keys])


def student_gains(results, a=("gtn", "kd"), b=("ce", "kd")):
    """Hand computation of the unit of analysis: per student, the mean over seeds of a - b."""
    out = []
    for sid in sorted({r["student"] for r in results}):
        x, y = paired_arrays([r for r in results if r["student"] == sid], a, b)
        if x.size:
            out.append((x - y).mean())
    return np.array(out)


# ---------------------------------------------------------------------------------------- stats
def test_mean_ci_matches_scipy_and_hand():
    mean, half = mean_ci([1.0, 2.0, 3.0])
    assert mean == pytest.approx(2.0)
    # s = 1, sem = 1/sqrt(3); with 2 degrees of freedom the t quantile has the closed form
    # t_q = (2q - 1) / sqrt(2 q (1 - q)), q = 0.975 -> 4.30265...
    q = 0.975
    t_q = (2 * q - 1) / math.sqrt(2 * q * (1 - q))
    assert t_q == pytest.approx(4.3026527, rel=1e-7)
    assert half == pytest.approx(t_q / math.sqrt(3), rel=1e-10)
    x = np.random.default_rng(1).normal(70, 2, size=7)
    for conf in (0.9, 0.95, 0.99):
        m, h = mean_ci(x, conf)
        lo, hi = stats.t.interval(conf, len(x) - 1, loc=x.mean(), scale=stats.sem(x))
        assert (m - h, m + h) == pytest.approx((lo, hi), rel=1e-12)


def test_mean_ci_small_and_missing():
    m, h = mean_ci([5.0])
    assert m == 5.0 and math.isnan(h)
    m, h = mean_ci([])
    assert math.isnan(m) and math.isnan(h)
    m, h = mean_ci([1.0, None, float("nan"), 3.0])  # missing values dropped
    assert m == pytest.approx(2.0) and h == pytest.approx(stats.t.ppf(0.975, 1) * 1.0, rel=1e-12)
    assert mean_ci([4.0, 4.0, 4.0]) == (4.0, 0.0)


def test_paired_test_matches_scipy():
    rng = np.random.default_rng(2)
    b = rng.normal(60, 3, size=12)
    a = b + 0.4 + rng.normal(0, 0.5, size=12)
    out = paired_test(a, b)
    d = a - b
    assert out["n"] == 12
    assert out["mean_diff"] == pytest.approx(d.mean(), rel=1e-12)
    lo, hi = stats.t.interval(0.95, 11, loc=d.mean(), scale=stats.sem(d))
    assert (out["ci_low"], out["ci_high"]) == pytest.approx((lo, hi), rel=1e-12)
    ref = stats.ttest_rel(a, b)
    assert out["t_statistic"] == pytest.approx(ref.statistic, rel=1e-12)
    assert out["t_pvalue"] == pytest.approx(ref.pvalue, rel=1e-12)
    assert out["wilcoxon_pvalue"] == pytest.approx(stats.wilcoxon(d).pvalue, rel=1e-12)


def test_paired_test_edge_cases():
    small = paired_test([1.0, 2.0, 3.5], [0.5, 1.0, 3.0])  # n < 6: no Wilcoxon
    assert small["n"] == 3 and math.isnan(small["wilcoxon_pvalue"]) and math.isfinite(small["t_pvalue"])
    zero = paired_test([1.0] * 7, [1.0] * 7)  # all differences zero: nothing to see
    assert zero["mean_diff"] == 0.0 and zero["t_pvalue"] == 1.0 and zero["wilcoxon_pvalue"] == 1.0
    assert not significant(zero["t_pvalue"])
    const = paired_test([2.0, 3.0, 4.0], [1.0, 2.0, 3.0])  # constant non-zero difference
    assert const["mean_diff"] == pytest.approx(1.0) and const["t_pvalue"] == 0.0 and const["half_width"] == 0.0
    one = paired_test([2.0], [1.0])
    assert one["n"] == 1 and math.isnan(one["t_pvalue"]) and math.isnan(one["half_width"])
    dropped = paired_test([1.0, None, 3.0, 4.0], [0.0, 1.0, float("nan"), 2.0])  # incomplete pairs dropped
    assert dropped["n"] == 2 and dropped["mean_diff"] == pytest.approx(1.5)
    with pytest.raises(ValueError):
        paired_test([1.0, 2.0], [1.0])


def test_significant():
    assert significant(0.01) and not significant(0.05) and not significant(0.2)
    assert not significant(float("nan")) and not significant(None)
    assert significant(0.08, alpha=0.1)


# ---------------------------------------------------------------------------------------- tables
def test_gain_table_matches_hand_computation():
    results, _, students, _ = make_run(n_students=6, seeds=(0, 1, 2), gtn_gain=1.0, teacher_seed=True)
    gain = gain_table(results, students=students)
    g = student_gains(results)
    o = gain["overall"]
    assert o["unit"] == "student" and o["n"] == o["n_students"] == 6 and o["n_seeds"] == 3
    assert o["n_pairs"] == 18 and o["n_teacher_seeds"] == 3
    assert o["mean_diff"] == pytest.approx(g.mean(), rel=1e-12)
    assert o["t_pvalue"] == pytest.approx(stats.ttest_1samp(g, 0.0).pvalue, rel=1e-10)
    assert o["wilcoxon_pvalue"] == pytest.approx(stats.wilcoxon(g).pvalue, rel=1e-12)
    lo, hi = stats.t.interval(0.95, 5, loc=g.mean(), scale=stats.sem(g))
    assert (o["ci_low"], o["ci_high"]) == pytest.approx((lo, hi), rel=1e-10)
    assert (o["boot_ci_low"], o["boot_ci_high"]) == bootstrap_ci(g)
    # per student: mean, CI and paired t-test over its 3 seeds (unchanged)
    first = gain["rows"][0]
    sid = first["student"]
    a1, b1 = paired_arrays([r for r in results if r["student"] == sid])
    m, h = mean_ci(a1 - b1)
    assert first["gain"].mean == pytest.approx(m) and first["gain"].half_width == pytest.approx(h)
    assert first["gain"].n == 3 and first["t_pvalue"] == pytest.approx(stats.ttest_rel(a1, b1).pvalue)
    assert gain_table(results, teacher="sftn") is None
    four = gain_table(make_run(n_students=4)[0])["overall"]
    assert math.isnan(four["wilcoxon_pvalue"]) and four["n_teacher_seeds"] is None  # < 6 students; unknown


def test_accuracy_table_cells_and_order():
    results, _, students, _ = make_run(n_students=3, dkd=True)
    labels, rows = accuracy_table(results, students)
    assert labels == ["baseline", "CE+KD", "GTN+KD", "CE+DKD", "GTN+DKD"]
    assert [r["student"] for r in rows[:-1]] == ["arch000000", "arch000001", "arch000002"]
    assert rows[-1]["student"] == "mean over students"
    vals = [r["test_acc"] for r in results if r["student"] == "arch000001" and r["teacher"] == "gtn"
            and r["method"] == "kd"]
    cell = rows[1]["GTN+KD"]
    assert cell.n == 3
    assert (cell.mean, cell.half_width) == pytest.approx(mean_ci(vals))
    assert conditions(results)[0] == ("none", "none")


def test_comparison_teacher_students_stage_tables():
    results, teachers, students, _ = make_run(n_students=3)
    comps = comparison_table(results)
    pairs = {(c["condition"], c["reference"]) for c in comps}
    assert pairs == {("CE+KD", "baseline"), ("GTN+KD", "baseline"), ("GTN+KD", "CE+KD")}
    trows = teacher_table(teachers)
    assert [r["teacher"] for r in trows] == ["ce", "gtn"] and trows[0]["n_seeds"] == 1
    assert trows[1]["cost_vs_ce"] == pytest.approx(2.5) and trows[0]["ece"] == pytest.approx(0.03)
    srows = students_table(students, results)
    assert srows[0]["macs_over_target"] == pytest.approx(1.05) and not srows[0]["missed_target"]
    assert math.isnan(srows[-1]["macs_over_target"])  # sampled: no target
    st = stage_table({"search": 30.0, "distill": 90.0})
    assert st[-1] == {"stage": "total", "seconds": 120.0, "share": 1.0}
    assert st[0]["share"] == pytest.approx(0.25)
    # teachers trained for 20 of the search's 30 s: the job took 30 + (50 - 20) + 90 s
    st = stage_table({"search": 30.0, "teachers": 50.0, "overlap": 20.0, "distill": 90.0, "report": 2.0})
    assert [r["stage"] for r in st] == ["search", "teachers", "distill", "total"]
    assert st[-1]["seconds"] == pytest.approx(150.0) and st[1]["share"] == pytest.approx(50 / 150)


def test_pareto_front():
    pts = [(1.0, 60.0), (2.0, 59.0), (3.0, 65.0), (3.0, 64.0), (4.0, 66.0), (5.0, None)]
    assert pareto_front(pts) == [0, 2, 4]
    assert pareto_front([]) == []


def test_results_csv_one_row_per_run(tmp_path):
    results, *_ = make_run(n_students=2, seeds=(0, 1))
    results[0]["extra_note"] = "resumed"
    path = write_results_csv(results, tmp_path / "results.csv")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(results)
    assert list(rows[0])[:len(RESULT_COLUMNS)] == list(RESULT_COLUMNS) and rows[0]["extra_note"] == "resumed"
    assert float(rows[5]["test_acc"]) == results[5]["test_acc"]
    assert rows[3]["target_macs"] in ("", str(results[3]["target_macs"]))
    assert not list(tmp_path.glob(".tmp-*"))


def test_formatting():
    assert fmt_count(12_345_678) == "12.35M" and fmt_count(850_200) == "850.2K" and fmt_count(512) == "512"
    assert fmt_count(None) == "—"
    assert fmt_seconds(12.34) == "12.3 s" and fmt_seconds(125) == "2 min 05 s" and fmt_seconds(7260) == "2 h 01 min"
    assert fmt_seconds(59.97) == "1 min 00 s"
    assert fmt_p(0.41) == "0.410" and fmt_p(1e-5) == "< 0.001" and fmt_p(float("nan")) == "n/a"
    assert fmt_mean_ci(MeanCI(72.314, 0.456, 3)) == "72.31 ± 0.46"
    assert fmt_mean_ci(MeanCI(72.314, float("nan"), 1)) == "72.31 ± n/a"
    assert fmt_mean_ci(MeanCI(float("nan"), float("nan"), 0)) == "—"


# ---------------------------------------------------------------------------------- plots, report
def _is_png(path):
    with open(path, "rb") as f:
        return f.read(8) == PNG_SIGNATURE


SECTIONS = ["## Summary", "## Teachers", "## Students", "## Accuracy by teacher", "## Gain GTN − CE",
            "## GTN gate exploration", "## Plots", "## Time per stage", "## Configuration"]


def test_report_significant_gain(tmp_path):
    results, teachers, students, phi = make_run(n_students=4, seeds=(0, 1, 2), gtn_gain=1.5, noise=0.3)
    path = write_report(tmp_path, results, teachers, students, {"search": 12.0, "teachers": 40.0},
                        phi, {"data": {"name": "digits"}, "seeds": 3})
    text = path.read_text()
    for s in SECTIONS:
        assert s in text
    g = student_gains(results)
    assert stats.ttest_1samp(g, 0.0).pvalue < 0.05
    assert f"**{g.mean():+.2f} points**" in text
    assert "on average over 4 students (each the mean of 3 seeds; teacher seeds not recorded)" in text
    lo, hi = bootstrap_ci(g)
    assert f"bootstrap 95% CI {lo:+.2f} to {hi:+.2f}" in text
    assert "Wilcoxon signed-rank test not run with fewer than 6 students" in text
    assert "The difference is statistically significant at 0.05" in text
    assert "Pairs of the same student are not independent" not in text
    assert "The unit of analysis is the student" in text
    assert "not statistically significant" not in text.split("## Teachers")[0]
    for name in ("accuracy_vs_macs.png", "gain_gtn_vs_ce_kd.png", "phi_entropy.png"):
        assert f"]({name})" in text and _is_png(tmp_path / name)
    with open(tmp_path / "results.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == len(results)
    assert "`data.name` | `digits`" in text and "2.50x" in text


def test_report_null_gain(tmp_path):
    results, teachers, students, phi = make_run(n_students=4, seeds=(0, 1, 2), gtn_gain=0.0, noise=0.5,
                                                rng_seed=3)
    g = student_gains(results)
    p = stats.ttest_1samp(g, 0.0).pvalue
    assert p > 0.05  # the synthetic null case really is null
    text = write_report(tmp_path, results, teachers, students, {}, phi, {}).read_text()
    summary = text.split("## Teachers")[0]
    assert f"The difference is not statistically significant (p = {p:.3f})" in summary
    assert "with 4 students (3 seeds each) this run cannot tell the teachers apart" in summary
    assert f"**{g.mean():+.2f} points**" in summary


def test_report_single_seed_and_dkd(tmp_path):
    results, teachers, students, phi = make_run(n_students=3, seeds=(0,), dkd=True)
    text = write_report(tmp_path, results, teachers, students, {"all": 5.0}, phi, {}).read_text()
    assert "± n/a" in text  # one seed: no per-student CI
    assert "over 3 students (each the mean of 1 seed; teacher seeds not recorded)" in text  # across students
    assert "With DKD the GTN minus CE gain" in text and _is_png(tmp_path / "gain_gtn_vs_ce_dkd.png")
    one = [r for r in results if r["student"] == "arch000000"]
    text = write_report(tmp_path / "one", one, teachers, students[:1], {}, [], {}).read_text()
    assert "With a single student there is no test across students" in text
    assert "GTN+KD +" in text and "p n/a, not tested" in text


def test_report_without_gtn(tmp_path):
    results, teachers, students, phi = make_run(n_students=3, gtn=False)
    assert phi == [] and gain_table(results) is None
    assert plot_gain(results, tmp_path / "g.png") is None
    assert plot_phi_entropy(phi, tmp_path / "p.png") is None
    text = write_report(tmp_path, results, teachers, students, {}, phi, None).read_text()
    for s in SECTIONS:
        assert s in text
    assert "cannot compare the GTN teacher with the CE teacher: no GTN teacher" in text
    assert "not drawn" in text and not (tmp_path / "gain_gtn_vs_ce_kd.png").exists()
    assert "No GTN gate statistics in this run" in text and "## Exported students" not in text
    assert _is_png(tmp_path / "accuracy_vs_macs.png")


def test_plots_direct_and_missing_data(tmp_path):
    results, _, students, phi = make_run(n_students=3)
    assert _is_png(plot_accuracy_vs_macs(results, tmp_path / "a.png", students=students))
    assert _is_png(plot_gain(results, tmp_path / "g.png"))
    assert _is_png(plot_phi_entropy(phi, tmp_path / "p.png"))
    assert plot_accuracy_vs_macs([], tmp_path / "none.png") is None
    assert plot_phi_entropy([{"epoch": 0}], tmp_path / "none.png") is None


def test_a_saved_plot_is_matplotlibs_tight_crop_pixel_for_pixel(tmp_path, drawn_figure):
    """save_png measures the tight box without matplotlib's extra drawing pass: each plot (legend
    outside the axes, log axis, titles) reads back equal, pixel for pixel, to the same figure saved
    by matplotlib with ``bbox_inches="tight"``."""
    import io

    from matplotlib.image import imread

    results, _, students, phi = make_run(n_students=3)
    for name, plot, args in [("a", plot_accuracy_vs_macs, (results,)), ("g", plot_gain, (results,)),
                             ("p", plot_phi_entropy, (phi,))]:
        kwargs = {"students": students} if name == "a" else {}
        fig = drawn_figure(plot, *args, tmp_path / f"{name}.png", **kwargs)
        reference = io.BytesIO()
        fig.savefig(reference, format="png", bbox_inches="tight")
        reference.seek(0)
        ours, tight = imread(tmp_path / f"{name}.png"), imread(reference)
        assert ours.shape == tight.shape and np.array_equal(ours, tight), name


def test_duplicate_runs_are_rejected(tmp_path):
    results, teachers, students, phi = make_run(n_students=2)
    with pytest.raises(ValueError, match="repeats the run"):
        write_report(tmp_path, results + [dict(results[0])], teachers, students, {}, phi, {})


def test_report_states_teacher_seeds_and_teacher_count(tmp_path):
    results, teachers, students, phi = make_run(n_students=6, seeds=(0, 1, 2), gtn_gain=0.0, noise=0.5,
                                                rng_seed=4, teacher_seed=True)
    teachers = [dict(t, seed=s, test_acc=t["test_acc"] + s) for t in teachers for s in (0, 1, 2)]
    text = write_report(tmp_path, results, teachers, students, {}, phi, {}).read_text()
    summary = text.split("## Teachers")[0]
    assert ("over 6 students (each the mean of 3 seeds; teachers trained once per seed, 3 teacher seeds)"
            in summary)
    g = student_gains(results)
    assert f"Wilcoxon signed-rank {_p_text(stats.wilcoxon(g).pvalue)}" in summary
    assert f"paired t-test across students {_p_text(stats.ttest_1samp(g, 0.0).pvalue)}" in summary
    teacher_part = text.split("## Teachers")[1].split("## Students")[0]
    assert "| Seeds |" in teacher_part
    ce_acc = mean_ci([80.0, 81.0, 82.0])
    assert f"| CE | resnet8 | 3 | 4 | {ce_acc[0]:.2f} ± {ce_acc[1]:.2f} |" in teacher_part


def _p_text(p):
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


# ---------------------------------------------------------------------------------- gate exploration
GATE_INFO = {"labels": ["l0", "l1"], "choices": {"l0": 5, "l1": 3},
             "param_free": {"l0": ["identity", "zero"], "l1": ["zero"]}, "entropy_floor_frac": 0.5, "mass_cap": 0.6}


def gate_history(collapse, epochs=6, teacher_seed=None):
    """Entropies fall from ln K to 0.1 ln K (collapse) or stay at 0.9 ln K; masses rise to 0.8 or stay 0.3."""
    rows = []
    for e in range(epochs):
        t = e / (epochs - 1)
        frac = 1.0 - 0.9 * t if collapse else 0.9
        mass = 0.3 + 0.5 * t if collapse else 0.3
        row = {"epoch": e, "phi_entropy/l0": frac * math.log(5), "phi_entropy/l1": 0.9 * math.log(3),
               "param_free_mass/l0": mass, "param_free_mass/l1": 0.3,
               "sampled_macs_q25": 1e6 * (1 - 0.5 * t), "sampled_macs_q50": 2e6 * (1 - 0.5 * t),
               "sampled_macs_q75": 3e6 * (1 - 0.5 * t), "pool_macs_q25": 1e6, "pool_macs_q50": 2e6,
               "pool_macs_q75": 3e6}
        row["phi_entropy"] = (row["phi_entropy/l0"] + row["phi_entropy/l1"]) / 2
        row["param_free_mass"] = (mass + 0.3) / 2
        if teacher_seed is not None:
            row["teacher_seed"] = teacher_seed
        rows.append(row)
    return rows


def test_gate_table_last_epoch_values():
    rows = gate_table(gate_history(collapse=True), GATE_INFO)
    assert [r["label"] for r in rows] == ["l0", "l1"]
    l0, l1 = rows
    assert l0["epoch"] == 5 and l0["entropy"] == pytest.approx(0.1 * math.log(5))
    assert l0["ln_k"] == pytest.approx(math.log(5)) and l0["entropy_frac"] == pytest.approx(0.1)
    assert l0["param_free_mass"] == pytest.approx(0.8)
    assert l0["low_entropy"] and l0["high_mass"] and l0["collapsed"]
    assert l1["entropy_frac"] == pytest.approx(0.9) and not l1["collapsed"]
    balanced = gate_table(gate_history(collapse=False), GATE_INFO)
    assert not any(r["collapsed"] for r in balanced)
    # no gate_info: no K, so only the mass cap (default 0.6) can be checked
    bare = gate_table(gate_history(collapse=True))
    assert bare[0]["entropy_frac"] is None and bare[0]["high_mass"] and not bare[0]["low_entropy"]


def test_report_gate_warning_collapsed_and_balanced(tmp_path):
    results, teachers, students, _ = make_run(n_students=3)
    text = write_report(tmp_path / "bad", results, teachers, students, {}, gate_history(True), {},
                        gate_info=GATE_INFO).read_text()
    section = text.split("## GTN gate exploration")[1].split("## Plots")[0]
    assert "**WARNING: the gates collapsed**" in section
    assert (f"l0 ends with entropy {0.1 * math.log(5):.3f} nats = 0.10 ln K (below 0.5 ln K) and "
            f"parameter-free mass 0.80 (above the cap 0.6)") in section
    assert "| l0 | 5 | 0.161 | 0.10 | 0.80 | yes |" in section and "| l1 | 3 |" in section
    assert "median MACs 1.00M against 2.00M" in section
    assert "the GTN gates collapsed" in text.split("## Teachers")[0]  # also flagged in the Summary
    for name in ("phi_entropy.png", "gate_exploration.png"):
        assert f"]({name})" in section and _is_png(tmp_path / "bad" / name)
    text = write_report(tmp_path / "good", results, teachers, students, {}, gate_history(False), {},
                        gate_info=GATE_INFO).read_text()
    section = text.split("## GTN gate exploration")[1].split("## Plots")[0]
    assert "WARNING" not in section and "collapsed" not in text.split("## Teachers")[0]
    assert ("The gates did not collapse: every used label ends with entropy at least 0.5 ln K and "
            "parameter-free mass at most 0.6") in section


def test_gate_section_several_teacher_seeds(tmp_path):
    history = gate_history(False, teacher_seed=1) + gate_history(True, teacher_seed=0)
    rows = gate_table(history, GATE_INFO)
    assert [(r["teacher_seed"], r["label"]) for r in rows] == [(0, "l0"), (0, "l1"), (1, "l0"), (1, "l1")]
    results, teachers, students, _ = make_run(n_students=2)
    text = write_report(tmp_path, results, teachers, students, {}, history, {}, gate_info=GATE_INFO).read_text()
    section = text.split("## GTN gate exploration")[1].split("## Plots")[0]
    assert "| Teacher seed |" in section and "l0 (teacher seed 0) ends with entropy" in section
    assert "(teacher seed 1)" not in section.split("WARNING")[1].split(". The GTN")[0]
    assert "the first of 2 teacher seeds" in section  # the plots show the first seed and say so


def test_gate_plots_direct_and_missing_data(tmp_path):
    assert _is_png(plot_gate_exploration(gate_history(True), tmp_path / "g.png", GATE_INFO))
    assert _is_png(plot_phi_entropy(gate_history(True), tmp_path / "e.png", GATE_INFO))
    assert plot_gate_exploration([], tmp_path / "none.png") is None
    assert plot_gate_exploration([{"epoch": 0, "phi_entropy": 1.0}], tmp_path / "none.png") is None
    only_macs = [{"epoch": e, "sampled_macs_q50": 1e6, "pool_macs_q50": 2e6} for e in range(3)]
    assert _is_png(plot_gate_exploration(only_macs, tmp_path / "m.png"))
    assert not (tmp_path / "none.png").exists()


def test_entropy_plot_axes(tmp_path, monkeypatch, drawn_figure):
    """Reads the drawn figure back: y label in nats, ln K and threshold lines, integer epoch ticks."""
    fig = drawn_figure(plot_phi_entropy, gate_history(True, epochs=4), tmp_path / "e.png", GATE_INFO)
    ax = fig.axes[0]
    assert ax.get_ylabel() == "gate entropy (nats)" and ax.get_xlabel() == "GTN epoch"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert f"uniform, ln 5 = {math.log(5):.2f}" in labels and f"uniform, ln 3 = {math.log(3):.2f}" in labels
    assert f"collapse threshold, 0.5 ln 5 = {0.5 * math.log(5):.2f}" in labels
    ticks = [t for t in ax.get_xticks() if 0 <= t <= 3]
    assert ticks and all(float(t).is_integer() for t in ticks)
    assert "l0, l1" in ax.get_title()


def test_macs_axis_ticks_in_words(tmp_path):
    from nasdistill.report.figure import count_axis, new_figure

    fig = new_figure()
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([1.2e6, 4.8e6], [1, 2])
    assert count_axis(ax, "x", [1.2e6, 4.8e6]) == "MACs (millions)"
    fmt = ax.xaxis.get_major_formatter()
    assert fmt(1.5e6, 0) == "1.5M" and fmt(2e6, 0) == "2M"
    assert count_axis(ax, "y", [3e5, 9e5]) == "MACs (thousands)" and ax.yaxis.get_major_formatter()(5e5, 0) == "500K"
    fig.canvas.draw()
    assert ax.xaxis.get_offset_text().get_text() == ""  # no 1e6 offset


# ------------------------------------------------------------------------------- students, exports
def test_missed_target_flag(tmp_path):
    results, teachers, students, phi = make_run(n_students=4)
    students[0]["macs"] = 1_350_000  # target 1M: +35%
    students[1]["macs"] = 1_750_000  # target 2M: -12.5%
    students[2]["macs"] = 3_240_000  # target 3M: +8%, within 10%
    rows = {r["student"]: r for r in students_table(students, results)}
    assert rows["arch000000"]["missed_target"] and rows["arch000001"]["missed_target"]
    assert not rows["arch000002"]["missed_target"] and not rows["arch000003"]["missed_target"]  # sampled
    text = write_report(tmp_path, results, teachers, students, {}, phi, {}).read_text()
    part = text.split("## Students")[1].split("## Accuracy")[0]
    assert "| 1.35 ⚠ missed by +35% |" in part and "| 0.88 ⚠ missed by -12% |" in part
    assert "| 1.08 |" in part
    assert ("2 searched students missed their MACs target by more than 10%: arch000000 (1.35M for a target of "
            "1.00M, +35%) and arch000001 (1.75M for a target of 2.00M, -12%)") in part


def test_describe_source_and_export_lines(tmp_path):
    assert describe_source("gtn", "kd", 0) == "distilled with KD from the GTN teacher (seed 0)"
    assert describe_source("none", "none", 0) == "trained alone with cross-entropy (seed 0)"
    assert describe_source("ce", "dkd", 2) == "distilled with DKD from the CE teacher (seed 2)"
    assert describe_source("soteacher", "kd", None) == "distilled with KD from the SoTeacher"
    results, teachers, students, phi = make_run(n_students=2)
    exports = [{"student": "4a2eed856e", "folder": "students/4a2eed856e", "teacher": "gtn", "method": "kd",
                "seed": 0, "formats": {"safetensors": None, "pt2": 0.0}},
               {"student": "b", "folder": "students/b", "teacher": "none", "method": "none", "seed": 0,
                "formats": {"pt2": 0.0, "onnx": 1.5e-6}}]
    text = write_report(tmp_path, results, teachers, students, {}, phi, {}, exports=exports).read_text()
    part = text.split("## Exported students")[1].split("## Time per stage")[0]
    assert ("- students/4a2eed856e: distilled with KD from the GTN teacher (seed 0); pt2 (no safetensors) "
            "reload max |diff| 0.0e+00") in part
    assert ("- students/b: trained alone with cross-entropy (seed 0); pt2, onnx; reload max |diff|: pt2 "
            "0.0e+00, onnx 1.5e-06") in part
    text = write_report(tmp_path, results, teachers, students, {}, phi, {}, exports=[]).read_text()
    assert "No student was exported in this run." in text


def test_report_files_are_0644_under_umask_022(tmp_path):
    results, teachers, students, _ = make_run(n_students=3, teacher_seed=True)
    old = os.umask(0o022)
    try:
        write_report(tmp_path, results, teachers, students, {"all": 1.0}, gate_history(True), {},
                     branch_history=[{"epoch": e, "teacher_acc": 70 + e, "branch0_acc": 60 + e} for e in range(3)],
                     gate_info=GATE_INFO)
    finally:
        os.umask(old)
    names = ["report.md", "results.csv", "accuracy_vs_macs.png", "gain_gtn_vs_ce_kd.png", "phi_entropy.png",
             "gate_exploration.png", "branch_accuracy.png"]
    for name in names:
        assert os.stat(tmp_path / name).st_mode & 0o777 == 0o644, name
    for name in names[2:]:
        assert _is_png(tmp_path / name)
    assert not list(tmp_path.glob(".tmp-*"))
    with open(tmp_path / "results.csv", newline="") as f:
        assert {r["teacher_seed"] for r in csv.DictReader(f)} == {"", "0", "1", "2"}


def test_gain_plot_zero_gain_visible_and_overall_bootstrap(tmp_path, monkeypatch, drawn_figure):
    results, _, students, _ = make_run(n_students=3, gtn_gain=1.0)
    zero = "arch000001"
    ce = {(r["student"], r["seed"]): r["test_acc"] for r in results if r["teacher"] == "ce"}
    for r in results:
        if r["teacher"] == "gtn" and r["student"] == zero:
            r["test_acc"] = ce[(zero, r["seed"])]  # exactly no gain
    fig = drawn_figure(plot_gain, results, tmp_path / "g.png", students=students)
    ax = fig.axes[0]
    dots = [line for line in ax.get_lines() if line.get_marker() == "o"]
    assert len(dots) == 1 and len(dots[0].get_ydata()) == 4  # one dot per bar: 3 students + overall
    assert dots[0].get_ydata()[1] == pytest.approx(0.0)
    g = student_gains(results)
    assert dots[0].get_ydata()[-1] == pytest.approx(g.mean())
    lo, hi = bootstrap_ci(g)
    caps = [c for c in ax.collections if hasattr(c, "get_segments")]
    segs = [seg for c in caps for seg in c.get_segments()]
    assert any(seg[0][1] == pytest.approx(lo) and seg[1][1] == pytest.approx(hi) for seg in segs)
    assert ax.get_ylabel() == "gain in test top-1 accuracy\n(percentage points)"


def test_accuracy_plot_legend_and_axes(tmp_path, monkeypatch, drawn_figure):
    results, _, students, _ = make_run(n_students=4)
    fig = drawn_figure(plot_accuracy_vs_macs, results, tmp_path / "a.png", students=students)
    ax = fig.axes[0]
    legend = ax.get_legend()
    texts = [t.get_text() for t in legend.get_texts()]
    assert texts[:3] == ["baseline", "CE+KD", "GTN+KD"]
    assert "filled: searched" in texts and "hollow: sampled" in texts
    assert legend.get_bbox_to_anchor().transformed(ax.transAxes.inverted()).x0 >= 1.0  # outside the axes
    assert ax.get_xlabel() == "MACs (millions)" and ax.get_ylabel() == "test top-1 accuracy (%)"


def test_accuracy_plot_draws_the_means_and_cuts_at_100(tmp_path, monkeypatch, drawn_figure):
    results, _, students, _ = make_run(n_students=4)
    fig = drawn_figure(plot_accuracy_vs_macs, results, tmp_path / "a.png", students=students)
    ax = fig.axes[0]
    squares = [line for line in ax.get_lines() if line.get_marker() == "s"]  # CE+KD: searched, then sampled
    assert [len(line.get_ydata()) for line in squares] == [3, 1]
    drawn = sorted(float(y) for line in squares for y in line.get_ydata())
    means = sorted(np.mean([r["test_acc"] for r in results if r["student"] == s and r["teacher"] == "ce"])
                   for s in sorted({r["student"] for r in results}))
    assert drawn == pytest.approx(means)
    assert "cut at 100%" not in ax.get_title() and ax.get_ylim()[1] < 100
    for r in results:  # two seeds 95 and 99.9: the t interval reaches far above 100%
        r["test_acc"] = 95.0 if r["seed"] == 0 else 99.9
    two = [r for r in results if r["seed"] in (0, 1)]
    fig = drawn_figure(plot_accuracy_vs_macs, two, tmp_path / "b.png", students=students)
    ax = fig.axes[0]
    assert ax.get_ylim()[1] == pytest.approx(100.5) and "cut at 100%" in ax.get_title()


def test_entropy_plot_draws_each_label_and_the_mean(tmp_path, monkeypatch, drawn_figure):
    history = gate_history(True, epochs=4)
    fig = drawn_figure(plot_phi_entropy, history, tmp_path / "e.png", GATE_INFO)
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    assert list(lines["l0"].get_xdata()) == [0, 1, 2, 3]
    assert list(lines["l0"].get_ydata()) == pytest.approx([h["phi_entropy/l0"] for h in history])
    assert list(lines["mean over labels"].get_ydata()) == pytest.approx([h["phi_entropy"] for h in history])
    assert lines[f"uniform, ln 5 = {math.log(5):.2f}"].get_ydata()[0] == pytest.approx(math.log(5))


def test_gate_exploration_plot_reads_back(tmp_path, monkeypatch, drawn_figure):
    history = gate_history(True, epochs=4)
    fig = drawn_figure(plot_gate_exploration, history, tmp_path / "g.png", GATE_INFO)
    ax_a, ax_b = fig.axes
    a = {line.get_label(): line for line in ax_a.get_lines()}
    assert list(a) == ["l0", "l1", "mean over labels", "cap 0.6"]
    assert list(a["l0"].get_ydata()) == pytest.approx([h["param_free_mass/l0"] for h in history])
    assert list(a["mean over labels"].get_ydata()) == pytest.approx([h["param_free_mass"] for h in history])
    assert a["cap 0.6"].get_ydata()[0] == pytest.approx(0.6)
    assert ax_a.get_ylabel() == "probability of parameter-free choices" and ax_a.get_ylim() == (0, 1)
    b = {line.get_label(): line for line in ax_b.get_lines()}
    assert list(b) == ["pool (uniform samples), median", "sampled students, median"]
    assert list(b["sampled students, median"].get_ydata()) == pytest.approx([h["sampled_macs_q50"] for h in history])
    assert list(b["pool (uniform samples), median"].get_ydata()) == pytest.approx([2e6] * 4)
    assert sorted(c.get_label() for c in ax_b.collections) == ["pool (uniform samples), q25-q75",
                                                                "sampled students, q25-q75"]
    assert ax_b.get_ylabel() == "MACs (millions)"
    assert all(ax.get_xlabel() == "GTN epoch" for ax in (ax_a, ax_b))
    assert fig._suptitle.get_text() == "GTN gate exploration"


def test_teacher_cost_counts_the_epochs_of_the_run_it_was_warmed_from():
    ce = {"teacher": "ce", "seed": 0, "wall_time_s": 10.0, "test_acc": 90.0}
    warmed = {"teacher": "gtn", "seed": 0, "wall_time_s": 20.0, "init_wall_time_s": 10.0,
              "total_wall_time_s": 30.0, "test_acc": 90.0}
    rows = {r["teacher"]: r for r in teacher_table([ce, warmed])}
    assert rows["gtn"]["wall_time_s"] == pytest.approx(20.0)   # its own epochs
    assert rows["gtn"]["cost_vs_ce"] == pytest.approx(3.0)     # (20 + 10) / 10
    assert rows["ce"]["cost_vs_ce"] == pytest.approx(1.0)


def with_random_students(results, students, gain_by_target=(2.0, -1.0)):
    """Two searched students, each with two random students of its band whose accuracy is the
    searched one's minus ``gain`` plus a per-student offset of +-0.5 (so the mean gain is exact)."""
    searched = [s for s in students if s["kind"] == "searched"][:2]
    out_students, out_results = list(students), list(results)
    for s, gain in zip(searched, gain_by_target):
        for j, offset in enumerate((0.5, -0.5)):
            rid = f"rand{s['student'][-2:]}{j}"
            out_students.append({**s, "student": rid, "kind": "random"})
            for r in results:
                if r["student"] == s["student"]:
                    out_results.append({**r, "student": rid, "student_kind": "random",
                                        "test_acc": r["test_acc"] - gain + offset})
    return out_results, out_students


def test_report_says_whether_the_search_helped(tmp_path):
    results, teachers, students, phi = make_run(n_students=4, seeds=(0, 1, 2))
    results, students = with_random_students(results, students)
    students[0]["convergence"] = {"converged": True, "phi_epochs": 8, "stable_epochs": 6, "stable_needed": 2,
                                  "entropy_frac": 0.3, "prob": 0.4, "why": "stable"}
    students[1]["convergence"] = {"converged": False, "phi_epochs": 8, "stable_epochs": 1, "stable_needed": 2,
                                  "entropy_frac": 0.9, "prob": 0.001, "why": "the exported student changed"}
    text = write_report(tmp_path, results, teachers, students, phi_history=phi).read_text()
    section = text.split("## Did the search help?")[1].split("\n## ")[0]
    # per condition, (2.0 + -1.0) / 2 over the four random students, the same in every condition
    for label in ("baseline", "CE+KD", "GTN+KD"):
        assert f"| **all targets** |  | 4 | {label} | **+0.50** |" in section
    assert "| 1.00M | arch000000 (1.05M) | 2 | baseline | +2.00 |" in section
    assert "| 2.00M | arch000001 (2.10M) | 2 | baseline | -1.00 |" in section
    assert "cannot tell searched students from random ones" in section
    summary = text.split("## Summary")[1].split("\n## ")[0]
    assert "Searched minus random students of the same MACs band" in summary
    assert "did not converge for 1 target" in summary and "the exported student changed" in summary
    assert "Drawn at random from the networks of each target's MACs band" in text
    # no random students: no section
    plain = write_report(tmp_path / "plain", *make_run(n_students=4)[:3]).read_text()
    assert "Did the search help?" not in plain


def test_teacher_table_names_disagreeing_seeds_and_unstable_runs(tmp_path):
    results, _, students, _ = make_run(n_students=3, seeds=(0, 1, 2))
    teachers = [{"teacher": "ce", "seed": s, "model": "vgg8", "test_acc": a, "best_acc": a, "wall_time_s": 1.0,
                 "epochs": 4} for s, a in ((0, 77.0), (1, 76.0), (2, 78.0))]
    blowup = {"epoch": 1, "what": "blow-up", "value": 5.4, "threshold": 3.45,
              "text": "epoch 1: mean training CE 5.40 > 1.5 ln 10 = 3.45 (worse than a uniform guess: the logits blew up)"}
    teachers += [{"teacher": "gtn", "seed": s, "model": "vgg8", "test_acc": a, "best_acc": a, "wall_time_s": 3.0,
                  "epochs": 4, "instability": [blowup] if s == 1 else []} for s, a in ((0, 76.0), (1, 49.0), (2, 76.5))]
    text = write_report(tmp_path, results, teachers, students).read_text()
    part = text.split("## Teachers")[1].split("\n## ")[0]
    assert "GTN: the seeds disagree by more than 10 points** (test accuracy per seed: seed 0 76.00, seed 1 49.00, " \
           "seed 2 76.50)" in part
    assert "CE: the seeds disagree" not in part
    assert "- GTN, seed 1: epoch 1: mean training CE 5.40 > 1.5 ln 10" in part
    assert "1 teacher run trained unstably (GTN seed 1: epoch 1" in text.split("## Summary")[1].split("\n## ")[0]
