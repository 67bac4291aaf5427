"""The shape the three training commands share: config from the command line, run mode, world,
one run through the lifecycle, a one-line JSON summary."""
from __future__ import annotations

import json
from typing import Callable, Optional, Sequence

from .cli_args import add_config_arguments as add_arguments  # the commands' arguments
from .cli_args import config_from_args, run_mode
from ..config import ConfigError, attribute
from ..engine.distributed import init_distributed, shutdown_distributed


def run_command(args, config_class, runner: Callable, what: str, keys: Optional[Sequence[str]] = None,
                check: Optional[Callable] = None) -> int:
    """Build ``config_class`` from ``args``, run ``runner(cfg, out_dir, mode=, device=, world=)``,
    print the result's ``keys`` (default: all but bulky ones) as JSON and where it was written.

    ``check(cfg, splits)`` (optional) refuses what needs the loaded data before anything is
    written; the data it loaded goes to ``runner`` (``splits=``). A refused value names the
    override, or the file and line, it came from."""
    cfg = config_from_args(config_class, args)  # (``runner`` checks it through run_training)
    mode = run_mode(args)
    world, device = init_distributed(cfg.train.device)
    try:
        extra = {}
        try:
            if check is not None:
                extra["splits"] = cfg.data.load()
                check(cfg, extra["splits"])
            result = runner(cfg, cfg.out_dir, mode=mode, device=device, world=world, **extra)
        except ConfigError as err:
            raise attribute(err, cfg) from None
        if world.is_main:
            shown = ({k: result.get(k) for k in keys} if keys is not None else
                     {k: v for k, v in result.items() if k not in ("run_dir", "student", "phi")})
            print(json.dumps(shown))
            print(f"{what} written to {cfg.out_dir}")
    finally:
        shutdown_distributed()
    return 0


__all__ = ["add_arguments", "run_command"]
