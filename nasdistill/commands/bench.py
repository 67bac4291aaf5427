"""Benchmarks that print side-by-side ratios measured in one run.

Each benchmark lives in ``nasdistill.bench.<name>`` (registered in :data:`BENCHES` by that package)
and prints a human table; with ``--json`` its last line is a JSON object with the measured ratios.
"""
from __future__ import annotations

import importlib

from ..bench import BENCHES

HELP = f"measure speed and memory ratios ({', '.join(BENCHES.names())})"


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="bench", required=True, metavar="BENCH")
    for name, module_path in BENCHES.items():
        module = importlib.import_module(module_path)
        p = sub.add_parser(name, help=module.HELP, description=module.__doc__)
        module.add_arguments(p)
        p.set_defaults(_bench_run=module.run)


def run(args) -> int:
    return int(args._bench_run(args) or 0)
