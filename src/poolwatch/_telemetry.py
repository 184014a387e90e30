"""The one place that talks to OpenTelemetry: instruments, spans and events, and their payloads.

Counts and gauges are observable instruments read from the pool recorders at collection time;
the histograms leave as OTLP histograms built from the recorders' buckets at the same moment
(:mod:`poolwatch._instruments`). Events are log records with an ``event_name`` (and span events
on the active span); every event's body and attributes are built here, from the facts the
recorder and the adapters hand over. :class:`Telemetry` is what they call
(:class:`poolwatch._instrumentation.Outlet`); it never calls them back.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from opentelemetry import trace
from opentelemetry._logs import LoggerProvider, LogRecord, SeverityNumber, get_logger_provider
from opentelemetry.context import Context
from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation, get_meter_provider
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TracerProvider,
)

from poolwatch import _errors, _filling, _guard, _instance, _instruments, _sdk_fork, _sites, catalog
from poolwatch._instrumentation import Reading
from poolwatch._leaks import Loan
from poolwatch._recent import RecentTimeouts, caller_key
from poolwatch._recorder import PoolRecorder
from poolwatch._sites import Site
from poolwatch._version import __version__
from poolwatch.config import Config


class Telemetry:
    """The instruments, tracer and logger of one instrumentation."""

    def __init__(
        self,
        config: Config,
        meter_provider: MeterProvider | None = None,
        tracer_provider: TracerProvider | None = None,
        logger_provider: LoggerProvider | None = None,
    ) -> None:
        self.config = config
        self.active = True
        self._lock = threading.Lock()
        self.conflicts: Counter[str] = Counter()
        #: The last pool timeout each thread or task saw (a conflict's likely cause).
        self.recent = RecentTimeouts()
        self._meter_provider = meter_provider
        provider = meter_provider or get_meter_provider()
        _guard.guarded("instance", _instance.ensure_instance_id, provider)
        self.meter = provider.get_meter(catalog.INSTRUMENTATION_SCOPE, __version__)
        self.tracer = trace.get_tracer(
            catalog.INSTRUMENTATION_SCOPE, __version__, tracer_provider=tracer_provider
        )
        self.logger_provider = logger_provider or get_logger_provider()
        self.logger = self.logger_provider.get_logger(catalog.INSTRUMENTATION_SCOPE, __version__)
        #: Makes the log records this logger is given (see :func:`record_type`).
        self.record_type = record_type(self.logger)
        # spans and events leave through the SDK's batch processors: fork-safe as the metrics
        for batching in (tracer_provider or trace.get_tracer_provider(), self.logger_provider):
            _guard.guarded("sdk_fork", _sdk_fork.watch_batches, batching)
        #: ``otlp``, ``standard`` or ``aggregated``: what runs (see :func:`histogram_mode`).
        self.histogram_mode = _instruments.histogram_mode(config, self.meter)
        self.standard_histograms = (
            _instruments.StandardHistograms(self.meter, config)
            if self.histogram_mode == "standard"
            else None
        )
        self.bridged = (
            _instruments.Bridged(self.meter, config) if self.histogram_mode == "otlp" else None
        )
        #: Whether recorders keep exponential buckets (exported as exponential histograms).
        self.exponential = (
            self.histogram_mode == "otlp" and config.histogram_aggregation == "exponential"
        )

    def meter_provider(self) -> MeterProvider:
        """The provider poolwatch's meter comes from (the global one unless one was passed)."""
        return self._meter_provider or get_meter_provider()

    def read_pools(
        self,
        pools: Callable[[], list[PoolRecorder]],
        drop: Callable[[PoolRecorder], None],
    ) -> None:
        """Create the collection-time instruments, reading the pools ``pools`` gives."""
        _instruments.register(
            self.meter,
            self,
            pools=pools,
            drop=drop,
            mode=self.histogram_mode,
            bridged=self.bridged,
        )

    def observe(self, metric: catalog.Metric, read: Reading) -> None:
        """A collection-time instrument for ``metric`` read from ``read``'s (value, attributes)."""

        def callback(_options: CallbackOptions) -> Iterator[Observation]:
            if not self.active:
                return
            try:
                readings = list(read())
            except Exception as exc:  # noqa: BLE001 - never raise into collection
                _guard.internal_error("collect", exc)
                return
            for value, attributes in readings:
                yield Observation(value, dict(attributes))

        _instruments.observable(self.meter, metric, callback)

    def after_fork(self) -> None:
        """In a forked child: a fresh lock, and conflicts of the child's own."""
        self._lock = threading.Lock()
        self.conflicts.clear()
        self.recent = RecentTimeouts()

    def shutdown(self) -> None:
        """Go quiet: instruments stay registered (the API cannot remove them) but read nothing."""
        self.active = False

    # --- spans and events ---------------------------------------------------------------------

    def checkout_span(
        self,
        started_ns: int,
        state: dict[str, Any],
        waited: float,
        error: BaseException | None = None,
    ) -> SpanContext | None:
        """The span of one checkout that began at ``started_ns``, child of the current span.

        ``state`` describes the pool when the wait began; a failed checkout records ``error``.
        Returns the span's context (the wait's exemplar links to it), None if it is invalid.
        """
        attributes = {**state, catalog.WAIT_DURATION: waited}
        if error is not None:
            attributes[catalog.ERROR_TYPE] = type(error).__qualname__
        span = self.tracer.start_span(
            catalog.SPAN_CHECKOUT,
            kind=SpanKind.INTERNAL,
            attributes=attributes,
            start_time=started_ns,
        )
        if error is not None:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        span.end()
        context = span.get_span_context()
        return context if context.is_valid else None

    def timed_out(
        self, pool: str, state: dict[str, Any], waited: float, exc: BaseException
    ) -> None:
        """A pool timeout: remembered for the caller, and a ``poolwatch.pool.timeout`` event."""
        self.recent.remember(pool, str(exc).split("\n")[0])
        attributes = dict(state)
        attributes[catalog.WAIT_DURATION] = waited
        attributes[catalog.ERROR_TYPE] = type(exc).__qualname__
        holders = attributes.get(catalog.POOL_HOLDERS) or []
        body = (
            f"pool {pool} timed out after {waited:.3f}s: "
            f"{state[catalog.POOL_USED]} used{_filling.describe_used(state)}, "
            f"{state[catalog.POOL_IDLE]} idle, "
            f"max {state.get(catalog.POOL_MAX, 'unlimited')}, "
            f"{state[catalog.POOL_PENDING]} waiting"
            + _filling.describe(state, waited)
            + (f"; held by {'; '.join(holders)}" if holders else "")
        )
        self.emit_event(catalog.EVENT_POOL_TIMEOUT, body, attributes)

    def connection_failed(
        self, pool: str, state: dict[str, Any], error: BaseException, code: str | None
    ) -> None:
        """Opening a connection failed, first of a burst: the server's message and the pool."""
        attributes = dict(state)
        attributes[catalog.ERROR_TYPE] = _errors.error_type(error)
        attributes[catalog.ERROR_MESSAGE] = message = _errors.message(error)
        if code is not None:
            attributes[catalog.DB_STATUS_CODE] = code
        body = (
            f"pool {pool} could not open a connection: {message} "
            f"({state[catalog.POOL_USED]} used, {state[catalog.POOL_IDLE]} idle, "
            f"max {state.get(catalog.POOL_MAX, 'unlimited')}, "
            f"{state[catalog.POOL_PENDING]} waiting)"
        )
        self.emit_event(catalog.EVENT_CREATE_FAILED, body, attributes)

    def leaked(self, recorder: PoolRecorder, loan: Loan, threshold: float) -> None:
        """A connection held past the leak threshold: a ``poolwatch.connection.leak`` event."""
        age = recorder.settings.clock() - loan.started
        attributes = _loan_attributes(recorder, loan)
        attributes[catalog.CONNECTION_AGE] = age
        attributes[catalog.LEAK_THRESHOLD] = threshold
        body = (
            f"connection from pool {recorder.name} held for {age:.1f}s "
            f"(threshold {threshold:g}s) by {loan.holder()}, "
            f"{_where(loan)}"
        )
        self.emit_event(catalog.EVENT_LEAK, body, attributes, context=_context(loan))

    def returned(self, recorder: PoolRecorder, loan: Loan, held: float) -> None:
        """A connection reported as leaked came back (HikariCP's "unleaked")."""
        attributes = _loan_attributes(recorder, loan)
        attributes[catalog.CONNECTION_HELD] = held
        body = f"leaked connection from pool {recorder.name} returned after {held:.1f}s"
        self.emit_event(
            catalog.EVENT_RETURNED, body, attributes, SeverityNumber.INFO, context=_context(loan)
        )

    def never_returned(self, recorder: PoolRecorder, loan: Loan, held: float) -> None:
        """A connection's handle was garbage-collected while it was still checked out."""
        attributes = _loan_attributes(recorder, loan)
        attributes[catalog.CONNECTION_HELD] = held
        body = (
            f"connection from pool {recorder.name} was garbage-collected without being "
            f"returned, {held:.1f}s after {loan.holder()} borrowed it; {_where(loan)}"
        )
        self.emit_event(catalog.EVENT_NEVER_RETURNED, body, attributes, context=_context(loan))

    def conflict(self, kind: str, attributes: dict[str, Any], message: str | None) -> None:
        """A session conflict: counted by kind, explained by a recent pool timeout if there was one."""
        with self._lock:
            self.conflicts[kind] += 1
        body = _conflict_body(kind, attributes, message)
        attributes = {catalog.CONFLICT_KIND: kind, **attributes}
        cause = self.recent.find(self.config.conflict_window)
        if cause is not None:
            attributes[catalog.CONFLICT_CAUSE] = catalog.CAUSE_POOL_TIMEOUT
            attributes[catalog.CONFLICT_CAUSE_POOL] = cause.pool
            attributes[catalog.CONFLICT_CAUSE_AGE] = self.recent.age(cause)
            attributes[catalog.CONFLICT_CAUSE_MESSAGE] = cause.message
            where = "task" if caller_key()[1] else "thread"
            body += (
                f"; probable cause: pool {cause.pool} timed out "
                f"{attributes[catalog.CONFLICT_CAUSE_AGE]:.1f}s earlier in this {where}"
            )
        self.emit_event(catalog.EVENT_CONFLICT, body, attributes)

    def orphaned(self, attributes: dict[str, Any], site: Site) -> None:
        """A Django connection found orphaned; ``site`` is where it was opened."""
        attributes = {**attributes, **_sites.attributes(site)}
        self.emit_event(catalog.EVENT_ORPHANED, _orphan_body(attributes, site), attributes)

    def emit_event(
        self,
        name: str,
        body: str,
        attributes: dict[str, Any],
        severity: SeverityNumber = SeverityNumber.WARN,
        context: SpanContext | None = None,
    ) -> None:
        """Emit an event through the Logs API and add it to the active span, if one records.

        ``context`` ties the record to another trace (the borrower's, for a leak found later).
        """
        log_context: Context | None = None
        if context is not None:
            log_context = trace.set_span_in_context(NonRecordingSpan(context))
        self.logger.emit(
            self.record_type(
                timestamp=time.time_ns(),
                context=log_context,
                severity_number=severity,
                severity_text=severity.name,
                body=body,
                attributes=attributes,
                event_name=name,
            )
        )
        span = trace.get_current_span()
        if span.is_recording():
            span.add_event(name, attributes)


