"""The report's tables, as lists of plain dict rows (raw numbers; :mod:`.markdown` formats them).

Input rows (``results``) are one per (student, teacher, method, seed) run::

    {"student": arch_id, "student_kind": "searched"|"sampled", "target_macs": float|None,
     "macs": int, "params": int, "teacher": "ce"|"gtn"|...|"none", "method": "kd"|"dkd"|"none",
     "seed": int, "best_acc": float, "last_acc": float, "test_acc": float, "wall_time_s": float}

Baseline runs (the student trained alone) have teacher ``"none"`` and method ``"none"``.
Accuracies are in percent, as the trainer reports them, so differences are percentage points.
A (teacher, method) pair is called a *condition*; its label is ``baseline``, ``CE+KD``,
``GTN+DKD``, ...
"""
from __future__ import annotations

import csv
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Iterable, NamedTuple, Optional, Sequence

from .stats import mean_ci, paired_test

RESULT_COLUMNS = ("student", "student_kind", "target_macs", "macs", "params", "teacher", "method", "seed",
                  "best_acc", "last_acc", "test_acc", "wall_time_s")
REQUIRED_KEYS = ("student", "teacher", "method", "seed")
BASELINE = ("none", "none")
TEACHER_ORDER = ("none", "ce", "gtn", "sftn", "mse", "soteacher")
METHOD_ORDER = ("none", "kd", "dkd")


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
    return f"{DISPLAY_NAMES.get(teacher, teacher.upper())}+{DISPLAY_NAMES.get(method, method.upper())}"


#: How method names are written in reports (the papers' spelling); others are upper-cased.
DISPLAY_NAMES = {"soteacher": "SoTeacher", "fitnet": "FitNets"}


def _rank(value: str, order: Sequence[str]) -> tuple:
    return (order.index(value), "") if value in order else (len(order), value)


def conditions(results: Iterable[dict]) -> list[tuple[str, str]]:
    """The (teacher, method) pairs present: baseline, then KD, then DKD (then other methods), each
    with its teachers in the order CE, GTN, SFTN, MSE, SoTeacher, others."""
    found = {(r["teacher"], r["method"]) for r in results}
    return sorted(found, key=lambda c: (_rank(c[1], METHOD_ORDER), _rank(c[0], TEACHER_ORDER)))


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
    """Searched students first (by target, then MACs), then sampled ones by MACs."""
    def key(sid):
        d = info[sid]
        macs = as_float(d["macs"])
        return (d["kind"] != "searched", as_float(d["target_macs"]) or 0.0,
                macs if macs is not None else math.inf, str(sid))
    return sorted(info, key=key)


# ---------------------------------------------------------------------------------------- tables
def teacher_table(teachers: Sequence[dict]) -> list[dict]:
    """One row per teacher name (entries of the same name, e.g. one per seed, are averaged).

    Columns: ``teacher, model, n, test_acc`` (:class:`MeanCI`), ``best_acc, epochs, wall_time_s``
    (means), ``cost_vs_ce`` (wall time / the CE teacher's; NaN without a CE teacher), and ``ece``,
    ``posterior_mse`` when any entry has them.
    """
    groups: dict = {}
    for t in teachers:
        groups.setdefault(t["teacher"], []).append(t)
    ce_time = None
    if "ce" in groups:
        ce_time = MeanCI.of([as_float(t.get("wall_time_s")) for t in groups["ce"]]).mean
    rows = []
    for name in sorted(groups, key=lambda n: _rank(n, TEACHER_ORDER)):
        ts = groups[name]
        time = MeanCI.of([as_float(t.get("wall_time_s")) for t in ts]).mean
        row = {"teacher": name, "model": ts[0].get("model", ""), "n": len(ts),
               "test_acc": MeanCI.of([as_float(t.get("test_acc")) for t in ts]),
               "best_acc": MeanCI.of([as_float(t.get("best_acc")) for t in ts]).mean,
               "epochs": ts[0].get("epochs"), "wall_time_s": time,
               "cost_vs_ce": time / ce_time if ce_time and math.isfinite(time) else math.nan}
        for extra in ("ece", "posterior_mse"):
            if any(as_float(t.get(extra)) is not None for t in teachers):
                row[extra] = MeanCI.of([as_float(t.get(extra)) for t in ts]).mean
        rows.append(row)
    return rows


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


