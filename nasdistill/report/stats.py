"""Confidence intervals and paired tests for comparing students across teachers and seeds.

The unit of analysis of the report's comparisons is the *student*: seeds are nested within
students (and, in the main job, each seed has its own teacher run), so the differences of one
student's seeds are averaged first and :func:`student_level_test` then treats the per-student means
as the independent observations. :func:`paired_test` is the plain paired test it is built on (also
used across one student's seeds).

Everything works on plain sequences of floats. Missing values (``None``, NaN, inf) are dropped
before computing (pairs are dropped when either side is missing), so a failed run shrinks ``n``
instead of poisoning a mean.
"""
from __future__ import annotations

import math
import warnings
from typing import Mapping, Optional, Sequence

import numpy as np

#: Below this many pairs the two-sided Wilcoxon signed-rank test cannot reach p < 0.05 at all
#: (with 5 pairs its smallest possible p is 2/32 = 0.0625), so it is not reported.
WILCOXON_MIN_N = 6


def _finite(values: Sequence) -> np.ndarray:
    arr = np.array([np.nan if v is None else v for v in values], dtype=np.float64).reshape(-1)
    return arr[np.isfinite(arr)]


def mean_ci(values: Sequence, confidence: float = 0.95) -> tuple[float, float]:
    """``(mean, half_width)`` of the Student-t confidence interval for the mean of ``values``.

    ``half_width = t_{(1+confidence)/2, n-1} * s / sqrt(n)`` with ``s`` the sample standard
    deviation (``ddof=1``); the interval is ``mean ± half_width``. With one value the spread is
    unknown and the half width is NaN (show it as "n/a"); with no values both are NaN.
    """
    from scipy import stats

    if not 0 < confidence < 1:
        raise ValueError(f"mean_ci: confidence must be in (0, 1), got {confidence}")
    x = _finite(values)
    n = x.size
    if n == 0:
        return math.nan, math.nan
    mean = float(x.mean())
    if n == 1:
        return mean, math.nan
    sem = float(x.std(ddof=1)) / math.sqrt(n)
    return mean, float(stats.t.ppf((1 + confidence) / 2, n - 1)) * sem


def paired_test(a: Sequence, b: Sequence, confidence: float = 0.95) -> dict:
    """Compare paired measurements ``a[i]`` and ``b[i]`` (same student and seed, two teachers).

    Returns a dict with
    - ``n``: number of complete pairs;
    - ``mean_diff``: mean of ``d = a - b``; ``half_width``, ``ci_low``, ``ci_high``: its Student-t
      confidence interval (NaN when ``n < 2``);
    - ``t_statistic``, ``t_pvalue``: two-sided paired t-test (:func:`scipy.stats.ttest_rel`);
      NaN when ``n < 2``;
    - ``wilcoxon_pvalue``: two-sided Wilcoxon signed-rank test (:func:`scipy.stats.wilcoxon`,
      zero differences dropped) when ``n >= 6``, else NaN.

    Degenerate differences, where scipy would divide by zero: all differences zero gives p = 1
    for both tests; a constant non-zero difference (zero spread) gives a t p-value of 0, the limit
    of the t-test as the spread vanishes.
    """
    from scipy import stats

    a_arr = np.array([np.nan if v is None else v for v in a], dtype=np.float64).reshape(-1)
    b_arr = np.array([np.nan if v is None else v for v in b], dtype=np.float64).reshape(-1)
    if a_arr.shape != b_arr.shape:
        raise ValueError(f"paired_test: a and b must have the same length, got {a_arr.size} and {b_arr.size}")
    keep = np.isfinite(a_arr) & np.isfinite(b_arr)
    a_arr, b_arr = a_arr[keep], b_arr[keep]
    d = a_arr - b_arr
    n = int(d.size)
    mean, half = mean_ci(d, confidence)
    out = {"n": n, "mean_diff": mean, "half_width": half, "ci_low": mean - half, "ci_high": mean + half,
           "confidence": confidence, "t_statistic": math.nan, "t_pvalue": math.nan,
           "wilcoxon_pvalue": math.nan}
    if n < 2:
        return out
    all_zero = bool(np.all(d == 0))
    if np.ptp(d) == 0:
        out["t_statistic"] = 0.0 if all_zero else math.copysign(math.inf, mean)
        out["t_pvalue"] = 1.0 if all_zero else 0.0
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # near-constant differences
            res = stats.ttest_rel(a_arr, b_arr)
        out["t_statistic"], out["t_pvalue"] = float(res.statistic), float(res.pvalue)
    if n >= WILCOXON_MIN_N:
        if all_zero:
            out["wilcoxon_pvalue"] = 1.0
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # "exact p not possible with ties"
                out["wilcoxon_pvalue"] = float(stats.wilcoxon(d, zero_method="wilcox").pvalue)
    return out


