"""The whole pipeline with real processes on loopback: an exhausted pool becomes alerts.

``apps/exhaust_app.py`` runs under ``opentelemetry-instrument`` (poolwatch found through its
entry point) and exports OTLP/HTTP every 500 ms to the collector built by collector/build.sh,
running a minimal test config (otlp receiver -> prometheus exporter). Debian's Prometheus scrapes
the collector every second and evaluates poolwatch's generated rules every second, with short
``for:`` durations and rate window from the MonitoringConfig API; it sends alerts to Debian's
Alertmanager, which routes everything to a webhook served by the test.

The test asserts that both severities of the checkout-timeout and pool-saturation alerts, and the
leak warning (the held connections pass a 2 s leak threshold), arrive with the pool's and the
service's labels, and prints how long after the app's first pool timeout (first leak) each one
arrived (informational; no timing is asserted). Every process listens on 127.0.0.1 only and is
killed in teardown, also when the test fails; a failure message carries the tail of every
process's log. The harness lives in ``tests/support/pipeline.py`` and
``tests/support/exhaustion.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import exhaustion
from tests.support.pipeline import Processes, Webhook


@pytest.mark.slow
def test_exhausted_pool_alerts_reach_the_webhook(
    tmp_path: Path, processes: Processes, webhook: Webhook
) -> None:
    """An exhausted pool's timeout, saturation and leak alerts reach the webhook with its labels;
    its checkout waits reach Prometheus as db_client_connection_wait_time_seconds_bucket/_sum/_count."""
    backends, otlp_http = exhaustion.start_scrape_pipeline(tmp_path, processes, webhook)

    detection = exhaustion.exhaust(processes, webhook, backends, otlp_http)

    exhaustion.assert_pool_alerts(detection)
    exhaustion.assert_wait_histogram_in_prometheus(backends)
    exhaustion.print_latencies(f"scrape every 1 s; {exhaustion.INTERVALS}", detection)
