"""Discover a student with a cost-aware, path-binarized (ProxylessNAS) search.

    nasdistill search CONFIG [key=value ...] [--out-dir DIR] [--resume | --restart]

Weight steps of one sampled path alternate with phi steps (Adam, lr 1e-3, betas (0, 0.999)) on the
held-out split every `search.arch_every` steps after `search.warmup_epochs`. The loss is
`search.penalty` of CE and the expected cost E against `search.target` T:
  mul#log     CE * alpha * (log E / log T)^beta     (ProxylessNAS; made for latencies in ms)
  add#linear  CE + lam * (E - T) / T                (ProxylessNAS)
  add#abs     CE + lam * |E - T| / T                (aims at the target from both sides)
The run directory gets the extracted student (model.safetensors + model.json, BatchNorm
recalibrated), result.json (arch, arch_id, macs, params, target_macs, cost_over_target, phi, ...),
metrics with the expected cost and the phi entropy per label, and last.ckpt for --resume.
Distill the student with `nasdistill distill ... student.arch=DIR`.

Example:
    nasdistill search examples/digits_search.yaml --out-dir runs/search1
    nasdistill search examples/digits_search.yaml search.target=8e5 search.penalty=add#abs --out-dir runs/s2
"""
from __future__ import annotations

from .training import add_arguments  # noqa: F401  (CONFIG, overrides, --out-dir, --resume/--amend/--restart)
from .training import run_command

HELP = "discover a student architecture with a ProxylessNAS search"


def run(args) -> int:
    from ..search import SearchConfig, run_search

    return run_command(args, SearchConfig, run_search, "search",
                       keys=("arch", "arch_id", "macs", "params", "target_macs", "cost_over_target", "best_acc",
                             "student_test_acc_before_training"))
