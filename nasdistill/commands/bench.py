"""Benchmarks that print side-by-side ratios measured in one run.

Each benchmark lives in ``nasdistill.bench.<name>`` (registered in :data:`BENCHES`) and prints a
human table; with ``--json`` its last line is a JSON object with the measured ratios.
"""
from __future__ import annotations

import importlib

from ..registry import Registry

HELP = "measure speed and memory ratios (loader, supernet, latency, teachers, kd)"
#: benchmark name -> module (imported when the CLI is built)
BENCHES: Registry[str] = Registry("benchmark")
for _name in ("loader", "supernet", "latency", "teachers", "kd"):
    BENCHES.register(_name, f"nasdistill.bench.{_name}")


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="bench", required=True, metavar="BENCH")
    for name, module_path in BENCHES.items():
        module = importlib.import_module(module_path)
        p = sub.add_parser(name, help=module.HELP, description=module.__doc__)
        module.add_arguments(p)
        p.set_defaults(_bench_run=module.run)


def run(args) -> int:
    return int(args._bench_run(args) or 0)
