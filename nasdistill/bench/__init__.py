"""Benchmarks behind `nasdistill bench ...`: every public module of this package is one benchmark and
registers itself (:data:`BENCHES`), so adding a benchmark is one file here::

    register("bench", "kd", run, help=HELP, arguments=add_arguments, doc=__doc__)

``run(args)`` runs it; the metadata ``help`` (one line), ``arguments(parser)`` and ``doc`` build
its command line. Its heavy imports live inside its functions.
"""
from ..registry import Registry, import_submodules

#: benchmark name -> its ``run(args)``
BENCHES: Registry = Registry("bench", what="benchmark")
import_submodules(__name__)

__all__ = ["BENCHES"]
