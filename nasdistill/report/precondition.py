"""The precondition of distilling from a branch-trained teacher (GTN, SFTN), as the report states it:
a table of each teacher run's last epoch, a sentence that warns (with the figures) or says that it
holds, and a line for the Summary. The rows and thresholds are described in :mod:`.branches`.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence

from .branches import (BRANCH_GAP_POINTS, FLAT_TARGETS_FRAC, SAMPLED_ACC, Temperature, branch_indices, by_teacher,
                       has_precondition_data, kd_temperature_of, ln_k_of, numeric, plot_branch_fit,
                       temperature_text)
from .fmt import join_words, md_table
from .tables import as_float, display_name


# ------------------------------------------------------------------------------------ table
def _last_epoch(rows: Sequence[dict], keys: Sequence[str]) -> Optional[dict]:
    """The last row where every key of ``keys`` is numeric."""
    for h in reversed(rows):
        if all(numeric(h.get(k)) for k in keys):
            return h
    return None


def precondition_table(history: Sequence[dict], num_classes: Optional[int] = None,
                       kd_temperature: Temperature = None) -> list[dict]:
    """The precondition at the last epoch of each branch-trained teacher run, one row per
    (teacher, teacher seed) that logged any of its keys::

        {"teacher", "teacher_seed", "epoch", "train_acc", "branch_acc": {i: acc}, "branch_mean",
         "gap" (train_acc - branch_mean, points), "worst_branch", "worst_gap", "logit_std",
         "entropy_t1", "entropy_kd", "kd_temperature", "ln_k", "entropy_kd_frac" (entropy_kd / ln K),
         "branches_trail" (gap > BRANCH_GAP_POINTS), "flat_targets" (entropy_kd >= FLAT_TARGETS_FRAC ln K),
         "warn" (either), "gap_checked", "flat_checked"}

    The accuracies are those of the last epoch that logged the teacher's and at least one sampled
    branch's training accuracy; the entropies and logit std the last logged.
    """
    ln_k = ln_k_of(num_classes)
    out = []
    for teacher, groups in by_teacher(history).items():
        temperature = kd_temperature_of(groups, kd_temperature, teacher)
        for seed, rows in groups.items():
            if not has_precondition_data({seed: rows}):
                continue
            idx = branch_indices(rows, SAMPLED_ACC)
            acc_row = next((h for h in reversed(rows) if numeric(h.get("train_acc"))
                            and any(numeric(h.get(f"sampled_branch{i}_acc")) for i in idx)), None)
            row = {"teacher": teacher, "teacher_seed": seed, "train_acc": None, "branch_acc": {},
                   "branch_mean": None, "gap": None, "worst_branch": None, "worst_gap": None,
                   "kd_temperature": temperature, "ln_k": ln_k}
            if acc_row is not None:
                accs = {i: as_float(acc_row[f"sampled_branch{i}_acc"]) for i in idx
                        if numeric(acc_row.get(f"sampled_branch{i}_acc"))}
                train = as_float(acc_row["train_acc"])
                worst = min(accs, key=accs.get)
                mean = sum(accs.values()) / len(accs)
                row.update(train_acc=train, branch_acc=accs, branch_mean=mean, gap=train - mean,
                           worst_branch=worst, worst_gap=train - accs[worst])
            for key, name in (("teacher_logit_std", "logit_std"), ("teacher_entropy_t1", "entropy_t1"),
                              ("teacher_entropy_kd", "entropy_kd")):
                last = _last_epoch(rows, [key])
                row[name] = as_float(last[key]) if last is not None else None
            ends = [h["epoch"] for h in (acc_row, _last_epoch(rows, ["teacher_entropy_kd"])) if h is not None]
            row["epoch"] = max(ends) if ends else rows[-1]["epoch"]
            frac = row["entropy_kd"] / ln_k if row["entropy_kd"] is not None and ln_k else None
            row["entropy_kd_frac"] = frac
            row["gap_checked"] = row["gap"] is not None
            row["flat_checked"] = frac is not None
            row["branches_trail"] = row["gap_checked"] and row["gap"] > BRANCH_GAP_POINTS
            row["flat_targets"] = row["flat_checked"] and frac >= FLAT_TARGETS_FRAC
            row["warn"] = row["branches_trail"] or row["flat_targets"]
            out.append(row)
    return out


# ------------------------------------------------------------------------------------ section
def _num(x, spec: str) -> str:
    return "—" if x is None else format(x, spec)


def _who(r: dict) -> str:
    seed = f" of seed {r['teacher_seed']}" if r["teacher_seed"] is not None else ""
    return f"the {display_name(r['teacher'])} teacher{seed}"


def _trail_text(r: dict) -> str:
    each = ", ".join(f"branch {i} {a:.1f}%" for i, a in r["branch_acc"].items())
    return (f"its sampled branches at {r['branch_mean']:.1f}% training accuracy on average ({each}) "
            f"against {r['train_acc']:.1f}% for the teacher, {r['gap']:.1f} points behind (more than "
            f"{BRANCH_GAP_POINTS:g})")


def _flat_text(r: dict, k: int) -> str:
    return (f"its soft targets at {temperature_text(r['kd_temperature'])} at an entropy of "
            f"{r['entropy_kd']:.2f} nats = "
            f"{r['entropy_kd_frac']:.2f} ln {k} (uniform: ln {k} = {r['ln_k']:.2f}; flat from "
            f"{FLAT_TARGETS_FRAC:g} ln {k}; logit standard deviation {_num(r['logit_std'], '.2f')})")


def summary_warning(rows: Sequence[dict], num_classes: Optional[int] = None) -> str:
    """One sentence for the report's Summary when a teacher fails the precondition, else ``""``."""
    bad = [r for r in rows if r["warn"]]
    if not bad:
        return ""
    k = int(as_float(num_classes)) if ln_k_of(num_classes) else None
    parts = []
    for r in bad:
        why = []
        if r["branches_trail"]:
            why.append(f"sampled branches {r['gap']:.1f} points of training accuracy behind it")
        if r["flat_targets"]:
            why.append(f"soft targets at {temperature_text(r['kd_temperature'])} with an entropy of "
                       f"{r['entropy_kd_frac']:.2f} ln {k}, near uniform")
        parts.append(f"{_who(r)} ({' and '.join(why)})")
    return ("**Warning:** a branch-trained teacher misses the precondition of distilling from it: "
            + join_words(parts) + "; see \"Branch-trained teachers\".")


