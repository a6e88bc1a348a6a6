"""The ``sosm`` command line.

Each subcommand is one module of this package exposing ``add_parser(subparsers)`` (which
returns its ``argparse`` parser) and ``run(args) -> int``. Adding a subcommand is one new
module plus its name in :data:`SUBCOMMANDS`. Modules import heavy dependencies inside
``run`` so that ``sosm --help`` stays fast.

Exit codes: 0 success, 2 bad input: argparse errors, and while running a ``ValueError``, an
``OSError`` (a missing file, an unwritable or full output location) or data that is not on this
machine (``sosm.data.DataUnavailableError``): one line ``sosm <command>: error: ...``, no traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional, Sequence

from .. import __version__

#: subcommand modules, in the order ``sosm --help`` lists them
SUBCOMMANDS: tuple[str, ...] = ("demo", "graph", "train_cmd", "eval_cmd", "generate_cmd", "inspect_cmd", "recall_cmd",
                                 "finetune_cmd", "distill_cmd", "quantize_cmd", "export_cmd", "serve_cmd")

EXIT_BAD_INPUT = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sosm", description="SOSM: semantic graphs over token states, "
                                     "graph-structured sequence models, and their explanations.")
    parser.add_argument("--version", action="version", version=f"sosm {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMANDS:
        module = importlib.import_module(f"{__name__}.{name}")
        sub = module.add_parser(subparsers)
        sub.set_defaults(_run=module.run)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``sosm`` with ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    try:
        return int(args._run(args) or 0)
    except ValueError as err:
        return _error(args.command, str(err))
    except OSError as err:
        from .checks import describe_os_error

        return _error(args.command, describe_os_error(err))
    except RuntimeError as err:
        from ..data.corpus import DataUnavailableError

        if not isinstance(err, DataUnavailableError):
            raise
        return _error(args.command, str(err))


def _error(command: str, message: str) -> int:
    """Print the one-line error of a bad input and return its exit code."""
    print(f"sosm {command}: error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
