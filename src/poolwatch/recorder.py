"""Turns pool facts into OpenTelemetry signals; the only module that touches meters, tracers, loggers.

Adapters report facts (a checkout began, succeeded, timed out; a connection came back, was
created) to a :class:`PoolRecorder`. The hot path does plain Python bookkeeping under one lock per
pool; counts, gauges and the aggregated histograms are read at collection time by observable
instruments owned by :class:`Telemetry`.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

from opentelemetry import trace
from opentelemetry._logs import LoggerProvider, LogRecord, SeverityNumber, get_logger_provider
from opentelemetry.metrics import (
    CallbackOptions,
    Histogram,
    MeterProvider,
    Observation,
    get_meter_provider,
)
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, TracerProvider

from poolwatch import _guard, catalog
from poolwatch._histogram import Buckets
from poolwatch._version import __version__
from poolwatch.config import Config

_perf = time.perf_counter


class PoolState(NamedTuple):
    """What a pool looks like right now, as its own library reports it.

    A named tuple rather than a frozen dataclass: it is built on every traced checkout, and a
    frozen dataclass costs about a microsecond to construct.
    """

    used: int
    idle: int
    max: int | None = None
    idle_max: int | None = None
    idle_min: int | None = None


#: Reads a pool's state; returns None once the pool is gone.
StateReader = Callable[[], "PoolState | None"]


class Traced:
    """A checkout being traced: its span, and the pool's state when the wait began."""

    __slots__ = ("span", "state")

    def __init__(self, span: Span, state: dict[str, Any]) -> None:
        self.span = span
        #: Span attributes describing the pool when the wait began (reused by the timeout event).
        self.state = state


class PoolRecorder:
    """Bookkeeping for one pool: pending callers, timeouts, loans and the three histograms.

    The checkout path is :meth:`begin`, optionally :meth:`trace`, then :meth:`succeeded` or
    :meth:`failed`. Callers blocked right now are the length of a deque (appends and pops are
    atomic), so beginning a checkout takes no lock.
    """

    def __init__(self, telemetry: Telemetry, name: str, read_state: StateReader) -> None:
        self.telemetry = telemetry
        self.name = name
        self.read_state = read_state
        self.attributes: dict[str, str] = {catalog.POOL_NAME: name}
        self.timeouts = 0
        #: Connections out right now: an adapter's key for the connection -> when it left the pool.
        self.loans: dict[object, float] = {}
        self._waiting: deque[None] = deque()
        self._lock = threading.Lock()
        self.wait = Buckets(catalog.WAIT_BUCKETS)
        self.use = Buckets(catalog.USE_BUCKETS)
        self.create = Buckets(catalog.CREATE_BUCKETS)
        self.spans = telemetry.config.spans
        self._root_spans = telemetry.config.root_spans
        self._standard = telemetry.standard_histograms

    @property
    def pending(self) -> int:
        """Callers waiting for a connection right now."""
        return len(self._waiting)

    # --- checkout -------------------------------------------------------------------------

    def begin(self) -> float:
        """A caller asked the pool for a connection; returns the start time to hand back later."""
        self._waiting.append(None)
        return _perf()

    def trace(self) -> Traced | None:
        """Start a checkout span if this checkout is inside a recording trace (or roots are on)."""
        if not (self._root_spans or trace.get_current_span().is_recording()):
            return None
        state = self.state_attributes(self.state_now(), self.pending)
        return Traced(self.telemetry.start_checkout_span(state), state)

    def succeeded(self, started: float, traced: Traced | None, key: object) -> None:
        """The caller got a connection; ``key`` identifies it until it comes back."""
        now = _perf()
        waited = now - started
        self._waiting.pop()
        with self._lock:
            self.wait.observe(waited)
        self.loans[key] = now
        if self._standard is not None:
            self._standard.wait.record(waited, self.attributes)
        if traced is not None:
            traced.span.set_attribute(catalog.WAIT_DURATION, waited)
            traced.span.end()

    def failed(
        self, started: float, traced: Traced | None, exc: BaseException, timed_out: bool
    ) -> None:
        """The caller got an exception instead of a connection (a pool timeout, or any other)."""
        waited = _perf() - started
        with self._lock:
            self.wait.observe(waited)
            if timed_out:
                self.timeouts += 1
        state = None
        if timed_out:
            state = (
                traced.state
                if traced is not None
                else self.state_attributes(self.state_now(), self.pending)
            )
        self._waiting.pop()
        if self._standard is not None:
            self._standard.wait.record(waited, self.attributes)
        if traced is not None:
            _end_with_error(traced.span, exc, waited)
        if state is not None:
            self.telemetry.emit_timeout(self.name, state, waited, exc)

    # --- connections coming back, being made ------------------------------------------------

    def checked_in(self, key: object) -> None:
        """A connection came back to the pool."""
        started = self.loans.pop(key, None)
        if started is None:
            return
        held = _perf() - started
        with self._lock:
            self.use.observe(held)
        if self._standard is not None:
            self._standard.use.record(held, self.attributes)

    def forget(self, key: object) -> None:
        """A connection left the pool's books without coming back (detached from the pool)."""
        self.loans.pop(key, None)

    def connection_created(self, seconds: float) -> None:
        """The pool opened a new database connection, taking ``seconds``."""
        with self._lock:
            self.create.observe(seconds)
        if self._standard is not None:
            self._standard.create.record(seconds, self.attributes)

    # --- reading -----------------------------------------------------------------------------

    def state_now(self) -> PoolState:
        """The pool's state with pending requests, for spans and events."""
        state = self.read_state()
        return state if state is not None else PoolState(used=len(self.loans), idle=0)

    def state_attributes(self, state: PoolState, pending: int) -> dict[str, Any]:
        """Span/event attributes describing ``state`` (and ``pending`` callers) for this pool."""
        attributes: dict[str, Any] = {
            catalog.POOL_NAME: self.name,
            catalog.POOL_USED: state.used,
            catalog.POOL_IDLE: state.idle,
            catalog.POOL_PENDING: pending,
        }
        if state.max is not None:
            attributes[catalog.POOL_MAX] = state.max
        return attributes