def gain_table(results: Sequence[dict], teacher: str = "gtn", reference: str = "ce", method: str = "kd",
               metric: Optional[str] = None, students: Optional[Sequence[dict]] = None) -> Optional[dict]:
    """Gain of ``teacher`` over ``reference`` (both distilling with ``method``), paired by seed.

    Returns ``None`` when no (student, seed) has both runs, else::

        {"teacher", "reference", "method", "metric",
         "rows": [{"student", "kind", "macs", "gain": MeanCI over seeds, "t_pvalue"}, ...],
         "overall": paired_test over all (student, seed) pairs + {"n_students", "n_seeds"}}
    """
    return compare(results, (teacher, method), (reference, method), metric, students)


def compare(results: Sequence[dict], cond_a: tuple, cond_b: tuple, metric: Optional[str] = None,
            students: Optional[Sequence[dict]] = None) -> Optional[dict]:
    """Like :func:`gain_table` for any two conditions ``(teacher, method)``: gain = a - b."""
    metric = metric or choose_metric(results)
    pairs = _paired_values(results, tuple(cond_a), tuple(cond_b), metric)
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
    keys = sorted(pairs, key=lambda k: (str(k[0]), k[1]))
    overall = paired_test([pairs[k][0] for k in keys], [pairs[k][1] for k in keys])
    overall.update(n_students=len(per_student), n_seeds=len({seed for _, seed in keys}))
    return {"teacher": cond_a[0], "reference": cond_b[0], "method": cond_a[1], "metric": metric,
            "label": condition_label(*cond_a), "reference_label": condition_label(*cond_b),
            "rows": rows, "overall": overall}


def comparison_table(results: Sequence[dict], metric: Optional[str] = None) -> list[dict]:
    """Every distillation condition against the baseline, and every non-CE teacher against the CE
    teacher with the same method: one row per comparison with the overall paired test."""
    conds = [c for c in conditions(results) if c != BASELINE]
    wanted = [(c, BASELINE) for c in conds]
    wanted += [(c, ("ce", c[1])) for c in conds if c[0] != "ce" and ("ce", c[1]) in conds]
    rows = []
    for a, b in wanted:
        cmp = compare(results, a, b, metric)
        if cmp is not None:
            rows.append({"condition": cmp["label"], "reference": cmp["reference_label"], **cmp["overall"]})
    return rows


def students_table(students: Sequence[dict], results: Sequence[dict] = ()) -> list[dict]:
    """Discovered and sampled students: ``student, kind, target_macs, macs, macs_over_target,
    params, arch`` (the architecture as compact JSON), searched ones first."""
    info = student_info(results, students)
    archs = {s["student"]: s.get("arch") for s in students}
    rows = []
    for sid in student_order(info):
        d = info[sid]
        macs, target = as_float(d["macs"]), as_float(d["target_macs"])
        arch = archs.get(sid)
        rows.append({"student": sid, "kind": d["kind"], "target_macs": target, "macs": d["macs"],
                     "macs_over_target": macs / target if macs is not None and target else math.nan,
                     "params": d["params"],
                     "arch": json.dumps(arch, separators=(",", ":"), sort_keys=True) if arch else ""})
    return rows


def stage_table(stage_times: dict) -> list[dict]:
    """``stage, seconds, share`` (fraction of the total) in the given order, then a ``total`` row."""
    secs = {k: as_float(v) or 0.0 for k, v in (stage_times or {}).items()}
    total = sum(secs.values())
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
    """Write one CSV line per input row, atomically (temp file + ``os.replace``).

    Columns: :data:`RESULT_COLUMNS` first, then any other keys in order of first appearance;
    missing values are empty cells. Returns the path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = list(RESULT_COLUMNS)
    for r in rows:
        columns += [k for k in r if k not in columns]
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".csv", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns, restval="")
            writer.writeheader()
            for r in rows:
                writer.writerow({k: ("" if v is None else _csv_value(v)) for k, v in r.items()})
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _csv_value(v):
    if isinstance(v, (dict, list, tuple)):
        return json.dumps(v, separators=(",", ":"), sort_keys=True)
    return v
