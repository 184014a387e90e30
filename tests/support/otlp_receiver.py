"""A small in-process OTLP/HTTP receiver for tests that run a real exporter in another process.

It listens on ``127.0.0.1`` on a free port, accepts protobuf ``POST /v1/metrics``, ``/v1/logs``
and ``/v1/traces`` bodies (plain or gzip/deflate-compressed), decodes them with
opentelemetry-proto and keeps every export, in arrival order, behind a lock::

    with OtlpReceiver() as receiver:
        run_app(env={"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, ...})
        points = receiver.metric_points("db.client.connection.timeouts")

Nothing leaves the loopback interface.
"""

from __future__ import annotations

import gzip
import threading
import zlib
from collections.abc import Iterable, Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

__all__ = ["OtlpReceiver", "attributes_of", "value_of"]

#: A metric data point's value: an int or float for sums and gauges, the count for histograms.
PointValue = int | float
#: A metric's data points as ``(attributes, value)``, one per attribute set.
Points = list[tuple[dict[str, Any], PointValue]]

_ROUTES: dict[str, tuple[type[Message], type[Message]]] = {
    "/v1/metrics": (ExportMetricsServiceRequest, ExportMetricsServiceResponse),
    "/v1/logs": (ExportLogsServiceRequest, ExportLogsServiceResponse),
    "/v1/traces": (ExportTraceServiceRequest, ExportTraceServiceResponse),
}

#: Refuse bodies bigger than this (a test export is a few kilobytes).
_MAX_BODY = 64 * 1024 * 1024


