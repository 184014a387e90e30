"""The three histograms leave as real OTLP histograms built from poolwatch's own buckets."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.metrics import Histogram as SdkHistogram
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    ExponentialHistogramDataPoint,
    HistogramDataPoint,
    InMemoryMetricReader,
)
from opentelemetry.sdk.metrics.view import DropAggregation, View
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import poolwatch
from poolwatch import _guard, _instruments, _otlp_histograms, catalog
from poolwatch._instrumentors import instrumentation_for
from poolwatch._recorder import PoolRecorder, PoolState
from poolwatch.config import Config
from poolwatch.testing import reset

WAIT = catalog.CONNECTION_WAIT_TIME.name

DELTA = {SdkHistogram: AggregationTemporality.DELTA}


def _pool_state() -> PoolState:
    return PoolState(used=0, idle=1, max=5)


class Pools:
    """A Telemetry with SDK readers, and recorders fed values directly."""

    def __init__(
        self, *readers: InMemoryMetricReader, views: tuple[View, ...] = (), **settings: Any
    ):
        self.readers = readers or (InMemoryMetricReader(),)
        self.provider = MeterProvider(metric_readers=self.readers, views=views)
        self.telemetry = instrumentation_for(
            Config.load(environ={}, leak_threshold=0, **settings), self.provider
        )

    def pool(self, name: str = "app") -> PoolRecorder:
        return self.telemetry.pool(name, _pool_state)

    def points(self, name: str = WAIT, reader: int = 0) -> list[Any]:
        data = self.readers[reader].get_metrics_data()
        return [
            point
            for resource in (data.resource_metrics if data else [])
            for scope in resource.scope_metrics
            for metric in scope.metrics
            if metric.name == name
            for point in metric.data.data_points
        ]

    def metric(self, name: str = WAIT) -> Any:
        data = self.readers[0].get_metrics_data()
        assert data is not None
        found = [m for r in data.resource_metrics for s in r.scope_metrics for m in s.metrics]
        (metric,) = [m for m in found if m.name == name]
        return metric


@pytest.fixture
def pools() -> Iterator[Pools]:
    made = Pools()
    yield made
    made.provider.shutdown()


def test_the_installed_sdk_has_the_layout_the_bridge_relies_on() -> None:
    """check_layout() finds every private name and a bridged point exported, in this SDK."""
    assert _otlp_histograms.check_layout() == ()


def test_waits_leave_as_a_histogram_under_the_convention_name(pools: Pools) -> None:
    """Name, unit, description, attributes, bounds, counts, sum, min and max of one pool."""
    recorder = pools.pool()
    for value in (0.0002, 0.003, 0.003, 2.0, 45.0):
        recorder._waits.append(value)
    metric = pools.metric()
    assert (metric.unit, metric.description) == ("s", catalog.CONNECTION_WAIT_TIME.description)
    (point,) = metric.data.data_points
    assert isinstance(point, HistogramDataPoint)
    assert metric.data.aggregation_temporality is AggregationTemporality.CUMULATIVE
    assert point.attributes == {catalog.POOL_NAME: "app"}
    assert tuple(point.explicit_bounds) == catalog.WAIT_BUCKETS
    assert list(point.bucket_counts) == [1, 0, 2, 0, 0, 0, 0, 0, 1, 0, 0, 1]
    assert (point.count, point.sum) == (5, pytest.approx(47.0062))
    assert (point.min, point.max) == (0.0002, 45.0)
    assert point.start_time_unix_nano == recorder.started_ns


def test_a_delta_reader_gets_what_changed_since_its_last_collection() -> None:
    """Counts, sum, min and max of the interval; no point for an interval without values."""
    made = Pools(InMemoryMetricReader(preferred_temporality=DELTA))
    recorder = made.pool()
    recorder._waits.extend([0.002, 0.2])
    (first,) = made.points()
    recorder._waits.append(7.0)
    (second,) = made.points()
    assert (first.count, first.sum, first.min, first.max) == (2, 0.202, 0.002, 0.2)
    assert (second.count, second.sum, second.min, second.max) == (1, 7.0, 7.0, 7.0)
    assert list(second.bucket_counts) == [0] * 9 + [1, 0, 0]
    assert second.start_time_unix_nano == first.time_unix_nano
    assert made.points() == []


def test_two_readers_each_get_every_value() -> None:
    """A cumulative and a delta reader read the same buckets without taking from each other."""
    made = Pools(InMemoryMetricReader(), InMemoryMetricReader(preferred_temporality=DELTA))
    recorder = made.pool()
    recorder._waits.extend([0.01, 0.02])
    assert [p.count for p in made.points(reader=1)] == [2]
    recorder._waits.append(0.03)
    assert [p.count for p in made.points(reader=0)] == [3]
    assert [p.count for p in made.points(reader=1)] == [1]


def test_exponential_aggregation_exports_base2_buckets() -> None:
    """Scale 3: 1.0 is the top of bucket -1, 2.0 of bucket 7; zero goes to the zero bucket."""
    made = Pools(histogram_aggregation="exponential")
    recorder = made.pool()
    recorder._waits.extend([1.0, 2.0, 0.0])
    (point,) = made.points()
    assert isinstance(point, ExponentialHistogramDataPoint)
    assert (point.scale, point.zero_count, point.count, point.sum) == (3, 1, 3, 3.0)
    assert point.positive.offset == -1
    assert list(point.positive.bucket_counts) == [1, 0, 0, 0, 0, 0, 0, 0, 1]


def test_bounds_off_leaves_only_count_and_sum(pools: Pools) -> None:
    """``use_time_buckets=off``: one bucket, the count and the sum."""
    made = Pools(use_time_buckets="off")
    recorder = made.pool()
    recorder._uses.extend([0.5, 1.5])
    (point,) = made.points(catalog.CONNECTION_USE_TIME.name)
    assert (list(point.explicit_bounds), list(point.bucket_counts), point.sum) == ([], [2], 2.0)


def test_a_view_that_drops_the_histogram_is_respected() -> None:
    """The SDK's own views still apply to poolwatch's histograms."""
    made = Pools(views=(View(instrument_name=WAIT, aggregation=DropAggregation()),))
    made.pool()._waits.append(0.1)
    assert made.points() == []
    assert [p.count for p in made.points(catalog.CONNECTION_USE_TIME.name)] == []


def test_a_dropped_pool_stops_being_exported(pools: Pools) -> None:
    """Shutting a pool's recording down removes its series from the next collection."""
    kept, dropped = pools.pool("kept"), pools.pool("dropped")
    kept._waits.append(0.1)
    dropped._waits.append(0.1)
    assert len(pools.points()) == 2
    pools.telemetry.drop(dropped)
    assert [p.attributes[catalog.POOL_NAME] for p in pools.points()] == ["kept"]


