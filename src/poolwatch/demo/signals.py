"""The demo's OpenTelemetry SDK: providers, the events feed, and per-pool readings of the metrics.

One in-memory metric reader serves both the terminal view and the destination: every collection
is shown and exported, so what a user loads elsewhere is exactly what they watched.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import (
    BatchLogRecordProcessor,
    LogRecordExporter,
    LogRecordExportResult,
    SimpleLogRecordProcessor,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricsData
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from poolwatch import catalog
from poolwatch._histogram import format_bound, quantile
from poolwatch.demo.export import Destination

SERVICE_NAME = "poolwatch-demo"


@dataclass(frozen=True)
class Event:
    """One event as the demo saw it: when (seconds since start), its name, body, attributes."""

    at: float
    name: str
    body: str
    attributes: dict[str, Any]

    @property
    def pool(self) -> str | None:
        """The pool the event is about (a conflict's is the pool whose timeout caused it)."""
        value = self.attributes.get(catalog.POOL_NAME) or self.attributes.get(
            catalog.CONFLICT_CAUSE_POOL
        )
        return None if value is None else str(value)

    @property
    def where(self) -> str:
        """The code location the event points at, from its ``code.*`` attributes or holders."""
        attributes = self.attributes
        function = attributes.get(catalog.CODE_FUNCTION)
        if function:
            path = str(attributes.get(catalog.CODE_FILE, "?")).rsplit("/", 1)[-1]
            return f"{function} ({path}:{attributes.get(catalog.CODE_LINE, '?')})"
        holders = attributes.get(catalog.POOL_HOLDERS)
        if holders:
            return _file_names(f"held by {next(iter(holders))}")
        site = attributes.get(catalog.SESSION_CURRENT_SITE)
        return _file_names(str(site)) if site else ""


_DIRECTORIES = re.compile(r"(?:[^\s/]*/)+(?=[^\s/]+)")


def _file_names(text: str) -> str:
    """``held by 2 x /srv/app/jobs.py in run`` -> ``held by 2 x jobs.py in run``: fits a line."""
    return _DIRECTORIES.sub("", text)


class EventFeed(LogRecordExporter):
    """Keeps every poolwatch event, stamped with the demo's clock, for the view and summary."""

    def __init__(self, started: float) -> None:
        self._started = started
        self._lock = threading.Lock()
        self._events: list[Event] = []

    def export(self, batch: Sequence[Any]) -> LogRecordExportResult:
        now = time.monotonic() - self._started
        for item in batch:
            record = getattr(item, "log_record", item)
            name = getattr(record, "event_name", None)
            if name:
                event = Event(now, name, str(record.body), dict(record.attributes or {}))
                with self._lock:
                    self._events.append(event)
        return LogRecordExportResult.SUCCESS

    def events(self) -> list[Event]:
        """Every event so far, oldest first."""
        with self._lock:
            return list(self._events)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Events are kept as they arrive."""
        return True

    def shutdown(self) -> None:
        """Nothing to release."""


@dataclass
class Providers:
    """The three SDK providers, the metric reader and the events feed."""

    meter_provider: MeterProvider
    tracer_provider: TracerProvider
    logger_provider: LoggerProvider
    reader: InMemoryMetricReader
    feed: EventFeed

    @property
    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``instrument_*``."""
        return {
            "meter_provider": self.meter_provider,
            "tracer_provider": self.tracer_provider,
            "logger_provider": self.logger_provider,
        }

    def shutdown(self) -> None:
        """Flush spans and events to the destination and stop."""
        self.tracer_provider.shutdown()
        self.logger_provider.shutdown()
        self.meter_provider.shutdown()


def providers(destination: Destination, started: float) -> Providers:
    """SDK providers whose spans and events go to ``destination`` and events to a feed."""
    resource = Resource.create({"service.name": SERVICE_NAME})
    reader = InMemoryMetricReader()
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(
        BatchSpanProcessor(destination.span_exporter, schedule_delay_millis=1000)
    )
    feed = EventFeed(started)
    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(feed))
    logger_provider.add_log_record_processor(
        BatchLogRecordProcessor(destination.log_exporter, schedule_delay_millis=1000)
    )
    return Providers(
        MeterProvider(metric_readers=[reader], resource=resource),
        tracer_provider,
        logger_provider,
        reader,
        feed,
    )


@dataclass
class PoolReading:
    """What poolwatch reports for one pool at one collection."""

    used: int = 0
    idle: int = 0
    max: int = 0
    pending: int = 0
    timeouts: int = 0
    leaks: int = 0
    leaked_now: int = 0
    wait: dict[str, int] = field(default_factory=dict)

    @property
    def checkouts(self) -> int:
        """Checkouts that ended (served or timed out)."""
        return self.wait.get("+Inf", 0)

    def wait_p99(self, since: PoolReading | None = None) -> float | None:
        """The 99th percentile of checkout waits (since an earlier reading, if given)."""
        earlier = since.wait if since is not None else {}
        pairs = [(le, count - earlier.get(le, 0)) for le, count in self.wait.items()]
        pairs.sort(key=lambda pair: float(pair[0]))
        return quantile(0.99, pairs)


_FIELDS: dict[str, str] = {
    catalog.CONNECTION_MAX.name: "max",
    catalog.CONNECTION_PENDING_REQUESTS.name: "pending",
    catalog.CONNECTION_TIMEOUTS.name: "timeouts",
    catalog.CONNECTION_LEAKS.name: "leaks",
    catalog.CONNECTION_LEAKED.name: "leaked_now",
}


def readings(data: MetricsData | None) -> dict[str, PoolReading]:
    """Per-pool readings from one collection."""
    pools: dict[str, PoolReading] = {}
    for name, attributes, value in _points(data):
        pool = attributes.get(catalog.POOL_NAME)
        if pool is None:
            continue
        reading = pools.setdefault(str(pool), PoolReading())
        if name in _FIELDS:
            setattr(reading, _FIELDS[name], int(value))
        elif name == catalog.CONNECTION_COUNT.name:
            setattr(reading, str(attributes.get(catalog.STATE)), int(value))
        elif name == catalog.CONNECTION_WAIT_TIME.name:
            reading.wait = _cumulative(value)
    return pools


def _cumulative(point: Any) -> dict[str, int]:
    """``{le: count at or below le}`` of an explicit-bucket histogram point."""
    result: dict[str, int] = {}
    running = 0
    bounds = [format_bound(bound) for bound in point.explicit_bounds] + ["+Inf"]
    for le, count in zip(bounds, point.bucket_counts, strict=True):
        running += count
        result[le] = running
    return result


def _points(data: MetricsData | None) -> list[tuple[str, dict[str, Any], Any]]:
    if data is None:
        return []
    return [
        (metric.name, dict(point.attributes or {}), getattr(point, "value", point))
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        for point in metric.data.data_points
    ]
