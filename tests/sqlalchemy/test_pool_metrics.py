"""The nine standard pool metrics, with exact values, for every kind of SQLAlchemy pool."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable

import pytest
import sqlalchemy as sa

import poolwatch
from poolwatch import catalog
from poolwatch.monitoring import names
from poolwatch.testing import Capture, FakeClock
from tests.support.readings import buckets, counts, gauge, observed, total, wait_for


def test_nine_standard_metrics_are_reported_with_exact_values(
    instrumented: Callable[..., sa.Engine], telemetry: Capture
) -> None:
    """Three checkouts of a 2+1 pool, a fourth that times out, then two checkins."""
    engine = instrumented(pool_size=2, max_overflow=1, pool_timeout=0.05)
    held = [engine.connect() for _ in range(3)]
    with pytest.raises(sa.exc.TimeoutError):
        engine.connect()
    held[0].close()
    held[1].close()

    assert counts(telemetry, "app") == (1, 2)
    assert gauge(telemetry, catalog.CONNECTION_MAX, "app") == 3
    assert gauge(telemetry, catalog.CONNECTION_IDLE_MAX, "app") == 2
    assert gauge(telemetry, catalog.CONNECTION_IDLE_MIN, "app") == 0
    assert gauge(telemetry, catalog.CONNECTION_PENDING_REQUESTS, "app") == 0
    assert gauge(telemetry, catalog.CONNECTION_TIMEOUTS, "app") == 1
    assert observed(telemetry, catalog.CONNECTION_WAIT_TIME, "app") == 4
    assert observed(telemetry, catalog.CONNECTION_USE_TIME, "app") == 2
    assert observed(telemetry, catalog.CONNECTION_CREATE_TIME, "app") == 3
    held[2].close()


def test_timed_out_wait_lands_in_the_bucket_of_the_pool_timeout(
    instrumented: Callable[..., sa.Engine], telemetry: Capture
) -> None:
    """A 0.2 s pool timeout is recorded as a wait above 0.1 s (and well under a second)."""
    engine = instrumented(pool_size=1, max_overflow=0, pool_timeout=0.2)
    with engine.connect(), pytest.raises(sa.exc.TimeoutError):
        engine.connect()
    wait = buckets(telemetry, catalog.CONNECTION_WAIT_TIME, "app")
    assert wait["0.1"] == 1  # the first, immediate checkout
    assert wait["0.5"] == 2  # plus the one that waited 0.2 s (slack for a busy machine)
    assert total(telemetry, catalog.CONNECTION_WAIT_TIME, "app") == pytest.approx(0.2, abs=0.05)


def test_create_time_is_the_driver_s_connect_and_not_the_dialect_s_first_setup(
    make_engine: Callable[..., sa.Engine],
    telemetry: Capture,
    sqlite_url: str,
    poolwatch_clock: FakeClock,
) -> None:
    """A driver connect that takes 0.25 s is recorded as such, once per new connection; the
    dialect's first-connection setup, which a slow listener stretches by 0.5 s here, is not."""
    path = sqlite_url.removeprefix("sqlite:///")

    def slow_connect() -> sqlite3.Connection:
        poolwatch_clock.advance(0.25)
        return sqlite3.connect(path)

    engine = make_engine(creator=slow_connect, pool_size=2, max_overflow=0)
    sa.event.listen(engine.pool, "connect", lambda *_args: poolwatch_clock.advance(0.5))
    poolwatch.instrument_sqlalchemy(engine, pool_name="app", **telemetry.providers)
    with engine.connect(), engine.connect():
        pass
    assert observed(telemetry, catalog.CONNECTION_CREATE_TIME, "app") == 2
    created = buckets(telemetry, catalog.CONNECTION_CREATE_TIME, "app")
    assert created["0.05"] == 0 and created["0.5"] == 2  # bounds around 0.25 s, below 0.75 s
    assert total(telemetry, catalog.CONNECTION_CREATE_TIME, "app") == 0.5


def test_pending_requests_counts_callers_blocked_right_now(
    instrumented: Callable[..., sa.Engine], telemetry: Capture
) -> None:
    """Two threads blocked on an exhausted pool show as two pending requests, then none."""
    engine = instrumented(pool_size=1, max_overflow=0, pool_timeout=10)
    holder = engine.connect()
    done = threading.Event()

    def wait_for_connection() -> None:
        with engine.connect():
            done.wait(5)

    threads = [threading.Thread(target=wait_for_connection) for _ in range(2)]
    for thread in threads:
        thread.start()
    wait_for(lambda: gauge(telemetry, catalog.CONNECTION_PENDING_REQUESTS, "app") >= 2)
    assert gauge(telemetry, catalog.CONNECTION_PENDING_REQUESTS, "app") == 2
    holder.close()
    done.set()
    for thread in threads:
        thread.join(10)
    assert gauge(telemetry, catalog.CONNECTION_PENDING_REQUESTS, "app") == 0
    assert gauge(telemetry, catalog.CONNECTION_TIMEOUTS, "app") == 0


