"""Instrumenting and uninstrumenting: zero-code mode, explicit engines, idempotence, restoration."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.orm import Session
from sqlalchemy.pool.base import _ConnectionRecord

import poolwatch
from poolwatch import catalog
from poolwatch._integrations._replacing import is_replacement
from poolwatch._integrations.sqlalchemy import ADAPTER
from poolwatch.testing import Capture
from tests.support.readings import counts, gauge, observed

ORIGINAL_CONNECT = sa.pool.Pool.connect
ORIGINAL_SINGLETON_CONNECT = sa.pool.SingletonThreadPool.connect
ORIGINAL_ENGINE_INIT = sa.engine.Engine.__init__
ORIGINAL_RECREATE = sa.pool.QueuePool.recreate
ORIGINAL_CHECKIN = _ConnectionRecord.checkin
ORIGINAL_ERROR_PATH = sa.engine.Connection._handle_dbapi_exception
ORIGINAL_SESSION = dict(vars(Session))


def pool_names(telemetry: Capture) -> list[str]:
    """Pool names that report an idle minimum (one point per recorded pool), sorted."""
    points = telemetry.metrics().get(catalog.CONNECTION_IDLE_MIN.name, [])
    return sorted(point.attributes[catalog.POOL_NAME] for point in points)


def test_instrument_all_records_engines_created_afterwards(
    telemetry: Capture, sqlite_url: str
) -> None:
    """With no engine given, every engine made later is recorded under its URL's name."""
    poolwatch.instrument_sqlalchemy(**telemetry.providers)
    engine = sa.create_engine(sqlite_url, poolclass=sa.pool.QueuePool)
    engine.connect().close()
    name = sqlite_url.removeprefix("sqlite:///")  # unnamed: its db.namespace
    assert counts(telemetry, name) == (0, 1)
    assert observed(telemetry, catalog.CONNECTION_WAIT_TIME, name) == 1


def test_async_engines_are_recorded_once(telemetry: Capture, tmp_path: Path) -> None:
    """An async engine's pool is recorded once, not once per AsyncEngine and sync Engine."""
    poolwatch.instrument_sqlalchemy(**telemetry.providers)
    url = f"sqlite+aiosqlite:///{tmp_path / 'async.db'}"
    engine = create_async_engine(url, pool_size=2, max_overflow=0)

    async def use() -> None:
        async with engine.connect() as connection:
            await connection.exec_driver_sql("SELECT 1")
        await engine.dispose()

    asyncio.run(use())
    name = str(tmp_path / "async.db")
    assert pool_names(telemetry) == [name]
    assert observed(telemetry, catalog.CONNECTION_WAIT_TIME, name) == 1
    assert gauge(telemetry, catalog.CONNECTION_MAX, name) == 2


def test_instrumenting_an_engine_twice_changes_nothing(
    make_engine: Callable[..., sa.Engine], telemetry: Capture
) -> None:
    """A second call for the same engine keeps one recorder: one checkout counts once."""
    engine = make_engine()
    poolwatch.instrument_sqlalchemy(engine, pool_name="app", **telemetry.providers)
    poolwatch.instrument_sqlalchemy(engine, pool_name="app", **telemetry.providers)
    engine.connect().close()
    assert pool_names(telemetry) == ["app"]
    assert observed(telemetry, catalog.CONNECTION_WAIT_TIME, "app") == 1


def test_engines_keep_sqlalchemy_s_event_free_execution_path(
    make_engine: Callable[..., sa.Engine], telemetry: Capture
) -> None:
    """No engine or connection event listener: SQLAlchemy skips dispatching connection events.

    Any listener sets ``_has_events``, and every connect and execute of every engine then goes
    through the event dispatch; poolwatch's hooks must not be what turns it on.
    """
    poolwatch.instrument_sqlalchemy(**telemetry.providers)
    engine = make_engine()
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT 1").scalar() == 1
        assert not connection._has_events
    assert not engine._has_events
    assert not engine.dialect._has_events
    assert not sa.engine.Engine._has_events
    assert observed(telemetry, catalog.CONNECTION_WAIT_TIME, engine.url.database) == 1


