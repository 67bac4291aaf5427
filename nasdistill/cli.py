"""`nasdistill` command line: one sub-command per module under ``nasdistill.commands``."""
from __future__ import annotations

import argparse
import importlib
import os
import sys

COMMANDS = {
    "run": "nasdistill.commands.run",
    "search": "nasdistill.commands.search",
    "teacher": "nasdistill.commands.teacher",
    "distill": "nasdistill.commands.distill",
    "export": "nasdistill.commands.export",
    "bench": "nasdistill.commands.bench",
    "space": "nasdistill.commands.space",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nasdistill",
        description="Neural architecture search and knowledge distillation around one supernet.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_path in COMMANDS.items():
        try:
            module = importlib.import_module(module_path)
        except ModuleNotFoundError as err:
            if err.name != module_path:
                raise
            continue
        p = sub.add_parser(name, help=module.HELP, description=module.__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        # `key=value` overrides may also follow options (`teacher c.yaml --out-dir d train.lr=0.1`)
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = list(args.overrides or []) + extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return int(args._run(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError, ImportError, FloatingPointError) as err:
        if os.environ.get("NASDISTILL_DEBUG"):
            raise
        print(f"nasdistill {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"nasdistill {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