def branch_teacher_section(history: Sequence[dict], num_classes: Optional[int] = None,
                           kd_temperature: Temperature = None,
                           plots: Sequence[tuple] = ()) -> tuple[str, str]:
    """The "Branch-trained teachers" section: ``(markdown, summary warning or "")``, ``("", "")`` when
    no teacher logged the precondition's keys. ``plots``: ``(title, path or None)`` shown under it."""
    rows = precondition_table(history, num_classes, kd_temperature)
    if not rows:
        return "", ""
    k = int(as_float(num_classes)) if ln_k_of(num_classes) else None
    several = len(rows) > 1
    temps = {r["kd_temperature"] for r in rows}
    t_head = temperature_text(next(iter(temps))) if len(temps) == 1 else "the distillation temperature"
    k_text = f"ln {k}" if k else "ln K"
    header = ["Teacher", "Seed", "Epoch", "Teacher train acc (%)", "Sampled branches train acc (%)",
              "Gap (points)", "Logit std", "Entropy T = 1 (nats)", f"Entropy {t_head} (nats)",
              f"Entropy {t_head} / {k_text}", "Warning"]
    body = []
    for r in rows:
        flags = [w for w, on in (("branches trail", r["branches_trail"]), ("flat targets", r["flat_targets"])) if on]
        checked = r["gap_checked"] or r["flat_checked"]
        body.append([display_name(r["teacher"]), r["teacher_seed"] if r["teacher_seed"] is not None else "—",
                     r["epoch"], _num(r["train_acc"], ".1f"),
                     " / ".join(f"{a:.1f}" for a in r["branch_acc"].values()) or "—",
                     _num(r["gap"], ".1f"), _num(r["logit_std"], ".2f"), _num(r["entropy_t1"], ".3f"),
                     _num(r["entropy_kd"], ".3f"), _num(r["entropy_kd_frac"], ".2f"),
                     ", ".join(flags) if flags else ("none" if checked else "not checked")])
    text = (f"A branch-trained teacher (GTN, SFTN) helps its students only if the student branches grafted on "
            f"it keep up with it and if its soft targets still carry information at the distillation "
            f"temperature. At the last epoch of each teacher run: the teacher's training accuracy and that of "
            f"the paths each branch sampled that epoch (branches 1, 2, ... in order; BatchNorm in training "
            f"mode), the gap between the teacher and the branches' mean, the standard deviation of the "
            f"teacher's logits and the mean entropy of its softmax (nats; uniform over {k or 'K'} classes is "
            f"{k_text}{f' = {math.log(k):.2f}' if k else ''}). A teacher is flagged when its branches trail it "
            f"by more than {BRANCH_GAP_POINTS:g} points or when its targets at {t_head} reach "
            f"{FLAT_TARGETS_FRAC:g} {k_text}.\n\n" + md_table(header, body) + "\n\n")
    bad = [r for r in rows if r["warn"]]
    if bad:
        parts = []
        for r in bad:
            why = ([_trail_text(r)] if r["branches_trail"] else []) + ([_flat_text(r, k)] if r["flat_targets"] else [])
            parts.append(f"{_who(r)} ends (epoch {r['epoch']}) with " + " and ".join(why))
        because = []
        if any(r["branches_trail"] for r in bad):
            because.append("branches this far behind pull the teacher, through the KL term of its loss, toward "
                           "predictions worse than its own")
        if any(r["flat_targets"] for r in bad):
            because.append("targets this close to uniform pull the students toward a uniform distribution")
        because_text = "; ".join(because)
        text += ("**WARNING: the precondition does not hold**: " + "; ".join(parts) + ". "
                 + because_text[0].upper() + because_text[1:] + ": read the results of distilling from "
                 + ("this teacher" if len({r["teacher"] for r in bad}) == 1 else "these teachers")
                 + " with this in mind.")
    elif not any(r["gap_checked"] or r["flat_checked"] for r in rows):
        text += ("Whether the precondition holds cannot be checked: the runs logged neither the teacher's "
                 "and the sampled branches' training accuracy nor, with a known number of classes, the "
                 "entropy at the distillation temperature.")
    else:
        checks = []
        gaps = [r for r in rows if r["gap_checked"]]
        if gaps:
            w = max(gaps, key=lambda r: r["gap"])
            checks.append(f"its sampled branches within {BRANCH_GAP_POINTS:g} points of its training accuracy "
                          f"(largest gap {w['gap']:.1f} points, {_who(w)})")
        flats = [r for r in rows if r["flat_checked"]]
        if flats:
            w = max(flats, key=lambda r: r["entropy_kd_frac"])
            checks.append(f"targets at {t_head} below {FLAT_TARGETS_FRAC:g} {k_text} (highest "
                          f"{w['entropy_kd_frac']:.2f} {k_text}, {_who(w)})")
        missing = [what for what, have in (("the gap", gaps), ("the entropy", flats)) if len(have) < len(rows)]
        text += (f"The precondition holds: {'every' if several else 'the'} teacher run ends with "
                 + " and ".join(checks)
                 + (f" ({join_words(missing)} checked only where logged"
                    + ("" if k else " and the number of classes is known") + ")" if missing else "") + ".")
    shown = [f"**{title}**\n\n![{title}]({p.name})" for title, p in plots if p is not None]
    if shown:
        text += "\n\n" + "\n\n".join(shown)
    return text, summary_warning(rows, num_classes)


def precondition_plots(run_dir, history: Sequence[dict], num_classes: Optional[int] = None,
                       kd_temperature: Temperature = None) -> list[tuple]:
    """``(title, path or None)`` of :func:`plot_branch_fit` per branch-trained teacher, written as
    ``branch_fit_<teacher>.png`` in ``run_dir``."""
    return [(f"{display_name(t)} teacher: branches and soft targets during training",
             plot_branch_fit(history, Path(run_dir) / f"branch_fit_{t}.png", t, num_classes, kd_temperature))
            for t in by_teacher(history)]


__all__ = ["branch_teacher_section", "precondition_plots", "precondition_table", "summary_warning"]
