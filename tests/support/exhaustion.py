"""The exhausted-pool scenario shared by the end-to-end tests and the detection-latency benchmark.

``tests/e2e/apps/exhaust_app.py`` holds its whole two-connection pool and keeps timing out; with
a leak threshold of ``LEAK_THRESHOLD_S`` the held connections also count as leaked. The pipeline
in front of Prometheus is either the minimal scrape collector or the shipped gateway's remote
write. Rules use 1 s evaluation and 2 s / 3 s ``for:``; Alertmanager waits 1 s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from poolwatch import catalog
from poolwatch.monitoring import alerts, names
from tests.support import pipeline
from tests.support.pipeline import Backends, Processes, Webhook

APP = pipeline.REPO / "tests" / "e2e" / "apps" / "exhaust_app.py"
SERVICE = "poolwatch-e2e-orders"
POOL = "orders"
#: Seconds the app keeps its pool exhausted.
APP_DURATION = 20
EXPORT_INTERVAL_MS = 500
#: Seconds a connection may be held before poolwatch reports it leaked.
LEAK_THRESHOLD_S = 2.0
TIMEOUT_ALERTS = {
    ("PoolwatchCheckoutTimeouts", "warning"),
    ("PoolwatchCheckoutTimeouts", "critical"),
    ("PoolwatchPoolSaturation", "warning"),
    ("PoolwatchPoolSaturation", "critical"),
}
#: The leak alert's critical threshold (more than 5 leaked) is out of reach of a 2-connection pool.
LEAK_ALERTS = {("PoolwatchConnectionsLeaked", "warning")}
#: The alerts that must arrive, by (alertname, severity).
EXPECTED = TIMEOUT_ALERTS | LEAK_ALERTS
#: Short intervals so the alerts fire within seconds; everything else keeps its default.
RULE_SETTINGS: dict[str, Any] = {
    "rule_interval": "1s",
    "rate_window": "30s",
    "thresholds": {
        "pool_saturation": {"warning_for": "2s", "critical_for": "3s"},
        "checkout_timeouts": {"warning_for": "2s", "critical_for": "3s"},
        "connections_leaked": {"warning_for": "2s", "critical_for": "3s"},
    },
}
INTERVALS = (
    f"app export {EXPORT_INTERVAL_MS} ms, leak threshold {LEAK_THRESHOLD_S:g} s, "
    "rule evaluation 1 s, for: 2 s warning / 3 s critical, Alertmanager group_wait 1 s"
)
FIRST_TIMEOUT_TIMEOUT = 60.0
#: Seconds after the app's first pool timeout by which every expected alert must have arrived.
ALERT_TIMEOUT = 60.0
#: The pool's series that a failure message shows.
POOL_SERIES = " or ".join(
    names.prometheus_name(metric)
    for metric in (
        catalog.CONNECTION_COUNT,
        catalog.CONNECTION_MAX,
        catalog.CONNECTION_TIMEOUTS,
        catalog.CONNECTION_LEAKED,
    )
)

Arrivals = dict[tuple[str, str], tuple[float, dict[str, Any], str]]


@dataclass(frozen=True)
class Detection:
    """When the trouble started in the app and when each alert reached the webhook (unix s)."""

    first_timeout: float
    first_leak: float
    arrivals: Arrivals

    def latencies(self) -> dict[tuple[str, str], float]:
        """Seconds from the first timeout (or leak, for leak alerts) to each expected alert."""
        return {
            key: self.arrivals[key][0]
            - (self.first_leak if key in LEAK_ALERTS else self.first_timeout)
            for key in sorted(EXPECTED)
        }


def start_scrape_pipeline(
    directory: Path, processes: Processes, webhook: Webhook
) -> tuple[Backends, str]:
    """A minimal collector with a scrape endpoint that Prometheus scrapes every second."""
    otlp, scrape, health = (pipeline.free_port() for _ in range(3))
    collector_config = pipeline.scrape_collector_config(
        directory / "otelcol.yaml", otlp, scrape, health
    )
    processes.start("collector", [pipeline.collector_binary(), f"--config={collector_config}"])
    backends = pipeline.start_backends(
        directory, processes, webhook, RULE_SETTINGS, scrape_port=scrape
    )
    pipeline.wait_for(
        "collector healthy",
        lambda: pipeline.http_ok(f"http://127.0.0.1:{health}/"),
        processes,
        pipeline.READY_TIMEOUT,
    )
    return backends, f"http://127.0.0.1:{otlp}"


def start_remote_write_pipeline(
    directory: Path, processes: Processes, webhook: Webhook
) -> tuple[Backends, str]:
    """collector/gateway.yaml remote-writing into Prometheus."""
    backends = pipeline.start_backends(directory, processes, webhook, RULE_SETTINGS)
    gateway = pipeline.start_collector(
        processes,
        "gateway",
        [pipeline.COLLECTOR_DIR / "gateway.yaml"],
        pipeline.gateway_env(backends),
    )
    return backends, gateway.otlp_http


def _first(app: pipeline.Started, prefix: str) -> float | None:
    found = app.lines_starting(prefix)
    return float(found[0]) if found else None


def state(backends: Backends, webhook: Webhook, started: float) -> str:
    """What has arrived so far, what Prometheus fires, and the pool series it holds."""
    arrived = {key: round(when - started, 2) for key, (when, _, _) in webhook.arrivals().items()}
    return (
        f"arrived at the webhook (s after the first timeout): {arrived}\n"
        f"alerts in prometheus: {backends.firing()}\n"
        f"series in prometheus: {str(backends.query(POOL_SERIES))[:3000]}"
    )


def exhaust(
    processes: Processes, webhook: Webhook, backends: Backends, otlp_http: str
) -> Detection:
    """Run the exhausting app; return once every expected alert has reached the webhook."""
    app = pipeline.start_app(
        processes,
        APP,
        SERVICE,
        otlp_http,
        EXPORT_INTERVAL_MS,
        POOLWATCH_APP_DB=str(processes.directory / "orders.db"),
        POOLWATCH_APP_DURATION=str(APP_DURATION),
        OTEL_PYTHON_POOLWATCH_LEAK_THRESHOLD=str(LEAK_THRESHOLD_S),
    )
    first_timeout = pipeline.wait_for(
        "the app's first pool timeout",
        lambda: _first(app, "FIRST_TIMEOUT "),
        processes,
        FIRST_TIMEOUT_TIMEOUT,
    )
    pipeline.wait_for(
        f"alerts {sorted(EXPECTED)} at the webhook",
        lambda: set(webhook.arrivals()) >= EXPECTED,
        processes,
        ALERT_TIMEOUT,
        lambda: state(backends, webhook, first_timeout),
    )
    held = _first(app, "HELD ")
    assert held is not None, app.tail()
    return Detection(first_timeout, held + LEAK_THRESHOLD_S, webhook.arrivals())


def assert_pool_alerts(detection: Detection) -> None:
    """Every expected alert went to the webhook's receiver with the pool's and service's labels."""
    for alertname, severity in sorted(EXPECTED):
        _, alert, receiver = detection.arrivals[(alertname, severity)]
        labels = alert["labels"]
        assert receiver == pipeline.RECEIVER
        assert labels["alertname"] == alertname, labels
        assert labels[alerts.ALERT_LABEL] == alertname, labels
        assert labels["severity"] == severity, labels
        assert labels[names.prometheus_label(catalog.POOL_NAME)] == POOL, labels
        assert labels[names.SERVICE_LABEL] == SERVICE, labels


