"""Where the demo's telemetry goes: an OTLP/JSON file, or a collector over OTLP/HTTP.

The file holds one ``Export*ServiceRequest`` per line in the OTLP/JSON encoding (lowerCamelCase
field names, enums as integers, trace and span ids in hex), which is what the collector's
``otlpjsonfile`` receiver reads.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.metrics.export import MetricsData
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

#: OTLP/JSON writes these bytes fields as hex, not as protobuf JSON's base64.
_HEX_IDS = frozenset({"traceId", "spanId", "parentSpanId"})


def otlp_json(message: Message) -> dict[str, Any]:
    """An OTLP protobuf message in the OTLP/JSON encoding."""
    data: dict[str, Any] = _hex_ids(MessageToDict(message, use_integers_for_enums=True))
    return data


def _hex_ids(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            key: base64.b64decode(item).hex() if key in _HEX_IDS else _hex_ids(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_hex_ids(item) for item in value]
    return value


class Destination(Protocol):
    """Receives every signal the demo emits."""

    span_exporter: SpanExporter
    log_exporter: LogRecordExporter

    def export_metrics(self, data: MetricsData) -> None:
        """Send one collection's metrics."""

    def shutdown(self) -> None:
        """Flush and close."""

    def describe(self) -> str:
        """Where the data went, for the summary."""


class OtlpJsonFile:
    """Appends one OTLP/JSON request per line to ``path``; safe to call from any thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._file = path.open("w", encoding="utf-8")
        self.lines = 0
        self.span_exporter: SpanExporter = _FileSpans(self)
        self.log_exporter: LogRecordExporter = _FileLogs(self)

    def write(self, message: Message) -> None:
        """Append ``message`` as one line."""
        line = json.dumps(otlp_json(message), separators=(",", ":"))
        with self._lock:
            if not self._file.closed:
                self._file.write(line + "\n")
                self._file.flush()
                self.lines += 1

    def export_metrics(self, data: MetricsData) -> None:
        """Append one metrics request (skipped when the collection found nothing)."""
        if data.resource_metrics:
            self.write(encode_metrics(data))

    def shutdown(self) -> None:
        """Close the file."""
        with self._lock:
            self._file.close()

    def describe(self) -> str:
        """The file's path and size in requests."""
        return f"{self.path} ({self.lines} OTLP/JSON requests, one per line)"


class _FileSpans(SpanExporter):
    def __init__(self, file: OtlpJsonFile) -> None:
        self._file = file

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if spans:
            self._file.write(encode_spans(spans))
        return SpanExportResult.SUCCESS


class _FileLogs(LogRecordExporter):
    def __init__(self, file: OtlpJsonFile) -> None:
        self._file = file

    def export(self, batch: Sequence[Any]) -> LogRecordExportResult:
        if batch:
            self._file.write(encode_logs(batch))
        return LogRecordExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Every line is flushed as it is written."""
        return True

    def shutdown(self) -> None:
        """Nothing to release: the file is closed by its owner."""


class OtlpHttp:
    """Sends to a collector's OTLP/HTTP endpoint (``/v1/metrics``, ``/v1/traces``, ``/v1/logs``)."""

    def __init__(self, endpoint: str) -> None:
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        self.endpoint = endpoint.rstrip("/")
        self.span_exporter: SpanExporter = OTLPSpanExporter(endpoint=f"{self.endpoint}/v1/traces")
        self.log_exporter: LogRecordExporter = OTLPLogExporter(endpoint=f"{self.endpoint}/v1/logs")
        self._metrics = OTLPMetricExporter(endpoint=f"{self.endpoint}/v1/metrics")
        self.exports = 0

    def export_metrics(self, data: MetricsData) -> None:
        """Send one collection's metrics."""
        if data.resource_metrics:
            self._metrics.export(data)
            self.exports += 1

    def shutdown(self) -> None:
        """Close the metric exporter (the span and log exporters close with their providers)."""
        self._metrics.shutdown()

    def describe(self) -> str:
        """The endpoint the data was sent to."""
        return f"{self.endpoint} (OTLP/HTTP, {self.exports} metric exports)"