def value_of(value: AnyValue) -> Any:
    """An OTLP ``AnyValue`` as the plain Python value it carries (None when unset)."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [value_of(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return attributes_of(value.kvlist_value.values)
    return getattr(value, kind)


def attributes_of(pairs: Iterable[KeyValue]) -> dict[str, Any]:
    """OTLP ``KeyValue`` attributes as a dict."""
    return {pair.key: value_of(pair.value) for pair in pairs}


def _hex_id(raw: bytes) -> str | None:
    """A trace or span id as lowercase hex, or None for an absent (empty or all-zero) id."""
    return raw.hex() if raw and any(raw) else None


def _decompress(body: bytes, encoding: str) -> bytes:
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    raise ValueError(f"unsupported Content-Encoding {encoding!r}")


class _Handler(BaseHTTPRequestHandler):
    """Decodes one OTLP/HTTP request and hands it to the receiver that owns the server."""

    protocol_version = "HTTP/1.1"
    server: _Server

    def do_POST(self) -> None:
        route = _ROUTES.get(self.path.split("?", 1)[0])
        if route is None:
            self._reply(HTTPStatus.NOT_FOUND, b"", "text/plain")
            return
        request_type, response_type = route
        try:
            length = int(self.headers.get("Content-Length", "0"))
            if not 0 <= length <= _MAX_BODY:
                raise ValueError(f"bad Content-Length {length}")
            body = _decompress(self.rfile.read(length), self.headers.get("Content-Encoding", ""))
            message = request_type()
            message.ParseFromString(body)
        except (ValueError, OSError, EOFError, zlib.error, DecodeError) as exc:
            self.server.receiver._record_error(f"{self.path}: {exc}")
            self._reply(HTTPStatus.BAD_REQUEST, str(exc).encode(), "text/plain")
            return
        self.server.receiver._store(self.path, message, self.client_address[1])
        self._reply(HTTPStatus.OK, response_type().SerializeToString(), "application/x-protobuf")

    def _reply(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: pytest output is for test results."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, receiver: OtlpReceiver) -> None:
        self.receiver = receiver
        super().__init__(("127.0.0.1", 0), _Handler)


class OtlpReceiver:
    """Collects OTLP/HTTP exports sent to :attr:`endpoint`; use as a context manager."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._metrics: list[ExportMetricsServiceRequest] = []
        self._logs: list[ExportLogsServiceRequest] = []
        self._traces: list[ExportTraceServiceRequest] = []
        self._errors: list[str] = []
        self._client_ports: list[tuple[str, int]] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> OtlpReceiver:
        """Bind a free loopback port and serve in a background thread."""
        if self._server is not None:
            raise RuntimeError("receiver already started")
        self._server = _Server(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="otlp-receiver",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port (stored data stays readable)."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The TCP port the receiver listens on."""
        if self._server is None:
            raise RuntimeError("receiver not started")
        return int(self._server.server_address[1])

    @property
    def endpoint(self) -> str:
        """The value for ``OTEL_EXPORTER_OTLP_ENDPOINT`` (the exporter appends ``/v1/...``)."""
        return f"http://127.0.0.1:{self.port}"

    # --- storage (called from handler threads) ---------------------------------------------------

    def _store(self, path: str, message: Message, client_port: int) -> None:
        with self._lock:
            self._client_ports.append((path, client_port))
            if isinstance(message, ExportMetricsServiceRequest):
                self._metrics.append(message)
            elif isinstance(message, ExportLogsServiceRequest):
                self._logs.append(message)
            elif isinstance(message, ExportTraceServiceRequest):
                self._traces.append(message)
            else:  # pragma: no cover - _ROUTES only holds the three types
                self._errors.append(f"{path}: unexpected {type(message).__name__}")

    def _record_error(self, error: str) -> None:
        with self._lock:
            self._errors.append(error)

    # --- reading --------------------------------------------------------------------------------

    @property
    def errors(self) -> list[str]:
        """Requests that could not be decoded (a test should expect none)."""
        with self._lock:
            return list(self._errors)

    def client_ports(self, path: str = "/v1/metrics") -> list[int]:
        """The client's TCP port of each request to ``path`` that was stored, oldest first
        (requests on one keep-alive connection share a port)."""
        with self._lock:
            return [port for seen, port in self._client_ports if seen == path]

    def log_exports(self) -> list[ExportLogsServiceRequest]:
        """Every logs export received so far, oldest first."""
        with self._lock:
            return list(self._logs)

    def metric_exports(self) -> list[ExportMetricsServiceRequest]:
        """Every metrics export received so far, oldest first."""
        with self._lock:
            return list(self._metrics)

    def metric_names(self) -> set[str]:
        """Names of every metric seen in any export."""
        return {
            metric.name
            for export in self.metric_exports()
            for resource in export.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
        }

    def metric_scopes(self) -> set[str]:
        """Instrumentation scope names of every metric seen in any export."""
        return {
            scope.scope.name
            for export in self.metric_exports()
            for resource in export.resource_metrics
            for scope in resource.scope_metrics
            if scope.metrics
        }

    def metric_snapshots(self, name: str) -> list[tuple[int, Points]]:
        """``(collection time, points)`` for every export that holds ``name``, oldest first.

        ``points`` is as in :meth:`metric_points`; the time is the newest ``time_unix_nano`` of
        the metric's points in that export (the SDK's collection time, wall clock).
        """
        snapshots = (_snapshot(export, name) for export in self.metric_exports())
        return [snapshot for snapshot in snapshots if snapshot is not None]

    def metric_points(self, name: str) -> Points:
        """``(attributes, value)`` per attribute set from the last export that holds ``name``.

        With cumulative temporality the latest point of each attribute set is the metric's
        current value, so earlier exports are ignored. Sums and gauges give their number;
        histograms give their count. Empty if no export held the metric.
        """
        snapshots = self.metric_snapshots(name)
        return snapshots[-1][1] if snapshots else []

    def log_records(self, event_name: str | None = None) -> list[dict[str, Any]]:
        """Every log record received (only those with ``event_name``, if given), oldest first.

        Each is a dict with ``event_name``, ``body``, ``attributes``, ``trace_id`` (hex or None),
        ``severity_text``, ``severity_number`` and ``scope`` (instrumentation scope name).
        """
        with self._lock:
            exports = list(self._logs)
        records: list[dict[str, Any]] = []
        for export in exports:
            for resource in export.resource_logs:
                for scope in resource.scope_logs:
                    for record in scope.log_records:
                        if event_name is not None and record.event_name != event_name:
                            continue
                        records.append(
                            {
                                "event_name": record.event_name,
                                "body": value_of(record.body),
                                "attributes": attributes_of(record.attributes),
                                "trace_id": _hex_id(record.trace_id),
                                "severity_text": record.severity_text,
                                "severity_number": int(record.severity_number),
                                "scope": scope.scope.name,
                            }
                        )
        return records

    def spans(self, name: str | None = None) -> list[dict[str, Any]]:
        """Every span received (only those called ``name``, if given), oldest first.

        Each is a dict with ``name``, ``trace_id``, ``span_id``, ``parent_span_id`` (hex or
        None), ``attributes``, ``status_code``, ``events`` (name and attributes) and ``scope``.
        """
        with self._lock:
            exports = list(self._traces)
        found: list[dict[str, Any]] = []
        for export in exports:
            for resource in export.resource_spans:
                for scope in resource.scope_spans:
                    for span in scope.spans:
                        if name is not None and span.name != name:
                            continue
                        found.append(
                            {
                                "name": span.name,
                                "trace_id": _hex_id(span.trace_id),
                                "span_id": _hex_id(span.span_id),
                                "parent_span_id": _hex_id(span.parent_span_id),
                                "attributes": attributes_of(span.attributes),
                                "status_code": int(span.status.code),
                                "events": [
                                    {"name": e.name, "attributes": attributes_of(e.attributes)}
                                    for e in span.events
                                ],
                                "scope": scope.scope.name,
                            }
                        )
        return found


def _snapshot(export: ExportMetricsServiceRequest, name: str) -> tuple[int, Points] | None:
    """The latest point per attribute set of metric ``name`` in one export, or None if absent."""
    metrics = [
        metric
        for resource in export.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == name
    ]
    if not metrics:
        return None
    latest: dict[tuple[tuple[str, str], ...], tuple[int, dict[str, Any], PointValue]] = {}
    for metric in metrics:
        for point, value in _points(metric):
            attributes = attributes_of(point.attributes)
            key = tuple(sorted((k, repr(v)) for k, v in attributes.items()))
            when = int(point.time_unix_nano)
            if key not in latest or when >= latest[key][0]:
                latest[key] = (when, attributes, value)
    newest = max((entry[0] for entry in latest.values()), default=0)
    return newest, [(attributes, value) for _, attributes, value in latest.values()]


def _points(metric: Any) -> Iterator[tuple[Any, PointValue]]:
    """A metric's data points with their values, whatever the metric's data type."""
    kind = metric.WhichOneof("data")
    if kind in ("sum", "gauge"):
        for point in getattr(metric, kind).data_points:
            number = point.WhichOneof("value")
            yield point, (point.as_int if number == "as_int" else point.as_double)
    elif kind in ("histogram", "exponential_histogram"):
        for point in getattr(metric, kind).data_points:
            yield point, int(point.count)
    elif kind == "summary":
        for point in metric.summary.data_points:
            yield point, int(point.count)
