"""Moved to :mod:`nasdistill.commands.cli_args` (the command line's side of a configuration);
re-exported here so the old import path keeps working."""
from ..commands.cli_args import (add_config_arguments, add_mode_arguments, config_from_args,  # noqa: F401
                                 run_mode)