#: The first SDK release whose loggers accept the API's LogRecord (they convert it).
SDK_TAKES_API_RECORDS = (1, 37)


def record_type(logger: Any) -> Callable[..., LogRecord]:
    """What makes ``logger``'s log records: the API's ``LogRecord``, or for an SDK logger older
    than 1.37 the SDK's own, carrying the logger's resource (those releases export nothing else:
    an API record fails in every exporter, and the event is lost)."""
    try:
        from opentelemetry.sdk._logs import Logger as SdkLogger
    except ImportError:
        return LogRecord
    if not isinstance(logger, SdkLogger) or _instance.sdk_version() >= SDK_TAKES_API_RECORDS:
        return LogRecord
    from opentelemetry.sdk import _logs as sdk_logs  # its LogRecord is gone from 1.39 on

    make: Callable[..., LogRecord] = sdk_logs.LogRecord  # type: ignore[attr-defined]
    resource = logger.resource

    def sdk_record(**fields: Any) -> LogRecord:
        return make(resource=resource, **fields)

    return sdk_record


def _loan_attributes(recorder: PoolRecorder, loan: Loan) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        **recorder.attributes,
        catalog.THREAD_NAME: loan.thread_name,
    }
    if loan.thread_id is not None:
        attributes[catalog.THREAD_ID] = loan.thread_id
    if loan.task is not None:
        attributes[catalog.TASK_NAME] = loan.task
    if loan.site:
        attributes.update(_sites.attributes(loan.site))
        attributes[catalog.SITE_SOURCE] = loan.site_source
        if loan.sampled_after is not None:
            attributes[catalog.SITE_SAMPLED_AFTER] = loan.sampled_after
    return attributes


