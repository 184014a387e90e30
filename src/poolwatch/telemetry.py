"""The one place that talks to OpenTelemetry: instruments, spans, events and the leak watchdog.

Counts and gauges are observable instruments read from the pool recorders at collection time;
the histograms leave as OTLP histograms built from the recorders' buckets at the same moment
(:mod:`poolwatch._otlp_histograms`). Events are log records with an ``event_name`` (and span events on
the active span). A daemon thread looks for connections held past the leak threshold.
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry._logs import LoggerProvider, LogRecord, SeverityNumber, get_logger_provider
from opentelemetry.context import Context
from opentelemetry.metrics import (
    CallbackOptions,
    Histogram,
    MeterProvider,
    Observation,
    get_meter_provider,
)
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TracerProvider,
)

from poolwatch import (
    _errors,
    _filling,
    _guard,
    _instance,
    _otlp_histograms,
    _process,
    _sites,
    catalog,
)
from poolwatch._histogram import Buckets
from poolwatch._version import __version__
from poolwatch.config import Config
from poolwatch.recorder import (
    SAMPLE_AFTER,
    Loan,
    PoolRecorder,
    PoolState,
    StateReader,
)

_RECENT_TIMEOUTS = 4096


#: The three histograms: the recorder's field, the metric, the setting holding its bounds.
HISTOGRAMS: tuple[tuple[str, catalog.Metric, str], ...] = (
    ("wait", catalog.CONNECTION_WAIT_TIME, "wait_time_buckets"),
    ("use", catalog.CONNECTION_USE_TIME, "use_time_buckets"),
    ("create", catalog.CONNECTION_CREATE_TIME, "create_time_buckets"),
)


class _StandardHistograms:
    """The SDK histograms recorded per checkout in ``standard`` mode (and when the bridge cannot run)."""

    def __init__(self, meter: Any, config: Config) -> None:
        made = {field: _histogram(meter, metric, getattr(config, bounds))
                for field, metric, bounds in HISTOGRAMS}  # fmt: skip
        self.wait: Histogram = made["wait"]
        self.use: Histogram = made["use"]
        self.create: Histogram = made["create"]


def _histogram(meter: Any, metric: catalog.Metric, bounds: tuple[float, ...]) -> Histogram:
    return meter.create_histogram(  # type: ignore[no-any-return]
        metric.name,
        unit=metric.unit,
        description=metric.description,
        explicit_bucket_boundaries_advisory=list(bounds),
    )


def histogram_mode(config: Config, meter: Any) -> str:
    """The mode that runs: ``otlp`` falls back to ``standard`` for a meter that is not the SDK's
    (nor the API's no-op or proxy meter), or when the SDK's layout is not the known one.

    A layout mismatch warns once per process and counts an internal error.
    """
    if config.histograms != "otlp":
        return config.histograms
    kind = _otlp_histograms.meter_kind(meter)
    if kind == "api":
        return "otlp"
    if kind == "other":  # another implementation of the API: its histograms take record()
        return "standard"
    problems = _otlp_histograms.check_layout()
    if not problems:
        return "otlp"
    _guard.internal_error(
        "otlp-histograms",
        RuntimeError(
            "the installed OpenTelemetry SDK lacks what poolwatch's OTLP histograms rely on ("
            + "; ".join(problems)
            + "): recording them through Histogram.record() per checkout instead"
        ),
    )
    return "standard"


class _Bridged:
    """The ``otlp`` mode: one SDK histogram and bridge per histogram, synced at collection."""

    def __init__(self, meter: Any, config: Config) -> None:
        exponential = config.histogram_aggregation == "exponential"
        self.bridges = [
            (
                field,
                _otlp_histograms.Bridge(
                    _histogram(meter, metric, getattr(config, bounds)),
                    exponential,
                    getattr(config, bounds),
                ),
            )
            for field, metric, bounds in HISTOGRAMS
        ]

    def sync(self, telemetry: Telemetry) -> None:
        """Place every pool's histograms in every reader's storage (runs at each collection)."""
        recorders = telemetry.pools()
        for field, bridge in self.bridges:
            bridge.sync(_source(recorder, field) for recorder in recorders)


def _source(recorder: PoolRecorder, field: str) -> _otlp_histograms.Source:
    histogram = getattr(recorder, field)

    def read(window: list[float], reset: bool, after_ns: int) -> _otlp_histograms.Snapshot:
        recorder.drain()
        with recorder._lock:
            exemplars = (
                [
                    (kept.value, kept.time_ns, kept.context.span_id, kept.context.trace_id)
                    for kept in list(recorder.exemplars.values())
                    if kept.time_ns > after_ns
                ]
                if field == "wait"
                else []
            )
            return _otlp_histograms.snapshot(histogram, window, reset, exemplars)

    return _otlp_histograms.Source(
        recorder, recorder.attributes, recorder.started_ns, read, histogram
    )


class RecentTimeout:
    """A pool timeout seen by one thread or task, kept to explain a conflict that follows it."""

    __slots__ = ("at", "message", "pool")

    def __init__(self, at: float, pool: str, message: str) -> None:
        self.at = at
        self.pool = pool
        self.message = message


def caller_key() -> tuple[int, int]:
    """Identifies the running thread and asyncio task (0 outside a task)."""
    task = asyncio.current_task() if asyncio.events._get_running_loop() is not None else None
    return threading.get_ident(), id(task) if task is not None else 0


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
        self._lock = threading.Lock()
        self.sites = _sites.SiteCapture(
            limit=64 if config.capture_stacks else 3, library_packages=config.library_packages
        )
        self.conflicts: Counter[str] = Counter()
        self._recent: OrderedDict[tuple[int, int], RecentTimeout] = OrderedDict()
        self._meter_provider = meter_provider
        provider = meter_provider or get_meter_provider()
        _guard.guarded("instance", _instance.ensure_instance_id, provider)
        meter = provider.get_meter(catalog.INSTRUMENTATION_SCOPE, __version__)
        #: poolwatch's meter: adapters with instruments of their own (Django) register them here.
        self.meter = meter
        self.tracer = trace.get_tracer(
            catalog.INSTRUMENTATION_SCOPE, __version__, tracer_provider=tracer_provider
        )
        self.logger = (logger_provider or get_logger_provider()).get_logger(
            catalog.INSTRUMENTATION_SCOPE, __version__
        )
        #: ``otlp``, ``standard`` or ``aggregated``: what runs (see :func:`histogram_mode`).
        self.histogram_mode = histogram_mode(config, meter)
        self.standard_histograms = (
            _StandardHistograms(meter, config) if self.histogram_mode == "standard" else None
        )
        self.bridged = _Bridged(meter, config) if self.histogram_mode == "otlp" else None
        _register_observables(meter, self)
        _LIVE.add(self)

    def meter_provider(self) -> MeterProvider:
        """The provider poolwatch's meter comes from (the global one unless one was passed)."""
        return self._meter_provider or get_meter_provider()

    # --- pools ----------------------------------------------------------------------------

    def pool(
        self,
        name: str,
        read_state: StateReader,
        identity: Mapping[str, str | int] | None = None,
    ) -> PoolRecorder:
        """A recorder for a newly seen pool (starts the leak watchdog with the first one);
        ``identity`` (:meth:`poolwatch.naming.Target.attributes`) goes on all its points."""
        recorder = PoolRecorder(self, name, read_state, identity)
        with self._lock:
            self._pools.append(recorder)
        if self.config.leak_threshold > 0:
            WATCHDOG.watch(self)
        return recorder

    def first_checkout(self) -> None:
        """A pool's first checkout in this process: the watchdog runs here too (a forked child
        starts one now, not at the fork)."""
        if self.active and self.config.leak_threshold > 0:
            WATCHDOG.watch(self)

    def after_fork(self) -> None:
        """In a forked child: fresh locks, and books (conflicts, pools) of the child's own."""
        self._lock = threading.Lock()
        self.conflicts.clear()
        self._recent.clear()
        for recorder in self._pools:
            recorder.after_fork()

    def drop(self, recorder: PoolRecorder) -> None:
        """Stop reporting a pool."""
        with self._lock:
            if recorder in self._pools:
                self._pools.remove(recorder)

    def pools(self) -> list[PoolRecorder]:
        """The pools reported right now (empty once this instrumentation is shut down)."""
        if not self.active:
            return []
        with self._lock:
            return list(self._pools)

    def shutdown(self) -> None:
        """Stop reporting; instruments stay registered (the API cannot remove them) but go quiet."""
        self.active = False
        with self._lock:
            self._pools.clear()

    def check_leaks(self) -> None:
        """Report every connection that has just crossed the leak threshold (the watchdog's job).

        Loans without a borrow site first get their holder's stack sampled, once they are
        :data:`~poolwatch.recorder.SAMPLE_AFTER` old (or as old as the threshold, if it is lower).
        """
        threshold = self.config.leak_threshold
        sample_after = min(SAMPLE_AFTER, threshold)
        for recorder in self.pools():
            if not self.config.capture_stacks:
                # without a site the leak is still reported
                _guard.guarded("leak-watchdog", recorder.sample_sites, sample_after)
            for loan in recorder.find_leaks(threshold):
                _guard.guarded("leak-watchdog", self._leaked, recorder, loan)

    # --- spans and events ---------------------------------------------------------------------

    def checkout_span(
        self,
        started_ns: int,
        state: dict[str, Any],
        waited: float,
        error: BaseException | None = None,
    ) -> SpanContext:
        """The span of one checkout that began at ``started_ns``, child of the current span.

        ``state`` describes the pool when the wait began; a failed checkout records ``error``.
        Returns the span's context (the wait's exemplar links to it).
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
        return span.get_span_context()

    def timed_out(
        self, pool: str, state: dict[str, Any], waited: float, exc: BaseException
    ) -> None:
        """A pool timeout: remembered for the caller, and a ``poolwatch.pool.timeout`` event."""
        self._remember_timeout(RecentTimeout(time.monotonic(), pool, str(exc).split("\n")[0]))
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

    def _leaked(self, recorder: PoolRecorder, loan: Loan) -> None:
        age = time.perf_counter() - loan.started
        attributes = _loan_attributes(recorder, loan)
        attributes[catalog.CONNECTION_AGE] = age
        attributes[catalog.LEAK_THRESHOLD] = self.config.leak_threshold
        body = (
            f"connection from pool {recorder.name} held for {age:.1f}s "
            f"(threshold {self.config.leak_threshold:g}s) by {loan.holder()}, "
            f"{_where(loan)}"
        )
        self.emit_event(catalog.EVENT_LEAK, body, attributes, context=loan.context)

    def returned(self, recorder: PoolRecorder, loan: Loan, held: float) -> None:
        """A connection reported as leaked came back (HikariCP's "unleaked")."""
        attributes = _loan_attributes(recorder, loan)
        attributes[catalog.CONNECTION_HELD] = held
        body = f"leaked connection from pool {recorder.name} returned after {held:.1f}s"
        self.emit_event(
            catalog.EVENT_RETURNED, body, attributes, SeverityNumber.INFO, context=loan.context
        )

    def never_returned(self, recorder: PoolRecorder, loan: Loan, held: float) -> None:
        """A connection's handle was garbage-collected while it was still checked out."""
        attributes = _loan_attributes(recorder, loan)
        attributes[catalog.CONNECTION_HELD] = held
        body = (
            f"connection from pool {recorder.name} was garbage-collected without being "
            f"returned, {held:.1f}s after {loan.holder()} borrowed it; {_where(loan)}"
        )
        self.emit_event(catalog.EVENT_NEVER_RETURNED, body, attributes, context=loan.context)

    def conflict(self, kind: str, attributes: dict[str, Any], body: str) -> None:
        """A session conflict: counted by kind, explained by a recent pool timeout if there was one."""
        with self._lock:
            self.conflicts[kind] += 1
        attributes = {catalog.CONFLICT_KIND: kind, **attributes}
        cause = self.recent_timeout()
        if cause is not None:
            attributes[catalog.CONFLICT_CAUSE] = catalog.CAUSE_POOL_TIMEOUT
            attributes[catalog.CONFLICT_CAUSE_POOL] = cause.pool
            attributes[catalog.CONFLICT_CAUSE_AGE] = time.monotonic() - cause.at
            attributes[catalog.CONFLICT_CAUSE_MESSAGE] = cause.message
            where = "task" if caller_key()[1] else "thread"
            body += (
                f"; probable cause: pool {cause.pool} timed out "
                f"{attributes[catalog.CONFLICT_CAUSE_AGE]:.1f}s earlier in this {where}"
            )
        self.emit_event(catalog.EVENT_CONFLICT, body, attributes)

    def recent_timeout(self) -> RecentTimeout | None:
        """The pool timeout this thread or task saw within the conflict window, if any."""
        with self._lock:
            recent = self._recent.get(caller_key())
        if recent is None or time.monotonic() - recent.at > self.config.conflict_window:
            return None
        return recent

    def _remember_timeout(self, recent: RecentTimeout) -> None:
        key = caller_key()
        with self._lock:
            self._recent[key] = recent
            self._recent.move_to_end(key)
            while len(self._recent) > _RECENT_TIMEOUTS:
                self._recent.popitem(last=False)

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
            LogRecord(
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


class _Watchdog:
    """One daemon thread per process that looks for leaks in every watched telemetry.

    It wakes a few times per leak threshold (the smallest among those watched) and ends by
    itself when nothing is left to watch; :meth:`watch` starts it again.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watched: weakref.WeakSet[Telemetry] = weakref.WeakSet()
        self._thread: threading.Thread | None = None
        # a forked child has no copy of the thread; its first checkout starts one
        _process.on_fork("watchdog", self._forget_thread)

    def watch(self, telemetry: Telemetry) -> None:
        """Look for leaks in ``telemetry``'s pools from now on."""
        with self._lock:
            self._watched.add(telemetry)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="poolwatch-leaks", daemon=True
                )
                self._thread.start()

    def _forget_thread(self) -> None:
        self._lock = threading.Lock()
        self._thread = None

    def _targets(self) -> list[Telemetry]:
        with self._lock:
            targets = [t for t in self._watched if t.active and t.config.leak_threshold > 0]
            if not targets:
                self._thread = None
            return targets

    def _run(self) -> None:
        while targets := self._targets():
            # a few times per threshold, and often enough to sample holders soon after
            # SAMPLE_AFTER, while they are most likely still in the code that borrowed
            interval = min(min(t.config.leak_threshold for t in targets) / 4, SAMPLE_AFTER / 2)
            time.sleep(max(interval, 0.02))
            for telemetry in targets:
                try:
                    telemetry.check_leaks()
                except Exception as exc:  # noqa: BLE001 - the boundary of the watchdog thread
                    _guard.internal_error("leak-watchdog", exc)


WATCHDOG = _Watchdog()
#: Every telemetry of this process (reset in a forked child).
_LIVE: weakref.WeakSet[Telemetry] = weakref.WeakSet()


def _after_fork() -> None:
    global _shared_lock  # noqa: PLW0603 - the registry's lock, replaced in a forked child
    _shared_lock = threading.Lock()
    for telemetry in list(_LIVE):
        telemetry.after_fork()


_process.on_fork("telemetry", _after_fork)


# --- collection-time instruments ---------------------------------------------------------------


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
        if metric in _AGGREGATED and telemetry.histogram_mode != "aggregated":
            continue
        callbacks = [observe(read)]
        if metric is catalog.INTERNAL_ERRORS:
            # the histograms ride on this instrument's collection: its callbacks run before the
            # reader's storage is read, every time
            callbacks.insert(0, _bridge(telemetry))
        observable(meter, metric, *callbacks)


def _bridge(telemetry: Telemetry) -> Callable[[CallbackOptions], Iterator[Observation]]:
    """The callback that hands the pools' histograms to the SDK; it observes nothing itself."""

    def bridge(_options: CallbackOptions) -> Iterator[Observation]:
        try:
            if telemetry.bridged is not None and telemetry.active:
                telemetry.bridged.sync(telemetry)
        except Exception as exc:  # noqa: BLE001 - the boundary: never raise into collection
            _guard.internal_error("otlp-histograms", exc)
        return iter(())

    return bridge


def observable(meter: Any, metric: catalog.Metric, *callbacks: Callable[..., Any]) -> None:
    """Create the collection-time instrument for ``metric``: a counter or an up-down counter."""
    create = (
        meter.create_observable_counter
        if metric.kind is catalog.Kind.COUNTER
        else meter.create_observable_up_down_counter
    )
    create(metric.name, callbacks=list(callbacks), unit=metric.unit, description=metric.description)


def _states(telemetry: Telemetry) -> Iterator[tuple[PoolRecorder, PoolState]]:
    for recorder in telemetry.pools():
        state = recorder.read_state()
        if state is None:
            telemetry.drop(recorder)
            continue
        yield recorder, state


def _read_count(telemetry: Telemetry) -> Iterator[Observation]:
    for recorder, state in _states(telemetry):
        pool = recorder.attributes
        yield Observation(state.used, {**pool, catalog.STATE: catalog.STATE_USED})
        yield Observation(state.idle, {**pool, catalog.STATE: catalog.STATE_IDLE})


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


def _leaked_now(telemetry: Telemetry) -> Iterator[Observation]:
    for recorder in telemetry.pools():
        yield Observation(recorder.leaked_now(), recorder.attributes)


def _buckets(field: str) -> Callable[[Telemetry], Iterator[Observation]]:
    def read(telemetry: Telemetry) -> Iterator[Observation]:
        for recorder in telemetry.pools():
            recorder.fold()
            buckets: Buckets = getattr(recorder, field)
            with recorder._lock:
                pairs = list(buckets.cumulative())
            for le, count in pairs:
                yield Observation(count, {**recorder.attributes, catalog.LE: le})

    return read


def _sums(field: str) -> Callable[[Telemetry], Iterator[Observation]]:
    def read(telemetry: Telemetry) -> Iterator[Observation]:
        for recorder in telemetry.pools():
            recorder.fold()
            yield Observation(getattr(recorder, field).total, recorder.attributes)

    return read


def _create_errors(telemetry: Telemetry) -> Iterator[Observation]:
    for recorder in telemetry.pools():
        with recorder._lock:
            counts = sorted(recorder.create_errors.items(), key=lambda item: str(item[0]))
        for (kind, code), count in counts:
            attributes = {**recorder.attributes, catalog.ERROR_TYPE: kind}
            if code is not None:
                attributes[catalog.DB_STATUS_CODE] = code
            yield Observation(count, attributes)


def _conflicts(telemetry: Telemetry) -> Iterator[Observation]:
    if not telemetry.active:
        return
    with telemetry._lock:
        counts = sorted(telemetry.conflicts.items())
    for kind, count in counts:
        yield Observation(count, {catalog.CONFLICT_KIND: kind})


def _internal_errors(telemetry: Telemetry) -> Iterator[Observation]:
    # Once per collection: the global provider may have been a proxy when instrumenting began.
    _guard.guarded("instance", _instance.ensure_instance_id, telemetry.meter_provider())
    for hook, count in sorted(_guard.error_counts().items()):
        yield Observation(count, {catalog.HOOK: hook})


_AGGREGATED = frozenset(catalog.AGGREGATED_HISTOGRAMS)

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
    (catalog.CONNECTION_LEAKED, _leaked_now),
    (catalog.CONNECTION_LEAKS, _recorder_field("leaks")),
    (catalog.CONNECTION_NEVER_RETURNED, _recorder_field("never_returned")),
    (catalog.CONNECTION_CREATE_ERRORS, _create_errors),
    (catalog.SESSION_CONFLICTS, _conflicts),
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
    """The one live :class:`Telemetry` for these providers and settings (instruments made once)."""
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


def active() -> list[Telemetry]:
    """Every live telemetry (session-conflict hooks report to all of them)."""
    with _shared_lock:
        return [telemetry for telemetry in _shared.values() if telemetry.active]
