"""``poolwatch doctor``: will this deployment's pools exhaust PostgreSQL, and are they sized right?

Reads the server's limits, timeouts and ``pg_stat_activity``, optionally what Prometheus saw of
the pools, and what the user says about the deployment; reports in plain words or JSON and exits
0 (ok), 1 (warnings), 2 (problems: something will exhaust) or 3 (a source could not be read).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from poolwatch._redact import redact
from poolwatch.doctor import checks, pgbouncer
from poolwatch.doctor.checks import Settings
from poolwatch.doctor.findings import (
    EXIT_OK,
    EXIT_PROBLEMS,
    EXIT_UNCHECKED,
    EXIT_WARNINGS,
    Finding,
    Level,
)
from poolwatch.doctor.observed import Prometheus, PrometheusError, observe
from poolwatch.doctor.report import Report
from poolwatch.doctor.server import Server, libpq_url, read

if TYPE_CHECKING:
    # Type only: the monitoring extra (PyYAML) is needed only to load one.
    from poolwatch.monitoring.config import MonitoringConfig

__all__ = [
    "EXIT_OK",
    "EXIT_PROBLEMS",
    "EXIT_UNCHECKED",
    "EXIT_WARNINGS",
    "Request",
    "Settings",
    "diagnose",
]


@dataclass(frozen=True)
class Request:
    """Where to look and what the user says about the deployment."""

    database_url: str
    settings: Settings
    prometheus_url: str | None = None
    window: str = "1h"
    selector: str = ""
    at: float | None = None
    timeout: float = 10.0
    #: PgBouncer between the app and PostgreSQL: its admin console (any database name).
    pgbouncer_url: str | None = None
    #: The monitoring config the alerts were generated from, to check against PgBouncer.
    monitoring: MonitoringConfig | None = None


#: URL schemes libpq reads (a SQLAlchemy driver suffix such as ``+psycopg`` is dropped).
POSTGRESQL_SCHEMES = ("postgresql", "postgres")


def _unchecked(code: str, message: str) -> Finding:
    return Finding(Level.UNCHECKED, code, redact(message))


def _url_problem(url: str) -> Finding | None:
    """Why ``url`` cannot be read at all: not PostgreSQL, no driver, or not a valid conninfo."""
    scheme, sep, _rest = url.partition("://")
    if sep and scheme.split("+", 1)[0].lower() not in POSTGRESQL_SCHEMES:
        return _unchecked("database.not_postgresql",
                          f"{scheme}:// is not PostgreSQL: the doctor reads PostgreSQL's limits "
                          "(give a postgresql:// URL or a libpq connection string)")  # fmt: skip
    try:
        from psycopg import conninfo
    except ImportError as missing:
        return _unchecked("database.driver_missing",
                          f"cannot read PostgreSQL: its driver is not installed ({missing.name} is "
                          "missing): pip install 'poolwatch[doctor]'")  # fmt: skip
    try:
        conninfo.conninfo_to_dict(libpq_url(url))
    except Exception as exc:  # noqa: BLE001 - psycopg.ProgrammingError, ValueError: both "invalid"
        return _unchecked("database.invalid_url", f"invalid --database-url: {str(exc).strip()}")
    return None


def diagnose(request: Request) -> Report:
    """Read every source and apply every rule (those a source could not feed are skipped)."""
    report = Report(redact(request.database_url))
    server = _server(request, report)
    if request.prometheus_url:
        prometheus = Prometheus(request.prometheus_url, request.at, request.timeout)
        report.window = request.window
        try:
            report.pools = observe(prometheus, request.window, request.selector)
        except PrometheusError as exc:
            report.findings.append(
                _unchecked("prometheus.unreachable", f"cannot query Prometheus: {exc}")
            )
    if server is not None:
        report.server = server
        report.capacity = checks.capacity(request.settings, server, report.pools)
        if request.pgbouncer_url:
            # The apps connect to PgBouncer; PgBouncer's pools are what PostgreSQL must fit.
            report.findings += pgbouncer.check(request.pgbouncer_url, request.timeout, server,
                                               request.settings, report.capacity,
                                               monitoring=request.monitoring)  # fmt: skip
        else:
            report.findings += checks.capacity_findings(report.capacity)
        report.findings += checks.settings_findings(request.settings, server)
    for pool in report.pools:
        report.findings += checks.pool_findings(pool)
    # Every source's messages can quote a connection string: one redaction pass over them all.
    report.findings = [replace(f, message=redact(f.message)) for f in report.findings]
    report.findings.sort(key=lambda finding: -finding.level.value)
    return report


def _server(request: Request, report: Report) -> Server | None:
    """What PostgreSQL says, or None with the finding that says why it could not be read."""
    problem = _url_problem(request.database_url)
    if problem is not None:
        report.findings.append(problem)
        return None
    try:
        return read(request.database_url, request.timeout)
    except Exception as exc:  # noqa: BLE001 - psycopg's errors, DNS: all "cannot read"
        report.findings.append(
            _unchecked("database.unreachable", f"cannot read PostgreSQL: {str(exc).strip()}")
        )
        return None
