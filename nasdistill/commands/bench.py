"""Benchmarks that print side-by-side ratios measured in one run.

Each benchmark lives in ``nasdistill.bench.<name>`` and prints a human table; with ``--json`` its
last line is a JSON object with the measured ratios.
"""
from __future__ import annotations

import importlib

HELP = "measure speed and memory ratios (loader, supernet, latency, teachers)"
BENCHES = {
    "loader": "nasdistill.bench.loader",
    "supernet": "nasdistill.bench.supernet",
    "latency": "nasdistill.bench.latency",
    "teachers": "nasdistill.bench.teachers",
}


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="bench", required=True, metavar="BENCH")
    for name, module_path in BENCHES.items():
        try:
            module = importlib.import_module(module_path)
        except ModuleNotFoundError as err:
            if err.name != module_path:
                raise
            continue
        p = sub.add_parser(name, help=module.HELP, description=module.__doc__)
        module.add_arguments(p)
        p.set_defaults(_bench_run=module.run)


def run(args) -> int:
    return int(args._bench_run(args) or 0)
