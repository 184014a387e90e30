"""A child forked while the SDK's export thread was exporting still exports (poolwatch._sdk_fork)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    PeriodicExportingMetricReader,
)

from poolwatch import _sdk_fork, _state
from tests.forking.test_fork import in_child


class SlowExporter(MetricExporter):
    """Blocks inside ``export`` until released, so a fork can land in the middle of one."""

    def __init__(self) -> None:
        super().__init__()
        self.inside = threading.Event()
        self.release = threading.Event()
        self.pids: list[int] = []

    def export(self, metrics_data: Any, timeout_millis: float = 10_000, **_: Any) -> Any:
        self.pids.append(os.getpid())
        if os.getpid() == self.parent:
            self.inside.set()
            self.release.wait(10)
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **_: Any) -> None:
        return None

    parent = os.getpid()


def _exporting_provider() -> tuple[MeterProvider, PeriodicExportingMetricReader, SlowExporter]:
    exporter = SlowExporter()
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    provider.get_meter("test").create_counter("c").add(1)
    return provider, reader, exporter


def _exports_in_child(
    reader: PeriodicExportingMetricReader, exporter: SlowExporter
) -> dict[str, Any]:
    done = threading.Event()

    def flush() -> None:
        reader.collect(timeout_millis=2_000)
        done.set()

    threading.Thread(target=flush, daemon=True).start()
    exported = done.wait(3)
    return {"exported": exported, "in_child": exporter.pids.count(os.getpid())}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_child_forked_during_a_slow_export_exports_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The fork waits up to EXPORT_WAIT, then the child replaces the lock the export held."""
    monkeypatch.setattr(_sdk_fork, "EXPORT_WAIT", 0.1)
    provider, reader, exporter = _exporting_provider()
    _sdk_fork.watch(provider)
    SlowExporter.parent = os.getpid()
    exporting = threading.Thread(target=reader.collect, daemon=True)
    exporting.start()
    assert exporter.inside.wait(5)
    try:
        result = in_child(lambda: _exports_in_child(reader, exporter))
    finally:
        exporter.release.set()
        exporting.join(5)
        provider.shutdown()

    assert result == {"exported": True, "in_child": 1}
    assert not reader._export_lock.locked()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_fork_waits_for_a_short_export_in_progress() -> None:
    """An export that ends within EXPORT_WAIT ends before the fork: the child's lock is free."""
    provider, reader, exporter = _exporting_provider()
    _sdk_fork.watch(provider)
    SlowExporter.parent = os.getpid()
    exporting = threading.Thread(target=reader.collect, daemon=True)
    exporting.start()
    assert exporter.inside.wait(5)
    threading.Timer(0.2, exporter.release.set).start()
    try:
        result = in_child(lambda: {"free": not reader._export_lock.locked()})
    finally:
        exporter.release.set()
        exporting.join(5)
        provider.shutdown()

    assert result == {"free": True}


def test_a_provider_without_the_private_locks_is_loud(caplog: pytest.LogCaptureFixture) -> None:
    """A provider lacking the SDK attributes is warned about and counted, not watched."""
    from poolwatch import _guard

    class Bare:
        _metric_readers: Sequence[Any] = ()

    _state.warned.discard("sdk_fork:hooks")
    before = _guard.error_counts().get("sdk_fork.hooks", 0)
    _sdk_fork.watch(Bare())

    assert _guard.error_counts().get("sdk_fork.hooks", 0) == before + 1
    assert "_export_lock" in caplog.text


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_child_exports_on_its_own_connection_not_its_parents() -> None:
    """The OTLP/HTTP exporter's keep-alive connection stays the parent's: a forked child
    exports on a new one (sharing it, parent and child wrote into one TCP stream)."""
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

    from tests.support.otlp_receiver import OtlpReceiver

    with OtlpReceiver() as receiver:
        exporter = OTLPMetricExporter(endpoint=f"{receiver.endpoint}/v1/metrics")
        reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
        provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
        provider.get_meter("test").create_counter("c").add(1)
        _sdk_fork.watch(provider)
        try:
            reader.collect(timeout_millis=5_000)  # the parent's connection, kept alive
            result = in_child(lambda: {"exported": reader.collect(timeout_millis=5_000) is None})
            reader.collect(timeout_millis=5_000)
        finally:
            provider.shutdown()
        parent, child, parent_again = receiver.client_ports()[:3]

    assert result == {"exported": True}
    assert receiver.errors == []
    assert len(receiver.metric_exports()) >= 3
    assert parent_again == parent
    assert child != parent


def test_an_http_exporter_without_a_known_transport_is_loud(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An OTLP/HTTP exporter whose connections poolwatch cannot find is warned about and
    counted; the provider's export locks are still watched."""
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

    from poolwatch import _guard

    exporter = OTLPMetricExporter(endpoint="http://127.0.0.1:9/v1/metrics")
    for attribute in ("_client", "_session"):
        if hasattr(exporter, attribute):
            delattr(exporter, attribute)
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    _state.warned.discard("sdk_fork:connections")
    before = _guard.error_counts().get("sdk_fork.connections", 0)
    try:
        _sdk_fork.watch(provider)
    finally:
        reader._exporter = SlowExporter()  # shutdown must not reach the stripped exporter
        provider.shutdown()

    assert _guard.error_counts().get("sdk_fork.connections", 0) == before + 1
    assert "OTLPMetricExporter" in caplog.text
    assert provider in _sdk_fork._providers


def _span_pipeline(receiver: Any) -> tuple[Any, Callable[[], bool]]:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{receiver.endpoint}/v1/traces"))
    )
    tracer = provider.get_tracer("test")

    def export() -> bool:
        with tracer.start_as_current_span("checkout"):
            pass
        return bool(provider.force_flush(5_000))

    return provider, export


