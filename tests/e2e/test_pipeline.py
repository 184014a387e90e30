"""The whole pipeline with real processes on loopback: an exhausted pool becomes alerts.

``apps/exhaust_app.py`` runs under ``opentelemetry-instrument`` (poolwatch found through its
entry point) and exports OTLP/HTTP every 500 ms to the collector built by collector/build.sh,
running a minimal test config (otlp receiver -> prometheus exporter). Debian's Prometheus scrapes
the collector every second and evaluates poolwatch's generated rules every second, with short
``for:`` durations and rate window from the MonitoringConfig API; it sends alerts to Debian's
Alertmanager, which routes everything to a webhook served by the test.

The test asserts that both severities of the checkout-timeout and pool-saturation alerts arrive
with the pool's and the service's labels, and prints how long after the app's first pool timeout
each one arrived (informational; no timing is asserted). Every process listens on 127.0.0.1 only
and is killed in teardown, also when the test fails; a failure message carries the tail of every
process's log. The harness lives in ``tests/support/pipeline.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support import pipeline
from tests.support.pipeline import Processes, Webhook

APP = Path(__file__).parent / "apps" / "exhaust_app.py"
SERVICE = "poolwatch-e2e-orders"
POOL = "orders"
#: Seconds the app keeps its pool exhausted.
APP_DURATION = 20
EXPORT_INTERVAL_MS = 500
#: The alerts that must arrive, by (alertname, severity).
EXPECTED = {
    ("PoolwatchCheckoutTimeouts", "warning"),
    ("PoolwatchCheckoutTimeouts", "critical"),
    ("PoolwatchPoolSaturation", "warning"),
    ("PoolwatchPoolSaturation", "critical"),
}
#: Short intervals so the alerts fire within seconds; everything else keeps its default.
RULE_SETTINGS: dict[str, Any] = {
    "rule_interval": "1s",
    "rate_window": "30s",
    "thresholds": {
        "pool_saturation": {"warning_for": "2s", "critical_for": "3s"},
        "checkout_timeouts": {"warning_for": "2s", "critical_for": "3s"},
    },
}
FIRST_TIMEOUT_TIMEOUT = 60.0
#: Seconds after the app's first pool timeout by which every expected alert must have arrived.
ALERT_TIMEOUT = 60.0
POOL_SERIES = (
    "db_client_connection_count or db_client_connection_max or db_client_connection_timeouts_total"
)


def first_timeout(app: pipeline.Started) -> float | None:
    """When the app's first checkout timed out (unix seconds), once it has said so."""
    found = app.lines_starting("FIRST_TIMEOUT ")
    return float(found[0]) if found else None


def state(backends: pipeline.Backends, webhook: Webhook, started: float) -> str:
    """What has arrived so far, what Prometheus fires, and the pool series it holds."""
    arrived = {key: round(when - started, 2) for key, (when, _, _) in webhook.arrivals().items()}
    return (
        f"arrived at the webhook (s after the first timeout): {arrived}\n"
        f"alerts in prometheus: {backends.firing()}\n"
        f"series in prometheus: {str(backends.query(POOL_SERIES))[:3000]}"
    )


def exhaust_and_wait_for_alerts(
    processes: Processes, webhook: Webhook, backends: pipeline.Backends, otlp_http: str
) -> tuple[float, dict[tuple[str, str], tuple[float, dict[str, Any], str]]]:
    """Run the exhausting app; return its first timeout and the alerts once all have arrived."""
    app = pipeline.start_app(
        processes,
        APP,
        SERVICE,
        otlp_http,
        EXPORT_INTERVAL_MS,
        POOLWATCH_APP_DB=str(processes.directory / "orders.db"),
        POOLWATCH_APP_DURATION=str(APP_DURATION),
    )
    pipeline.wait_for(
        "the app's first pool timeout",
        lambda: first_timeout(app) is not None,
        processes,
        FIRST_TIMEOUT_TIMEOUT,
    )
    started = first_timeout(app)
    assert started is not None
    pipeline.wait_for(
        f"alerts {sorted(EXPECTED)} at the webhook",
        lambda: set(webhook.arrivals()) >= EXPECTED,
        processes,
        ALERT_TIMEOUT,
        lambda: state(backends, webhook, started),
    )
    return started, webhook.arrivals()


def assert_pool_alerts(arrivals: dict[tuple[str, str], tuple[float, dict[str, Any], str]]) -> None:
    """Every expected alert went to the webhook's receiver with the pool's and service's labels."""
    for alertname, severity in sorted(EXPECTED):
        _, alert, receiver = arrivals[(alertname, severity)]
        labels = alert["labels"]
        assert receiver == pipeline.RECEIVER
        assert labels["alertname"] == alertname, labels
        assert labels["poolwatch_alert"] == alertname, labels
        assert labels["severity"] == severity, labels
        assert labels["db_client_connection_pool_name"] == POOL, labels
        assert labels["job"] == SERVICE, labels


def print_latencies(how: str, started: float, arrivals: dict[Any, tuple[float, Any, Any]]) -> None:
    """Seconds from the first pool timeout to each alert (informational)."""
    print(f"\nseconds from the app's first pool timeout to the alert at the webhook ({how}):")
    for key in sorted(EXPECTED):
        print(f"  {key[0]} {key[1]}: {arrivals[key][0] - started:.2f}")


@pytest.mark.slow
def test_exhausted_pool_alerts_reach_the_webhook(
    tmp_path: Path, processes: Processes, webhook: Webhook
) -> None:
    """An exhausted pool's timeout and saturation alerts reach the webhook with the pool's labels."""
    otlp, scrape, health = (pipeline.free_port() for _ in range(3))
    collector_config = pipeline.scrape_collector_config(
        tmp_path / "otelcol.yaml", otlp, scrape, health
    )
    processes.start("collector", [pipeline.collector_binary(), f"--config={collector_config}"])
    backends = pipeline.start_backends(
        tmp_path, processes, webhook, RULE_SETTINGS, scrape_port=scrape
    )
    pipeline.wait_for(
        "collector healthy",
        lambda: pipeline.http_ok(f"http://127.0.0.1:{health}/"),
        processes,
        pipeline.READY_TIMEOUT,
    )

    started, arrivals = exhaust_and_wait_for_alerts(
        processes, webhook, backends, f"http://127.0.0.1:{otlp}"
    )

    assert_pool_alerts(arrivals)
    print_latencies(
        f"export {EXPORT_INTERVAL_MS}ms, scrape 1s, evaluation 1s, for 2s warning / 3s critical, "
        "group_wait 1s",
        started,
        arrivals,
    )
