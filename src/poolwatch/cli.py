"""The ``poolwatch`` command: ``demo``, ``generate`` and ``deploy``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from poolwatch._version import __version__
from poolwatch.monitoring.cli import add_commands as add_monitoring_commands


def _demo(args: argparse.Namespace) -> int:
    try:
        from poolwatch import demo
    except ImportError as missing:
        print(
            f"poolwatch demo needs SQLAlchemy, the OpenTelemetry SDK and rich ({missing.name} is "
            "missing): pip install 'poolwatch[demo]'",
            file=sys.stderr,
        )
        return 2
    options = demo.Options(
        duration=args.duration or demo.DEFAULT_SECONDS,
        output=args.output,
        otlp_endpoint=args.otlp_endpoint,
        live=not args.no_live and sys.stdout.isatty(),
    )
    return demo.run(options, sys.stdout)


def _add_demo(commands: Any) -> None:
    demo = commands.add_parser(
        "demo",
        help="run a scripted pool incident on SQLite and watch poolwatch detect it",
        description="Walks a small SQLite pool through healthy, saturation, waits, timeouts, a "
        "leaked connection, a session conflict caused by exhaustion and recovery, showing what "
        "poolwatch reports as it happens. Exits 0, or 130 after Ctrl-C.",
    )
    demo.add_argument(
        "--duration",
        type=_positive_seconds,
        help="about how long the whole demo runs, in seconds; phases scale (default: 28)",
    )
    demo.add_argument(
        "--output",
        type=Path,
        help="directory for the OTLP/JSON file and the generated dashboards and alerts "
        "(default: a new ./poolwatch-demo-<UTC time> directory)",
    )
    demo.add_argument(
        "--otlp-endpoint",
        metavar="URL",
        help="send telemetry to a collector's OTLP/HTTP endpoint (e.g. http://localhost:4318) "
        "instead of writing the OTLP/JSON file",
    )
    demo.add_argument(
        "--no-live",
        action="store_true",
        help="plain lines instead of the live view (the default when stdout is not a terminal)",
    )
    demo.set_defaults(run=_demo)


def _positive_seconds(text: str) -> float:
    value = float(text)
    if not 0 < value < 24 * 3600:
        raise argparse.ArgumentTypeError("expected seconds above 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, one sub-command per job."""
    parser = argparse.ArgumentParser(prog="poolwatch", description=__doc__)
    parser.add_argument("--version", action="version", version=f"poolwatch {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_demo(commands)
    add_monitoring_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    args = build_parser().parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
