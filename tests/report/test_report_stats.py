"""The report's unit of analysis: bootstrap CI, per-student tests and the comparisons built on them,
checked against scipy and hand computations."""
import math

import numpy as np
import pytest
from scipy import stats

from nasdistill.report import bootstrap_ci, compare, comparison_table, gain_table, student_level_test


def make_results(gains_by_student, base=60.0, teacher_seed=True, extra_noise=None):
    """CE+KD and GTN+KD rows: GTN+KD - CE+KD = gains_by_student[student][seed]; plus baseline rows."""
    rows = []
    for i, (sid, gains) in enumerate(gains_by_student.items()):
        for seed, g in enumerate(gains):
            ce = base + i + 0.1 * seed
            for teacher, method, acc in (("none", "none", ce - 1.0), ("ce", "kd", ce), ("gtn", "kd", ce + g)):
                row = {"student": sid, "student_kind": "sampled", "macs": 1_000_000 * (i + 1), "teacher": teacher,
                       "method": method, "seed": seed, "test_acc": acc}
                if teacher_seed and teacher != "none":
                    row["teacher_seed"] = seed
                rows.append(row)
    return rows


def per_student_means(rows, a=("gtn", "kd"), b=("ce", "kd")):
    """Hand computation: {student: mean over seeds of a - b}."""
    acc = {(r["student"], r["seed"], r["teacher"], r["method"]): r["test_acc"] for r in rows}
    diffs = {}
    for (sid, seed, t, m), v in acc.items():
        if (t, m) == a and (sid, seed) + b in acc:
            diffs.setdefault(sid, []).append(v - acc[(sid, seed) + b])
    return {sid: sum(d) / len(d) for sid, d in diffs.items()}


# ---------------------------------------------------------------------------------------- bootstrap
def test_bootstrap_ci_two_values_is_exact():
    # resampled means of [a, b] take a, (a+b)/2, b with probabilities 1/4, 1/2, 1/4: the 2.5% and
    # 97.5% quantiles are a and b themselves
    assert bootstrap_ci([1.0, 3.0]) == (1.0, 3.0)


def test_bootstrap_ci_matches_scipy_percentile_and_is_reproducible():
    x = np.random.default_rng(5).normal(0.5, 1.0, size=15)
    lo, hi = bootstrap_ci(x)
    ref = stats.bootstrap((x,), np.mean, confidence_level=0.95, n_resamples=10_000, method="percentile",
                          random_state=np.random.default_rng(123)).confidence_interval
    se = x.std(ddof=1) / math.sqrt(len(x))
    assert lo == pytest.approx(ref.low, abs=0.1 * se) and hi == pytest.approx(ref.high, abs=0.1 * se)
    assert bootstrap_ci(x) == (lo, hi)  # fixed seed: the report is reproducible
    assert bootstrap_ci(x, seed=1) != (lo, hi)
    assert lo < x.mean() < hi


def test_bootstrap_ci_shrinks_with_more_students():
    rng = np.random.default_rng(7)
    small, large = rng.normal(1.0, 1.0, size=8), rng.normal(1.0, 1.0, size=200)
    lo_s, hi_s = bootstrap_ci(small)
    lo_l, hi_l = bootstrap_ci(large)
    assert lo_s < small.mean() < hi_s and lo_l < large.mean() < hi_l
    # the width scales like 1/sqrt(n): 2 * 1.96 * s / sqrt(n)
    assert hi_l - lo_l < 0.5 * (hi_s - lo_s)
    assert hi_l - lo_l == pytest.approx(2 * 1.96 * large.std(ddof=1) / math.sqrt(200), rel=0.1)


def test_bootstrap_ci_degenerate():
    assert all(math.isnan(v) for v in bootstrap_ci([2.0]))
    assert all(math.isnan(v) for v in bootstrap_ci([]))
    assert bootstrap_ci([1.0, None, float("nan"), 3.0]) == (1.0, 3.0)  # missing values dropped
    with pytest.raises(ValueError):
        bootstrap_ci([1.0, 2.0], confidence=1.0)


