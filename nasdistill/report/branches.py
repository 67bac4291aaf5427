"""Branch-trained teachers (GTN, SFTN): teacher and branch accuracy over the epochs (the GTN
supplement's Figure 1), and the precondition such a teacher needs before it is worth distilling
from: branches that keep up with the teacher, and soft targets that are not flat.

``history`` rows, one per epoch of a GTN or SFTN teacher run (:func:`branch_rows` makes them from
the run's ``metrics.jsonl``)::

    {"epoch": int, "teacher": "gtn"|"sftn" (absent: "gtn"), "teacher_seed": int (optional),
     "teacher_acc": float,                 # teacher validation top-1 (%)
     "train_acc": float,                   # teacher training top-1 (%)
     "branch<i>_acc": float,               # branch i validation top-1 (%): most likely path, BN recalibrated
     "sampled_branch<i>_acc": float,       # training top-1 (%) of the paths sampled that epoch (BN in training mode)
     "sampled_branch<i>_entropy": float,   # mean T=1 entropy of branch i's predictions (nats)
     "teacher_logit_std": float,           # standard deviation of the teacher's logits
     "teacher_entropy_t1": float,          # mean entropy of the teacher's softmax at T=1 (nats)
     "teacher_entropy_kd": float,          # the same at the distillation temperature (nats)
     "kd_temperature": float (optional)}   # that temperature, when the run logged it

The precondition (:mod:`.precondition`) is checked at each teacher run's last epoch: it *fails*
when the sampled branches trail the teacher by more than :data:`BRANCH_GAP_POINTS` points of training accuracy (teacher
``train_acc`` minus the mean of the ``sampled_branch<i>_acc``), or when the teacher's targets at the
distillation temperature are within 5% of the uniform entropy (``teacher_entropy_kd >=``
:data:`FLAT_TARGETS_FRAC` ``* ln K``, K classes). Runs that logged none of these keys (older runs)
give no table, plot or sentence.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence, Union

from .figure import epoch_axis, legend_outside, new_figure, save_png
from .tables import as_float, display_name, teacher_rank

#: The sampled branches' mean training accuracy may trail the teacher's by at most this many points.
BRANCH_GAP_POINTS = 15.0
#: The teacher's targets at the distillation temperature count as flat from this fraction of ln K.
FLAT_TARGETS_FRAC = 0.95
#: Teacher-level keys of a branch-trained teacher's epoch, kept next to the branch keys.
TEACHER_KEYS = ("train_acc", "teacher_logit_std", "teacher_entropy_t1", "teacher_entropy_kd", "kd_temperature")
PRECONDITION_KEYS = ("teacher_logit_std", "teacher_entropy_t1", "teacher_entropy_kd")
_BRANCH_KEY = re.compile(r"^(sampled_)?branch(\d+)_(acc|entropy)$")
_VAL_ACC = re.compile(r"^branch(\d+)_acc$")
SAMPLED_ACC = re.compile(r"^sampled_branch(\d+)_acc$")
_SAMPLED_ENTROPY = re.compile(r"^sampled_branch(\d+)_entropy$")
#: The distillation temperature: one for every teacher, or ``{teacher: T}``.
Temperature = Union[None, float, Mapping[str, Optional[float]]]
_BELOW = dict(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)


# ------------------------------------------------------------------------------------ reading
def branch_rows(metrics: Iterable[dict], teacher: str, seed=None) -> list[dict]:
    """The ``history`` rows of one teacher run from its ``metrics.jsonl`` rows: every epoch that
    logged a branch key (``branch<i>_acc``, ``sampled_branch<i>_acc|_entropy``), with the teacher's
    validation accuracy as ``teacher_acc`` and the teacher keys of :data:`TEACHER_KEYS`. A teacher
    without branches (CE, MSE, ...) gives ``[]``."""
    out = []
    for r in metrics:
        if as_float(r.get("epoch")) is None or not any(_BRANCH_KEY.match(k) for k in r):
            continue
        out.append({"epoch": r["epoch"], "teacher": teacher, "teacher_seed": seed, "teacher_acc": r.get("val_acc"),
                    **{k: v for k, v in r.items() if _BRANCH_KEY.match(k) or k in TEACHER_KEYS}})
    return out


def by_teacher(history: Sequence[dict]) -> dict:
    """``{teacher: {teacher_seed: rows sorted by epoch}}``, teachers in report order (GTN before
    SFTN), seeds increasing (``None`` first); rows without ``teacher`` are GTN's, rows without a
    numeric epoch are dropped."""
    out: dict = {}
    for h in history or ():
        if as_float(h.get("epoch")) is not None:
            out.setdefault(h.get("teacher") or "gtn", {}).setdefault(h.get("teacher_seed"), []).append(h)
    return {t: {s: sorted(out[t][s], key=lambda h: h["epoch"])
                for s in sorted(out[t], key=lambda s: (s is not None, s if isinstance(s, (int, float)) else str(s)))}
            for t in sorted(out, key=teacher_rank)}


def branch_indices(rows: Iterable[dict], pattern: re.Pattern) -> list[int]:
    """The branch numbers i of the keys of ``rows`` that match ``pattern`` with a numeric value."""
    return sorted({int(m.group(1)) for h in rows for k, v in h.items()
                   if (m := pattern.match(k)) and numeric(v)})


def numeric(v) -> bool:
    return not isinstance(v, bool) and as_float(v) is not None


def _all_rows(groups: dict) -> list[dict]:
    return [h for rows in groups.values() for h in rows]


def has_precondition_data(groups: dict) -> bool:
    rows = _all_rows(groups)
    return bool(branch_indices(rows, SAMPLED_ACC) or branch_indices(rows, _SAMPLED_ENTROPY)
                or any(numeric(h.get(k)) for h in rows for k in PRECONDITION_KEYS))


def seed_band(groups: dict, key: str) -> tuple[list, list, list, list, int]:
    """``(epochs, mean, low, high, n_seeds)`` of ``key`` over the teacher seeds of ``groups``: per
    epoch the mean and the range (min, max) over the seeds that logged it."""
    per_seed = [{h["epoch"]: as_float(h.get(key)) for h in rows if numeric(h.get(key))} for rows in groups.values()]
    per_seed = [s for s in per_seed if s]
    epochs = sorted({e for s in per_seed for e in s})
    mean, low, high = [], [], []
    for e in epochs:
        vals = [s[e] for s in per_seed if e in s]
        mean.append(sum(vals) / len(vals))
        low.append(min(vals))
        high.append(max(vals))
    return epochs, mean, low, high, len(per_seed)


def branch_mean(groups: dict) -> tuple[list, list]:
    """``(epochs, values)``: per epoch the mean over seeds of the mean over the sampled branches'
    training accuracies (the quantity the gap of :func:`.precondition.precondition_table` uses)."""
    per_seed = {}
    for seed, rows in groups.items():
        idx = branch_indices(rows, SAMPLED_ACC)
        for h in rows:
            accs = [as_float(h[f"sampled_branch{i}_acc"]) for i in idx if numeric(h.get(f"sampled_branch{i}_acc"))]
            if accs:
                per_seed.setdefault(seed, {})[h["epoch"]] = sum(accs) / len(accs)
    epochs = sorted({e for s in per_seed.values() for e in s})
    values = []
    for e in epochs:
        vals = [s[e] for s in per_seed.values() if e in s]
        values.append(sum(vals) / len(vals))
    return epochs, values


def kd_temperature_of(groups: dict, default, teacher: str) -> Optional[float]:
    """The temperature of ``teacher_entropy_kd``: as the run logged it, else ``default`` (a number,
    or a mapping ``{teacher: T}``)."""
    for h in reversed(_all_rows(groups)):
        if numeric(h.get("kd_temperature")):
            return as_float(h["kd_temperature"])
    return as_float(default.get(teacher) if isinstance(default, Mapping) else default)


def ln_k_of(num_classes) -> Optional[float]:
    k = as_float(num_classes)
    return math.log(k) if k is not None and k >= 2 else None


def temperature_text(temperature: Optional[float]) -> str:
    return f"T = {temperature:g}" if temperature is not None else "the distillation temperature"


# ------------------------------------------------------------------------------------ plots
def _seed_note(groups: dict) -> str:
    seeds = [s for s in groups if s is not None]
    if len(groups) > 1:
        return f"mean over {len(groups)} teacher seeds, band: min to max"
    return f"teacher seed {seeds[0]}" if seeds else "one teacher run"


def _draw(ax, groups: dict, key: str, label: str, colour: str, lw: float = 1.4, ls: str = "-") -> bool:
    """The mean over seeds of ``key`` as a line, its range over seeds as a band; False if not logged."""
    epochs, mean, low, high, n = seed_band(groups, key)
    if not epochs:
        return False
    if n > 1:
        ax.fill_between(epochs, low, high, color=colour, alpha=0.18, lw=0)
    ax.plot(epochs, mean, ls, color=colour, lw=lw, marker="o" if len(epochs) <= 12 else None, ms=3, label=label)
    return True


def _uniform_lines(ax, ln_k: Optional[float], num_classes, threshold: bool = False) -> None:
    if ln_k is None:
        return
    k = int(as_float(num_classes))
    ax.axhline(ln_k, ls="--", lw=1, color="grey", label=f"uniform, ln {k} = {ln_k:.2f}")
    if threshold:
        ax.axhline(FLAT_TARGETS_FRAC * ln_k, ls=":", lw=1.2, color="red",
                   label=f"{FLAT_TARGETS_FRAC:g} ln {k} = {FLAT_TARGETS_FRAC * ln_k:.2f} (flat above)")


def plot_branch_accuracy(history: Sequence[dict], path) -> Optional[Path]:
    """Teacher and branch validation accuracy over the epochs of each branch-trained teacher (the
    GTN supplement's Figure 1): one panel per teacher method, a line per branch; with several teacher
    seeds the line is the mean over seeds per epoch and the band their range. ``None`` without data.
    """
    teachers = {t: g for t, g in by_teacher(history).items() if branch_indices(_all_rows(g), _VAL_ACC)}
    if not teachers:
        return None
    fig = new_figure(1.0 + 5.0 * len(teachers), 4.8)
    fig.subplots_adjust(wspace=0.28)
    for col, (teacher, groups) in enumerate(teachers.items()):
        ax = fig.add_subplot(1, len(teachers), col + 1, sharey=fig.axes[0] if fig.axes else None)
        _draw(ax, groups, "teacher_acc", "teacher", "black", lw=2.2)
        for j, i in enumerate(branch_indices(_all_rows(groups), _VAL_ACC)):
            _draw(ax, groups, f"branch{i}_acc", f"branch {i}", f"C{j % 10}")
        epoch_axis(ax, "teacher training epoch")
        ax.set_ylabel("validation top-1 accuracy (%)")
        ax.set_title(f"{display_name(teacher)} teacher ({_seed_note(groups)})", fontsize=9)
        ax.grid(alpha=0.3)
        legend_outside(ax, **_BELOW)
    fig.suptitle("Teacher and student-branch validation accuracy during training "
                 "(GTN branches on their most likely path)", fontsize=10)
    return save_png(fig, path)


def plot_branch_fit(history: Sequence[dict], path, teacher: str = "gtn", num_classes: Optional[int] = None,
                    kd_temperature: Temperature = None) -> Optional[Path]:
    """The precondition of one branch-trained teacher over its epochs, four panels:

    (a) training accuracy of the teacher and of each branch's sampled paths, with the teacher minus
    :data:`BRANCH_GAP_POINTS` as the warning line; (b) the T=1 entropy of each branch's predictions;
    (c) the standard deviation of the teacher's logits; (d) the entropy of the teacher's softmax at
    T=1 and at the distillation temperature. Entropies are in nats against ln K (dashed), and (d)
    marks :data:`FLAT_TARGETS_FRAC` ln K. Several teacher seeds: mean over seeds, band min to max.
    ``None`` when the teacher logged none of these.
    """
    groups = by_teacher(history).get(teacher)
    if not groups or not has_precondition_data(groups):
        return None
    rows = _all_rows(groups)
    ln_k = ln_k_of(num_classes)
    temperature = kd_temperature_of(groups, kd_temperature, teacher)
    fig = new_figure(11.5, 8.6)
    fig.subplots_adjust(wspace=0.3, hspace=0.75)
    ax_a, ax_b, ax_c, ax_d = (fig.add_subplot(2, 2, i) for i in range(1, 5))

    _draw(ax_a, groups, "train_acc", "teacher", "black", lw=2.2)
    for j, i in enumerate(branch_indices(rows, SAMPLED_ACC)):
        _draw(ax_a, groups, f"sampled_branch{i}_acc", f"branch {i} (sampled paths)", f"C{j % 10}")
    epochs, mean, _, _, _ = seed_band(groups, "train_acc")
    if epochs:
        ax_a.plot(epochs, [m - BRANCH_GAP_POINTS for m in mean], ":", color="black", lw=1.2,
                  label=f"teacher minus {BRANCH_GAP_POINTS:g} points")
        b_epochs, b_mean = branch_mean(groups)
        if b_epochs:
            ax_a.plot(b_epochs, b_mean, "--", color="dimgrey", lw=1.4,
                      label="mean of the branches (warning below the dotted line)")
    ax_a.set_ylabel("training top-1 accuracy (%)")
    ax_a.set_title("(a) training accuracy: teacher and sampled branches", fontsize=9)

    for j, i in enumerate(branch_indices(rows, _SAMPLED_ENTROPY)):
        _draw(ax_b, groups, f"sampled_branch{i}_entropy", f"branch {i}", f"C{j % 10}")
    _uniform_lines(ax_b, ln_k, num_classes)
    ax_b.set_ylabel("entropy of the predictions at T = 1 (nats)")
    ax_b.set_title("(b) branch prediction entropy (sampled paths)", fontsize=9)

    _draw(ax_c, groups, "teacher_logit_std", "teacher", "black", lw=2.2)
    ax_c.set_ylabel("standard deviation of the logits")
    ax_c.set_title("(c) spread of the teacher's logits", fontsize=9)

    _draw(ax_d, groups, "teacher_entropy_t1", "T = 1", "C0", lw=2.0)
    _draw(ax_d, groups, "teacher_entropy_kd", f"{temperature_text(temperature)} (distillation)", "C3", lw=2.0)
    _uniform_lines(ax_d, ln_k, num_classes, threshold=True)
    ax_d.set_ylabel("entropy of the teacher's softmax (nats)")
    ax_d.set_title("(d) teacher soft-target entropy", fontsize=9)

    for ax in (ax_a, ax_b, ax_c, ax_d):
        epoch_axis(ax, "teacher training epoch")
        ax.grid(alpha=0.3)
        if ax.get_lines():
            legend_outside(ax, **_BELOW)
        else:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes)
    for ax in (ax_b, ax_c, ax_d):
        if ax.get_lines():
            ax.set_ylim(bottom=0)
    for ax in (ax_b, ax_d):  # keep the uniform line off the frame
        if ln_k is not None and ax.get_lines():
            ax.set_ylim(top=max(ax.get_ylim()[1], 1.08 * ln_k))
    fig.suptitle(f"{display_name(teacher)} teacher: do the branches keep up, are the targets flat? "
                 f"({_seed_note(groups)})", fontsize=10)
    return save_png(fig, path)


__all__ = ["BRANCH_GAP_POINTS", "FLAT_TARGETS_FRAC", "branch_indices", "branch_mean", "branch_rows", "by_teacher",
           "has_precondition_data", "kd_temperature_of", "ln_k_of", "numeric", "plot_branch_accuracy",
           "plot_branch_fit", "seed_band", "temperature_text"]
