"""The ``poolwatch`` command: ``demo``, ``doctor``, ``generate`` and ``deploy``.

Every command prints through :mod:`poolwatch._redact`, and every failure is one line on stderr
with an exit status from :data:`EXIT_STATUSES` (``--debug`` adds the traceback).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from poolwatch import _redact
from poolwatch._exit import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, CommandError
from poolwatch._version import __version__
from poolwatch.monitoring.cli import add_commands as add_monitoring_commands

DESCRIPTION = """\
Watch database connection pools with OpenTelemetry: try it on a scripted incident (demo),
check a deployment's pool settings (doctor), write or deploy the dashboards and alert rules
(generate, deploy). `poolwatch COMMAND --help` says what each needs."""
EXIT_STATUSES = f"""\
exit status:
  0    done; doctor: nothing wrong
  1    the command failed (a write, a request or an export did not succeed; deploy puts the
       previous state back); doctor: warnings; generate --check: stale files
  {EXIT_USAGE}    bad usage: an unknown option, an invalid value or configuration, a missing extra;
       doctor: problems (the pools will exhaust something)
  3    doctor: PostgreSQL or Prometheus could not be read, or the doctor extra is missing
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C)
An error is one line on stderr; --debug adds its traceback. Passwords and tokens are never printed.
"""


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
        "poolwatch reports as it happens. Needs the demo extra: pip install 'poolwatch[demo]'. "
        "Exits 0; 1 when telemetry could not be written or sent (the summary counts what was "
        "lost); 2 for an unusable --output; 130 after Ctrl-C.",
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
    add_debug(demo)
    demo.set_defaults(run=_demo)


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number, 0 or more, not {text!r}")
    return value


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < 24 * 3600:
        raise argparse.ArgumentTypeError(f"expected seconds above 0 (under a day), not {text!r}")
    return value


def _seconds(text: str) -> float:
    """A number of seconds; negative values are passed on (``--pool-recycle -1``: never)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, not {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number of seconds, not {text!r}")
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
    monitoring = None
    if args.monitoring_config is not None:
        try:
            from poolwatch.monitoring import config
        except ImportError as missing:
            print(f"poolwatch doctor --monitoring-config needs the monitoring extra ({missing.name} "
                  "is missing): pip install 'poolwatch[monitoring]'", file=sys.stderr)  # fmt: skip
            return 3
        try:
            monitoring = config.load(args.monitoring_config)
        except config.ConfigError as exc:
            print(f"poolwatch doctor: --monitoring-config: {exc}", file=sys.stderr)
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
        monitoring=monitoring,
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
        "settings, and who holds connections now. Needs the doctor extra: pip install "
        "'poolwatch[doctor]'. Exit status: 0 ok, 1 warnings, 2 problems (something will "
        "exhaust), 3 could not check (a source could not be read, the URL is not a valid "
        "PostgreSQL one, or neither pool flags nor Prometheus said how many connections the "
        "pools may open).",
    )
    doctor.add_argument("--database-url", required=True,
                        help="PostgreSQL URL (postgresql://...) or libpq key=value string")  # fmt: skip
    doctor.add_argument("--prometheus-url", help="Prometheus holding poolwatch's metrics")
    doctor.add_argument(
        "--pgbouncer-url", help="PgBouncer in front of PostgreSQL (its admin console is read)"
    )
    doctor.add_argument(
        "--monitoring-config", type=Path,
        help="the monitoring config the alerts were generated from (poolwatch generate "
        "--config): its pgbouncer_max_client_conn is checked against PgBouncer's",
    )  # fmt: skip
    doctor.add_argument("--window", default="1h", help="PromQL range to look back over (1h)")
    doctor.add_argument("--selector", default="", help='extra label matchers, e.g. job="shop"')
    doctor.add_argument("--at", type=_seconds, help="evaluate at this Unix time (default: now)")
    doctor.add_argument("--pool-size", type=_count, help="pool size per process")
    doctor.add_argument("--max-overflow", type=_count, help="overflow per process (default 10)")
    doctor.add_argument("--workers", type=_count, default=1, help="processes per replica (1)")
    doctor.add_argument("--replicas", type=_count, default=1, help="replicas (hosts, pods) (1)")
    doctor.add_argument("--pool-pre-ping", action=argparse.BooleanOptionalAction,
                        help="whether the pools ping connections before use")  # fmt: skip
    doctor.add_argument("--pool-recycle", type=_seconds,
                        help="pool_recycle in seconds (-1: never)")  # fmt: skip
    doctor.add_argument("--network-idle-timeout", type=_seconds,
                        help="idle timeout of a proxy or load balancer on the way (seconds)")  # fmt: skip
    doctor.add_argument("--conn-max-age", type=_seconds, help="Django's CONN_MAX_AGE (seconds)")
    doctor.add_argument("--asgi", action="store_true", help="Django is served by an ASGI server")
    doctor.add_argument("--timeout", type=_positive_seconds, default=10.0,
                        help="seconds per connection (10)")  # fmt: skip
    doctor.add_argument("--json", action="store_true", help="print the report as JSON")
    add_debug(doctor)
    doctor.set_defaults(run=_doctor)


