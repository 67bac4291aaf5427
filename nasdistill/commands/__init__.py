"""Sub-commands of the `nasdistill` CLI (:data:`COMMANDS`): each is one module of this package that
registers its ``run(args)`` with its metadata, so adding a command is one file here::

    register("command", "teacher", run, help=HELP, arguments=add_arguments, doc=__doc__, order=30)

``help`` (one line), ``arguments(parser)`` and ``doc`` build its part of the command line;
``order`` its place in ``nasdistill --help``.
"""
from ..registry import Registry, import_submodules

COMMANDS: Registry = Registry("command")
import_submodules(__name__)

__all__ = ["COMMANDS"]
