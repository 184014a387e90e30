"""Reading poolwatch's telemetry back in tests: per-pool values, bucket counts, and polling."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from poolwatch import catalog
from poolwatch.testing import Capture


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``condition`` until it holds, failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.01)


def counts(telemetry: Capture, pool: str) -> tuple[int, int]:
    """(used, idle) as poolwatch reports them for ``pool``."""
    used = telemetry.value(
        catalog.CONNECTION_COUNT.name,
        attributes={catalog.POOL_NAME: pool, catalog.STATE: catalog.STATE_USED},
    )
    idle = telemetry.value(
        catalog.CONNECTION_COUNT.name,
        attributes={catalog.POOL_NAME: pool, catalog.STATE: catalog.STATE_IDLE},
    )
    return used, idle


def gauge(telemetry: Capture, metric: catalog.Metric, pool: str) -> Any:
    """The value of a per-pool metric."""
    return telemetry.value(metric.name, attributes={catalog.POOL_NAME: pool})


def buckets(telemetry: Capture, metric: catalog.Metric, pool: str) -> dict[str, int]:
    """Cumulative counts by ``le`` for an aggregated histogram."""
    return {
        point.attributes[catalog.LE]: point.value
        for point in telemetry.metrics().get(metric.name, [])
        if point.attributes.get(catalog.POOL_NAME) == pool
    }


def observed(telemetry: Capture, metric: catalog.Metric, pool: str) -> int:
    """How many values an aggregated histogram holds (its ``+Inf`` bucket)."""
    return buckets(telemetry, metric, pool).get("+Inf", 0)
