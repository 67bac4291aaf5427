"""Benchmarks that print side-by-side ratios measured in one run.

Each benchmark lives in ``nasdistill.bench.<name>`` (registered in :data:`~nasdistill.bench.BENCHES`)
and prints a human table; with ``--json`` its last line is a JSON object with the measured ratios.
"""
from __future__ import annotations

from ..bench import BENCHES
from ..registry import register

HELP = f"measure speed and memory ratios ({', '.join(BENCHES.names())})"


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="bench", required=True, metavar="BENCH")
    for name, run_bench in BENCHES.items():
        p = sub.add_parser(name, help=BENCHES.meta(name, "help"), description=BENCHES.meta(name, "doc"))
        BENCHES.meta(name, "arguments")(p)
        p.set_defaults(_bench_run=run_bench)


def run(args) -> int:
    return int(args._bench_run(args) or 0)


register("command", "bench", run, help=HELP, arguments=add_arguments, doc=__doc__, order=60)
