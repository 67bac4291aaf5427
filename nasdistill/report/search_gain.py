"""The report's "Did the search help?": each searched student against random students of its cost.

The main job draws, for each search target, ``students.random_per_target`` networks uniformly
from those whose MACs lie in the target's band (:mod:`nasdistill.space.band`) and distills them
like every other student (kind ``random``, ``target_macs`` = the target). Per target and condition
(alone, and each teacher and method) the difference is the searched student minus the mean of its
band's random students, over the seeds both have; pooled over targets it is the mean of the
per-target differences, with an interval over the random students
(:func:`~.stats.matched_difference`: the random student is the unit, its seeds averaged). The
convergence of each target's search is stated beside it.
"""
from __future__ import annotations

from typing import Optional, Sequence

from .fmt import fmt_count, fmt_range, fmt_signed, md_table, p_eq, plural
from .stats import matched_difference
from .tables import as_float, condition_label, conditions

__all__ = ["search_gain", "search_gain_section"]


def _by_seed(results, student: str, condition: tuple, metric: str) -> dict:
    return {r["seed"]: as_float(r.get(metric)) for r in results
            if r["student"] == student and (r["teacher"], r["method"]) == condition}


def search_gain(results: Sequence[dict], students: Sequence[dict], metric: str) -> Optional[dict]:
    """``{"targets": [...], "conditions": {label: pooled}}`` or None when no searched student has
    random students of its band. Each target: ``target, searched, random (ids), convergence, rows``
    with one row per condition (:func:`~.stats.matched_difference` of that target alone)."""
    searched = [s for s in students if s.get("kind") == "searched"]
    randoms = [s for s in students if s.get("kind") == "random"]
    if not searched or not randoms:
        return None
    conds = conditions(results)
    targets, groups = [], {c: [] for c in conds}
    for s in searched:
        target = as_float(s.get("target_macs"))
        mine = [r for r in randoms if as_float(r.get("target_macs")) == target]
        if not mine:
            continue
        rows = []
        for c in conds:
            group = {"searched": _by_seed(results, s["student"], c, metric),
                     "random": {r["student"]: _by_seed(results, r["student"], c, metric) for r in mine}}
            groups[c].append(group)
            rows.append({"condition": condition_label(*c), **matched_difference([group])})
        targets.append({"target": target, "searched": s["student"], "macs": s.get("macs"),
                        "random": [r["student"] for r in mine], "convergence": s.get("convergence"),
                        "rows": rows})
    if not targets:
        return None
    pooled = {condition_label(*c): matched_difference(groups[c]) for c in conds if groups[c]}
    return {"targets": targets, "conditions": pooled}


def _ci(d: dict) -> str:
    return fmt_range(d["ci_low"], d["ci_high"])


def _excludes_zero(d: dict) -> Optional[int]:
    """+1 / -1 when the t interval lies above / below zero, 0 when it holds zero, None without one."""
    lo, hi = as_float(d["ci_low"]), as_float(d["ci_high"])
    if lo is None or hi is None:
        return None
    return 1 if lo > 0 else -1 if hi < 0 else 0


def verdict_sentence(gain: dict) -> str:
    """One plain sentence on what the pooled differences say."""
    pooled = gain["conditions"]
    signs = {label: _excludes_zero(d) for label, d in pooled.items()}
    n_random = max(d["n_random"] for d in pooled.values())
    n_targets = max(d["n_targets"] for d in pooled.values())
    n_seeds = max(d["n_seeds"] for d in pooled.values())
    basis = (f"{plural(n_targets, 'target')}, {plural(n_random, 'random student')} in all, "
             f"{plural(n_seeds, 'seed')}")
    parts = [f"{label} {fmt_signed(d['mean_diff'])} points (95% CI {_ci(d)}, {p_eq(d['t_pvalue'])})"
             for label, d in pooled.items()]
    head = "Searched minus random students of the same MACs band: " + "; ".join(parts) + f" ({basis}). "
    if all(v is None for v in signs.values()):
        return head + ("With a single random student in all there is no interval: this run cannot say "
                       "whether the search helped.")
    if all(v == 1 for v in signs.values() if v is not None):
        return head + "In every condition the searched students were better than random ones at equal cost."
    if all(v == -1 for v in signs.values() if v is not None):
        return head + ("In every condition the searched students were worse than random ones at equal cost: "
                       "the search did not find better students than chance.")
    if all(v == 0 for v in signs.values() if v is not None):
        return head + ("Every interval holds zero: this run cannot tell searched students from random ones of "
                       "the same cost.")
    better = [l for l, v in signs.items() if v == 1]
    worse = [l for l, v in signs.items() if v == -1]
    bits = []
    if better:
        bits.append("better than random students at equal cost with " + ", ".join(better))
    if worse:
        bits.append("worse with " + ", ".join(worse))
    if any(v == 0 for v in signs.values()):
        bits.append("no difference this run can tell with " + ", ".join(l for l, v in signs.items() if v == 0))
    return head + "Mixed: the searched students were " + "; ".join(bits) + "."


def search_gain_section(results: Sequence[dict], students: Sequence[dict], metric: str) -> Optional[str]:
    """The section's Markdown, or None when the run has no random students at a search target."""
    gain = search_gain(results, students, metric)
    if gain is None:
        return None
    body = []
    for t in gain["targets"]:
        conv = t["convergence"] or {}
        state = ("converged" if conv.get("converged") else "not converged") if conv else "—"
        for row in t["rows"]:
            body.append([fmt_count(t["target"]), f"{t['searched']} ({fmt_count(t['macs'])})", len(t["random"]),
                         row["condition"], fmt_signed(row["mean_diff"]), _ci(row), row["n_seeds"], state])
    for label, d in gain["conditions"].items():
        body.append(["**all targets**", "", d["n_random"], label, f"**{fmt_signed(d['mean_diff'])}**", _ci(d),
                     d["n_seeds"], ""])
    table = md_table(["Target MACs", "Searched student", "Random students", "Condition",
                      "Searched − random (points)", "t 95% CI", "Seeds", "Search"], body)
    notes = ("Random students are drawn uniformly from the distinct networks whose MACs lie in the target's "
             "band (the band the search chose its student in), the searched students excluded, and trained "
             "like every other student. The unit of analysis is the random student: its difference from the "
             "searched student of its target is averaged over the seeds both have (seeds share their "
             "teachers), and the interval and t-test are over those units (a target with one random student "
             "has no interval of its own).")
    lines = []
    for t in gain["targets"]:
        conv = t["convergence"]
        if conv:
            lines.append(f"- target {fmt_count(t['target'])}: the search {'converged' if conv['converged'] else 'did not converge'}"
                         f": {conv['why']} (the exported student's probability {conv['prob']:.3g})")
    text = verdict_sentence(gain) + "\n\n" + table + "\n\n" + notes
    if lines:
        text += "\n\nConvergence of the search per target:\n\n" + "\n".join(lines)
    return text
