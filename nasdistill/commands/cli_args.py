"""The command-line side of a configuration: ``CONFIG``, ``key=value`` overrides, ``--out-dir`` and the
run-mode flags (``--resume``, ``--amend``, ``--restart``), turned into a config and a run mode."""
from __future__ import annotations

import os

from ..config import ConfigError, load_config


def add_config_arguments(parser) -> None:
    """Add ``CONFIG``, ``key=value`` overrides, ``--out-dir`` and the reuse flags to ``parser``."""
    parser.add_argument("config", nargs="?", default=None, metavar="CONFIG",
                        help="YAML config file (optional: defaults and overrides alone also work)")
    parser.add_argument("overrides", nargs="*", default=[], metavar="key=value",
                        help="override a config key, e.g. train.lr=0.1 train.epochs=30")
    parser.add_argument("--out-dir", default=None, help="run directory (overrides out_dir)")
    add_mode_arguments(parser)


def add_mode_arguments(parser) -> None:
    """``--resume``, ``--amend`` and ``--restart`` (see :mod:`nasdistill.engine.run`)."""
    group = parser.add_argument_group("an existing run in the output folder")
    group.add_argument("--resume", action="store_true",
                       help="reuse it when finished, continue it from its last checkpoint when interrupted "
                            "(refused if the configuration differs)")
    group.add_argument("--amend", action="store_true",
                       help="with --resume: continue it with changed keys (e.g. a lower train.lr); "
                            "config.yaml and run.json record the change")
    group.add_argument("--restart", action="store_true",
                       help="delete what the run wrote and start it over")


def run_mode(args) -> str:
    """The run mode the flags ask for: ``new``, ``resume``, ``amend`` or ``restart``."""
    if getattr(args, "restart", False):
        if getattr(args, "resume", False) or getattr(args, "amend", False):
            raise ConfigError("--restart starts the run over: it cannot be combined with --resume/--amend")
        return "restart"
    if getattr(args, "amend", False):
        return "amend"
    if getattr(args, "resume", False):
        return "resume"
    return "new"


def config_from_args(cls, args):
    """Build ``cls`` from parsed CLI ``args`` (see :func:`add_config_arguments`).

    When continuing a run (``--resume``/``--amend``) with no CONFIG, the run directory's own
    ``config.yaml`` is the base.
    """
    path = args.config
    overrides = list(args.overrides or [])
    if path is not None and "=" in path and not os.path.exists(path):
        overrides.insert(0, path)  # argparse took the first override for CONFIG
        path = None
    if path is None and (getattr(args, "resume", False) or getattr(args, "amend", False)):
        out_dir = args.out_dir or load_config(cls, None, overrides).out_dir
        saved = os.path.join(out_dir, "config.yaml")
        if os.path.isfile(saved):
            path = saved
    cfg = load_config(cls, path, overrides)
    if args.out_dir is not None:
        cfg.out_dir = args.out_dir
    return cfg
