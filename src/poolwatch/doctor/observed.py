"""What Prometheus saw of the pools: limits, peak usage, waits, hold times and arrival rates.

Every query is built from :mod:`poolwatch.monitoring.promql`, the same functions the dashboards
and alert rules use, so the doctor reads exactly the series poolwatch exports.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import httpx

from poolwatch import catalog
from poolwatch._redact import redact
from poolwatch.monitoring import promql
from poolwatch.monitoring.config import MonitoringConfig
from poolwatch.monitoring.names import SERVICE_LABEL, prometheus_name

PoolKey = tuple[str, str]


class PrometheusError(RuntimeError):
    """Prometheus could not be reached or refused a query."""


@dataclass(frozen=True)
class ObservedPool:
    """One pool of one service over the window, summed over its processes."""

    service: str
    pool: str
    processes: int
    max: float
    peak_used: float | None
    mean_wait: float | None
    mean_use: float | None
    checkouts_per_second: float | None
    timeouts_per_second: float | None

    @property
    def littles_law(self) -> float | None:
        """Connections the load keeps busy on average: arrival rate x mean use time."""
        if self.checkouts_per_second is None or self.mean_use is None:
            return None
        return self.checkouts_per_second * self.mean_use

    @property
    def needed(self) -> int | None:
        """The smallest whole number of connections that holds that average load."""
        load = self.littles_law
        return None if load is None else math.ceil(round(load, 9))

    def as_json(self) -> dict[str, Any]:
        """The pool's part of ``--json``."""
        return {**asdict(self), "littles_law": self.littles_law, "needed": self.needed}


@dataclass(frozen=True)
class Queries:
    """The PromQL the doctor asks, for one window and selector."""

    maximum: str
    processes: str
    peak_used: str
    mean_wait: str
    mean_use: str
    checkouts: str
    timeouts: str


def queries(window: str, selector: str = "") -> Queries:
    """Every query, over ``window`` (a PromQL duration such as ``1h``)."""
    scope = promql.alert_scope(
        MonitoringConfig(selector=selector, rate_window=window, recording_rules=False)
    )
    limit = scope.select(prometheus_name(catalog.CONNECTION_MAX))
    return Queries(
        maximum=promql.maximum(scope),
        processes=f"count by ({promql.BY_POOL}) ({limit})",
        peak_used=f"max_over_time(({promql.used(scope)})[{window}:])",
        mean_wait=promql.mean(scope, promql.WAIT),
        mean_use=promql.mean(scope, promql.USE),
        checkouts=promql.checkout_rate(scope),
        timeouts=promql.timeouts_rate(scope),
    )


class Prometheus:
    """A Prometheus HTTP API client for instant queries at one evaluation time."""

    def __init__(self, url: str, at: float | None = None, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.at = at
        self.timeout = timeout

    def query(self, expression: str) -> dict[PoolKey, float]:
        """``(service, pool) -> value`` for an instant vector query (NaN results dropped)."""
        params: dict[str, str] = {"query": expression}
        if self.at is not None:
            params["time"] = repr(self.at)
        try:
            response = httpx.get(f"{self.url}/api/v1/query", params=params, timeout=self.timeout)
            body = response.json()
        except (httpx.HTTPError, httpx.InvalidURL, ValueError) as exc:
            raise PrometheusError(f"{self.url}: {exc}") from exc
        if not isinstance(body, dict) or body.get("status") != "success":
            error = body.get("error") if isinstance(body, dict) else None
            raise PrometheusError(f"{self.url}: {error or redact(response.text)[:200]}")
        try:
            return _vector(body["data"]["result"])
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise PrometheusError(f"{self.url}: not a Prometheus query answer ({exc!r})") from None


def _vector(result: list[dict[str, Any]]) -> dict[PoolKey, float]:
    found = {}
    for sample in result:
        labels, value = sample["metric"], float(sample["value"][1])
        if not math.isnan(value):
            found[(labels.get(SERVICE_LABEL, ""), labels.get(promql.POOL, ""))] = value
    return found


def observe(prometheus: Prometheus, window: str, selector: str = "") -> list[ObservedPool]:
    """Every pool Prometheus holds a limit for, with what it saw over ``window``."""
    asked = queries(window, selector)
    results = {name: prometheus.query(expression) for name, expression in asdict(asked).items()}
    return [
        ObservedPool(
            service=service,
            pool=pool,
            processes=int(results["processes"].get((service, pool), 0)),
            max=limit,
            peak_used=results["peak_used"].get((service, pool)),
            mean_wait=results["mean_wait"].get((service, pool)),
            mean_use=results["mean_use"].get((service, pool)),
            checkouts_per_second=results["checkouts"].get((service, pool)),
            timeouts_per_second=results["timeouts"].get((service, pool)),
        )
        for (service, pool), limit in sorted(results["maximum"].items())
    ]
