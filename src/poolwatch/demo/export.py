"""Where the demo's telemetry goes: an OTLP/JSON file, or a collector over OTLP/HTTP.

The file holds one ``Export*ServiceRequest`` per line in the OTLP/JSON encoding (lowerCamelCase
field names, enums as integers, trace and span ids in hex), which is what the collector's
``otlpjsonfile`` receiver reads.
"""

from __future__ import annotations

import base64
import json
import threading
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.metrics.export import MetricExportResult, MetricsData
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from poolwatch._exit import EXIT_FAILED, EXIT_USAGE, CommandError

#: Seconds one OTLP/HTTP request may take, retries included: a dead collector costs no more.
EXPORT_TIMEOUT = 3.0
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


class Delivery:
    """Exports delivered and failed, per signal; safe to update from any thread."""

    SIGNALS = ("metrics", "spans", "events")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.sent: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()

    def count(self, signal: str, ok: bool) -> None:
        """One export of ``signal`` ended."""
        with self._lock:
            (self.sent if ok else self.failed)[signal] += 1

    @property
    def failures(self) -> int:
        """Exports that did not arrive, all signals together."""
        with self._lock:
            return sum(self.failed.values())

    def describe(self) -> str:
        """``metrics 12 sent, 3 failed; spans 4 sent; events 4 sent``."""
        with self._lock:
            parts = []
            for signal in self.SIGNALS:
                failed = f", {self.failed[signal]} failed" if self.failed[signal] else ""
                parts.append(f"{signal} {self.sent[signal]} sent{failed}")
        return "; ".join(parts)


class Destination(Protocol):
    """Receives every signal the demo emits."""

    span_exporter: SpanExporter
    log_exporter: LogRecordExporter
    delivery: Delivery

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
        try:
            self._file = path.open("w", encoding="utf-8")
        except OSError as exc:
            raise CommandError(f"cannot write {path}: {exc.strerror}", EXIT_USAGE) from None
        self.lines = 0
        self.delivery = Delivery()
        self.span_exporter: SpanExporter = _FileSpans(self)
        self.log_exporter: LogRecordExporter = _FileLogs(self)

    def write(self, message: Message, signal: str) -> bool:
        """Append ``message`` as one line; False (and counted) when the file cannot take it."""
        line = json.dumps(otlp_json(message), separators=(",", ":"))
        with self._lock:
            if self._file.closed:
                return False
            try:
                self._file.write(line + "\n")
                self._file.flush()
            except OSError:
                self.delivery.count(signal, ok=False)
                return False
            self.lines += 1
        self.delivery.count(signal, ok=True)
        return True

    def export_metrics(self, data: MetricsData) -> None:
        """Append one metrics request (skipped when the collection found nothing)."""
        if data.resource_metrics:
            self.write(encode_metrics(data), "metrics")

    def shutdown(self) -> None:
        """Close the file."""
        with self._lock:
            try:
                self._file.close()
            except OSError:
                self.delivery.count("metrics", ok=False)

    def describe(self) -> str:
        """The file's path and size in requests, and any write that failed."""
        failed = self.delivery.failures
        lost = f"; {failed} writes FAILED: {self.delivery.describe()}" if failed else ""
        return f"{self.path} ({self.lines} OTLP/JSON requests, one per line{lost})"


class _FileSpans(SpanExporter):
    def __init__(self, file: OtlpJsonFile) -> None:
        self._file = file

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if spans and not self._file.write(encode_spans(spans), "spans"):
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS


