"""Argument parsing and dispatch for ``python -m training_cli``.

Exit codes are part of the interface so scripts can tell outcomes apart:
0 success, 2 a usage or user error (the message goes to stderr, without a
traceback, because the user can fix it). Anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from core.errors import ChangeDetectionError
from core.version import __version__

from .commands import COMMANDS

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

_EPILOG = """\
examples:
  python -m training_cli models
  python -m training_cli init --model sscfnet --preset binary --out sscfnet-untrained.pt
  python -m training_cli synthetic --out synth --pairs 40 --size 256
  python -m training_cli prepare --t1 a.tif --t2 b.tif --labels change.tif --out my-cd --tile 256
  python -m training_cli evaluate --checkpoint model.pt --data SECOND --split val --json scores.json
  python -m training_cli predict --checkpoint model.pt --data SECOND --split val --out predictions
  python -m training_cli <command> --help
"""


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one sub-parser per module in :data:`~training_cli.commands.COMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="python -m training_cli",
        description="Train, evaluate and manage semantic / binary change-detection models.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for command in COMMANDS:
        sub = command.add_parser(subparsers)
        sub.set_defaults(run=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI in-process and return its exit code instead of exiting.

    Args:
        argv: Arguments without the program name; ``None`` reads ``sys.argv``.

    Returns:
        0 on success, 2 on a usage or user error (message printed to stderr).
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # argparse exits on --help, --version and usage errors
        return stop.code if isinstance(stop.code, int) else (EXIT_OK if stop.code is None else EXIT_USAGE)
    run = getattr(args, "run", None)
    if run is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(run(args))
    except ChangeDetectionError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