def assert_wait_histogram_in_prometheus(backends: Backends) -> None:
    """The checkout waits reached Prometheus as a classic histogram under the standard name:
    ``_bucket`` series at the catalog's bounds and +Inf, a ``_count`` equal to +Inf, a ``_sum``."""
    base = names.prometheus_name(catalog.CONNECTION_WAIT_TIME)
    pool = f'{{{names.prometheus_label(catalog.POOL_NAME)}="{POOL}"}}'
    buckets = {
        float(series["metric"]["le"]): float(series["value"][1])
        for series in backends.query(f"{base}_bucket{pool}")
    }
    assert sorted(buckets) == [*catalog.WAIT_BUCKETS, math.inf], buckets
    assert buckets[math.inf] > 0
    # one query, so both sides come from the same scrape while the app keeps checking out
    inf = f'{{{names.prometheus_label(catalog.POOL_NAME)}="{POOL}",le="+Inf"}}'
    (difference,) = backends.query(f"{base}_bucket{inf} - ignoring(le) {base}_count{pool}")
    assert float(difference["value"][1]) == 0
    (total,) = backends.query(f"{base}_sum{pool}")
    assert float(total["value"][1]) > 0


def print_latencies(how: str, detection: Detection) -> None:
    """Seconds from the first pool timeout (leak) to each alert (informational)."""
    print(f"\nseconds from the first pool timeout (leak) to the alert at the webhook ({how}):")
    for (alertname, severity), seconds in detection.latencies().items():
        print(f"  {alertname} {severity}: {seconds:.2f}")
