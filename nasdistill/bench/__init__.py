"""Benchmarks behind `nasdistill bench ...`: every public module of this package is one benchmark,
registered in :data:`BENCHES` under its module name, so adding a benchmark is one file here.

A benchmark module defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args)``; it is
imported only when the command line is built.
"""
from ..registry import Registry, submodule_names

#: benchmark name -> module path
BENCHES: Registry[str] = Registry("benchmark")
for _name in submodule_names(__name__):
    BENCHES.register(_name, f"{__name__}.{_name}")

__all__ = ["BENCHES"]
