"""The shape the three training commands share: config from the command line, run mode, world,
one run through the lifecycle, a one-line JSON summary."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Optional, Sequence

from .cli_args import add_config_arguments as add_arguments  # the commands' arguments
from .cli_args import config_from_args, run_mode
from ..config import ConfigError
from ..engine.distributed import init_distributed, shutdown_distributed


def attributed(err: ConfigError, args) -> ConfigError:
    """``err`` prefixed with where its key's value came from: the command-line override, else the
    CONFIG file (unchanged when it already says so, or names no key)."""
    text = str(err)
    if err.key is None or text.startswith("command-line override"):
        return err
    overrides = list(getattr(args, "overrides", None) or [])
    config = getattr(args, "config", None)
    if config is not None and "=" in config and not Path(config).exists():
        overrides.insert(0, config)
        config = None
    for item in reversed(overrides):  # the last override of a key wins
        given = item.split("=", 1)[0].strip()
        if err.key == given or err.key.startswith(given + ".") or given.startswith(err.key + "."):
            return ConfigError(f"command-line override {item!r}: {text}", err.key, err.detail)
    if config is not None and not text.startswith(str(config)):
        return ConfigError(f"{config}: {text}", err.key, err.detail)
    return err


def run_command(args, config_class, runner: Callable, what: str, keys: Optional[Sequence[str]] = None,
                check: Optional[Callable] = None) -> int:
    """Build ``config_class`` from ``args``, run ``runner(cfg, out_dir, mode=, device=, world=)``,
    print the result's ``keys`` (default: all but bulky ones) as JSON and where it was written.

    ``check(cfg, splits)`` (optional) refuses what needs the loaded data before anything is
    written; the data it loaded goes to ``runner`` (``splits=``). A refused value names the
    override or the file it came from."""
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
            raise attributed(err, args) from None
        if world.is_main:
            shown = ({k: result.get(k) for k in keys} if keys is not None else
                     {k: v for k, v in result.items() if k not in ("run_dir", "student", "phi")})
            print(json.dumps(shown))
            print(f"{what} written to {cfg.out_dir}")
    finally:
        shutdown_distributed()
    return 0


__all__ = ["add_arguments", "attributed", "run_command"]
