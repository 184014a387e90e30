"""poolwatch's OpenTelemetry instruments: the three histograms and every collection-time metric.

Counts and gauges are observable instruments whose callbacks read the pool recorders at
collection time. The histograms leave as real OTLP histograms: in ``otlp`` mode a bridge places
each pool's buckets in every reader's storage at collection (:mod:`poolwatch._otlp_histograms`);
in ``standard`` mode the recorders call ``record()`` per value; ``aggregated`` keeps the old
``le`` gauges. Used by :mod:`poolwatch._telemetry` only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from opentelemetry.metrics import CallbackOptions, Histogram, Observation

from poolwatch import _guard, _instance, _otlp_histograms, catalog
from poolwatch._histogram import Buckets
from poolwatch._recorder import PoolRecorder, PoolState
from poolwatch.config import Config

#: Reads the pools being reported right now.
PoolSource = Callable[[], list[PoolRecorder]]
#: Stops reporting a pool that is gone.
PoolDrop = Callable[[PoolRecorder], None]


class Owner(Protocol):
    """What the collection-time callbacks read besides the pools (the telemetry)."""

    active: bool
    conflicts: Any
    _lock: Any

    def meter_provider(self) -> Any: ...


#: The three histograms: the recorder's field, the metric, the setting holding its bounds.
HISTOGRAMS: tuple[tuple[str, catalog.Metric, str], ...] = (
    ("wait", catalog.CONNECTION_WAIT_TIME, "wait_time_buckets"),
    ("use", catalog.CONNECTION_USE_TIME, "use_time_buckets"),
    ("create", catalog.CONNECTION_CREATE_TIME, "create_time_buckets"),
)


class StandardHistograms:
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


class Bridged:
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

    def sync(self, pools: PoolSource) -> None:
        """Place every pool's histograms in every reader's storage (runs at each collection)."""
        recorders = pools()
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


def register(
    meter: Any,
    owner: Owner,
    *,
    pools: PoolSource,
    drop: PoolDrop,
    mode: str,
    bridged: Bridged | None,
) -> None:
    """Create every collection-time instrument; each callback reads the pools ``pools`` gives
    (and ``owner``'s conflicts and the process's internal errors)."""
    reading = _Reading(owner, pools, drop)

    def observe(read: Callable[[_Reading], Iterable[Observation]]) -> Callable[..., Any]:
        def callback(_options: CallbackOptions) -> Iterator[Observation]:
            try:
                yield from read(reading)
            except Exception as exc:  # noqa: BLE001 - the boundary: never raise into collection
                _guard.internal_error("collect", exc)

        return callback

    for metric, read in _OBSERVED:
        if metric in _AGGREGATED and mode != "aggregated":
            continue
        callbacks = [observe(read)]
        if metric is catalog.INTERNAL_ERRORS:
            # the histograms ride on this instrument's collection: its callbacks run before the
            # reader's storage is read, every time
            callbacks.insert(0, _bridge(owner, pools, bridged))
        observable(meter, metric, *callbacks)


class _Reading:
    """What one set of callbacks reads: the owner and its pools."""

    def __init__(self, owner: Owner, pools: PoolSource, drop: PoolDrop) -> None:
        self.owner = owner
        self._pools = pools
        self.drop = drop

    def pools(self) -> list[PoolRecorder]:
        return self._pools() if self.owner.active else []


def _bridge(
    owner: Owner, pools: PoolSource, bridged: Bridged | None
) -> Callable[[CallbackOptions], Iterator[Observation]]:
    """The callback that hands the pools' histograms to the SDK; it observes nothing itself."""

    def bridge(_options: CallbackOptions) -> Iterator[Observation]:
        try:
            if bridged is not None and owner.active:
                bridged.sync(pools)
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


def _states(reading: _Reading) -> Iterator[tuple[PoolRecorder, PoolState]]:
    for recorder in reading.pools():
        state = recorder.read_state()
        if state is None:
            reading.drop(recorder)
            continue
        yield recorder, state


def _read_count(reading: _Reading) -> Iterator[Observation]:
    for recorder, state in _states(reading):
        pool = recorder.attributes
        yield Observation(state.used, {**pool, catalog.STATE: catalog.STATE_USED})
        yield Observation(state.idle, {**pool, catalog.STATE: catalog.STATE_IDLE})


def _state_field(field: str) -> Callable[[_Reading], Iterator[Observation]]:
    def read(reading: _Reading) -> Iterator[Observation]:
        for recorder, state in _states(reading):
            value = getattr(state, field)
            if value is not None:
                yield Observation(value, recorder.attributes)

    return read


def _recorder_field(field: str) -> Callable[[_Reading], Iterator[Observation]]:
    def read(reading: _Reading) -> Iterator[Observation]:
        for recorder in reading.pools():
            yield Observation(getattr(recorder, field), recorder.attributes)

    return read


def _leaked_now(reading: _Reading) -> Iterator[Observation]:
    for recorder in reading.pools():
        yield Observation(recorder.leaked_now(), recorder.attributes)


def _buckets(field: str) -> Callable[[_Reading], Iterator[Observation]]:
    def read(reading: _Reading) -> Iterator[Observation]:
        for recorder in reading.pools():
            recorder.fold()
            buckets: Buckets = getattr(recorder, field)
            with recorder._lock:
                pairs = list(buckets.cumulative())
            for le, count in pairs:
                yield Observation(count, {**recorder.attributes, catalog.LE: le})

    return read


def _sums(field: str) -> Callable[[_Reading], Iterator[Observation]]:
    def read(reading: _Reading) -> Iterator[Observation]:
        for recorder in reading.pools():
            recorder.fold()
            yield Observation(getattr(recorder, field).total, recorder.attributes)

    return read


def _create_errors(reading: _Reading) -> Iterator[Observation]:
    for recorder in reading.pools():
        with recorder._lock:
            counts = sorted(recorder.create_errors.items(), key=lambda item: str(item[0]))
        for (kind, code), count in counts:
            attributes = {**recorder.attributes, catalog.ERROR_TYPE: kind}
            if code is not None:
                attributes[catalog.DB_STATUS_CODE] = code
            yield Observation(count, attributes)


def _conflicts(reading: _Reading) -> Iterator[Observation]:
    owner = reading.owner
    if not owner.active:
        return
    with owner._lock:
        counts = sorted(owner.conflicts.items())
    for kind, count in counts:
        yield Observation(count, {catalog.CONFLICT_KIND: kind})


def _internal_errors(reading: _Reading) -> Iterator[Observation]:
    # Once per collection: the global provider may have been a proxy when instrumenting began.
    _guard.guarded("instance", _instance.ensure_instance_id, reading.owner.meter_provider())
    for hook, count in sorted(_guard.error_counts().items()):
        yield Observation(count, {catalog.HOOK: hook})


_AGGREGATED = frozenset(catalog.AGGREGATED_HISTOGRAMS)

_OBSERVED: tuple[tuple[catalog.Metric, Callable[[_Reading], Iterable[Observation]]], ...] = (
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
