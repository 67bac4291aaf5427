"""`nasdistill` command line: one sub-command per registered command (:mod:`nasdistill.commands`).

A user's mistake (a bad key or value, a missing file, a folder in use, a run that differs from its
folder, a non-finite loss, a full disk) ends with one paragraph on stderr and exit status 2;
``--debug`` (or ``NASDISTILL_DEBUG=1``) shows the traceback instead.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nasdistill",
        description="Neural architecture search and knowledge distillation around one supernet.",
    )
    parser.add_argument("--debug", action="store_true",
                        help="show the Python traceback of an error (also NASDISTILL_DEBUG=1)")
    from .commands import COMMANDS

    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, run in COMMANDS.items():
        p = sub.add_parser(name, help=COMMANDS.meta(name, "help"), description=COMMANDS.meta(name, "doc"),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show the Python traceback of an error (also NASDISTILL_DEBUG=1)")
        COMMANDS.meta(name, "arguments")(p)
        p.set_defaults(_run=run)
    return parser


def user_errors() -> tuple:
    """The exception types that mean "the user asked for something that cannot be done"."""
    from .engine.rundir import RunLocked

    return (ValueError, OSError, ImportError, FloatingPointError, RunLocked)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        # `key=value` overrides may also follow options (`teacher c.yaml --out-dir d train.lr=0.1`)
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = list(args.overrides or []) + extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    debug = getattr(args, "debug", False) or os.environ.get("NASDISTILL_DEBUG", "") not in ("", "0")
    # SIGTERM (a scheduler's or `kill`'s stop) ends a command as Ctrl-C does: one line, the runs'
    # last checkpoints kept, the worker processes stopped with it
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if main_thread else None
    try:
        return int(args._run(args) or 0)
    except user_errors() as err:
        if debug:
            raise
        print(f"nasdistill {args.command}: error: {message(err)}\n(run with --debug for the traceback)",
              file=sys.stderr)
        return 2
    except Terminated:
        print(f"nasdistill {args.command}: terminated (SIGTERM); rerun the same command to continue",
              file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print(f"nasdistill {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the main thread is (unwinds like Ctrl-C: locks released, workers stopped)."""


def _terminate(signum, frame):
    raise Terminated()


def message(err: BaseException) -> str:
    """The error's sentence (``OSError`` keeps its file name)."""
    if isinstance(err, OSError) and err.strerror:
        text = err.strerror
        return text if not err.filename or str(err.filename) in text else f"{text}: {err.filename}"
    text = str(err)
    return text if text else type(err).__name__


if __name__ == "__main__":
    sys.exit(main())
