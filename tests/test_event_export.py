"""poolwatch's events leave the process through a real OTLP/HTTP log exporter, on every supported
SDK (releases before 1.37 export only the SDK's own log records)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

import poolwatch
from poolwatch import _guard, _instance, _telemetry, catalog
from tests.support.otlp_receiver import OtlpReceiver


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as otlp:
        yield otlp


def test_a_pool_timeout_event_is_exported_with_its_name_and_resource(
    receiver: OtlpReceiver, tmp_path: object
) -> None:
    """One timeout, one exported record: its event name, pool and the provider's resource."""
    logs = LoggerProvider(resource=Resource({"service.name": "orders-api"}), shutdown_on_exit=False)
    logs.add_log_record_processor(
        SimpleLogRecordProcessor(OTLPLogExporter(endpoint=f"{receiver.endpoint}/v1/logs"))
    )
    engine = sa.create_engine(
        f"sqlite:///{tmp_path}/events.db", pool_size=1, max_overflow=0, pool_timeout=0.01
    )
    errors_before = sum(_guard.error_counts().values())
    poolwatch.instrument_sqlalchemy(
        engine,
        pool_name="orders",
        meter_provider=MeterProvider(metric_readers=[InMemoryMetricReader()]),
        tracer_provider=TracerProvider(),
        logger_provider=logs,
    )
    held = engine.connect()
    try:
        with pytest.raises(sa.exc.TimeoutError):
            engine.connect()
    finally:
        held.close()
        poolwatch.uninstrument_sqlalchemy(engine)
        engine.dispose()
        logs.shutdown()

    (record,) = receiver.log_records(catalog.EVENT_POOL_TIMEOUT)
    assert record["attributes"][catalog.POOL_NAME] == "orders"
    assert record["severity_text"] == "WARN"
    (export,) = receiver.log_exports()
    (resource,) = export.resource_logs
    names = {pair.key: pair.value.string_value for pair in resource.resource.attributes}
    assert names["service.name"] == "orders-api"
    assert receiver.errors == []
    assert sum(_guard.error_counts().values()) == errors_before


def test_old_sdk_loggers_get_the_sdks_own_records() -> None:
    """Below SDK 1.37 records are the SDK's, with the logger's resource; from 1.37 the API's."""
    from opentelemetry._logs import LogRecord
    from opentelemetry.sdk import _logs as sdk_logs

    logger = LoggerProvider(resource=Resource({"service.name": "orders-api"})).get_logger("t")
    record = _telemetry.record_type(logger)(body="x", event_name="e")

    if _instance.sdk_version() < _telemetry.SDK_TAKES_API_RECORDS:
        assert type(record) is sdk_logs.LogRecord  # type: ignore[attr-defined]
        assert record.resource.attributes["service.name"] == "orders-api"  # type: ignore[attr-defined]
    else:
        assert _telemetry.record_type(logger) is LogRecord
    assert (record.body, record.event_name) == ("x", "e")
