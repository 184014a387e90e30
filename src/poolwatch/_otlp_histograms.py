"""Real OTLP histograms from poolwatch's own buckets, handed to the SDK at collection time.

The Python SDK takes histogram data only one ``record()`` at a time (about 5 µs each). poolwatch
keeps exact buckets itself and, from an observable instrument's callback (which runs at every
collection, before the reader's storage is read), places one aggregation object per pool in each
reader's storage for a real Histogram instrument. The SDK then exports them as ordinary
Histogram or ExponentialHistogram points, with the reader's temporality, views that drop the
instrument respected. The SDK internals this relies on are listed in :data:`SDK_LAYOUT` and
exercised once per process by :func:`check_layout`; when they do not work, telemetry records the
histograms through ``record()`` instead.
"""

from __future__ import annotations

import functools
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from opentelemetry.metrics import NoOpHistogram

from poolwatch import _guard
from poolwatch._guard import PrivateHook
from poolwatch._histogram import Buckets, ExponentialBuckets, Histogram

_SDK = "opentelemetry.sdk.metrics._internal"
_VIEW_MATCH = f"{_SDK}._view_instrument_match._ViewInstrumentMatch"
_AGGREGATION = f"{_SDK}.aggregation"
_OFF = "histograms=otlp falls back to record() per checkout (histograms=standard)"

#: Every private name of the SDK (and API) the bridge uses; :func:`check_layout` exercises them.
#: The project's PRIVATE_HOOKS convention (see :class:`poolwatch._guard.PrivateHook`), under the name the
#: bridge's documentation uses.
SDK_LAYOUT: tuple[PrivateHook, ...] = (
    PrivateHook(f"{_SDK}.instrument._Histogram", "_measurement_consumer", _OFF),
    PrivateHook(
        f"{_SDK}.measurement_consumer.SynchronousMeasurementConsumer", "_reader_storages", _OFF
    ),
    PrivateHook(
        f"{_SDK}.metric_reader_storage.MetricReaderStorage",
        "_get_or_init_view_instrument_match",
        _OFF,
    ),
    PrivateHook(_VIEW_MATCH, "_attributes_aggregation", _OFF),
    PrivateHook(_VIEW_MATCH, "_aggregation", _OFF),
    PrivateHook(_VIEW_MATCH, "_lock", _OFF),
    PrivateHook(_VIEW_MATCH, "_view", _OFF),
    PrivateHook(_VIEW_MATCH, "_instrument", _OFF),
    PrivateHook(_AGGREGATION, "_ExplicitBucketHistogramAggregation", _OFF),
    PrivateHook(_AGGREGATION, "_ExponentialBucketHistogramAggregation", _OFF),
    PrivateHook(_AGGREGATION, "_DropAggregation", _OFF),
    PrivateHook(f"{_AGGREGATION}.Aggregation", "_create_aggregation", _OFF),
    PrivateHook(f"{_SDK}.view.View", "_exemplar_reservoir_factory", _OFF),
    PrivateHook(
        "opentelemetry.metrics._internal.instrument._ProxyHistogram",
        "_real_instrument",
        "histograms of a meter instrumented before the SDK provider was set are not exported "
        "(counted as internal errors)",
    ),
    PrivateHook(
        "opentelemetry.metrics._internal",
        "_ProxyMeter",
        "a meter of the API's proxy provider is taken for another implementation: record()",
    ),
)
PRIVATE_HOOKS = SDK_LAYOUT


def meter_kind(meter: Any) -> str:
    """``api`` (the API's no-op or proxy meter), ``sdk`` (the OpenTelemetry SDK's) or ``other``."""
    import opentelemetry.metrics._internal as api_internal
    from opentelemetry.metrics import NoOpMeter

    # check_layout() reports a missing _ProxyMeter
    proxy: type = getattr(api_internal, "_ProxyMeter", NoOpMeter)
    if isinstance(meter, (NoOpMeter, proxy)):
        return "api"
    try:
        from opentelemetry.sdk.metrics import Meter as SdkMeter
    except ImportError:
        return "other"
    return "sdk" if isinstance(meter, SdkMeter) else "other"