def add_debug(parser: argparse.ArgumentParser) -> None:
    """``--debug`` on a sub-command too (``poolwatch doctor ... --debug``)."""
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the traceback of an error, and debug logs")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, one sub-command per job."""
    parser = argparse.ArgumentParser(
        prog="poolwatch",
        description=DESCRIPTION,
        epilog=EXIT_STATUSES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"poolwatch {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of an error, and debug logs"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_demo(commands)
    _add_doctor(commands)
    add_monitoring_commands(commands)
    return parser


class _RedactingStream:
    """A text stream that masks secrets in everything written to it (see :mod:`_redact`)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(_redact.redact(text))
        return len(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _remember_secrets(args: argparse.Namespace) -> None:
    """Every credential the command may meet, so no output path can print it."""
    urls = ("database_url", "prometheus_url", "pgbouncer_url", "ruler_url", "reload_url",
            "otlp_endpoint")  # fmt: skip
    for name in urls:
        _redact.remember_url(getattr(args, name, None))
    for variable in ("GRAFANA_TOKEN", "MIMIR_TOKEN", "GRAFANA_URL"):
        value = os.environ.get(variable)
        if variable.endswith("_URL"):
            _redact.remember_url(value)
        else:
            _redact.remember(value)


def _log_handler(debug: bool) -> logging.Handler:
    """Logs to stderr through the redacting formatter (debug level with ``--debug``)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_redact.RedactingFormatter("%(name)s: %(levelname)s: %(message)s"))
    handler.setLevel(logging.DEBUG if debug else logging.WARNING)
    return handler


def _failed(command: str, message: str, debug: bool) -> None:
    if debug:
        sys.stderr.write(traceback.format_exc())
    first = " ".join(message.split()) or "failed"
    sys.stderr.write(f"poolwatch {command}: {first}\n")
    sys.stderr.flush()


def _os_error(exc: OSError) -> str:
    where = f": {exc.filename}" if exc.filename else ""
    return f"{exc.strerror or type(exc).__name__}{where}"


def run(args: argparse.Namespace) -> int:
    """Run the chosen command; every failure becomes one line and an exit status."""
    command = " ".join(str(part) for part in (args.command, getattr(args, "target", None)) if part)
    try:
        return int(args.run(args))
    except KeyboardInterrupt:
        _failed(command, "interrupted", args.debug)
        return EXIT_INTERRUPTED
    except CommandError as exc:
        _failed(command, str(exc), args.debug)
        return exc.status
    except OSError as exc:
        _failed(command, _os_error(exc), args.debug)
        return EXIT_FAILED
    except Exception as exc:  # noqa: BLE001 - the last resort: one line, never a traceback
        _failed(command, f"unexpected error: {type(exc).__name__}: {exc} (--debug shows where)",
                args.debug)  # fmt: skip
        return EXIT_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    streams = sys.stdout, sys.stderr
    sys.stdout = _RedactingStream(streams[0])
    sys.stderr = _RedactingStream(streams[1])
    root = logging.getLogger()
    handler, level = None, root.level
    try:
        args = build_parser().parse_args(argv)
        _remember_secrets(args)
        handler = _log_handler(args.debug)
        root.addHandler(handler)
        if args.debug:
            root.setLevel(logging.DEBUG)
        return run(args)
    finally:
        if handler is not None:
            root.removeHandler(handler)
        root.setLevel(level)
        sys.stdout, sys.stderr = streams


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