def _where(loan: Loan) -> str:
    """Where the loan's code location came from, in words."""
    if loan.site_source == catalog.SITE_HOLDER_SAMPLE:
        return (
            f"holding it at {_sites.describe(loan.site)} "
            f"(stack sampled {loan.sampled_after or 0.0:.1f}s after checkout)"
        )
    if loan.site:
        return f"borrowed at {_sites.describe(loan.site)}"
    return "borrow site not captured (capture_stacks records it at every checkout)"


def _context(loan: Loan) -> SpanContext | None:
    """The borrower's span context, when the checkout was made inside a valid span."""
    span = loan.span
    context = span.get_span_context() if isinstance(span, Span) else None
    return context if context is not None and context.is_valid else None


def _conflict_body(kind: str, attributes: dict[str, Any], message: str | None) -> str:
    if kind == catalog.CONFLICT_ALREADY_ATTACHED:
        return (
            f"{str(attributes.get(catalog.OBJECT_CLASS, '?')).rsplit('.', 1)[-1]} belongs to "
            f"session {attributes.get(catalog.SESSION_OWNER)} (created at "
            f"{attributes.get(catalog.SESSION_OWNER_SITE, 'unknown')}), not to session "
            f"{attributes.get(catalog.SESSION_CURRENT)} (created at "
            f"{attributes.get(catalog.SESSION_CURRENT_SITE, 'unknown')})"
        )
    code = attributes.get(catalog.DB_STATUS_CODE)
    return f"{kind.replace('_', ' ')}{f' ({code})' if code is not None else ''}: {message}"


