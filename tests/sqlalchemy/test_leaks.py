"""Leaked and never-returned connections, traced to the code that borrowed them."""

from __future__ import annotations

import asyncio
import gc
import threading
import tracemalloc
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

import poolwatch
from poolwatch import _guard, catalog
from poolwatch.testing import Capture, FakeClock, check_leaks
from tests.support.failing import ExplodingLoggerProvider
from tests.support.readings import assert_borrowed_by, gauge, the_one_leak, wait_for

THRESHOLD = 0.2


@pytest.fixture
def leaky(poolwatch_clock: FakeClock, instrumented: Callable[..., sa.Engine]) -> sa.Engine:
    """An engine on the test's clock whose connections count as leaked after 0.2 s."""
    return instrumented(pool_size=2, max_overflow=0, pool_timeout=0.1, leak_threshold=THRESHOLD)


def borrow_and_forget(engine: sa.Engine) -> Any:
    """Application code that takes a connection and keeps it."""
    return engine.connect()


def test_a_connection_held_past_the_threshold_is_reported_once_with_its_borrow_site(
    leaky: sa.Engine, telemetry: Capture, poolwatch_clock: FakeClock
) -> None:
    """One leak event naming the borrowing function, line, thread and pool; gauge and counter."""
    connection = borrow_and_forget(leaky)
    event = the_one_leak(telemetry, poolwatch_clock, THRESHOLD)
    attributes = event.attributes
    assert_borrowed_by(attributes, "app", borrow_and_forget)
    assert attributes[catalog.CONNECTION_AGE] == pytest.approx(THRESHOLD)
    assert attributes[catalog.LEAK_THRESHOLD] == THRESHOLD
    stack = attributes[catalog.CODE_STACKTRACE]
    assert "borrow_and_forget" in stack
    assert Path(sa.__file__).parent.as_posix() not in stack
    assert Path(poolwatch.__file__).parent.as_posix() not in stack
    assert gauge(telemetry, catalog.CONNECTION_LEAKED, "app") == 1
    assert gauge(telemetry, catalog.CONNECTION_LEAKS, "app") == 1

    poolwatch_clock.advance(0.1)
    connection.close()
    (returned,) = telemetry.events(catalog.EVENT_RETURNED)
    assert returned.attributes[catalog.CODE_FUNCTION] == "borrow_and_forget"
    assert returned.attributes[catalog.CONNECTION_HELD] == pytest.approx(2 * THRESHOLD + 0.1)
    assert gauge(telemetry, catalog.CONNECTION_LEAKED, "app") == 0
    assert gauge(telemetry, catalog.CONNECTION_LEAKS, "app") == 1


def test_a_short_checkout_is_not_a_leak(
    leaky: sa.Engine, telemetry: Capture, poolwatch_clock: FakeClock
) -> None:
    """Connections returned before the threshold produce no leak or returned event."""
    for _ in range(5):
        with leaky.connect():
            poolwatch_clock.advance(THRESHOLD - 0.01)
    poolwatch_clock.advance(THRESHOLD * 2)
    check_leaks()
    assert telemetry.events(catalog.EVENT_LEAK) == []
    assert telemetry.events(catalog.EVENT_RETURNED) == []
    assert gauge(telemetry, catalog.CONNECTION_LEAKS, "app") == 0


def test_the_leak_event_carries_the_borrowers_trace(
    instrumented: Callable[..., sa.Engine], telemetry: Capture
) -> None:
    """A leak found later is tied to the trace of the request that borrowed the connection.

    The end-to-end proof for SQLAlchemy: the real watchdog thread finds the leak on the real
    clock (the other leak tests move a fake clock and run the check themselves)."""
    engine = instrumented(pool_size=2, max_overflow=0, pool_timeout=0.1, leak_threshold=THRESHOLD)
    tracer = telemetry.tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("request") as request:
        connection = engine.connect()
    wait_for(lambda: bool(telemetry.events(catalog.EVENT_LEAK)))
    (event,) = telemetry.events(catalog.EVENT_LEAK)
    assert event.trace_id == request.get_span_context().trace_id
    assert event.span_id == request.get_span_context().span_id
    assert event.attributes[catalog.CONNECTION_AGE] >= THRESHOLD
    connection.close()


def test_leak_detection_can_be_switched_off(
    instrumented: Callable[..., sa.Engine], telemetry: Capture, poolwatch_clock: FakeClock
) -> None:
    """``leak_threshold=0`` starts no watchdog and reports nothing, however long the hold."""

    def watchdogs() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "poolwatch-leaks"]

    wait_for(lambda: not watchdogs())  # an earlier test's watchdog ends once it has nothing
    engine = instrumented(leak_threshold=0)
    connection = engine.connect()
    poolwatch_clock.advance(3600)
    check_leaks()
    assert not [t for t in threading.enumerate() if t.name == "poolwatch-leaks"]
    assert telemetry.events() == []
    connection.close()


