"""Test with poolwatch: in-memory telemetry, a clock you move, and a leak check you call.

- ``with capture() as telemetry:`` gives SDK providers backed by in-memory readers and
  exporters; pass them to ``instrument_*`` and read back exact metric points, spans and events.
- ``with fake_clock() as clock:`` makes every pool instrumented inside the block measure time
  with ``clock`` and holds the leak watchdog; ``clock.advance(31)`` then :func:`check_leaks`
  reports a connection held past a 30 s threshold at once, without waiting.
- :func:`reset` undoes every instrumentation between tests.
- As a pytest plugin (``-p poolwatch.testing``, or ``pytest_plugins = ["poolwatch.testing"]``
  in a ``conftest.py``): fixtures ``poolwatch_telemetry`` (a :class:`Capture`, reset after the
  test) and ``poolwatch_clock`` (a :class:`FakeClock`, as ``fake_clock()``).

Needs the OpenTelemetry SDK (``pip install poolwatch[sdk]``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from poolwatch import _leaks, _state

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


class FakeClock:
    """A monotonic clock in seconds that moves only when told to."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock ``seconds`` forward."""
        if seconds < 0:
            raise ValueError(f"a monotonic clock cannot go back ({seconds} s)")
        self.now += seconds


@contextmanager
def fake_clock(start: float = 1000.0) -> Iterator[FakeClock]:
    """Pools instrumented inside the block use a :class:`FakeClock`; the leak watchdog is held
    meanwhile, so leaks are found only when :func:`check_leaks` is called."""
    clock = FakeClock(start)
    previous = _state.clock
    _state.clock = clock
    watchdog = _leaks.watchdog()
    watchdog.pause()
    try:
        yield clock
    finally:
        _state.clock = previous
        watchdog.pause(False)


def check_leaks() -> None:
    """Run the leak check now, on every live instrumentation (what the watchdog does)."""
    for instrumentation in _state.live():
        instrumentation.check_leaks()


def reset() -> None:
    """Undo every poolwatch instrumentation in this process and forget its state: adapters
    uninstalled, instrumentations shut down, internal errors and warnings forgotten, pool
    names released. Call it between tests."""
    _state.reset()


@contextmanager
def capture() -> Iterator[Capture]:
    """In-memory providers for the duration of the block."""
    sink = Capture()
    try:
        yield sink
    finally:
        sink.shutdown()


try:
    import pytest
except ImportError:  # pragma: no cover - pytest is only needed for the plugin
    pass
else:

    @pytest.fixture
    def poolwatch_telemetry() -> Iterator[Capture]:
        """In-memory providers to pass to ``instrument_*``; poolwatch is reset afterwards."""
        sink = Capture()
        try:
            yield sink
        finally:
            reset()
            sink.shutdown()

    @pytest.fixture
    def poolwatch_clock() -> Iterator[FakeClock]:
        """A clock for pools instrumented during the test; the watchdog is held meanwhile."""
        with fake_clock() as clock:
            yield clock
