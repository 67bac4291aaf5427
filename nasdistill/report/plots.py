"""PNG plots for the report. Each function returns the path written, or ``None`` when its data is
missing (no runs, no GTN/CE pairs, no phi history).

Every axis is labelled in words with its unit; counts (MACs) get ``1.5M``-style ticks, epochs integer
ticks, and legends sit outside the axes. The gate plots live in :mod:`.gates`, the branch-trained
teachers' in :mod:`.branches`. PNGs are written atomically (:func:`.figure.save_png`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from .branches import plot_branch_accuracy
from .figure import count_axis, finite_err, legend_outside, new_figure, save_png
from .fmt import p_eq
from .tables import (MeanCI, as_float, choose_metric, condition_label, conditions, gain_table, pareto_front,
                     student_info, student_order)

_MARKERS = "os^Dv<>PX*"
#: Axis labels of the accuracy metrics.
METRIC_AXIS = {"test_acc": "test top-1 accuracy (%)", "best_acc": "best validation top-1 accuracy (%)",
               "last_acc": "final validation top-1 accuracy (%)"}


def metric_axis(metric: str) -> str:
    return METRIC_AXIS.get(metric, f"{metric} (%)")


def plot_accuracy_vs_macs(results: Sequence[dict], path, metric: Optional[str] = None,
                          students: Optional[Sequence[dict]] = None) -> Optional[Path]:
    """Accuracy (mean over seeds, 95% CI bars) against MACs, one colour and marker per condition.

    Searched students are filled markers joined by a dashed line along their Pareto front (per
    condition); sampled students are hollow markers. The legend (outside the axes) lists the
    conditions and what filled, hollow and dashed mean.
    """
    from matplotlib.lines import Line2D

    metric = metric or choose_metric(results)
    info = student_info(results, students)
    runs: dict = {}
    for r in results:
        runs.setdefault((r["student"], (r["teacher"], r["method"])), []).append(as_float(r.get(metric)))
    conds = conditions(results)
    if not conds or not any(as_float(d["macs"]) for d in info.values()):
        return None
    fig = new_figure(9.0, 4.8)
    ax = fig.add_subplot(1, 1, 1)
    order = student_order(info)
    handles, kinds_seen, any_front = [], set(), False
    for k, cond in enumerate(conds):
        colour, marker = f"C{k % 10}", _MARKERS[k % len(_MARKERS)]
        # spread the conditions a little sideways so markers at one MACs value do not hide each other
        shift = 1.0 + 0.012 * (k - (len(conds) - 1) / 2)
        searched, drawn = [], False
        for kind in ("searched", "sampled"):
            xs, ys, es = [], [], []
            for sid in order:
                stat = MeanCI.of(runs.get((sid, cond), []))
                macs = as_float(info[sid]["macs"])
                if (info[sid]["kind"] == "searched") != (kind == "searched") or not stat.n or macs is None:
                    continue
                xs.append(macs * shift)
                ys.append(stat.mean)
                es.append(finite_err(stat.half_width))
            if not xs:
                continue
            drawn = True
            kinds_seen.add(kind)
            face = colour if kind == "searched" else "none"
            ax.errorbar(xs, ys, yerr=es, fmt=marker, color=colour, mfc=face, mec=colour, ms=6, capsize=3, lw=1)
            if kind == "searched":
                searched = list(zip(xs, ys))
        if drawn:
            handles.append(Line2D([], [], marker=marker, color=colour, mfc=colour, ls="none",
                                  label=condition_label(*cond)))
        front = pareto_front(searched)
        if len(front) > 1:
            any_front = True
            ax.plot([searched[i][0] for i in front], [searched[i][1] for i in front], "--", color=colour,
                    lw=1, alpha=0.8)
    if not handles:
        return None
    if "searched" in kinds_seen:
        handles.append(Line2D([], [], marker="o", color="dimgrey", mfc="dimgrey", ls="none",
                              label="filled: searched"))
    if "sampled" in kinds_seen:
        handles.append(Line2D([], [], marker="o", color="dimgrey", mfc="none", ls="none",
                              label="hollow: sampled"))
    if any_front:
        handles.append(Line2D([], [], color="dimgrey", ls="--", lw=1, label="dashed: Pareto front (searched)"))
    macs_all = [as_float(d["macs"]) for d in info.values() if as_float(d["macs"])]
    if macs_all and max(macs_all) / min(macs_all) > 20:
        ax.set_xscale("log")
    count_axis(ax, "x", macs_all)
    ax.set_ylabel(metric_axis(metric))
    cut = ""
    if ax.get_ylim()[1] > 100.0:  # wide t intervals (few seeds) would otherwise stretch the axis past 100%
        ax.set_ylim(top=100.5)
        cut = ", cut at 100%"
    ax.set_title(f"Student accuracy vs MACs (mean over seeds, bars: 95% CI over seeds{cut})", fontsize=9)
    ax.grid(alpha=0.3)
    legend_outside(ax, handles)
    return save_png(fig, path)


def plot_gain(results: Sequence[dict], path, teacher: str = "gtn", reference: str = "ce", method: str = "kd",
              metric: Optional[str] = None, students: Optional[Sequence[dict]] = None,
              gain: Optional[dict] = None) -> Optional[Path]:
    """Per-student gain of ``teacher`` over ``reference`` (mean over seeds, 95% t CI over seeds), and
    as the last bar the mean over students with its bootstrap 95% CI (students resampled). A dot
    marks every bar's value, so a zero gain stays visible; a line marks zero. ``gain``: the
    :func:`gain_table` of these arguments, when already computed."""
    if gain is None:
        gain = gain_table(results, teacher, reference, method, metric, students)
    if gain is None:
        return None
    rows = gain["rows"]
    o = gain["overall"]
    names = [str(r["student"]) for r in rows] + [f"mean over\n{o['n_students']} students"]
    means = [r["gain"].mean for r in rows] + [o["mean_diff"]]
    lo = [finite_err(r["gain"].half_width) for r in rows]
    hi = list(lo)
    boot = (as_float(o["boot_ci_low"]), as_float(o["boot_ci_high"]))
    lo.append(o["mean_diff"] - boot[0] if None not in boot else 0.0)
    hi.append(boot[1] - o["mean_diff"] if None not in boot else 0.0)
    colours = ["C0" if r["kind"] == "searched" else "C7" for r in rows] + ["C3"]
    x = list(range(len(names)))
    fig = new_figure(max(6.0, 0.5 * len(names) + 3.0), 4.8)
    ax = fig.add_subplot(1, 1, 1)
    ax.bar(x, means, yerr=[lo, hi], color=colours, capsize=3, alpha=0.85)
    ax.plot(x, means, "o", color="black", ms=3.5, zorder=3)
    ax.annotate(f"{o['mean_diff']:+.2f}", (x[-1], o["mean_diff"]), textcoords="offset points", xytext=(6, 4),
                fontsize=7)
    ax.axhline(0.0, color="black", lw=1)
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=45, ha="right", fontsize=7)
    what = metric_axis(gain["metric"]).replace(" (%)", "")
    ax.set_ylabel(f"gain in {what}\n(percentage points)")
    ax.set_title(f"{gain['label']} minus {gain['reference_label']} per student (mean over seeds, 95% t CI)\n"
                 f"blue: searched, grey: sampled, red: mean over students with bootstrap 95% CI "
                 f"(t-test across students {p_eq(o['t_pvalue'])}); dots mark the values", fontsize=9)
    ax.grid(alpha=0.3, axis="y")
    return save_png(fig, path)


__all__ = ["plot_accuracy_vs_macs", "plot_branch_accuracy", "plot_gain"]