def test_the_slowest_traced_wait_of_a_bucket_is_its_exemplar() -> None:
    """Exemplars carry the checkout span's ids, once per reader; untraced waits have none."""
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    engine = sa.create_engine("sqlite://", poolclass=sa.pool.QueuePool)
    poolwatch.instrument_sqlalchemy(
        engine,
        pool_name="traced",
        meter_provider=MeterProvider(metric_readers=[reader]),
        tracer_provider=tracer_provider,
    )
    tracer = tracer_provider.get_tracer("test")
    for _ in range(3):
        with tracer.start_as_current_span("request"), engine.connect():
            pass
    with engine.connect():
        pass
    made = Pools()
    made.readers = (reader,)
    (point,) = made.points()
    checkouts = {
        s.context.span_id: s for s in spans.get_finished_spans() if s.name == "poolwatch.checkout"
    }
    assert point.count == 4
    assert point.exemplars
    for exemplar in point.exemplars:
        span = checkouts[exemplar.span_id]
        assert exemplar.trace_id == span.context.trace_id
        assert exemplar.value == span.attributes[catalog.WAIT_DURATION]
        same_bucket = [
            s.attributes[catalog.WAIT_DURATION]
            for s in checkouts.values()
            if _bucket(s.attributes[catalog.WAIT_DURATION]) == _bucket(exemplar.value)
        ]
        assert exemplar.value == max(same_bucket)
    (again,) = made.points()
    assert list(again.exemplars) == []


def _bucket(value: float) -> int:
    return sum(1 for bound in catalog.WAIT_BUCKETS if bound < value)


def test_without_the_known_sdk_layout_histograms_are_recorded_per_checkout(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """One warning, an internal-error count, and the same histograms through record()."""
    reset()
    monkeypatch.setattr(_otlp_histograms, "check_layout", lambda: ("x._Missing.attr",))
    with caplog.at_level(logging.WARNING, logger="poolwatch"):
        made = Pools()
        recorder = made.pool()
    assert made.telemetry.signals.histogram_mode == "standard"
    assert _guard.error_counts() == {"otlp-histograms": 1}
    (record,) = caplog.records
    assert "x._Missing.attr" in str(record.exc_info[1] if record.exc_info else "")
    recorder.connection_created(0.02)
    (point,) = made.points(catalog.CONNECTION_CREATE_TIME.name)
    assert (point.count, point.sum, tuple(point.explicit_bounds)) == (
        1,
        0.02,
        catalog.CREATE_BUCKETS,
    )
    reset()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    batches=st.lists(
        st.lists(st.floats(min_value=0.0, max_value=120.0), max_size=40), min_size=1, max_size=6
    ),
    exponential=st.booleans(),
    delta=st.booleans(),
)
def test_counts_equal_checkouts_and_sums_equal_the_waits(
    batches: list[list[float]], exponential: bool, delta: bool
) -> None:
    """Whatever the values and however collections fall between them, nothing is lost or doubled."""
    reader = InMemoryMetricReader(preferred_temporality=DELTA if delta else {})
    made = Pools(reader, histogram_aggregation="exponential" if exponential else "explicit")
    recorder = made.pool()
    count, total, seen = 0, 0.0, []
    for batch in batches:
        for value in batch:
            recorder._waits.append(value)
        seen.extend(batch)
        points = made.points()
        if delta:
            count += sum(p.count for p in points)
            total += sum(p.sum for p in points)
        elif points:
            (point,) = points
            count, total = point.count, point.sum
            buckets = point.positive.bucket_counts if exponential else point.bucket_counts
            zero = point.zero_count if exponential else 0
            assert sum(buckets) + zero == point.count
    assert count == len(seen)
    assert total == pytest.approx(math.fsum(seen), rel=1e-12, abs=1e-12)
    made.provider.shutdown()