_WHY = {
    catalog.ORPHAN_REQUEST_ENDED: "outlived its request",
    catalog.ORPHAN_THREAD_DEAD: "outlived its thread",
    catalog.ORPHAN_IDLE_IN_TRANSACTION: "sits idle in a transaction",
    catalog.ORPHAN_IDLE_OUTSIDE_REQUEST: "sits idle, opened and used outside any request",
}


def _orphan_body(attributes: dict[str, Any], site: Site) -> str:
    method = attributes.get(catalog.HTTP_METHOD)
    route = attributes.get(catalog.HTTP_ROUTE)
    view = attributes.get(catalog.DJANGO_VIEW)
    during = (
        f" during {method or '?'} {route or '?'} ({view or '?'})"
        if method is not None or route is not None or view is not None
        else ""
    )
    pid = attributes.get(catalog.BACKEND_PID)
    return (
        f"Django connection {attributes[catalog.DJANGO_ALIAS]}"
        f"{f' (backend pid {pid})' if pid is not None else ''} "
        f"{_WHY[attributes[catalog.ORPHAN_REASON]]}: opened by "
        f"{attributes[catalog.THREAD_NAME]} at {_sites.describe(site)}{during}; last query at "
        f"{attributes[catalog.LAST_QUERY_SITE]}"
    )
