"""``poolwatch doctor``: will this deployment's pools exhaust PostgreSQL, and are they sized right?

Reads the server's limits, timeouts and ``pg_stat_activity``, optionally what Prometheus saw of
the pools, and what the user says about the deployment; reports in plain words or JSON and exits
0 (ok), 1 (warnings), 2 (problems: something will exhaust) or 3 (a source could not be read).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

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
from poolwatch.doctor.server import read

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


def _redacted(url: str) -> str:
    """The URL without its password, nor its query string, which can carry one (``?password=``)."""
    url = url.partition("?")[0]
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit(parts._replace(netloc=user + netloc))


def diagnose(request: Request) -> Report:
    """Read every source and apply every rule."""
    report = Report(_redacted(request.database_url))
    try:
        server = read(request.database_url, request.timeout)
    except Exception as exc:  # noqa: BLE001 - psycopg's errors, DNS, bad URLs: all "cannot read"
        report.findings.append(Finding(Level.UNCHECKED, "database.unreachable",
                                       f"cannot read PostgreSQL: {str(exc).strip()}"))  # fmt: skip
        return report
    report.server = server
    if request.prometheus_url:
        prometheus = Prometheus(request.prometheus_url, request.at, request.timeout)
        report.window = request.window
        try:
            report.pools = observe(prometheus, request.window, request.selector)
        except PrometheusError as exc:
            report.findings.append(Finding(Level.UNCHECKED, "prometheus.unreachable",
                                           f"cannot query Prometheus: {exc}"))  # fmt: skip
    report.capacity = checks.capacity(request.settings, server, report.pools)
    if request.pgbouncer_url:
        # The apps connect to PgBouncer; PgBouncer's pools are what PostgreSQL must fit.
        report.findings += pgbouncer.check(request.pgbouncer_url, request.timeout, server,
                                           request.settings, report.capacity)  # fmt: skip
    else:
        report.findings += checks.capacity_findings(report.capacity)
    for pool in report.pools:
        report.findings += checks.pool_findings(pool)
    report.findings += checks.settings_findings(request.settings, server)
    report.findings.sort(key=lambda finding: -finding.level.value)
    return report