def _log_pipeline(receiver: Any) -> tuple[Any, Callable[[], bool]]:
    from opentelemetry._logs import LogRecord, SeverityNumber
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

    from poolwatch import _telemetry

    provider = LoggerProvider(shutdown_on_exit=False)
    provider.add_log_record_processor(
        BatchLogRecordProcessor(OTLPLogExporter(endpoint=f"{receiver.endpoint}/v1/logs"))
    )
    logger = provider.get_logger("test")
    make: Callable[..., LogRecord] = _telemetry.record_type(logger)

    def export() -> bool:
        logger.emit(make(body="event", event_name="test", severity_number=SeverityNumber.WARN))
        return bool(provider.force_flush(5_000))

    return provider, export


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
@pytest.mark.parametrize(
    ("pipeline", "path"), [(_span_pipeline, "/v1/traces"), (_log_pipeline, "/v1/logs")]
)
def test_a_child_exports_spans_and_events_on_its_own_connection(
    pipeline: Callable[[Any], tuple[Any, Callable[[], bool]]], path: str
) -> None:
    """The span and log exporters' keep-alive connections stay the parent's too."""
    from tests.support.otlp_receiver import OtlpReceiver

    with OtlpReceiver() as receiver:
        provider, export = pipeline(receiver)
        _sdk_fork.watch_batches(provider)
        try:
            assert export()  # the parent's connection, kept alive
            result = in_child(lambda: {"exported": export()})
            assert export()
        finally:
            provider.shutdown()
        parent, child, parent_again = receiver.client_ports(path)[:3]

    assert result == {"exported": True}
    assert receiver.errors == []
    assert parent_again == parent
    assert child != parent


def test_a_provider_without_batch_processors_where_expected_is_loud(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An SDK tracer provider whose processors cannot be found is warned about and counted."""
    from opentelemetry.sdk.trace import TracerProvider

    from poolwatch import _guard

    provider = TracerProvider(shutdown_on_exit=False)
    del provider._active_span_processor
    _state.warned.discard("sdk_fork:batches")
    before = _guard.error_counts().get("sdk_fork.batches", 0)
    _sdk_fork.watch_batches(provider)

    assert _guard.error_counts().get("sdk_fork.batches", 0) == before + 1
    assert "_active_span_processor" in caplog.text
    assert provider not in _sdk_fork._batch_providers


def test_the_batch_hooks_exist_in_this_sdk() -> None:
    """Every attribute of BATCH_HOOKS is where it is declared, on the installed SDK."""
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs import export as log_export
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    spans = BatchSpanProcessor(InMemorySpanExporter())
    # renamed in SDK 1.39 (the old name warns)
    in_memory = (
        getattr(log_export, "InMemoryLogRecordExporter", None) or log_export.InMemoryLogExporter
    )
    logs = log_export.BatchLogRecordProcessor(in_memory())
    tracing, logging_ = (
        TracerProvider(shutdown_on_exit=False),
        LoggerProvider(shutdown_on_exit=False),
    )
    objects = {
        "TracerProvider": tracing,
        "SynchronousMultiSpanProcessor": tracing._active_span_processor,
        "BatchSpanProcessor": spans,
        "LoggerProvider": logging_,
        "SynchronousMultiLogRecordProcessor": logging_._multi_log_record_processor,
        "BatchLogRecordProcessor": logs,
        "BatchProcessor": spans._batch_processor,
    }
    try:
        for hook in _sdk_fork.BATCH_HOOKS:
            owner = objects[hook.owner.rsplit(".", 1)[1]]
            assert f"{type(owner).__module__}.{type(owner).__qualname__}" == hook.owner
            assert hasattr(owner, hook.attribute), hook
    finally:
        spans.shutdown()
        logs.shutdown()


class _RecordingLock:
    """A lock held by another thread that records the timeout each acquire was given."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()  # held elsewhere: every acquire waits its whole timeout
        self.timeouts: list[float] = []

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        self.timeouts.append(timeout)
        return self._lock.acquire(blocking, timeout)

    def release(self) -> None:
        self._lock.release()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_fork_waits_for_all_exports_in_progress_within_one_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Exports stuck in two pipelines (a collector down) delay a fork once, not once each: the
    second lock gets what is left of EXPORT_WAIT after the first used it all."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    # a whole second: the first lock still gets a share on a machine busy enough to pause the
    # forking thread between reading the clock and asking for the lock
    monkeypatch.setattr(_sdk_fork, "EXPORT_WAIT", 1.0)
    provider, reader, exporter = _exporting_provider()
    exporter.release.set()  # its export at shutdown does not wait
    tracing = TracerProvider(shutdown_on_exit=False)
    spans = BatchSpanProcessor(InMemorySpanExporter())
    tracing.add_span_processor(spans)
    _sdk_fork.watch(provider)
    _sdk_fork.watch_batches(tracing)
    metric_lock, span_lock = _RecordingLock(), _RecordingLock()
    saved = reader._export_lock, spans._batch_processor._export_lock
    reader._export_lock, spans._batch_processor._export_lock = metric_lock, span_lock
    try:
        result = in_child(lambda: {"forked": True})
    finally:
        reader._export_lock, spans._batch_processor._export_lock = saved
        provider.shutdown()
        tracing.shutdown()

    assert result == {"forked": True}
    ((metric_wait,), (span_wait,)) = metric_lock.timeouts, span_lock.timeouts
    assert 0 < metric_wait <= 1.0
    assert span_wait < metric_wait
    assert span_wait <= 1.0 - metric_wait + 0.05  # what was left of the one budget