def test_use_time_measures_how_long_a_connection_was_held(
    instrumented: Callable[..., sa.Engine], telemetry: Capture, poolwatch_clock: FakeClock
) -> None:
    """A connection held 0.3 s lands between the 0.1 s and 1 s use-time bounds, as 0.3 s."""
    engine = instrumented()
    with engine.connect():
        poolwatch_clock.advance(0.3)
    use = buckets(telemetry, catalog.CONNECTION_USE_TIME, "app")
    assert (use["0.1"], use["1.0"]) == (0, 1)
    assert total(telemetry, catalog.CONNECTION_USE_TIME, "app") == pytest.approx(0.3)


@pytest.mark.parametrize(
    ("poolclass", "expected_max", "expected_idle_max"),
    [(sa.pool.NullPool, None, 0), (sa.pool.StaticPool, 1, 1), (sa.pool.SingletonThreadPool, 5, 5)],
)
def test_pools_without_a_queue_report_sensible_values(
    instrumented: Callable[..., sa.Engine],
    telemetry: Capture,
    poolclass: type[sa.pool.Pool],
    expected_max: int | None,
    expected_idle_max: int,
) -> None:
    """NullPool has no limit; StaticPool one shared connection; SingletonThreadPool one per thread."""
    engine = instrumented(poolclass=poolclass)
    connection = engine.connect()
    assert counts(telemetry, "app") == (1, 0)
    connection.close()
    idle_after = 0 if poolclass is sa.pool.NullPool else 1
    assert counts(telemetry, "app") == (0, idle_after)
    maxima = telemetry.metrics().get(catalog.CONNECTION_MAX.name, [])
    assert [point.value for point in maxima] == ([] if expected_max is None else [expected_max])
    assert gauge(telemetry, catalog.CONNECTION_IDLE_MAX, "app") == expected_idle_max


def test_standard_histogram_mode_records_the_sdk_histograms(
    make_engine: Callable[..., sa.Engine], telemetry: Capture
) -> None:
    """In ``standard`` mode the three db.client.connection.*_time histograms carry the data."""
    engine = make_engine(pool_size=1, max_overflow=0, pool_timeout=0.05)
    poolwatch.instrument_sqlalchemy(
        engine, pool_name="app", histograms="standard", **telemetry.providers
    )
    with engine.connect(), pytest.raises(sa.exc.TimeoutError):
        engine.connect()
    wait = gauge(telemetry, catalog.CONNECTION_WAIT_TIME, "app")
    assert wait["count"] == 2
    assert wait["bounds"] == catalog.WAIT_BUCKETS
    use = gauge(telemetry, catalog.CONNECTION_USE_TIME, "app")
    assert use["count"] == 1
    metrics = telemetry.metrics()
    assert catalog.WAIT_TIME_BUCKET.name not in metrics
    assert metrics[catalog.CONNECTION_TIMEOUTS.name][0].value == 1


def test_metrics_carry_the_units_and_descriptions_of_the_catalog(
    instrumented: Callable[..., sa.Engine], telemetry: Capture
) -> None:
    """Every exported metric's unit matches the catalog, standard names from the conventions."""
    engine = instrumented()
    engine.connect().close()
    data = telemetry.metric_reader.get_metrics_data()
    assert data is not None
    exported = {
        metric.name: metric.unit
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }
    by_name = {metric.name: metric for metric in names.all_metrics()}
    for name, unit in exported.items():
        assert by_name[name].unit == unit
    standard = {m.name for m in catalog.STANDARD_METRICS if m.kind is not catalog.Kind.HISTOGRAM}
    assert standard <= set(exported)


def test_buffered_waits_are_folded_without_a_collection_and_none_is_lost(
    instrumented: Callable[..., sa.Engine], telemetry: Capture
) -> None:
    """Waits buffer lock-free up to a bound, then fold into the buckets; counts stay exact."""
    from poolwatch import _recorder as recorder_module

    engine = instrumented()
    recorder = engine.pool._poolwatch_recorder  # type: ignore[attr-defined]
    checkouts = 3 * recorder_module._FOLD_AT
    for _ in range(checkouts):
        engine.pool.connect().close()
    assert len(recorder._waits) <= recorder_module._FOLD_AT
    assert observed(telemetry, catalog.CONNECTION_WAIT_TIME, "app") == checkouts
    assert observed(telemetry, catalog.CONNECTION_USE_TIME, "app") == checkouts
    assert len(recorder._waits) == 0