class Snapshot(NamedTuple):
    """One pool histogram read at collection time (counts copied under the recorder's lock)."""

    count: int  # type: ignore[assignment]  # shadows tuple.count, which nothing here calls
    total: float
    low: float
    high: float
    #: ``[low, high]`` since this reader's last delta read.
    window: tuple[float, float]
    #: Explicit: counts per bucket. Exponential: ``{index: count}`` and the zero count.
    counts: list[int] | dict[int, int]
    zero: int
    #: ``(value, time_ns, span_id, trace_id)`` of traced waits newer than the given time.
    exemplars: list[tuple[float, int, int, int]]


class Source:
    """One pool's histogram as the bridge reads it: attributes, start time and a reader."""

    def __init__(
        self,
        key: object,
        attributes: dict[str, str | int],
        started_ns: int,
        read: Callable[[list[float], bool, int], Snapshot],
        histogram: Histogram,
    ) -> None:
        self.key = key
        self.attributes = attributes
        self.started_ns = started_ns
        #: ``read(window, reset_window, exemplars_after_ns)``.
        self.read = read
        self.histogram = histogram


class _Points:
    """The SDK-facing aggregation of one pool for one reader stream: a point at each collection."""

    def __init__(self, source: Source, exponential: bool, owner: object) -> None:
        self.source = source
        #: The bridge that placed it (several may share an instrument).
        self.owner = owner
        self._exponential = exponential
        self._window = source.histogram.window()
        self._previous: Snapshot | None = None
        self._previous_ns = source.started_ns
        self._exemplars_after = 0

    def aggregate(self, measurement: Any, should_sample_exemplar: bool = True) -> None:
        """Nothing records into poolwatch's histograms through the SDK; ignore anything that does."""

    def collect(self, temporality: Any, collection_start_nanos: int) -> Any:
        """The point for this collection: cumulative since the pool began, or the delta since the last.

        The SDK calls this while it collects: an error is counted and the point left out.
        """
        try:
            return self._collect(temporality, collection_start_nanos)
        except Exception as exc:  # noqa: BLE001 - the boundary: never raise into collection
            _guard.internal_error("otlp-histograms", exc)
            return None

    def _collect(self, temporality: Any, collection_start_nanos: int) -> Any:
        from opentelemetry.sdk.metrics.export import AggregationTemporality

        delta = temporality is AggregationTemporality.DELTA
        now = self.source.read(self._window, delta, self._exemplars_after)
        if now.exemplars:
            self._exemplars_after = max(exemplar[1] for exemplar in now.exemplars)
        start = self.source.started_ns
        shown = now
        if delta:
            start, shown = self._previous_ns, _minus(now, self._previous)
            self._previous, self._previous_ns = now, collection_start_nanos
        if shown.count == 0:
            return None
        return _point(shown, self.source, start, collection_start_nanos, self._exponential)


def _minus(now: Snapshot, before: Snapshot | None) -> Snapshot:
    if before is None:
        return now._replace(low=now.window[0], high=now.window[1])
    if isinstance(now.counts, dict):
        assert isinstance(before.counts, dict)
        old = before.counts
        counts: list[int] | dict[int, int] = {
            index: value - old.get(index, 0)
            for index, value in now.counts.items()
            if value != old.get(index, 0)
        }
    else:
        counts = [a - b for a, b in zip(now.counts, before.counts, strict=True)]
    return now._replace(
        count=now.count - before.count,
        total=now.total - before.total,
        low=now.window[0],
        high=now.window[1],
        counts=counts,
        zero=now.zero - before.zero,
    )