class _FileLogs(LogRecordExporter):
    def __init__(self, file: OtlpJsonFile) -> None:
        self._file = file

    def export(self, batch: Sequence[Any]) -> LogRecordExportResult:
        if batch and not self._file.write(encode_logs(batch), "events"):
            return LogRecordExportResult.FAILURE
        return LogRecordExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Every line is flushed as it is written."""
        return True

    def shutdown(self) -> None:
        """Nothing to release: the file is closed by its owner."""


class OtlpHttp:
    """Sends to a collector's OTLP/HTTP endpoint (``/v1/metrics``, ``/v1/traces``, ``/v1/logs``).

    Metrics leave from a thread of their own, so a slow or dead collector never stalls the view;
    a collection still waiting when a newer one arrives is replaced by it (they are cumulative).
    """

    def __init__(self, endpoint: str, timeout: float = EXPORT_TIMEOUT) -> None:
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        self.endpoint = endpoint.rstrip("/")
        probe(self.endpoint, timeout)
        self.delivery = Delivery()
        self.span_exporter: SpanExporter = _CountedSpans(
            OTLPSpanExporter(endpoint=f"{self.endpoint}/v1/traces", timeout=timeout), self.delivery
        )
        self.log_exporter: LogRecordExporter = _CountedLogs(
            OTLPLogExporter(endpoint=f"{self.endpoint}/v1/logs", timeout=timeout), self.delivery
        )
        self._metrics = OTLPMetricExporter(endpoint=f"{self.endpoint}/v1/metrics", timeout=timeout)
        self._ready = threading.Condition()
        self._waiting: MetricsData | None = None
        self._closing = False
        self._sender = threading.Thread(target=self._send, name="demo-otlp-metrics", daemon=True)
        self._sender.start()

    def export_metrics(self, data: MetricsData) -> None:
        """Queue one collection's metrics for the sender thread."""
        if data.resource_metrics:
            with self._ready:
                self._waiting = data
                self._ready.notify()

    def _send(self) -> None:
        while True:
            with self._ready:
                self._ready.wait_for(lambda: self._waiting is not None or self._closing)
                data, self._waiting = self._waiting, None
            if data is None:
                return
            ok = self._metrics.export(data) is MetricExportResult.SUCCESS
            self.delivery.count("metrics", ok)

    def shutdown(self) -> None:
        """Send what is queued, then close (the span and log exporters close with their providers)."""
        with self._ready:
            self._closing = True
            self._ready.notify()
        self._sender.join()
        self._metrics.shutdown()

    def describe(self) -> str:
        """The endpoint and what reached it."""
        failed = " (export FAILED: telemetry was lost)" if self.delivery.failures else ""
        return f"{self.endpoint} (OTLP/HTTP: {self.delivery.describe()}){failed}"


def probe(endpoint: str, timeout: float) -> None:
    """POST an empty metrics request: a collector answers 2xx; anything else fails the demo early."""
    url = f"{endpoint}/v1/metrics"
    if not endpoint.startswith(("http://", "https://")):
        raise CommandError(f"--otlp-endpoint {endpoint}: expected an http:// or https:// URL",
                           EXIT_USAGE)  # fmt: skip
    try:
        request = urllib.request.Request(
            url, data=b"", method="POST", headers={"Content-Type": "application/x-protobuf"}
        )
        with urllib.request.urlopen(request, timeout=timeout):
            return
    except ValueError as exc:
        raise CommandError(f"--otlp-endpoint {endpoint}: {exc}", EXIT_USAGE) from None
    except urllib.error.HTTPError as exc:
        reason = f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        reason = str(getattr(exc, "reason", exc))
    raise CommandError(f"cannot send telemetry to {url}: {reason}", EXIT_FAILED)


class _CountedSpans(SpanExporter):
    def __init__(self, inner: SpanExporter, delivery: Delivery) -> None:
        self._inner, self._delivery = inner, delivery

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = self._inner.export(spans)
        self._delivery.count("spans", result is SpanExportResult.SUCCESS)
        return result

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._inner.force_flush(timeout_millis)


class _CountedLogs(LogRecordExporter):
    def __init__(self, inner: LogRecordExporter, delivery: Delivery) -> None:
        self._inner, self._delivery = inner, delivery

    def export(self, batch: Sequence[Any]) -> LogRecordExportResult:
        result = self._inner.export(batch)
        self._delivery.count("events", result is LogRecordExportResult.SUCCESS)
        return result

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._inner.force_flush(timeout_millis)

    def shutdown(self) -> None:
        self._inner.shutdown()  # type: ignore[no-untyped-call]
