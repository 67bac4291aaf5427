"""Discover a student with a cost-aware, path-binarized (ProxylessNAS) search.

    nasdistill search CONFIG [key=value ...] [--out-dir DIR] [--resume | --restart]

Weight steps of one sampled path alternate with phi steps (Adam, lr 1e-3, betas (0, 0.999)) on the
held-out split every `search.arch_every` steps after `search.warmup_epochs`. The loss is
`search.penalty` of CE and the expected cost E against `search.target` T:
  mul#log     CE * alpha * (log E / log T)^beta     (ProxylessNAS; made for latencies in ms)
  add#linear  CE + lam * (E - T) / T                (ProxylessNAS)
  add#abs     CE + lam * |E - T| / T                (aims at the target from both sides)
The exported student is the most probable architecture under phi whose cost lies within
T * (1 +- search.tolerance) (the closest one, with a message, when none does); result.json records
the argmax architecture beside it. The run directory gets the extracted student (model.safetensors
+ model.json, BatchNorm recalibrated), result.json (arch, arch_id, macs, params, target_macs,
cost_over_target, in_band, argmax_arch, argmax_cost, phi, ...), metrics with the expected cost and
the phi entropy per label, and last.ckpt for --resume. Distill the student with
`nasdistill distill ... student.arch=DIR`.

search.targets=[T1,T2,...] finds a student per target, each in DIR/target_<T>/ (model.json,
model.safetensors, result.json; `student.arch=DIR/target_<T>`). The targets share one supernet
training (each keeps its own phi; DIR/model.safetensors holds the supernet) unless
search.shared=false, which runs a separate search per target in its folder.

Example:
    nasdistill search examples/digits_search.yaml --out-dir runs/search1
    nasdistill search examples/digits_search.yaml search.target=8e5 search.penalty=add#abs --out-dir runs/s2
    nasdistill search examples/digits_search.yaml search.target=null search.targets=[6e5,1.5e6,3e6] --out-dir runs/s3
"""
from __future__ import annotations

from ..registry import register

from .training import add_arguments  # noqa: F401  (CONFIG, overrides, --out-dir, --resume/--amend/--restart)
from .training import run_command

HELP = "discover a student architecture with a ProxylessNAS search"


KEYS = ("arch", "arch_id", "macs", "params", "target_macs", "cost_over_target", "in_band", "argmax_arch_id",
        "argmax_cost_over_target", "best_acc", "student_test_acc_before_training")
#: the summary of each target's student of a search with ``search.targets``
STUDENT_KEYS = ("folder", "arch_id", "macs", "params", "target", "cost_over_target", "in_band", "argmax_arch_id",
                "argmax_cost_over_target", "student_test_acc_before_training")


def summary(result: dict) -> dict:
    """The printed summary of a search result (one target, or a student per target)."""
    if "students" not in result:
        return {k: result.get(k) for k in KEYS}
    return {"shared": result.get("shared"), "wall_time_s": result.get("wall_time_s"),
            "students": [{k: s.get(k) for k in STUDENT_KEYS} for s in result["students"]]}


def run(args) -> int:
    from ..search import SearchConfig, run_search

    from ..search.checks import check_search_data

    return run_command(args, SearchConfig, lambda *a, **kw: summary(run_search(*a, **kw)), "search",
                       check=check_search_data)


register("command", "search", run, help=HELP, arguments=add_arguments, doc=__doc__, order=20)
