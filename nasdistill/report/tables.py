"""The report's tables, as lists of plain dict rows (raw numbers; :mod:`.markdown` formats them).

Input rows (``results``) are one per (student, teacher, method, seed) run::

    {"student": arch_id, "student_kind": "searched"|"sampled", "target_macs": float|None,
     "macs": int, "params": int, "teacher": "ce"|"gtn"|...|"none", "method": "kd"|"dkd"|"none",
     "seed": int, "teacher_seed": int (optional), "best_acc": float, "last_acc": float,
     "test_acc": float, "wall_time_s": float}

Baseline runs (the student trained alone) have teacher ``"none"`` and method ``"none"``.
``teacher_seed`` is the seed of the teacher run a distillation used (absent in older runs: then
unknown). Accuracies are in percent, as the trainer reports them, so differences are percentage
points. A (teacher, method) pair is called a *condition*; its label is ``baseline``, ``CE+KD``,
``GTN+DKD``, ...

Comparisons of two conditions pair runs by (student, seed) and use the student as the unit of
analysis (:func:`nasdistill.report.stats.student_level_test`).
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Iterable, NamedTuple, Optional, Sequence

from ..atomic import atomic_open
from .stats import mean_ci, paired_test, student_level_test

RESULT_COLUMNS = ("student", "student_kind", "target_macs", "macs", "params", "teacher", "method", "seed",
                  "teacher_seed", "best_acc", "last_acc", "test_acc", "wall_time_s")
REQUIRED_KEYS = ("student", "teacher", "method", "seed")
BASELINE = ("none", "none")
# Report names and order come from the registries: a teacher (nasdistill.teachers) or a
# distillation method (nasdistill.distill) declares its ``display_name`` and ``order``;
# TEACHER_ORDER, METHOD_ORDER and DISPLAY_NAMES are views of them (see ``__getattr__``).
#: A searched student whose MACs are off its target by more than this fraction is flagged.
MISSED_TARGET_TOL = 0.10


class MeanCI(NamedTuple):
    """A mean over seeds (or students) with the half width of its 95% Student-t interval."""
    mean: float
    half_width: float
    n: int

    @classmethod
    def of(cls, values: Sequence, confidence: float = 0.95) -> "MeanCI":
        vals = [v for v in values if v is not None and math.isfinite(v)]
        mean, half = mean_ci(vals, confidence)
        return cls(mean, half, len(vals))


# --------------------------------------------------------------------------------------- helpers
def condition_label(teacher: str, method: str) -> str:
    """``("none", "none") -> "baseline"``, ``("gtn", "kd") -> "GTN+KD"``."""
    if (teacher, method) == BASELINE:
        return "baseline"
    return f"{display_name(teacher, 'teacher')}+{display_name(method, 'method')}"


def _registries(kind: Optional[str] = None) -> list:
    """The registries whose entries reports name: ``kind`` "teacher", "method", or None (both,
    teachers first). Imported when asked: importing the report does not import every teacher
    and method module."""
    from ..distill.registry import DISTILLERS
    from ..teachers.registry import TEACHERS

    return {"teacher": [TEACHERS], "method": [DISTILLERS], None: [TEACHERS, DISTILLERS]}[kind]


def display_name(name: str, kind: Optional[str] = None) -> str:
    """A teacher or method name as reports write it: the registered entry's ``display_name``
    (``"fitnet" -> "FitNets"``), else upper-cased (``"gtn" -> "GTN"``). ``kind``: ``"teacher"``
    or ``"method"`` when the name could be either."""
    for registry in _registries(kind):
        shown = registry.display_name(name)
        if shown:
            return shown
    return name.upper()


def reference_name() -> str:
    """The teacher every other is compared with: the one whose metadata says ``reference`` (CE)."""
    names = _registries("teacher")[0].having("reference")
    return names[0] if names else "ce"


def headline_names() -> list[str]:
    """The teachers whose gain over the reference the report states first (metadata ``headline``)."""
    return _registries("teacher")[0].having("headline")


def _rank(name: str, kind: str) -> tuple:
    """Sort key in report order: ``none`` (the baseline) first, then the entries that declare an
    ``order``, then the others (unregistered ones too) by name."""
    if name == "none":
        return (0, 0, "")
    order = _registries(kind)[0].order(name)
    return (1, order, "") if order is not None else (2, 0, str(name))


def teacher_rank(name: str) -> tuple:
    """Sort key of teacher ``name`` in reports (``none``, CE, GTN, SFTN, MSE, SoTeacher, others)."""
    return _rank(name, "teacher")


def method_rank(name: str) -> tuple:
    """Sort key of distillation method ``name`` in reports (``none``, KD, DKD, others)."""
    return _rank(name, "method")


def _report_order(kind: str) -> tuple:
    registry = _registries(kind)[0]
    return ("none", *sorted((n for n in registry.names() if n != "none" and registry.order(n) is not None),
                            key=lambda n: registry.order(n)))


def __getattr__(name: str):
    """``TEACHER_ORDER``, ``METHOD_ORDER``, ``DISPLAY_NAMES``: read from the registries when asked."""
    if name == "TEACHER_ORDER":
        return _report_order("teacher")
    if name == "METHOD_ORDER":
        return _report_order("method")
    if name == "DISPLAY_NAMES":
        return {n: r.display_name(n) for r in reversed(_registries()) for n in r.names() if r.display_name(n)}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def conditions(results: Iterable[dict]) -> list[tuple[str, str]]:
    """The (teacher, method) pairs present: baseline, then KD, then DKD (then other methods), each
    with its teachers in the order CE, GTN, SFTN, MSE, SoTeacher, others (the registries'
    ``order``)."""
    found = {(r["teacher"], r["method"]) for r in results}
    return sorted(found, key=lambda c: (method_rank(c[1]), teacher_rank(c[0])))


def choose_metric(results: Sequence[dict]) -> str:
    """``test_acc`` when any run has one, else ``best_acc`` (validation), else ``last_acc``."""
    for key in ("test_acc", "best_acc", "last_acc"):
        if any(as_float(r.get(key)) is not None for r in results):
            return key
    return "test_acc"


def as_float(value) -> Optional[float]:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def validate_results(results: Sequence[dict]) -> None:
    """Raise ``ValueError`` on a row lacking a key or on two rows for the same run."""
    seen = set()
    for i, r in enumerate(results):
        missing = [k for k in REQUIRED_KEYS if k not in r]
        if missing:
            raise ValueError(f"results[{i}] lacks {missing}; every row needs {list(REQUIRED_KEYS)} "
                             f"(baseline rows use teacher='none', method='none')")
        key = (r["student"], r["teacher"], r["method"], r["seed"])
        if key in seen:
            raise ValueError(f"results[{i}] repeats the run (student, teacher, method, seed) = {key}; "
                             f"keep one row per run (e.g. drop the older one after a resume)")
        seen.add(key)


def student_info(results: Sequence[dict], students: Optional[Sequence[dict]]) -> dict:
    """student id -> {kind, macs, params, target_macs}, from ``students`` first, then ``results``."""
    info: dict = {}
    for s in students or ():
        info[s["student"]] = {"kind": s.get("kind"), "macs": s.get("macs"), "params": s.get("params"),
                              "target_macs": s.get("target_macs")}
    for r in results:
        d = info.setdefault(r["student"], {"kind": None, "macs": None, "params": None, "target_macs": None})
        for dst, src in (("kind", "student_kind"), ("macs", "macs"), ("params", "params"),
                         ("target_macs", "target_macs")):
            if d[dst] is None and r.get(src) is not None:
                d[dst] = r[src]
    return info


def student_order(info: dict) -> list:
    """Searched students first (by target, then MACs), then the random ones of each target's band,
    then sampled ones, by MACs."""
    rank = {"searched": 0, "random": 1}

    def key(sid):
        d = info[sid]
        macs = as_float(d["macs"])
        return (rank.get(d["kind"], 2), as_float(d["target_macs"]) or 0.0,
                macs if macs is not None else math.inf, str(sid))
    return sorted(info, key=key)


# ---------------------------------------------------------------------------------------- tables
def teacher_table(teachers: Sequence[dict]) -> list[dict]:
    """One row per teacher name (entries of the same name, e.g. one per seed, are averaged).

    Columns: ``teacher, model, n`` (entries), ``n_seeds`` (distinct ``seed`` / ``teacher_seed``
    values, else ``n``), ``test_acc`` (:class:`MeanCI` over the entries), ``best_acc, epochs,
    wall_time_s`` (means), ``cost_vs_ce`` (total training time / the reference teacher's, CE; NaN
    without one), and ``ece``, ``posterior_mse`` when any entry has them. A teacher started from another
    run (``teachers.init_from_ce``) records ``total_wall_time_s``, its own time plus its source's:
    the cost counts the epochs it was warmed with.
    """
    groups: dict = {}
    for t in teachers:
        groups.setdefault(t["teacher"], []).append(t)
    ce_time = None
    reference = reference_name()
    if reference in groups:
        ce_time = MeanCI.of([as_float(t.get("wall_time_s")) for t in groups[reference]]).mean
    rows = []
    for name in sorted(groups, key=teacher_rank):
        ts = groups[name]
        time = MeanCI.of([as_float(t.get("wall_time_s")) for t in ts]).mean
        total = MeanCI.of([as_float(t.get("total_wall_time_s", t.get("wall_time_s"))) for t in ts]).mean
        seeds = {t.get("teacher_seed", t.get("seed")) for t in ts} - {None}
        row = {"teacher": name, "model": ts[0].get("model", ""), "n": len(ts),
               "n_seeds": len(seeds) if seeds else len(ts),
               "test_acc": MeanCI.of([as_float(t.get("test_acc")) for t in ts]),
               "best_acc": MeanCI.of([as_float(t.get("best_acc")) for t in ts]).mean,
               "epochs": ts[0].get("epochs"), "wall_time_s": time,
               "cost_vs_ce": total / ce_time if ce_time and math.isfinite(total) else math.nan}
        for extra in ("ece", "posterior_mse", "temperature"):
            if any(as_float(t.get(extra)) is not None for t in teachers):
                row[extra] = MeanCI.of([as_float(t.get(extra)) for t in ts]).mean
        accs = [(t.get("teacher_seed", t.get("seed")), as_float(t.get("test_acc"))) for t in ts]
        accs = [(seed, a) for seed, a in accs if a is not None]
        row["per_seed"] = sorted(accs, key=lambda sa: (sa[0] is None, sa[0]))
        row["seeds_disagree"] = (max(a for _, a in accs) - min(a for _, a in accs)
                                 if len(accs) > 1 else 0.0) > SEED_SPREAD
        row["unstable"] = [(t.get("teacher_seed", t.get("seed")), t["instability"]) for t in ts
                           if t.get("instability")]
        rows.append(row)
    return rows


#: Teacher seeds whose test accuracies span more than this (points) are listed one by one.
SEED_SPREAD = 10.0


def accuracy_table(results: Sequence[dict], students: Optional[Sequence[dict]] = None,
                   metric: Optional[str] = None) -> tuple[list[str], list[dict]]:
    """Per-student accuracy by condition, mean ± 95% CI over seeds.

    Returns ``(labels, rows)``: ``labels`` are the condition columns (``baseline``, ``CE+KD``, ...)
    and each row is ``{"student", "kind", "macs", "params", label: MeanCI, ...}``. A last row with
    ``student == "mean over students"`` averages the per-student means (CI across students).
    """
    metric = metric or choose_metric(results)
    conds = conditions(results)
    labels = [condition_label(*c) for c in conds]
    info = student_info(results, students)
    values: dict = {}
    for r in results:
        values.setdefault((r["student"], (r["teacher"], r["method"])), []).append(as_float(r.get(metric)))
    rows = []
    for sid in student_order(info):
        if not any((sid, c) in values for c in conds):
            continue
        row = {"student": sid, "kind": info[sid]["kind"], "macs": info[sid]["macs"],
               "params": info[sid]["params"]}
        for c, label in zip(conds, labels):
            row[label] = MeanCI.of(values.get((sid, c), []))
        rows.append(row)
    if len(rows) > 1:
        overall = {"student": "mean over students", "kind": None, "macs": None, "params": None}
        for label in labels:
            overall[label] = MeanCI.of([r[label].mean for r in rows if r[label].n])
        rows.append(overall)
    return labels, rows


def _paired_values(results, cond_a, cond_b, metric):
    """Matched ``{(student, seed): (acc_a, acc_b)}`` for runs present in both conditions."""
    a, b = {}, {}
    for r in results:
        c = (r["teacher"], r["method"])
        if c == cond_a:
            a[(r["student"], r["seed"])] = as_float(r.get(metric))
        elif c == cond_b:
            b[(r["student"], r["seed"])] = as_float(r.get(metric))
    return {k: (a[k], b[k]) for k in a if k in b and a[k] is not None and b[k] is not None}


def gain_table(results: Sequence[dict], teacher: Optional[str] = None, reference: Optional[str] = None,
               method: str = "kd", metric: Optional[str] = None,
               students: Optional[Sequence[dict]] = None) -> Optional[dict]:
    """Gain of ``teacher`` (default: the first headline teacher, GTN) over ``reference`` (default:
    the reference teacher, CE), both distilling with ``method``; see :func:`compare`."""
    if teacher is None:
        heads = headline_names()
        if not heads:
            return None
        teacher = heads[0]
    reference = reference or reference_name()
    return compare(results, (teacher, method), (reference, method), metric, students)


def compare(results: Sequence[dict], cond_a: tuple, cond_b: tuple, metric: Optional[str] = None,
            students: Optional[Sequence[dict]] = None) -> Optional[dict]:
    """Gain ``a - b`` of condition ``cond_a`` over ``cond_b`` (``(teacher, method)`` pairs).

    Runs are paired by (student, seed). Per student, the gain is the mean over its paired seeds
    with the Student-t CI over seeds and that student's own paired t-test over seeds. The overall
    comparison uses the student as the unit: the per-student mean gains are tested across students
    (:func:`~nasdistill.report.stats.student_level_test`: t-test, Wilcoxon when there are at least
    6 students, percentile-bootstrap CI resampling students). Returns ``None`` when no
    (student, seed) has both runs, else::

        {"teacher", "reference", "method", "metric", "label", "reference_label",
         "rows": [{"student", "kind", "macs", "gain": MeanCI over seeds, "t_pvalue"}, ...],
         "overall": {"unit": "student", "n": n_students, "n_students", "n_pairs", "n_seeds",
                     "n_teacher_seeds", "seeds_min", "seeds_max", "mean_diff", "half_width",
                     "ci_low", "ci_high", "t_statistic", "t_pvalue", "wilcoxon_pvalue",
                     "boot_ci_low", "boot_ci_high", "confidence", "student_means"}}

    ``n_seeds`` counts the distinct distillation seeds; ``n_teacher_seeds`` the distinct
    ``teacher_seed`` values of the paired runs that used a teacher, or ``None`` when any of them
    lacks the key (unknown), and ``None`` as well when neither condition uses a teacher.
    """
    metric = metric or choose_metric(results)
    cond_a, cond_b = tuple(cond_a), tuple(cond_b)
    pairs = _paired_values(results, cond_a, cond_b, metric)
    if not pairs:
        return None
    info = student_info(results, students)
    per_student: dict = {}
    for (sid, _seed), ab in pairs.items():
        per_student.setdefault(sid, []).append(ab)
    rows = []
    for sid in student_order({s: info[s] for s in per_student}):
        ab = per_student[sid]
        test = paired_test([x for x, _ in ab], [y for _, y in ab])
        rows.append({"student": sid, "kind": info[sid]["kind"], "macs": info[sid]["macs"],
                     "gain": MeanCI(test["mean_diff"], test["half_width"], test["n"]),
                     "t_pvalue": test["t_pvalue"]})
    overall = student_level_test({sid: [x - y for x, y in per_student[sid]] for sid in per_student})
    counts = [len(v) for v in per_student.values()]
    overall.update(n_pairs=len(pairs), n_seeds=len({seed for _, seed in pairs}), seeds_min=min(counts),
                   seeds_max=max(counts), n_teacher_seeds=_teacher_seeds(results, (cond_a, cond_b), pairs))
    return {"teacher": cond_a[0], "reference": cond_b[0], "method": cond_a[1], "metric": metric,
            "label": condition_label(*cond_a), "reference_label": condition_label(*cond_b),
            "rows": rows, "overall": overall}


def _teacher_seeds(results, conds, pairs) -> Optional[int]:
    """Distinct ``teacher_seed`` values among the paired runs that used a teacher (None: unknown)."""
    found, unknown, any_teacher = set(), False, False
    for r in results:
        c = (r["teacher"], r["method"])
        if c not in conds or r["teacher"] == "none" or (r["student"], r["seed"]) not in pairs:
            continue
        any_teacher = True
        ts = r.get("teacher_seed")
        if ts is None or (isinstance(ts, float) and not math.isfinite(ts)):
            unknown = True
        else:
            found.add(ts)
    return None if unknown or not any_teacher else len(found)


def comparison_table(results: Sequence[dict], metric: Optional[str] = None,
                     known: Optional[dict] = None) -> list[dict]:
    """Every distillation condition against the baseline, and every other teacher against the
    reference teacher (CE) with the same method: one row per comparison, ``{"condition", "reference"}`` plus the
    ``overall`` dict of :func:`compare` (student as the unit of analysis).

    ``known``: results of :func:`compare` already computed on the same ``results`` and ``metric``,
    by ``(cond_a, cond_b)``; they are reused (``overall`` does not depend on ``students``)."""
    conds = [c for c in conditions(results) if c != BASELINE]
    wanted = [(c, BASELINE) for c in conds]
    ref = reference_name()
    wanted += [(c, (ref, c[1])) for c in conds if c[0] != ref and (ref, c[1]) in conds]
    rows = []
    for a, b in wanted:
        cmp = known[(a, b)] if known and (a, b) in known else compare(results, a, b, metric)
        if cmp is not None:
            rows.append({"condition": cmp["label"], "reference": cmp["reference_label"], **cmp["overall"]})
    return rows


def students_table(students: Sequence[dict], results: Sequence[dict] = ()) -> list[dict]:
    """Discovered and sampled students: ``student, kind, target_macs, macs, macs_over_target,
    missed_target, params, arch`` (the architecture as compact JSON), searched ones first.

    ``missed_target`` is True when a student has a target and ``|macs / target - 1| >``
    :data:`MISSED_TARGET_TOL` (10%).
    """
    info = student_info(results, students)
    archs = {s["student"]: s.get("arch") for s in students}
    rows = []
    for sid in student_order(info):
        d = info[sid]
        macs, target = as_float(d["macs"]), as_float(d["target_macs"])
        arch = archs.get(sid)
        ratio = macs / target if macs is not None and target else math.nan
        rows.append({"student": sid, "kind": d["kind"], "target_macs": target, "macs": d["macs"],
                     "macs_over_target": ratio,
                     "missed_target": math.isfinite(ratio) and abs(ratio - 1.0) > MISSED_TARGET_TOL,
                     "params": d["params"],
                     "arch": json.dumps(arch, separators=(",", ":"), sort_keys=True) if arch else ""})
    return rows


#: The key of ``stage_times`` that is no stage: the seconds two stages ran at the same time
#: (teachers that need no searched student train during the search), counted once in the total.
OVERLAP = "overlap"
#: The key of ``stage_times`` that is no stage either: this invocation's own wall time (a rerun
#: that reused stages took less than the stages' total)
INVOCATION = "invocation"
#: ... nor where the runs ran (``2 worker processes on 2 GPUs, 2 runs per GPU``)
PLACEMENT = "placement"


def stage_table(stage_times: dict) -> list[dict]:
    """``stage, seconds, share`` (fraction of the total) in the given order, then a ``total`` row:
    the stages' sum less :data:`OVERLAP`. ``total`` and ``report`` entries are no stage rows."""
    times = dict(stage_times or {})
    overlap = as_float(times.pop(OVERLAP, None)) or 0.0
    secs = {k: as_float(v) or 0.0 for k, v in times.items() if k not in ("total", "report", INVOCATION, PLACEMENT, "partial")}
    total = sum(secs.values()) - overlap
    rows = [{"stage": k, "seconds": v, "share": v / total if total else math.nan} for k, v in secs.items()]
    if rows:
        rows.append({"stage": "total", "seconds": total, "share": 1.0 if total else math.nan})
    return rows


def pareto_front(points: Sequence[tuple]) -> list[int]:
    """Indices of the points ``(cost, accuracy)`` no other point beats (cost <= and accuracy >=,
    one strictly), sorted by cost. Points with a missing coordinate are ignored."""
    idx = [i for i, (c, a) in enumerate(points) if as_float(c) is not None and as_float(a) is not None]
    idx.sort(key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -math.inf
    for i in idx:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


# -------------------------------------------------------------------------------------- CSV out
def write_results_csv(rows: Sequence[dict], path) -> Path:
    """Write one CSV line per input row, atomically (:func:`nasdistill.atomic.atomic_open`).

    Columns: :data:`RESULT_COLUMNS` first, then any other keys in order of first appearance;
    missing values are empty cells. Returns the path.
    """
    path = Path(path)
    columns = list(RESULT_COLUMNS)
    for r in rows:
        columns += [k for k in r if k not in columns]
    with atomic_open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, restval="")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: ("" if v is None else _csv_value(v)) for k, v in r.items()})
    return path


def _csv_value(v):
    if isinstance(v, (dict, list, tuple)):
        return json.dumps(v, separators=(",", ":"), sort_keys=True)
    return v
