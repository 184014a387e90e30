"""The ``poolwatch`` command: ``demo``, ``generate`` and ``deploy``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from poolwatch._version import __version__
from poolwatch.monitoring.cli import add_commands as add_monitoring_commands


def _demo(_args: argparse.Namespace) -> int:
    try:
        from poolwatch import demo
    except ImportError as missing:
        print(
            f"poolwatch demo needs SQLAlchemy and the OpenTelemetry SDK ({missing.name} is "
            "missing): pip install 'poolwatch[sqlalchemy,sdk]'",
            file=sys.stderr,
        )
        return 2
    demo.run(sys.stdout)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, one sub-command per job."""
    parser = argparse.ArgumentParser(prog="poolwatch", description=__doc__)
    parser.add_argument("--version", action="version", version=f"poolwatch {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run a scripted pool incident on SQLite and show it")
    demo.set_defaults(run=_demo)
    add_monitoring_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    args = build_parser().parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
