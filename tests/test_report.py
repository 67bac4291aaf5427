"""nasdistill.report: statistics against scipy and hand computations, tables, CSV, plots, report.md."""
import csv
import math

import numpy as np
import pytest
from scipy import stats

from nasdistill.report import (MeanCI, accuracy_table, comparison_table, gain_table, mean_ci, paired_test,
                               pareto_front, plot_accuracy_vs_macs, plot_gain, plot_phi_entropy,
                               significant, stage_table, students_table, teacher_table, write_report,
                               write_results_csv)
from nasdistill.report.markdown import fmt_count, fmt_mean_ci, fmt_p, fmt_seconds
from nasdistill.report.tables import RESULT_COLUMNS, conditions

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------------- synthetic data
def make_run(n_students=4, seeds=(0, 1, 2), gtn_gain=1.0, noise=0.3, gtn=True, dkd=False, rng_seed=0):
    """Baseline / CE+KD / GTN+KD runs with GTN+KD = CE+KD + gtn_gain + noise, per (student, seed)."""
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
    results, _, students, _ = make_run(n_students=4, seeds=(0, 1, 2), gtn_gain=1.0)
    gain = gain_table(results, students=students)
    a, b = paired_arrays(results)
    o = gain["overall"]
    assert o["n"] == 12 and o["n_students"] == 4 and o["n_seeds"] == 3
    assert o["mean_diff"] == pytest.approx((a - b).mean(), rel=1e-12)
    assert o["t_pvalue"] == pytest.approx(stats.ttest_rel(a, b).pvalue, rel=1e-12)
    assert o["wilcoxon_pvalue"] == pytest.approx(stats.wilcoxon(a - b).pvalue, rel=1e-12)
    # per student: mean and CI over its 3 seeds
    first = gain["rows"][0]
    sid = first["student"]
    a1, b1 = paired_arrays([r for r in results if r["student"] == sid])
    m, h = mean_ci(a1 - b1)
    assert first["gain"].mean == pytest.approx(m) and first["gain"].half_width == pytest.approx(h)
    assert first["gain"].n == 3
    assert gain_table(results, teacher="sftn") is None


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
    assert [r["teacher"] for r in trows] == ["ce", "gtn"]
    assert trows[1]["cost_vs_ce"] == pytest.approx(2.5) and trows[0]["ece"] == pytest.approx(0.03)
    srows = students_table(students, results)
    assert srows[0]["macs_over_target"] == pytest.approx(1.05)
    assert math.isnan(srows[-1]["macs_over_target"])  # sampled: no target
    st = stage_table({"search": 30.0, "distill": 90.0})
    assert st[-1] == {"stage": "total", "seconds": 120.0, "share": 1.0}
    assert st[0]["share"] == pytest.approx(0.25)


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
            "## Plots", "## Time per stage", "## Configuration"]


def test_report_significant_gain(tmp_path):
    results, teachers, students, phi = make_run(n_students=4, seeds=(0, 1, 2), gtn_gain=1.5, noise=0.3)
    path = write_report(tmp_path, results, teachers, students, {"search": 12.0, "teachers": 40.0},
                        phi, {"data": {"name": "digits"}, "seeds": 3})
    text = path.read_text()
    for s in SECTIONS:
        assert s in text
    a, b = paired_arrays(results)
    assert stats.ttest_rel(a, b).pvalue < 0.05
    assert f"**{(a - b).mean():+.2f} points**" in text
    assert "over 12 pairs (same student, same seed) from 4 students x 3 seeds" in text
    assert "The difference is statistically significant at 0.05" in text
    assert "not statistically significant" not in text.split("## Teachers")[0]
    for name in ("accuracy_vs_macs.png", "gain_gtn_vs_ce_kd.png", "phi_entropy.png"):
        assert f"]({name})" in text and _is_png(tmp_path / name)
    with open(tmp_path / "results.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == len(results)
    assert "`data.name` | `digits`" in text and "2.50x" in text


def test_report_null_gain(tmp_path):
    results, teachers, students, phi = make_run(n_students=4, seeds=(0, 1, 2), gtn_gain=0.0, noise=0.5,
                                                rng_seed=3)
    a, b = paired_arrays(results)
    p = stats.ttest_rel(a, b).pvalue
    assert p > 0.05  # the synthetic null case really is null
    text = write_report(tmp_path, results, teachers, students, {}, phi, {}).read_text()
    summary = text.split("## Teachers")[0]
    assert f"The difference is not statistically significant (p = {p:.3f})" in summary
    assert "with 4 students x 3 seeds this run cannot tell the teachers apart" in summary
    assert f"**{(a - b).mean():+.2f} points**" in summary


def test_report_single_seed_and_dkd(tmp_path):
    results, teachers, students, phi = make_run(n_students=3, seeds=(0,), dkd=True)
    text = write_report(tmp_path, results, teachers, students, {"all": 5.0}, phi, {}).read_text()
    assert "± n/a" in text  # one seed: no per-student CI
    assert "over 3 pairs (same student, same seed) from 3 students x 1 seed " in text  # tested across students
    assert "With DKD the GTN minus CE gain" in text and _is_png(tmp_path / "gain_gtn_vs_ce_dkd.png")
    one = [r for r in results if r["student"] == "arch000000"]
    text = write_report(tmp_path / "one", one, teachers, students[:1], {}, [], {}).read_text()
    assert "With a single pair there is no confidence interval and no test" in text
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
    assert _is_png(tmp_path / "accuracy_vs_macs.png")


def test_plots_direct_and_missing_data(tmp_path):
    results, _, students, phi = make_run(n_students=3)
    assert _is_png(plot_accuracy_vs_macs(results, tmp_path / "a.png", students=students))
    assert _is_png(plot_gain(results, tmp_path / "g.png"))
    assert _is_png(plot_phi_entropy(phi, tmp_path / "p.png"))
    assert plot_accuracy_vs_macs([], tmp_path / "none.png") is None
    assert plot_phi_entropy([{"epoch": 0}], tmp_path / "none.png") is None


def test_duplicate_runs_are_rejected(tmp_path):
    results, teachers, students, phi = make_run(n_students=2)
    with pytest.raises(ValueError, match="repeats the run"):
        write_report(tmp_path, results + [dict(results[0])], teachers, students, {}, phi, {})
