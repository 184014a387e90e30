"""The ``poolwatch`` command: ``demo``, ``doctor``, ``generate`` and ``deploy``."""

from __future__ import annotations

import argparse
import os
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
    try:
        return demo.run(options, sys.stdout)
    except BrokenPipeError:  # e.g. `poolwatch demo | head`: stop quietly, as a pipe expects
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


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


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("expected a whole number, 0 or more")
    return value


def _positive_seconds(text: str) -> float:
    value = float(text)
    if not 0 < value < 24 * 3600:
        raise argparse.ArgumentTypeError("expected seconds above 0")
    return value


def _doctor(args: argparse.Namespace) -> int:
    try:
        from poolwatch import doctor
    except ImportError as missing:
        print(
            f"poolwatch doctor needs psycopg and httpx ({missing.name} is missing): "
            "pip install 'poolwatch[doctor]'",
            file=sys.stderr,
        )
        return 3
    settings = doctor.Settings(
        pool_size=args.pool_size,
        max_overflow=args.max_overflow,
        workers=args.workers,
        replicas=args.replicas,
        pool_pre_ping=args.pool_pre_ping,
        pool_recycle=args.pool_recycle,
        conn_max_age=args.conn_max_age,
        asgi=args.asgi,
        network_idle_timeout=args.network_idle_timeout,
    )
    request = doctor.Request(
        database_url=args.database_url,
        settings=settings,
        prometheus_url=args.prometheus_url,
        window=args.window,
        selector=args.selector,
        at=args.at,
        timeout=args.timeout,
        pgbouncer_url=args.pgbouncer_url,
    )
    report = doctor.diagnose(request)
    print(report.as_json() if args.json else report.as_text())
    return report.exit_status


def _add_doctor(commands: Any) -> None:
    doctor = commands.add_parser(
        "doctor",
        help="check pool settings against PostgreSQL's limits and the load Prometheus saw",
        description="Reports total possible connections against max_connections less reserved "
        "slots, observed pool usage and the size Little's law says the load needs, risky "
        "settings, and who holds connections now. Exit status: 0 ok, 1 warnings, 2 problems "
        "(something will exhaust), 3 could not check (a source could not be read, or neither "
        "pool flags nor Prometheus said how many connections the pools may open).",
    )
    doctor.add_argument("--database-url", required=True, help="PostgreSQL URL (postgresql://...)")
    doctor.add_argument("--prometheus-url", help="Prometheus holding poolwatch's metrics")
    doctor.add_argument(
        "--pgbouncer-url", help="PgBouncer in front of PostgreSQL (its admin console is read)"
    )
    doctor.add_argument("--window", default="1h", help="PromQL range to look back over (1h)")
    doctor.add_argument("--selector", default="", help='extra label matchers, e.g. job="shop"')
    doctor.add_argument("--at", type=float, help="evaluate at this Unix time (default: now)")
    doctor.add_argument("--pool-size", type=_count, help="pool size per process")
    doctor.add_argument("--max-overflow", type=_count, help="overflow per process (default 10)")
    doctor.add_argument("--workers", type=_count, default=1, help="processes per replica (1)")
    doctor.add_argument("--replicas", type=_count, default=1, help="replicas (hosts, pods) (1)")
    doctor.add_argument("--pool-pre-ping", action=argparse.BooleanOptionalAction,
                        help="whether the pools ping connections before use")  # fmt: skip
    doctor.add_argument("--pool-recycle", type=float,
                        help="pool_recycle in seconds (-1: never)")  # fmt: skip
    doctor.add_argument("--network-idle-timeout", type=float,
                        help="idle timeout of a proxy or load balancer on the way (seconds)")  # fmt: skip
    doctor.add_argument("--conn-max-age", type=float, help="Django's CONN_MAX_AGE (seconds)")
    doctor.add_argument("--asgi", action="store_true", help="Django is served by an ASGI server")
    doctor.add_argument("--timeout", type=float, default=10.0, help="seconds per connection")
    doctor.add_argument("--json", action="store_true", help="print the report as JSON")
    doctor.set_defaults(run=_doctor)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, one sub-command per job."""
    parser = argparse.ArgumentParser(prog="poolwatch", description=__doc__)
    parser.add_argument("--version", action="version", version=f"poolwatch {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_demo(commands)
    _add_doctor(commands)
    add_monitoring_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    args = build_parser().parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