def test_a_delta_reader_s_first_point_covers_values_folded_before_it_existed() -> None:
    """A connection opened before the first collection sets that point's min and max."""
    made = Pools(InMemoryMetricReader(preferred_temporality=DELTA))
    made.pool().connection_created(0.3)
    (point,) = made.points(catalog.CONNECTION_CREATE_TIME.name)
    assert (point.count, point.min, point.max) == (1, 0.3, 0.3)


def test_a_meter_of_another_api_implementation_gets_record_calls() -> None:
    """Only the SDK's storage can take poolwatch's points; any other meter gets ``standard``."""
    from opentelemetry.metrics import NoOpMeter

    assert _otlp_histograms.meter_kind(NoOpMeter("x")) == "api"
    assert _otlp_histograms.meter_kind(MeterProvider().get_meter("x")) == "sdk"
    assert _instruments.histogram_mode(Config(), object()) == "standard"
    assert _instruments.histogram_mode(Config(), NoOpMeter("x")) == "otlp"
    assert _instruments.histogram_mode(Config(histograms="aggregated"), object()) == "aggregated"


def test_one_pool_costs_the_documented_series_budget() -> None:
    """Counted as Prometheus stores them: a series per point, a histogram's buckets plus +Inf,
    sum and count; 40 per pool per process with the defaults."""
    reader = InMemoryMetricReader()
    engine = sa.create_engine("sqlite://", poolclass=sa.pool.QueuePool)
    poolwatch.instrument_sqlalchemy(
        engine, pool_name="budget", meter_provider=MeterProvider(metric_readers=[reader])
    )
    with engine.connect():
        pass
    data = reader.get_metrics_data()
    assert data is not None
    series = 0
    for metric in [m for r in data.resource_metrics for s in r.scope_metrics for m in s.metrics]:
        for point in metric.data.data_points:
            if point.attributes.get(catalog.POOL_NAME) != "budget":
                continue
            bounds = getattr(point, "explicit_bounds", None)
            series += 1 if bounds is None else len(bounds) + 3
    assert series == catalog.SERIES_PER_POOL == 40


def test_every_private_name_the_bridge_uses_is_declared_and_found() -> None:
    """SDK_LAYOUT names each SDK internal in the bridge, and each is present in this SDK."""
    import inspect

    source = inspect.getsource(_otlp_histograms.Bridge)
    used = {name for name in ("_measurement_consumer", "_reader_storages",
            "_get_or_init_view_instrument_match", "_attributes_aggregation", "_aggregation",
            "_lock", "_view", "_instrument", "_create_aggregation", "_exemplar_reservoir_factory",
            "_real_instrument", "_DropAggregation") if name in source}  # fmt: skip
    declared = {hook.attribute for hook in _otlp_histograms.PRIVATE_HOOKS}
    assert used <= declared
    assert [
        hook for hook in _otlp_histograms.SDK_LAYOUT if not _otlp_histograms._present(hook)
    ] == []
    missing = _otlp_histograms.PrivateHook("opentelemetry.sdk.metrics.MeterProvider", "_gone", "x")
    assert not _otlp_histograms._present(missing)


def test_a_pool_instrumented_before_the_global_provider_is_set_is_exported() -> None:
    """The API's proxy histogram is followed to the SDK's once a provider is set (own process:
    the global provider can be set once)."""
    import subprocess
    import sys

    script = """
import sqlalchemy as sa, poolwatch
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from poolwatch import _guard, _state
engine = sa.create_engine("sqlite://", poolclass=sa.pool.QueuePool)
poolwatch.instrument_sqlalchemy(engine, pool_name="early")
reader = InMemoryMetricReader()
metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
with engine.connect():
    pass
data = reader.get_metrics_data()
found = sorted((m.name, [p.count for p in m.data.data_points]) for r in data.resource_metrics
               for s in r.scope_metrics for m in s.metrics if m.name.endswith("_time"))
print([i.signals.histogram_mode for i in _state.live()], found, _guard.error_counts())
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == (
        "['otlp'] [('db.client.connection.create_time', [1]), "
        "('db.client.connection.use_time', [1]), ('db.client.connection.wait_time', [1])] {}"
    )