def bootstrap_ci(values: Sequence, confidence: float = 0.95, n_resamples: int = 10_000,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval ``(low, high)`` for the mean of ``values``.

    With ``x_1..x_n`` the finite values, draw ``B = n_resamples`` resamples ``x*_b`` of size ``n``
    with replacement (indices uniform on ``0..n-1``, from ``numpy.random.default_rng(seed)``, so
    the same input always gives the same interval), take their means ``m_b = mean(x*_b)`` and
    return the empirical quantiles::

        low  = Q_{(1 - confidence) / 2}(m_1..m_B)
        high = Q_{(1 + confidence) / 2}(m_1..m_B)

    (:func:`numpy.quantile`, linear interpolation). Fewer than two values give ``(nan, nan)``: one
    value says nothing about the spread.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"bootstrap_ci: confidence must be in (0, 1), got {confidence}")
    if n_resamples < 1:
        raise ValueError(f"bootstrap_ci: n_resamples must be >= 1, got {n_resamples}")
    x = _finite(values)
    n = x.size
    if n < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples, dtype=np.float64)
    chunk = max(1, 2_000_000 // n)  # bound the index matrix to ~16 MB
    for start in range(0, n_resamples, chunk):
        stop = min(n_resamples, start + chunk)
        means[start:stop] = x[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    alpha = 1.0 - confidence
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def student_level_test(diffs_by_student: Mapping, confidence: float = 0.95, n_resamples: int = 10_000,
                       seed: int = 0) -> dict:
    """Test a mean difference with the student as the unit of analysis.

    ``diffs_by_student`` maps a student to its paired differences ``a - b`` (one per seed). Each
    student's differences are averaged (``dbar_i``, missing values dropped; a student with none is
    left out), then the ``n`` per-student means are tested against zero: this is the one-sample
    t-test on ``dbar_i`` (:func:`scipy.stats.ttest_1samp`; the same as the paired t-test on the
    per-student means of ``a`` and ``b``) and, when ``n >= 6``, the Wilcoxon signed-rank test on
    ``dbar_i``.

    Returns the keys of :func:`paired_test` (``n`` = number of students, ``mean_diff`` = mean of
    the ``dbar_i``, its Student-t interval, ``t_pvalue``, ``wilcoxon_pvalue``) plus
    ``n_students``, ``boot_ci_low``/``boot_ci_high`` (:func:`bootstrap_ci` of the ``dbar_i``:
    students are resampled), ``student_means`` (``{student: dbar_i}``) and ``unit = "student"``.
    """
    means = {}
    for student, diffs in diffs_by_student.items():
        d = _finite(diffs)
        if d.size:
            means[student] = float(d.mean())
    dbar = list(means.values())
    out = paired_test(dbar, [0.0] * len(dbar), confidence)
    out["boot_ci_low"], out["boot_ci_high"] = bootstrap_ci(dbar, confidence, n_resamples, seed)
    out.update(n_students=len(dbar), student_means=means, unit="student")
    return out


def matched_difference(groups: Sequence[Mapping], confidence: float = 0.95, n_resamples: int = 10_000,
                       seed: int = 0) -> dict:
    """Searched students against random students of the same cost, the random student as the unit.

    ``groups``: one mapping per target, ``{"searched": {seed: acc}, "random": {student: {seed:
    acc}}}``. Each random student ``j`` of target ``t`` is one unit: its differences
    ``a_t(s) - r_j(s)`` over the seeds both have are averaged (seeds are nested in the unit, and the
    runs of a seed share its teachers), then the units are tested against zero with
    :func:`student_level_test` (Student-t interval and paired t-test over the units, bootstrap
    interval resampling them). The estimate is the mean over the units, which with the same number of
    random students per target is the mean over targets of the searched student minus the mean of
    its random students.

    Returns the keys of :func:`student_level_test` plus ``n_targets``, ``n_random`` (units),
    ``n_seeds`` (distinct seeds used) and ``per_target`` (each target's mean difference).
    """
    diffs: dict = {}
    per_target, seeds, targets = [], set(), 0
    for t, g in enumerate(groups):
        searched = {s: v for s, v in g["searched"].items() if v is not None and math.isfinite(v)}
        mine = []
        for j, runs in g["random"].items():
            d = [searched[s] - v for s, v in runs.items()
                 if s in searched and v is not None and math.isfinite(v)]
            if d:
                diffs[(t, j)] = d
                mine.append(sum(d) / len(d))
                seeds.update(s for s in runs if s in searched)
        if mine:
            targets += 1
            per_target.append(sum(mine) / len(mine))
    out = student_level_test(diffs, confidence, n_resamples, seed)
    out.update(n_targets=targets, n_random=len(diffs), n_seeds=len(seeds), per_target=per_target)
    return out


def significant(p: Optional[float], alpha: float = 0.05) -> bool:
    """True when ``p`` is a real p-value below ``alpha`` (NaN / None means "not tested": False)."""
    return p is not None and math.isfinite(p) and p < alpha
