"""Instrumenting and uninstrumenting psycopg_pool: names, idempotence, restoration, errors."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolClosed, PoolTimeout

import poolwatch
from poolwatch import catalog
from poolwatch._integrations.psycopg_pool import ADAPTER
from poolwatch.testing import Capture
from tests.psycopg_pool.conftest import PoolFactory
from tests.support.postgres import PASSWORD, PostgresCluster

pytestmark = pytest.mark.postgres

PATCHED = ("getconn", "putconn", "_connect")


def pool_names(telemetry: Capture) -> list[str]:
    """Pool names reported by the connection-count metric, sorted."""
    points = telemetry.metrics().get(catalog.CONNECTION_COUNT.name, [])
    return sorted({point.attributes[catalog.POOL_NAME] for point in points})


def exported_strings(telemetry: Capture) -> list[str]:
    """Every attribute value and event body poolwatch exported, as text."""
    found = [
        str(value)
        for points in telemetry.metrics().values()
        for point in points
        for value in point.attributes.values()
    ]
    found += [
        str(value) for span in telemetry.spans() for value in (span.attributes or {}).values()
    ]
    for event in telemetry.events():
        found.append(str(event.body))
        found += [str(value) for value in (event.attributes or {}).values()]
    return found


def test_pools_are_named_by_target_uniquely_and_without_the_password(
    make_pool: PoolFactory, telemetry: Capture, postgres: PostgresCluster
) -> None:
    """Two unnamed pools on one database get its name and ``...#2``; a user's name is kept."""
    pools = [
        make_pool(min_size=1),
        make_pool(min_size=1, conninfo=postgres.url),
        make_pool(min_size=1, name="orders"),
    ]
    for pool in pools:
        poolwatch.instrument_psycopg_pool(pool, root_spans=True, **telemetry.providers)
        pool.open(wait=True)
        with pool.connection():
            pass
    with pools[0].connection(), pytest.raises(PoolTimeout):
        pools[0].getconn(timeout=0.01)  # a timeout event and an error span, with the pool state
    assert pool_names(telemetry) == sorted(["poolwatch", "poolwatch#2", "orders"])
    strings = exported_strings(telemetry)
    assert telemetry.events(catalog.EVENT_POOL_TIMEOUT)
    assert [text for text in strings if PASSWORD in text] == []


def test_instrumenting_a_pool_twice_changes_nothing(
    make_pool: PoolFactory, telemetry: Capture
) -> None:
    """The second call keeps the first name and records each checkout once."""
    pool = make_pool(min_size=1)
    poolwatch.instrument_psycopg_pool(pool, pool_name="first", **telemetry.providers)
    poolwatch.instrument_psycopg_pool(pool, pool_name="second", **telemetry.providers)
    pool.open(wait=True)
    with pool.connection():
        pass
    assert pool_names(telemetry) == ["first"]
    points = telemetry.metrics()[catalog.CONNECTION_WAIT_TIME.name]
    assert [p.value["count"] for p in points] == [1]


def test_uninstrument_restores_psycopg_pool_exactly(
    make_pool: PoolFactory, telemetry: Capture
) -> None:
    """After uninstrument the classes' methods are the very same objects and pools carry nothing."""
    classes = (ConnectionPool, AsyncConnectionPool)
    before = {(cls, name): vars(cls)[name] for cls in classes for name in PATCHED}
    pool = make_pool(min_size=1)
    poolwatch.instrument_psycopg_pool(pool, **telemetry.providers)
    poolwatch.instrument_psycopg_pool(**telemetry.providers)
    assert all(vars(cls)[name] is not before[cls, name] for cls, name in before)
    poolwatch.uninstrument_psycopg_pool()
    assert {(cls, name): vars(cls)[name] for cls in classes for name in PATCHED} == before
    assert not ADAPTER.installed
    assert "_poolwatch_binding" not in vars(pool)


def test_a_pool_timeout_reaches_the_application_unchanged(make_pool: PoolFactory) -> None:
    """The same exception type and message with and without poolwatch; no internal error."""

    def time_out(pool: ConnectionPool) -> PoolTimeout:
        with pool.connection(), pytest.raises(PoolTimeout) as caught:
            pool.getconn(timeout=0.05)
        return caught.value

    bare, instrumented = make_pool(min_size=1, max_size=1), make_pool(min_size=1, max_size=1)
    bare.open(wait=True)
    poolwatch.instrument_psycopg_pool(instrumented)
    instrumented.open(wait=True)
    expected, seen = time_out(bare), time_out(instrumented)
    assert (type(seen), str(seen)) == (type(expected), str(expected))
    assert str(seen) == "couldn't get a connection after 0.05 sec"
    assert poolwatch._guard.error_counts() == {}


def test_other_checkout_errors_pass_through_and_are_not_timeouts(
    instrumented: Callable[..., ConnectionPool], telemetry: Capture
) -> None:
    """Checking out of a closed pool raises PoolClosed and counts no timeout."""
    pool = instrumented(min_size=1)
    assert poolwatch._guard.error_counts() == {}
    with pool.connection():
        pass
    recorder = vars(pool)["_poolwatch_binding"].recorder
    pool.close()
    with pytest.raises(PoolClosed):
        pool.getconn()
    assert recorder.timeouts == 0
    recorder.fold()
    assert list(recorder.wait.cumulative())[-1] == ("+Inf", 2)


def test_instrumentor_records_pools_from_their_first_checkout(
    make_pool: PoolFactory, telemetry: Capture
) -> None:
    """The entry-point class records any pool and uninstruments cleanly."""
    instrumentor = poolwatch.PsycopgPoolInstrumentor()
    instrumentor.instrument(**telemetry.providers)
    try:
        pool = make_pool(name="jobs", min_size=1)
        pool.open(wait=True)
        with pool.connection():
            pass
        assert pool_names(telemetry) == ["jobs"]
    finally:
        instrumentor.uninstrument()
    assert not ADAPTER.installed


@pytest.mark.asyncio
async def test_instrument_all_records_async_pools_from_their_first_checkout(
    postgres: PostgresCluster, telemetry: Capture
) -> None:
    """An async pool made after ``instrument_psycopg_pool()`` is recorded under its own name."""
    poolwatch.instrument_psycopg_pool(**telemetry.providers)
    pool = AsyncConnectionPool(postgres.dsn, min_size=1, name="async-jobs", open=False)
    await pool.open(wait=True)
    try:
        async with pool.connection():
            assert pool_names(telemetry) == ["async-jobs"]
    finally:
        await pool.close()


def test_an_internal_error_is_counted_and_the_checkout_still_succeeds(
    instrumented: Callable[..., ConnectionPool], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failing recorder costs the bookkeeping of one checkout, never the application's query."""
    pool = instrumented(min_size=1)
    recorder = vars(pool)["_poolwatch_binding"].recorder

    def broken(*_args: object) -> None:
        raise RuntimeError("poolwatch bug")

    monkeypatch.setattr(recorder, "succeeded", broken)
    with pool.connection() as connection:
        assert connection.execute("SELECT 1").fetchone() == (1,)
    assert poolwatch._guard.error_counts() == {"psycopg_pool.checkout": 1}