def _point(shown: Snapshot, source: Source, start: int, end: int, exponential: bool) -> Any:
    from opentelemetry.sdk.metrics import Exemplar
    from opentelemetry.sdk.metrics.export import (
        Buckets as SdkBuckets,
    )
    from opentelemetry.sdk.metrics.export import (
        ExponentialHistogramDataPoint,
        HistogramDataPoint,
    )

    exemplars = [
        Exemplar({}, value, at, span_id, trace_id)
        for value, at, span_id, trace_id in shown.exemplars
    ]
    if exponential:
        assert isinstance(shown.counts, dict) and isinstance(source.histogram, ExponentialBuckets)
        offset, dense = _dense(shown.counts)
        return ExponentialHistogramDataPoint(
            attributes=source.attributes,
            start_time_unix_nano=start,
            time_unix_nano=end,
            count=shown.count,
            sum=shown.total,
            scale=source.histogram.scale,
            zero_count=shown.zero,
            positive=SdkBuckets(offset=offset, bucket_counts=dense),
            negative=SdkBuckets(offset=0, bucket_counts=[]),
            flags=0,
            min=shown.low,
            max=shown.high,
            exemplars=exemplars,
        )
    assert isinstance(shown.counts, list) and isinstance(source.histogram, Buckets)
    return HistogramDataPoint(
        attributes=source.attributes,
        start_time_unix_nano=start,
        time_unix_nano=end,
        count=shown.count,
        sum=shown.total,
        bucket_counts=list(shown.counts),
        explicit_bounds=list(source.histogram.bounds),
        min=shown.low,
        max=shown.high,
        exemplars=exemplars,
    )


def _dense(counts: dict[int, int]) -> tuple[int, list[int]]:
    used = [index for index, count in counts.items() if count]
    if not used:
        return 0, []
    low, high = min(used), max(used)
    return low, [counts.get(index, 0) for index in range(low, high + 1)]


class Bridge:
    """Keeps one histogram instrument's reader streams holding a :class:`_Points` per pool.

    :meth:`sync` runs in an observable callback, once per collection of each reader. Points are
    kept here as well as in the streams: a delta stream of the SDK empties its aggregations at
    every collection, and the next :meth:`sync` puts the same objects back, history intact.
    """

    def __init__(
        self, instrument: Any, exponential: bool, bounds: tuple[float, ...], check: bool = True
    ) -> None:
        self._instrument = instrument
        #: Whether :meth:`sync` first asks :func:`check_layout` (not while it runs the probe).
        self._check = check
        self._exponential = exponential
        self._bounds = bounds
        self._points: weakref.WeakKeyDictionary[Any, dict[object, _Points]] = (
            weakref.WeakKeyDictionary()
        )

    def sync(self, sources: Iterable[Source]) -> None:
        """Make every stream of the instrument hold exactly the points of ``sources``."""
        real = getattr(self._instrument, "_real_instrument", None) or self._instrument
        consumer = getattr(real, "_measurement_consumer", None)
        if consumer is None:
            if isinstance(real, NoOpHistogram):  # no SDK: there is no reader to export to
                return
            raise RuntimeError(
                f"cannot hand histograms to {type(real).__qualname__}, not the OpenTelemetry SDK's"
            )
        # checked when instrumenting, unless the meter was then the API's proxy
        problems = check_layout() if self._check else ()
        if problems:
            raise RuntimeError("the SDK's layout is not the known one: " + "; ".join(problems))
        current = {source.key: source for source in sources}
        for storage in list(consumer._reader_storages.values()):
            for stream in storage._get_or_init_view_instrument_match(real):
                if self._shape(stream):
                    self._place(stream, current)

    def _shape(self, stream: Any) -> bool:
        """Give the stream poolwatch's aggregation type; False if a view dropped it."""
        from opentelemetry.sdk.metrics._internal import aggregation as sdk

        if isinstance(stream._aggregation, sdk._DropAggregation):
            return False
        wanted: type = (
            sdk._ExponentialBucketHistogramAggregation
            if self._exponential
            else sdk._ExplicitBucketHistogramAggregation
        )
        if not isinstance(stream._aggregation, wanted):
            template = (
                sdk.ExponentialBucketHistogramAggregation()
                if self._exponential
                else sdk.ExplicitBucketHistogramAggregation(self._bounds)
            )
            stream._aggregation = template._create_aggregation(
                stream._instrument, {}, stream._view._exemplar_reservoir_factory, 0
            )
        return True

    def _place(self, stream: Any, current: dict[object, Source]) -> None:
        points = self._points.setdefault(stream, {})
        for key in [key for key in points if key not in current]:
            del points[key]
        for key, source in current.items():
            if key not in points:
                points[key] = _Points(source, self._exponential, self)
        live = {id(point) for point in points.values()}
        with stream._lock:
            held = stream._attributes_aggregation
            for key, value in list(held.items()):
                if isinstance(value, _Points) and value.owner is self and id(value) not in live:
                    del held[key]
            for point in points.values():
                # a key of poolwatch's own: nothing records into this instrument through the SDK
                held.setdefault(("poolwatch", id(point)), point)