# ------------------------------------------------------------------------------ student-level test
def test_student_level_test_matches_ttest_1samp_on_student_means():
    rng = np.random.default_rng(11)
    diffs = {f"s{i}": list(rng.normal(0.4, 1.0, size=3)) for i in range(7)}
    out = student_level_test(diffs)
    means = np.array([np.mean(v) for v in diffs.values()])
    ref = stats.ttest_1samp(means, 0.0)
    assert out["unit"] == "student" and out["n"] == out["n_students"] == 7
    assert out["mean_diff"] == pytest.approx(means.mean(), rel=1e-12)
    assert out["t_statistic"] == pytest.approx(ref.statistic, rel=1e-10)
    assert out["t_pvalue"] == pytest.approx(ref.pvalue, rel=1e-10)
    lo, hi = stats.t.interval(0.95, 6, loc=means.mean(), scale=stats.sem(means))
    assert (out["ci_low"], out["ci_high"]) == pytest.approx((lo, hi), rel=1e-10)
    assert out["wilcoxon_pvalue"] == pytest.approx(stats.wilcoxon(means).pvalue, rel=1e-12)
    assert (out["boot_ci_low"], out["boot_ci_high"]) == bootstrap_ci(means)
    assert out["student_means"]["s0"] == pytest.approx(np.mean(diffs["s0"]))


def test_student_level_test_small_groups():
    out = student_level_test({"a": [1.0, 2.0], "b": [0.5], "c": [None, float("nan")]})
    assert out["n_students"] == 2  # c has no finite difference
    assert math.isnan(out["wilcoxon_pvalue"])  # fewer than 6 students
    one = student_level_test({"a": [1.0, 2.0, 3.0]})
    assert one["n_students"] == 1 and one["mean_diff"] == pytest.approx(2.0)
    assert math.isnan(one["t_pvalue"]) and math.isnan(one["boot_ci_low"])


# ------------------------------------------------------------------------------------ comparisons
def test_gain_table_overall_is_per_student():
    rng = np.random.default_rng(3)
    gains = {f"arch{i}": list(0.5 + rng.normal(0, 0.8, size=3)) for i in range(8)}
    rows = make_results(gains)
    o = gain_table(rows)["overall"]
    means = per_student_means(rows)
    vals = np.array([means[k] for k in sorted(means)])
    assert o["unit"] == "student" and o["n_students"] == 8 and o["n_seeds"] == 3 and o["n_pairs"] == 24
    assert o["n_teacher_seeds"] == 3 and o["seeds_min"] == o["seeds_max"] == 3
    assert o["mean_diff"] == pytest.approx(vals.mean(), rel=1e-12)
    assert o["t_pvalue"] == pytest.approx(stats.ttest_1samp(vals, 0.0).pvalue, rel=1e-10)
    # the paired t-test on the per-student means of a and b is the same test
    acc = {(r["student"], r["teacher"]): [] for r in rows}
    for r in rows:
        acc[(r["student"], r["teacher"])].append(r["test_acc"])
    a = [np.mean(acc[(s, "gtn")]) for s in sorted(gains)]
    b = [np.mean(acc[(s, "ce")]) for s in sorted(gains)]
    assert o["t_pvalue"] == pytest.approx(stats.ttest_rel(a, b).pvalue, rel=1e-10)
    assert o["wilcoxon_pvalue"] == pytest.approx(stats.wilcoxon(vals).pvalue, rel=1e-12)
    assert o["boot_ci_low"] < o["mean_diff"] < o["boot_ci_high"]