def test_a_connection_garbage_collected_without_checkin_is_never_returned(
    leaky: sa.Engine, telemetry: Capture
) -> None:
    """SQLAlchemy silently rolls such a connection back; poolwatch counts and reports it."""
    raw = leaky.raw_connection()
    del raw
    gc.collect()
    assert gauge(telemetry, catalog.CONNECTION_NEVER_RETURNED, "app") == 1
    (event,) = telemetry.events(catalog.EVENT_NEVER_RETURNED)
    assert event.attributes[catalog.CODE_FUNCTION].endswith(
        "test_a_connection_garbage_collected_without_checkin_is_never_returned"
    )
    assert "garbage-collected" in str(event.body)
    with leaky.connect() as connection:  # the pool got its connection back
        assert connection.exec_driver_sql("SELECT 1").scalar() == 1


def test_an_async_connection_garbage_collected_is_never_returned(
    telemetry: Capture, tmp_path: Path
) -> None:
    """With an async driver SQLAlchemy can only drop the connection; poolwatch still reports it."""
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}", pool_size=1)
    poolwatch.instrument_sqlalchemy(engine, pool_name="async", **telemetry.providers)

    async def leak() -> None:
        connection = await engine.connect()
        await connection.exec_driver_sql("SELECT 1")
        del connection

    async def main() -> None:
        await leak()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gc.collect()
        await asyncio.sleep(0.2)  # let aiosqlite's worker finish closing before the loop ends
        await engine.dispose()

    asyncio.run(main())
    assert gauge(telemetry, catalog.CONNECTION_NEVER_RETURNED, "async") == 1
    (event,) = telemetry.events(catalog.EVENT_NEVER_RETURNED)
    assert event.attributes[catalog.CODE_FUNCTION].endswith("leak")
    # asyncio's "Task-N" says nothing: the task is named by the app coroutine it runs
    assert event.attributes[catalog.TASK_NAME].endswith("<locals>.main")


def hold_for_the_scheduler(engine: sa.Engine, held: list[Any]) -> None:
    """The outer scheduler: holds two connections."""
    held.append(engine.connect())
    held.append(engine.connect())


def test_a_timeout_lists_who_holds_the_pool(
    instrumented: Callable[..., sa.Engine], telemetry: Capture
) -> None:
    """The timeout event names the holders, most common borrow site first."""
    engine = instrumented(pool_size=3, max_overflow=0, pool_timeout=0.05)
    held: list[Any] = []
    hold_for_the_scheduler(engine, held)
    held.append(engine.connect())
    with pytest.raises(sa.exc.TimeoutError):
        engine.connect()
    (event,) = telemetry.events(catalog.EVENT_POOL_TIMEOUT)
    holders = list(event.attributes[catalog.POOL_HOLDERS])
    assert len(holders) == 2
    assert holders[0].startswith("2 x ")
    assert "in hold_for_the_scheduler" in holders[0]
    assert holders[1].startswith("1 x ")
    assert "in test_a_timeout_lists_who_holds_the_pool" in holders[1]
    assert "held by 2 x" in str(event.body)
    for connection in held:
        connection.close()


def test_leaking_thousands_of_connections_keeps_memory_bounded(
    instrumented: Callable[..., sa.Engine], telemetry: Capture
) -> None:
    """5000 connections dropped without checkin: each counted, no bookkeeping left behind."""
    engine = instrumented(poolclass=sa.pool.NullPool)
    recorder = engine.pool._poolwatch_recorder  # type: ignore[attr-defined]

    def leak(count: int) -> None:
        for _ in range(count):
            engine.raw_connection()  # dropped at once, never closed

    leak(200)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    leak(5000)
    gc.collect()
    assert len(telemetry.events(catalog.EVENT_NEVER_RETURNED)) == 5200
    telemetry.clear()  # the exported events are the sink's memory, not poolwatch's
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    assert recorder.never_returned == 5200
    assert (recorder.loans.out, recorder.loans.sampled, recorder.loans.leaked) == ({}, {}, set())
    grown = sum(
        stat.size_diff
        for stat in after.compare_to(before, "filename")
        if "poolwatch" in stat.traceback[0].filename
    )
    assert grown < 64 * 1024


def test_a_broken_event_pipeline_never_reaches_the_app(
    make_engine: Callable[..., sa.Engine], telemetry: Capture
) -> None:
    """A logger that raises during leak reporting is counted; the app keeps working."""
    engine = make_engine(pool_size=1, max_overflow=0)
    poolwatch.instrument_sqlalchemy(
        engine,
        pool_name="app",
        leak_threshold=0.05,
        meter_provider=telemetry.meter_provider,
        logger_provider=ExplodingLoggerProvider(),  # type: ignore[arg-type]
    )
    connection = engine.connect()
    wait_for(lambda: _guard.error_counts().get("leak-watchdog", 0) >= 1)
    assert connection.exec_driver_sql("SELECT 1").scalar() == 1
    connection.close()
    assert gauge(telemetry, catalog.CONNECTION_LEAKS, "app") == 1
