"""The student a search exports for a cost target, and the folder it is written to.

After the phi phase the exported student of a target is the most probable architecture (under
that target's phi) whose cost lies within ``target * (1 +- search.tolerance)``; when no
architecture of the space costs that, the closest one, with a message saying so. The argmax
architecture (each label's most probable choice) is recorded beside it: the argmax ignores the
budget once phi stops moving, the band does not.

A search with ``search.targets`` writes each target's student into ``RUN_DIR/target_<T>/``
(``model.json``, ``model.safetensors``, ``result.json`` written last), loadable with
``nasdistill.load`` and usable as ``student.arch=RUN_DIR/target_<T>``.
"""
from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path
from typing import Mapping, Optional

from ..atomic import atomic_open, write_json
from ..engine.rundir import LOCK, RUN_OUTPUTS, RunDirectory, sha256_file

#: Marks a target folder as the artifact of a search run (stale ones are removed by the next run).
MARKER = "search_target_of"


def constrained_choice(space, probabilities: Mapping, cost_model, target: float, tolerance: float):
    """The most probable architecture whose cost is within ``target * (1 +- tolerance)``, exact
    (:func:`nasdistill.space.graph.most_probable_arch`), with the argmax beside it."""
    from ..space.graph import most_probable_arch

    return most_probable_arch(space, probabilities, target, tolerance, cost_model=cost_model, log=False)


def student_entry(space, choice, target: float, tolerance: float, cost_metric: str,
                  phi: Mapping) -> dict:
    """The result entries of one target's student (the chosen architecture and the argmax)."""
    arch, argmax = dict(choice.arch), dict(choice.argmax_arch)
    cost = space.cost(arch)
    return {"arch": arch, "arch_id": space.arch_id(arch), "space": space.name,
            "macs": cost["macs"], "params": cost["params"],
            "cost_metric": cost_metric, "target": float(target),
            "target_macs": float(target) if cost_metric == "macs" else None,
            "cost": float(choice.cost), "cost_over_target": float(choice.cost) / target,
            "tolerance": tolerance, "band": [float(b) for b in choice.band], "in_band": bool(choice.in_band),
            "band_message": None if choice.in_band else choice.message,
            "prob": float(choice.prob), "log_prob": float(choice.log_prob),
            "argmax_arch": argmax, "argmax_arch_id": space.arch_id(argmax),
            "argmax_cost": float(choice.argmax_cost), "argmax_cost_over_target": float(choice.argmax_cost) / target,
            "argmax_prob": math.exp(choice.argmax_log_prob), "argmax_log_prob": float(choice.argmax_log_prob),
            "phi": {l: dict(p) for l, p in phi.items()}}


def describe(entry: Mapping) -> str:
    """One line: the target, the chosen student's cost and the argmax's when it differs."""
    unit = "MACs" if entry["cost_metric"] == "macs" else entry["cost_metric"]
    line = (f"target {entry['target']:,.0f} {unit} -> {entry['arch_id']}: {entry['cost']:,.0f} "
            f"({entry['cost_over_target']:.2f}x, p {entry['prob']:.3g})")
    if entry["argmax_arch_id"] != entry["arch_id"]:
        line += (f"; argmax {entry['argmax_arch_id']}: {entry['argmax_cost']:,.0f} "
                 f"({entry['argmax_cost_over_target']:.2f}x, p {entry['argmax_prob']:.3g})")
    if entry.get("band_message"):
        line += f"; {entry['band_message']}"
    return line


def serialize_weights(weights: Mapping) -> tuple[bytes, str]:
    """``(safetensors bytes, their SHA-256)`` of CPU-contiguous ``weights``."""
    from safetensors.torch import save

    data = save({k: v.detach().cpu().contiguous() for k, v in weights.items()})
    return data, hashlib.sha256(data).hexdigest()


def write_student(folder: Path, record, data: bytes, result: dict) -> None:
    """Write one target's student: weights, ``model.json``, then ``result.json`` (last).

    What an earlier run left in the folder (a separate search's run files, say) is removed first.
    """
    RunDirectory(folder).wipe()
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_open(folder / "model.safetensors", "wb") as f:
        f.write(data)
    record.write(folder)
    write_json(folder / "result.json", result)


def remove_stale_students(run_dir: Path, keep: set) -> None:
    """Remove ``target_*`` folders of an earlier search in ``run_dir`` whose target is not kept."""
    for folder in sorted(run_dir.glob("target_*")):
        if folder.name in keep or not folder.is_dir():
            continue
        try:
            marked = MARKER in json.loads((folder / "result.json").read_text())
        except (OSError, ValueError):
            marked = False
        if marked and not ({p.name for p in folder.iterdir()} - set(RUN_OUTPUTS) - {LOCK}):
            shutil.rmtree(folder)


def student_problems(run_dir, result: Mapping) -> list[str]:
    """What is missing or differs in the target folders a finished search ``result`` lists."""
    problems = []
    for s in result.get("students") or []:
        folder = Path(run_dir) / s["folder"]
        try:
            mine = json.loads((folder / "result.json").read_text())
        except (OSError, ValueError):
            problems.append(f"{folder / 'result.json'} is missing or damaged")
            continue
        weights = folder / "model.safetensors"
        if not (folder / "model.json").is_file() or not weights.is_file():
            problems.append(f"{folder} lacks model.json or model.safetensors")
        elif mine.get("weights_sha256") != s.get("weights_sha256") or \
                sha256_file(weights) != s.get("weights_sha256"):
            problems.append(f"{weights} differs from the run's result")
    return problems


def read_students(run_dir, result: Optional[Mapping]) -> list[dict]:
    """The per-target results of a finished search (``result.json`` of each target folder)."""
    return [json.loads((Path(run_dir) / s["folder"] / "result.json").read_text())
            for s in (result or {}).get("students") or []]


__all__ = ["MARKER", "constrained_choice", "describe", "read_students", "remove_stale_students",
           "serialize_weights", "student_entry", "student_problems", "write_student"]
