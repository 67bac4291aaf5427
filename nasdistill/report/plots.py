"""PNG plots for the report. Each function returns the path written, or ``None`` when its data is
missing (no runs, no GTN/CE pairs, no phi history).

Figures are built with :class:`matplotlib.figure.Figure` and the Agg canvas directly, imported
lazily: no pyplot, so no global backend switch and nothing left open in a user's session.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence

from .tables import (MeanCI, as_float, student_info, choose_metric, condition_label,
                     conditions, gain_table, pareto_front, student_order)

_MARKERS = "os^Dv<>PX*"
_NON_LABEL_KEYS = ("epoch", "step", "phi_entropy")


def _figure(width: float = 7.0, height: float = 4.5):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def _err(half: float) -> float:
    return half if math.isfinite(half) else 0.0


def plot_accuracy_vs_macs(results: Sequence[dict], path, metric: Optional[str] = None,
                          students: Optional[Sequence[dict]] = None) -> Optional[Path]:
    """Accuracy (mean over seeds, 95% CI bars) against MACs, one colour and marker per condition.

    Searched students are filled markers joined by a dashed line along their Pareto front (per
    condition); sampled students are hollow markers.
    """
    metric = metric or choose_metric(results)
    info = student_info(results, students)
    runs: dict = {}
    for r in results:
        runs.setdefault((r["student"], (r["teacher"], r["method"])), []).append(as_float(r.get(metric)))
    conds = conditions(results)
    if not conds or not any(as_float(d["macs"]) for d in info.values()):
        return None
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    order = student_order(info)
    plotted = False
    for k, cond in enumerate(conds):
        colour, marker = f"C{k % 10}", _MARKERS[k % len(_MARKERS)]
        # spread the conditions a little sideways so markers at one MACs value do not hide each other
        shift = 1.0 + 0.012 * (k - (len(conds) - 1) / 2)
        searched, label = [], condition_label(*cond)
        for kind in ("searched", "sampled"):
            xs, ys, es = [], [], []
            for sid in order:
                stat = MeanCI.of(runs.get((sid, cond), []))
                macs = as_float(info[sid]["macs"])
                if (info[sid]["kind"] == "searched") != (kind == "searched") or not stat.n or macs is None:
                    continue
                xs.append(macs * shift)
                ys.append(stat.mean)
                es.append(_err(stat.half_width))
            if not xs:
                continue
            plotted = True
            face = colour if kind == "searched" else "none"
            ax.errorbar(xs, ys, yerr=es, fmt=marker, color=colour, mfc=face, mec=colour, ms=6,
                        capsize=3, lw=1, label=label)
            label = None  # one legend entry per condition
            if kind == "searched":
                searched = list(zip(xs, ys))
        front = pareto_front(searched)
        if len(front) > 1:
            ax.plot([searched[i][0] for i in front], [searched[i][1] for i in front], "--", color=colour,
                    lw=1, alpha=0.8)
    if not plotted:
        return None
    macs_all = [as_float(d["macs"]) for d in info.values() if as_float(d["macs"])]
    if macs_all and max(macs_all) / min(macs_all) > 20:
        ax.set_xscale("log")
    ax.set_xlabel("MACs")
    ax.set_ylabel(f"{metric} (%)")
    ax.set_title("Student accuracy vs MACs (mean over seeds, 95% CI)\n"
                 "filled: searched, hollow: sampled; dashed: Pareto front of the searched students",
                 fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def plot_gain(results: Sequence[dict], path, teacher: str = "gtn", reference: str = "ce", method: str = "kd",
              metric: Optional[str] = None, students: Optional[Sequence[dict]] = None) -> Optional[Path]:
    """Per-student gain of ``teacher`` over ``reference`` (mean over seeds, 95% CI bars), plus the
    overall gain over all (student, seed) pairs as the last bar; a line marks zero."""
    gain = gain_table(results, teacher, reference, method, metric, students)
    if gain is None:
        return None
    rows = gain["rows"]
    overall = gain["overall"]
    names = [str(r["student"]) for r in rows] + ["overall"]
    means = [r["gain"].mean for r in rows] + [overall["mean_diff"]]
    errs = [_err(r["gain"].half_width) for r in rows] + [_err(overall["half_width"])]
    colours = ["C0" if r["kind"] == "searched" else "C7" for r in rows] + ["C3"]
    fig = _figure(max(5.0, 0.5 * len(names) + 2.5), 4.5)
    ax = fig.add_subplot(1, 1, 1)
    ax.bar(range(len(names)), means, yerr=errs, color=colours, capsize=3)
    ax.axhline(0.0, color="black", lw=1)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=45, ha="right", fontsize=7)
    ax.set_ylabel(f"{gain['metric']} gain (points)")
    p = overall["t_pvalue"]
    ptxt = "p n/a" if not math.isfinite(p) else ("p < 0.001" if p < 0.001 else f"p = {p:.3f}")
    ax.set_title(f"{gain['label']} minus {gain['reference_label']} per student (mean over seeds, 95% CI)\n"
                 f"blue: searched, grey: sampled, red: all pairs (paired t-test {ptxt})", fontsize=9)
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)


def plot_phi_entropy(phi_history: Sequence[dict], path) -> Optional[Path]:
    """Entropy of the gate distribution over GTN epochs: a thin line per label, a thick mean line.

    Per-label series are the numeric keys other than ``epoch``, ``step`` and ``phi_entropy`` (a
    ``phi_entropy/`` or ``entropy/`` prefix is dropped from the legend); ``phi_entropy`` is the mean.
    """
    history = [h for h in phi_history or () if as_float(h.get("epoch")) is not None]
    if not history:
        return None
    history.sort(key=lambda h: h["epoch"])
    labels = []
    for h in history:
        labels += [k for k, v in h.items() if k not in _NON_LABEL_KEYS and k not in labels
                   and as_float(v) is not None and not isinstance(v, bool)]
    epochs = [h["epoch"] for h in history]
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    for label in labels:
        name = label.split("/", 1)[1] if label.startswith(("phi_entropy/", "entropy/")) else label
        ax.plot(epochs, [as_float(h.get(label)) if as_float(h.get(label)) is not None else math.nan for h in history],
                lw=0.8, alpha=0.6, label=name if len(labels) <= 12 else None)
    mean = [as_float(h.get("phi_entropy")) for h in history]
    if any(m is not None for m in mean):
        ax.plot(epochs, [math.nan if m is None else m for m in mean], color="black", lw=2.5, label="mean")
    elif not labels:
        return None
    ax.set_xlabel("GTN epoch")
    ax.set_ylabel("gate entropy")
    ax.set_title("Architecture gate entropy during GTN training", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def plot_branch_accuracy(history: Sequence[dict], path) -> Optional[Path]:
    """Teacher and branch accuracy over GTN/SFTN epochs (the GTN supplement's Figure 1).

    ``history`` rows hold ``epoch``, ``teacher_acc`` and ``branch<i>_acc`` (percent).
    """
    history = sorted((h for h in history or () if as_float(h.get("epoch")) is not None),
                     key=lambda h: h["epoch"])
    keys = sorted({k for h in history for k in h if k.startswith("branch") and k.endswith("_acc")})
    if not history or not keys:
        return None
    epochs = [h["epoch"] for h in history]
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    if any(as_float(h.get("teacher_acc")) is not None for h in history):
        ax.plot(epochs, [as_float(h.get("teacher_acc")) if as_float(h.get("teacher_acc")) is not None
                         else math.nan for h in history], color="black", lw=2.2, label="teacher")
    for k in keys:
        ax.plot(epochs, [as_float(h.get(k)) if as_float(h.get(k)) is not None else math.nan
                         for h in history], lw=1.0, label=k.replace("_acc", "").replace("branch", "branch "))
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title("Teacher and student-branch accuracy (branches on the most likely path)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


__all__ = ["plot_accuracy_vs_macs", "plot_branch_accuracy", "plot_gain", "plot_phi_entropy"]