def test_pooling_pairs_would_be_significant_but_students_are_not():
    """Two students gain 3 points on every seed, one loses 2.5: 30 pooled pairs look significant,
    three students do not."""
    rng = np.random.default_rng(0)
    gains = {"s0": list(3.0 + rng.normal(0, 0.1, 10)), "s1": list(3.0 + rng.normal(0, 0.1, 10)),
             "s2": list(-2.5 + rng.normal(0, 0.1, 10))}
    rows = make_results(gains)
    pooled = np.concatenate([gains[s] for s in gains])
    assert stats.ttest_1samp(pooled, 0.0).pvalue < 0.05  # what the old pooled test reported
    o = gain_table(rows)["overall"]
    means = [np.mean(gains[s]) for s in gains]
    assert o["t_pvalue"] == pytest.approx(stats.ttest_1samp(means, 0.0).pvalue, rel=1e-10)
    assert o["t_pvalue"] > 0.05 and o["n"] == 3
    comp = {(c["condition"], c["reference"]): c for c in comparison_table(rows)}
    assert comp[("GTN+KD", "CE+KD")]["t_pvalue"] == pytest.approx(o["t_pvalue"])
    assert comp[("GTN+KD", "CE+KD")]["unit"] == "student"


def test_comparison_table_uses_students_and_teacher_seeds():
    gains = {f"a{i}": [0.2 * i, 0.1, -0.1] for i in range(4)}
    rows = make_results(gains)
    comp = {(c["condition"], c["reference"]): c for c in comparison_table(rows)}
    vs_base = comp[("CE+KD", "baseline")]
    assert vs_base["n_students"] == 4 and vs_base["mean_diff"] == pytest.approx(1.0)
    assert vs_base["n_teacher_seeds"] == 3  # only the CE side has a teacher
    gtn_base = comp[("GTN+KD", "baseline")]
    hand = per_student_means(rows, ("gtn", "kd"), ("none", "none"))
    assert gtn_base["t_pvalue"] == pytest.approx(stats.ttest_1samp(list(hand.values()), 0.0).pvalue, rel=1e-10)
    old = make_results(gains, teacher_seed=False)  # older runs: teacher seed unknown
    assert gain_table(old)["overall"]["n_teacher_seeds"] is None
    shared = [dict(r, teacher_seed=0) if r["teacher"] != "none" else r for r in rows]
    assert gain_table(shared)["overall"]["n_teacher_seeds"] == 1
    assert compare(rows, ("none", "none"), ("ce", "kd"))["overall"]["mean_diff"] == pytest.approx(-1.0)


def test_unequal_seeds_per_student():
    gains = {"a": [1.0, 2.0, 3.0], "b": [0.0], "c": [1.0, 1.0]}
    o = gain_table(make_results(gains))["overall"]
    assert o["seeds_min"] == 1 and o["seeds_max"] == 3 and o["n_pairs"] == 6
    assert o["mean_diff"] == pytest.approx((2.0 + 0.0 + 1.0) / 3)  # each student weighs the same


def test_matched_difference_by_hand():
    from scipy import stats as sps

    from nasdistill.report.stats import matched_difference

    groups = [{"searched": {0: 80.0, 1: 82.0}, "random": {"r1": {0: 78.0, 1: 79.0}, "r2": {0: 75.0, 1: 81.0}}},
              {"searched": {0: 70.0, 1: 70.0}, "random": {"r3": {0: 71.0, 1: None}}}]
    out = matched_difference(groups)
    units = [2.5, 3.0, -1.0]  # each random student's mean over the seeds both have
    assert out["mean_diff"] == pytest.approx(sum(units) / 3)
    assert out["per_target"] == pytest.approx([2.75, -1.0])
    assert (out["n_targets"], out["n_random"], out["n_seeds"]) == (2, 3, 2)
    half = sps.t.ppf(0.975, 2) * np.std(units, ddof=1) / np.sqrt(3)
    assert out["ci_low"] == pytest.approx(1.5 - half) and out["ci_high"] == pytest.approx(1.5 + half)
    assert out["t_pvalue"] == pytest.approx(sps.ttest_1samp(units, 0.0).pvalue)
    single = matched_difference([groups[1]])
    assert single["mean_diff"] == pytest.approx(-1.0) and not np.isfinite(single["ci_low"])
    assert matched_difference([{"searched": {}, "random": {"r": {0: 1.0}}}])["n_random"] == 0