def _end_with_error(span: Span, exc: BaseException, waited: float) -> None:
    span.set_attribute(catalog.WAIT_DURATION, waited)
    span.set_attribute(catalog.ERROR_TYPE, type(exc).__qualname__)
    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
    span.end()


class _StandardHistograms:
    """The SDK histograms recorded per checkout in ``standard`` mode."""

    def __init__(self, meter: Any) -> None:
        self.wait: Histogram = _histogram(meter, catalog.CONNECTION_WAIT_TIME, catalog.WAIT_BUCKETS)
        self.use: Histogram = _histogram(meter, catalog.CONNECTION_USE_TIME, catalog.USE_BUCKETS)
        self.create: Histogram = _histogram(
            meter, catalog.CONNECTION_CREATE_TIME, catalog.CREATE_BUCKETS
        )


def _histogram(meter: Any, metric: catalog.Metric, bounds: tuple[float, ...]) -> Histogram:
    return meter.create_histogram(  # type: ignore[no-any-return]
        metric.name,
        unit=metric.unit,
        description=metric.description,
        explicit_bucket_boundaries_advisory=list(bounds),
    )


class Telemetry:
    """The instruments, tracer and logger of one instrumentation, and the pools it records."""

    def __init__(
        self,
        config: Config,
        meter_provider: MeterProvider | None = None,
        tracer_provider: TracerProvider | None = None,
        logger_provider: LoggerProvider | None = None,
    ) -> None:
        self.config = config
        self.active = True
        self._pools: list[PoolRecorder] = []
        self._pools_lock = threading.Lock()
        meter = (meter_provider or get_meter_provider()).get_meter(
            catalog.INSTRUMENTATION_SCOPE, __version__
        )
        self.tracer = trace.get_tracer(
            catalog.INSTRUMENTATION_SCOPE, __version__, tracer_provider=tracer_provider
        )
        self.logger = (logger_provider or get_logger_provider()).get_logger(
            catalog.INSTRUMENTATION_SCOPE, __version__
        )
        self.standard_histograms = (
            _StandardHistograms(meter) if config.histograms == "standard" else None
        )
        _register_observables(meter, self)

    # --- pools ----------------------------------------------------------------------------

    def pool(self, name: str, read_state: StateReader) -> PoolRecorder:
        """A recorder for a newly seen pool."""
        recorder = PoolRecorder(self, name, read_state)
        with self._pools_lock:
            self._pools.append(recorder)
        return recorder

    def drop(self, recorder: PoolRecorder) -> None:
        """Stop reporting a pool."""
        with self._pools_lock:
            if recorder in self._pools:
                self._pools.remove(recorder)

    def pools(self) -> list[PoolRecorder]:
        """The pools reported right now (empty once this instrumentation is shut down)."""
        if not self.active:
            return []
        with self._pools_lock:
            return list(self._pools)

    def shutdown(self) -> None:
        """Stop reporting; instruments stay registered (the API cannot remove them) but go quiet."""
        self.active = False
        with self._pools_lock:
            self._pools.clear()

    # --- spans and events ---------------------------------------------------------------------

    def start_checkout_span(self, state: dict[str, Any]) -> Span:
        """A span around one checkout, child of the current span."""
        return self.tracer.start_span(
            catalog.SPAN_CHECKOUT, kind=SpanKind.INTERNAL, attributes=state
        )

    def emit_timeout(
        self, pool: str, state: dict[str, Any], waited: float, exc: BaseException
    ) -> None:
        """A ``poolwatch.pool.timeout`` event, as a log record and on the active span."""
        attributes = dict(state)
        attributes[catalog.WAIT_DURATION] = waited
        attributes[catalog.ERROR_TYPE] = type(exc).__qualname__
        body = (
            f"pool {pool} timed out after {waited:.3f}s: "
            f"{state[catalog.POOL_USED]} used, {state[catalog.POOL_IDLE]} idle, "
            f"max {state.get(catalog.POOL_MAX, 'unlimited')}, "
            f"{state[catalog.POOL_PENDING]} waiting"
        )
        self.emit_event(catalog.EVENT_POOL_TIMEOUT, body, attributes, SeverityNumber.WARN)

    def emit_event(
        self,
        name: str,
        body: str,
        attributes: dict[str, Any],
        severity: SeverityNumber = SeverityNumber.WARN,
    ) -> None:
        """Emit an event through the Logs API and add it to the active span, if one records."""
        self.logger.emit(
            LogRecord(
                timestamp=time.time_ns(),
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


def _register_observables(meter: Any, telemetry: Telemetry) -> None:
    """Create every collection-time instrument; each callback reads all pools of ``telemetry``."""

    def observe(read: Callable[[Telemetry], Iterable[Observation]]) -> Callable[..., Any]:
        def callback(_options: CallbackOptions) -> Iterator[Observation]:
            try:
                yield from read(telemetry)
            except Exception as exc:  # noqa: BLE001 - the boundary: never raise into collection
                _guard.internal_error("collect", exc)

        return callback

    for metric, read in _OBSERVED:
        if metric in _AGGREGATED and telemetry.standard_histograms is not None:
            continue
        create = (
            meter.create_observable_counter
            if metric.kind is catalog.Kind.COUNTER
            else meter.create_observable_up_down_counter
        )
        create(
            metric.name,
            callbacks=[observe(read)],
            unit=metric.unit,
            description=metric.description,
        )


# --- collection-time readers -------------------------------------------------------------------


def _states(telemetry: Telemetry) -> Iterator[tuple[PoolRecorder, PoolState]]:
    for recorder in telemetry.pools():
        state = recorder.read_state()
        if state is None:
            telemetry.drop(recorder)
            continue
        yield recorder, state


def _read_count(telemetry: Telemetry) -> Iterator[Observation]:
    for recorder, state in _states(telemetry):
        name = recorder.name
        yield Observation(state.used, {catalog.POOL_NAME: name, catalog.STATE: catalog.STATE_USED})
        yield Observation(state.idle, {catalog.POOL_NAME: name, catalog.STATE: catalog.STATE_IDLE})


def _state_field(field: str) -> Callable[[Telemetry], Iterator[Observation]]:
    def read(telemetry: Telemetry) -> Iterator[Observation]:
        for recorder, state in _states(telemetry):
            value = getattr(state, field)
            if value is not None:
                yield Observation(value, recorder.attributes)

    return read


def _recorder_field(field: str) -> Callable[[Telemetry], Iterator[Observation]]:
    def read(telemetry: Telemetry) -> Iterator[Observation]:
        for recorder in telemetry.pools():
            yield Observation(getattr(recorder, field), recorder.attributes)

    return read


def _buckets(field: str) -> Callable[[Telemetry], Iterator[Observation]]:
    def read(telemetry: Telemetry) -> Iterator[Observation]:
        for recorder in telemetry.pools():
            buckets: Buckets = getattr(recorder, field)
            with recorder._lock:
                pairs = list(buckets.cumulative())
            for le, count in pairs:
                yield Observation(count, {catalog.POOL_NAME: recorder.name, catalog.LE: le})

    return read


def _sums(field: str) -> Callable[[Telemetry], Iterator[Observation]]:
    def read(telemetry: Telemetry) -> Iterator[Observation]:
        for recorder in telemetry.pools():
            yield Observation(getattr(recorder, field).total, recorder.attributes)

    return read


def _internal_errors(_telemetry: Telemetry) -> Iterator[Observation]:
    for hook, count in sorted(_guard.error_counts().items()):
        yield Observation(count, {catalog.HOOK: hook})


_AGGREGATED = frozenset(
    {
        catalog.WAIT_TIME_BUCKET,
        catalog.WAIT_TIME_SUM,
        catalog.USE_TIME_BUCKET,
        catalog.USE_TIME_SUM,
        catalog.CREATE_TIME_BUCKET,
        catalog.CREATE_TIME_SUM,
    }
)

_OBSERVED: tuple[tuple[catalog.Metric, Callable[[Telemetry], Iterable[Observation]]], ...] = (
    (catalog.CONNECTION_COUNT, _read_count),
    (catalog.CONNECTION_IDLE_MAX, _state_field("idle_max")),
    (catalog.CONNECTION_IDLE_MIN, _state_field("idle_min")),
    (catalog.CONNECTION_MAX, _state_field("max")),
    (catalog.CONNECTION_PENDING_REQUESTS, _recorder_field("pending")),
    (catalog.CONNECTION_TIMEOUTS, _recorder_field("timeouts")),
    (catalog.WAIT_TIME_BUCKET, _buckets("wait")),
    (catalog.WAIT_TIME_SUM, _sums("wait")),
    (catalog.USE_TIME_BUCKET, _buckets("use")),
    (catalog.USE_TIME_SUM, _sums("use")),
    (catalog.CREATE_TIME_BUCKET, _buckets("create")),
    (catalog.CREATE_TIME_SUM, _sums("create")),
    (catalog.INTERNAL_ERRORS, _internal_errors),
)


_shared: dict[tuple[Config, int, int, int], Telemetry] = {}
_shared_lock = threading.Lock()


def telemetry_for(
    config: Config,
    meter_provider: MeterProvider | None = None,
    tracer_provider: TracerProvider | None = None,
    logger_provider: LoggerProvider | None = None,
) -> Telemetry:
    """The one live :class:`Telemetry` for these providers and settings (instruments are made once)."""
    key = (config, id(meter_provider), id(tracer_provider), id(logger_provider))
    with _shared_lock:
        telemetry = _shared.get(key)
        if telemetry is None or not telemetry.active:
            telemetry = Telemetry(config, meter_provider, tracer_provider, logger_provider)
            _shared[key] = telemetry
        return telemetry


def forget_shared(telemetry: Telemetry) -> None:
    """Shut ``telemetry`` down and let the next :func:`telemetry_for` build a fresh one."""
    telemetry.shutdown()
    with _shared_lock:
        for key, value in list(_shared.items()):
            if value is telemetry:
                del _shared[key]