@functools.cache
def check_layout() -> tuple[str, ...]:
    """What of :data:`SDK_LAYOUT` does not work in the installed SDK (empty: everything does).

    Each name is looked up, then the whole path is exercised once: a histogram of a throwaway
    provider gets a bridged pool with one value, and its collection must export that value, for
    explicit and exponential buckets alike.
    """
    missing = [f"{hook.owner}.{hook.attribute}" for hook in SDK_LAYOUT if not _present(hook)]
    if missing:
        return tuple(missing)
    try:
        _probe()
    except Exception as exc:  # noqa: BLE001 - any failure means the layout is not the known one
        return (f"collecting a bridged histogram: {type(exc).__name__}: {exc}",)
    return ()


def _present(hook: PrivateHook) -> bool:
    """Whether ``hook.owner`` (a module, or a class in one) has ``hook.attribute``.

    An instance attribute counts when an ``__init__`` of the class or a base assigns it.
    """
    import importlib

    parts = hook.owner.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            target = getattr(target, name, None)
        break
    else:
        return False
    if target is None:
        return False
    inits = [vars(cls).get("__init__") for cls in getattr(target, "__mro__", ())]
    names = {name for init in inits for name in getattr(init, "__code__", _NO_CODE).co_names}
    return hasattr(target, hook.attribute) or hook.attribute in names


_NO_CODE = compile("", "<none>", "exec")


def _probe() -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import (
        AggregationTemporality,
        ExponentialHistogramDataPoint,
        HistogramDataPoint,
        InMemoryMetricReader,
    )

    for exponential, expected in (
        (False, HistogramDataPoint),
        (True, ExponentialHistogramDataPoint),
    ):
        for temporality in (AggregationTemporality.CUMULATIVE, AggregationTemporality.DELTA):
            reader = InMemoryMetricReader(preferred_temporality={_histogram_class(): temporality})
            provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
            try:
                histogram = provider.get_meter("poolwatch.probe").create_histogram("probe")
                buckets: Histogram = ExponentialBuckets(3) if exponential else Buckets((1.0,))
                buckets.observe(0.5)
                bridge = Bridge(histogram, exponential, (1.0,), check=False)
                bridge.sync([_probe_source(buckets)])
                points = [
                    point
                    for resource in (reader.get_metrics_data() or _empty()).resource_metrics
                    for scope in resource.scope_metrics
                    for metric in scope.metrics
                    for point in metric.data.data_points
                ]
            finally:
                provider.shutdown()
            if len(points) != 1 or not isinstance(points[0], expected) or points[0].count != 1:
                raise RuntimeError(f"expected one {expected.__name__} of count 1, got {points!r}")


def _histogram_class() -> type:
    from opentelemetry.sdk.metrics import Histogram as SdkHistogram

    return SdkHistogram


def _empty() -> Any:
    from opentelemetry.sdk.metrics.export import MetricsData

    return MetricsData(resource_metrics=[])


def _probe_source(buckets: Histogram) -> Source:
    def read(window: list[float], reset: bool, after: int) -> Snapshot:
        return snapshot(buckets, window, reset, [])

    return Source("probe", {}, time.time_ns(), read, buckets)


def snapshot(
    histogram: Histogram,
    window: list[float],
    reset_window: bool,
    exemplars: list[tuple[float, int, int, int]],
) -> Snapshot:
    """A copy of ``histogram``'s state; the caller holds the lock its writers hold."""
    seen = (window[0], window[1])
    if reset_window:
        window[0], window[1] = float("inf"), float("-inf")
    if isinstance(histogram, ExponentialBuckets):
        counts: list[int] | dict[int, int] = dict(histogram.by_index)
        zero = histogram.zero
    else:
        counts, zero = list(histogram.counts), 0
    return Snapshot(
        histogram.count,
        histogram.total,
        histogram.low,
        histogram.high,
        seen,
        counts,
        zero,
        exemplars,
    )