def test_uninstrument_restores_sqlalchemy_exactly(
    make_engine: Callable[..., sa.Engine], telemetry: Capture
) -> None:
    """After uninstrument the classes, listeners and pool attributes are as they were."""
    engine = make_engine()
    poolwatch.instrument_sqlalchemy(**telemetry.providers)
    poolwatch.instrument_sqlalchemy(engine, pool_name="app", **telemetry.providers)
    assert sa.pool.Pool.connect is not ORIGINAL_CONNECT
    assert _ConnectionRecord.checkin is not ORIGINAL_CHECKIN
    assert sa.engine.Connection._handle_dbapi_exception is not ORIGINAL_ERROR_PATH
    assert Session.execute is not ORIGINAL_SESSION["execute"]
    listeners = next(iter(ADAPTER._bindings.values())).details.listeners

    poolwatch.uninstrument_sqlalchemy()

    assert sa.pool.Pool.connect is ORIGINAL_CONNECT
    assert sa.pool.SingletonThreadPool.connect is ORIGINAL_SINGLETON_CONNECT
    assert sa.engine.Engine.__init__ is ORIGINAL_ENGINE_INIT
    assert sa.pool.QueuePool.recreate is ORIGINAL_RECREATE
    assert _ConnectionRecord.checkin is ORIGINAL_CHECKIN
    assert sa.engine.Connection._handle_dbapi_exception is ORIGINAL_ERROR_PATH
    assert dict(vars(Session)) == ORIGINAL_SESSION
    assert not ADAPTER.installed
    assert not hasattr(engine.pool, "_poolwatch_recorder")
    assert sorted(name for name, _fn in listeners) == ["detach"]
    for name, fn in listeners:
        assert not event.contains(engine.pool, name, fn)
    assert "_invoke_creator" in vars(engine.pool)
    assert not is_replacement(engine.pool._invoke_creator)
    engine.connect().close()
    assert pool_names(telemetry) == []


def test_uninstrumenting_one_engine_leaves_the_others(
    make_engine: Callable[..., sa.Engine], telemetry: Capture
) -> None:
    """Two engines instrumented explicitly; removing one keeps the other recorded."""
    first, second = make_engine(), make_engine()
    poolwatch.instrument_sqlalchemy(first, pool_name="first", **telemetry.providers)
    poolwatch.instrument_sqlalchemy(second, pool_name="second", **telemetry.providers)
    poolwatch.uninstrument_sqlalchemy(first)
    assert pool_names(telemetry) == ["second"]
    assert ADAPTER.installed
    poolwatch.uninstrument_sqlalchemy(second)
    assert not ADAPTER.installed


def test_dispose_keeps_recording_under_the_same_name(
    instrumented: Callable[..., sa.Engine], telemetry: Capture
) -> None:
    """``engine.dispose()`` replaces the pool; poolwatch follows it and keeps its counters."""
    engine = instrumented(pool_size=1, max_overflow=0, pool_timeout=0.05)
    with engine.connect(), pytest.raises(sa.exc.TimeoutError):
        engine.connect()
    engine.dispose()
    with engine.connect(), pytest.raises(sa.exc.TimeoutError):
        engine.connect()
    assert gauge(telemetry, catalog.CONNECTION_TIMEOUTS, "app") == 2
    assert counts(telemetry, "app") == (0, 1)
    assert pool_names(telemetry) == ["app"]


def test_a_garbage_collected_engine_stops_being_reported(
    telemetry: Capture, sqlite_url: str
) -> None:
    """Dropping an engine drops its pool from the metrics and frees its name for reuse."""
    poolwatch.instrument_sqlalchemy(**telemetry.providers)
    engine = sa.create_engine(sqlite_url, poolclass=sa.pool.QueuePool)
    engine.connect().close()
    engine.dispose()
    del engine
    gc.collect()
    assert pool_names(telemetry) == []
    again = sa.create_engine(sqlite_url, poolclass=sa.pool.QueuePool)
    again.connect().close()
    assert pool_names(telemetry) == [sqlite_url.removeprefix("sqlite:///")]
    again.dispose()


def test_instrumentor_is_what_the_launcher_loads(telemetry: Capture, sqlite_url: str) -> None:
    """The entry-point class instruments everything and uninstruments cleanly."""
    instrumentor = poolwatch.SQLAlchemyPoolInstrumentor()
    instrumentor.instrument(**telemetry.providers)
    try:
        engine = sa.create_engine(sqlite_url, poolclass=sa.pool.QueuePool)
        engine.connect().close()
        assert pool_names(telemetry) == [sqlite_url.removeprefix("sqlite:///")]
    finally:
        instrumentor.uninstrument()
    assert sa.pool.Pool.connect is ORIGINAL_CONNECT
    engine.dispose()


def test_side_by_side_with_the_upstream_instrumentation_nothing_is_counted_twice(
    make_engine: Callable[..., sa.Engine], telemetry: Capture
) -> None:
    """opentelemetry-instrumentation-sqlalchemy on the same engine leaves poolwatch's counts exact."""
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    engine = make_engine(pool_size=3, max_overflow=0)
    upstream = SQLAlchemyInstrumentor()
    upstream.instrument(engine=engine, skip_dep_check=True, **telemetry.providers)
    poolwatch.instrument_sqlalchemy(engine, pool_name="app", **telemetry.providers)
    try:
        held = [engine.connect() for _ in range(2)]
        assert counts(telemetry, "app") == (2, 0)
        held[0].close()
        assert counts(telemetry, "app") == (1, 1)
        held[1].close()
        assert observed(telemetry, catalog.CONNECTION_WAIT_TIME, "app") == 2
        assert observed(telemetry, catalog.CONNECTION_USE_TIME, "app") == 2
    finally:
        upstream.uninstrument()
