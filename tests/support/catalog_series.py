"""Every catalog metric as an OTLP/JSON document, and the Prometheus series the collector made of it.

``tests/monitoring/fixtures/collector_prometheus_names.json`` holds the series and label names
scraped from the poolwatch collector build after feeding it :func:`otlp_document`; the names
tests and the remote-write test compare against it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from poolwatch import catalog
from poolwatch.monitoring import names

FIXTURE = Path(__file__).parents[1] / "monitoring" / "fixtures" / "collector_prometheus_names.json"
POOL_NAME = "postgresql://app@db:5432/shop"


def scraped_series() -> dict[str, list[str]]:
    """Series name -> label names, as the fixture recorded them."""
    data: dict[str, list[str]] = json.loads(FIXTURE.read_text())["series"]
    return data


def otlp_document() -> dict[str, Any]:
    """Every catalog metric as one OTLP/JSON data point of its kind."""
    now = time.time_ns()

    def attributes(values: dict[str, str]) -> list[dict[str, Any]]:
        return [{"key": k, "value": {"stringValue": v}} for k, v in values.items()]

    metrics = []
    for metric in names.all_metrics():
        point: dict[str, Any] = {
            "attributes": attributes(
                {catalog.POOL_NAME: POOL_NAME, catalog.LE: "+Inf"}
                if metric.name.endswith(".bucket")
                else {catalog.POOL_NAME: POOL_NAME}
            ),
            "startTimeUnixNano": str(now - 60_000_000_000),
            "timeUnixNano": str(now),
        }
        entry: dict[str, Any] = {"name": metric.name, "unit": metric.unit,
                                 "description": metric.description}  # fmt: skip
        if metric.kind is catalog.Kind.HISTOGRAM:
            point |= {"count": "2", "sum": 0.5, "bucketCounts": ["1", "1"], "explicitBounds": [0.1]}
            entry["histogram"] = {"aggregationTemporality": 2, "dataPoints": [point]}
        else:
            entry["sum"] = {"aggregationTemporality": 2, "dataPoints": [point | {"asDouble": 1.0}],
                            "isMonotonic": metric.kind is catalog.Kind.COUNTER}  # fmt: skip
        metrics.append(entry)
    resource = attributes({"service.name": "shop", "service.instance.id": "web-1"})
    return {"resourceMetrics": [{"resource": {"attributes": resource}, "scopeMetrics": [
        {"scope": {"name": catalog.INSTRUMENTATION_SCOPE}, "metrics": metrics}]}]}  # fmt: skip
