"""Capture poolwatch's telemetry in memory: for poolwatch's own tests and for users' tests.

``with capture() as telemetry:`` gives SDK providers backed by in-memory readers and exporters;
pass them to ``instrument_*`` and read back exact metric points, spans and events. Needs the
OpenTelemetry SDK (``pip install poolwatch[sdk]``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

try:
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
except ImportError as missing:  # pragma: no cover - depends on the environment
    raise ImportError(
        "poolwatch.testing needs the OpenTelemetry SDK: pip install 'poolwatch[sdk]'"
    ) from missing

try:  # renamed in SDK 1.39; the old name warns from then on
    from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter as _InMemoryLogs
except ImportError:  # pragma: no cover - older SDKs
    from opentelemetry.sdk._logs.export import InMemoryLogExporter as _InMemoryLogs


@dataclass(frozen=True)
class Point:
    """One metric data point: its attributes and its value (a number, or a histogram's data)."""

    attributes: Mapping[str, Any]
    value: Any


class Capture:
    """SDK providers wired to in-memory sinks, with readers that return plain values."""

    def __init__(self) -> None:
        self.metric_reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.metric_reader])
        self.span_exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.span_exporter))
        self.log_exporter = _InMemoryLogs()  # type: ignore[no-untyped-call]
        self.logger_provider = LoggerProvider()
        self.logger_provider.add_log_record_processor(SimpleLogRecordProcessor(self.log_exporter))

    @property
    def providers(self) -> dict[str, Any]:
        """Keyword arguments for ``instrument_*(**telemetry.providers)``."""
        return {
            "meter_provider": self.meter_provider,
            "tracer_provider": self.tracer_provider,
            "logger_provider": self.logger_provider,
        }

    def metrics(self) -> dict[str, list[Point]]:
        """Collect now: every metric by name, each with its points."""
        data = self.metric_reader.get_metrics_data()
        found: dict[str, list[Point]] = {}
        if data is None:
            return found
        for resource_metrics in data.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    points = found.setdefault(metric.name, [])
                    points.extend(_point(p) for p in metric.data.data_points)
        return found

    def value(self, name: str, **attributes: Any) -> Any:
        """The value of the one point of ``name`` whose attributes include ``attributes``.

        Attribute keys use underscores for dots (``db_client_connection_state="used"``) or pass
        a dict as ``attributes={"db.client.connection.state": "used"}``.
        """
        wanted = dict(attributes.pop("attributes", {}))
        wanted.update({key.replace("_", "."): value for key, value in attributes.items()})
        matches = [
            point
            for point in self.metrics().get(name, [])
            if all(point.attributes.get(key) == value for key, value in wanted.items())
        ]
        if len(matches) != 1:
            raise LookupError(f"{len(matches)} points of {name} match {wanted}")
        return matches[0].value

    def spans(self, name: str | None = None) -> list[ReadableSpan]:
        """Finished spans, optionally only those called ``name``."""
        spans = list(self.span_exporter.get_finished_spans())
        return [span for span in spans if name is None or span.name == name]

    def events(self, name: str | None = None) -> list[Any]:
        """Emitted log records (events), optionally only those whose ``event_name`` is ``name``."""
        records: list[Any] = [
            getattr(item, "log_record", item) for item in self.log_exporter.get_finished_logs()
        ]
        return [record for record in records if name is None or record.event_name == name]

    def clear(self) -> None:
        """Forget finished spans and events (metrics are cumulative and stay)."""
        self.span_exporter.clear()
        self.log_exporter.clear()

    def shutdown(self) -> None:
        """Shut the providers down."""
        self.meter_provider.shutdown()
        self.tracer_provider.shutdown()
        self.logger_provider.shutdown()


def _point(point: Any) -> Point:
    attributes = dict(point.attributes or {})
    if hasattr(point, "bucket_counts"):
        value: Any = {
            "count": point.count,
            "sum": point.sum,
            "bounds": tuple(point.explicit_bounds),
            "buckets": tuple(point.bucket_counts),
        }
    elif hasattr(point, "positive"):
        value = {
            "count": point.count,
            "sum": point.sum,
            "scale": point.scale,
            "zero": point.zero_count,
            "offset": point.positive.offset,
            "buckets": tuple(point.positive.bucket_counts),
        }
    else:
        value = point.value
    return Point(attributes, value)


@contextmanager
def capture() -> Iterator[Capture]:
    """In-memory providers for the duration of the block."""
    sink = Capture()
    try:
        yield sink
    finally:
        sink.shutdown()
