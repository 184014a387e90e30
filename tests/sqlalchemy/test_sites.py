"""Which code a leak names: the borrow site at checkout, or the holder's stack sampled later.

By default the stack is walked at checkout for one checkout in ``SITE_EVERY`` and for every
checkout while half the pool is out; other loans get their holder's stack sampled by the
watchdog. ``capture_stacks`` walks it at every checkout.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

import poolwatch
from poolwatch import _guard, _sites, catalog, recorder
from poolwatch.testing import Capture
from tests.support.readings import wait_for

THRESHOLD = 0.2
Engine = Callable[..., sa.Engine]


def watched(make_engine: Engine, telemetry: Capture, size: int, **settings: Any) -> sa.Engine:
    engine = make_engine(pool_size=size, max_overflow=0, pool_timeout=0.1)
    poolwatch.instrument_sqlalchemy(
        engine, pool_name="app", leak_threshold=THRESHOLD, **settings, **telemetry.providers
    )
    return engine


def borrow(engine: sa.Engine) -> sa.Connection:
    """The application's line that takes a connection."""
    return engine.connect()


def hold_until(release: threading.Event) -> None:
    """Where a worker thread waits while it holds a connection."""
    release.wait(10)


def leak_events(telemetry: Capture, count: int) -> list[dict[str, Any]]:
    """The leak events' attributes, in the order the connections were borrowed."""
    wait_for(lambda: len(telemetry.events(catalog.EVENT_LEAK)) >= count)
    events = telemetry.events(catalog.EVENT_LEAK)
    assert len(events) == count

    def borrowed_at(event: Any) -> float:
        return float(event.timestamp / 1e9 - event.attributes[catalog.CONNECTION_AGE])

    return [dict(event.attributes) for event in sorted(events, key=borrowed_at)]


def test_one_checkout_in_sixteen_records_its_borrow_site(
    make_engine: Engine, telemetry: Capture
) -> None:
    """Checkout 1 and checkout 1 + SITE_EVERY walk the stack; the one after does not."""
    engine = watched(make_engine, telemetry, size=20)
    for _ in range(recorder.SITE_EVERY):
        borrow(engine).close()
    walked = borrow(engine)  # checkout SITE_EVERY + 1
    time.sleep(0.05)
    sampled = borrow(engine)  # the next one: no walk, sampled later
    walked_event, sampled_event = leak_events(telemetry, 2)

    assert walked_event[catalog.SITE_SOURCE] == catalog.SITE_CHECKOUT
    assert walked_event[catalog.CODE_FUNCTION] == "borrow"
    assert catalog.SITE_SAMPLED_AFTER not in walked_event
    # sampled while the main thread polls for the events (wait_for, called by leak_events)
    assert sampled_event[catalog.SITE_SOURCE] == catalog.SITE_HOLDER_SAMPLE
    assert sampled_event[catalog.CODE_FUNCTION] == "wait_for"
    assert "in leak_events" in sampled_event[catalog.CODE_STACKTRACE]
    assert THRESHOLD <= sampled_event[catalog.SITE_SAMPLED_AFTER] < 5
    walked.close()
    sampled.close()


def test_a_worker_holding_a_connection_is_sampled_where_it_waits(
    make_engine: Engine, telemetry: Capture
) -> None:
    """The holder's live stack: the worker thread, in the function it is blocked in."""
    engine = watched(make_engine, telemetry, size=20)
    borrow(engine).close()  # checkout 1 walks the stack; the worker's does not
    release = threading.Event()

    def worker() -> None:
        with engine.connect():
            hold_until(release)

    thread = threading.Thread(target=worker, name="report-builder")
    thread.start()
    try:
        (event,) = leak_events(telemetry, 1)
    finally:
        release.set()
        thread.join()
    assert event[catalog.THREAD_NAME] == "report-builder"
    assert event[catalog.SITE_SOURCE] == catalog.SITE_HOLDER_SAMPLE
    assert event[catalog.CODE_FUNCTION] == "hold_until"
    assert event[catalog.CODE_FILE] == __file__
    assert event[catalog.CODE_LINE] == hold_until.__code__.co_firstlineno + 2
    assert "worker" in event[catalog.CODE_STACKTRACE]


def test_an_asyncio_task_is_sampled_at_the_await_it_is_suspended_in(
    telemetry: Capture, tmp_path: Path
) -> None:
    """A suspended task's coroutines, innermost first, not just its outermost frame."""
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}", pool_size=20)
    poolwatch.instrument_sqlalchemy(
        engine, pool_name="async", leak_threshold=THRESHOLD, **telemetry.providers
    )

    async def slow_io() -> None:
        await asyncio.sleep(THRESHOLD * 3)

    async def handler() -> None:
        async with engine.connect() as connection:
            await connection.exec_driver_sql("SELECT 1")
            await slow_io()

    async def main() -> None:
        async with engine.connect():  # checkout 1 walks the stack
            pass
        await asyncio.create_task(handler(), name="handler-task")
        await engine.dispose()

    asyncio.run(main())
    (event,) = telemetry.events(catalog.EVENT_LEAK)
    attributes = event.attributes
    assert attributes[catalog.TASK_NAME] == "handler-task"
    assert attributes[catalog.SITE_SOURCE] == catalog.SITE_HOLDER_SAMPLE
    assert attributes[catalog.CODE_FUNCTION].endswith("slow_io")
    stack = attributes[catalog.CODE_STACKTRACE]
    assert stack.index("<locals>.slow_io") < stack.index("<locals>.handler")


def test_every_checkout_records_its_site_while_half_the_pool_is_out(
    make_engine: Engine, telemetry: Capture
) -> None:
    """Pool of 4: the second checkout is sampled later, the third (2 out already) is walked."""
    engine = watched(make_engine, telemetry, size=4)
    first = borrow(engine)  # checkout 1: walked
    time.sleep(0.02)
    second = borrow(engine)  # 1 out of 4: not walked
    time.sleep(0.02)
    third = borrow(engine)  # 2 out of 4: busy, walked
    first_event, second_event, third_event = leak_events(telemetry, 3)
    assert first_event[catalog.SITE_SOURCE] == catalog.SITE_CHECKOUT
    assert second_event[catalog.SITE_SOURCE] == catalog.SITE_HOLDER_SAMPLE
    assert third_event[catalog.SITE_SOURCE] == catalog.SITE_CHECKOUT
    assert first_event[catalog.CODE_FUNCTION] == third_event[catalog.CODE_FUNCTION] == "borrow"
    for connection in (first, second, third):
        connection.close()


def test_capture_stacks_records_every_checkout_with_its_whole_stack(
    make_engine: Engine, telemetry: Capture
) -> None:
    """Checkout 2 of an idle pool is walked too, and the stack goes past three frames."""

    def nested(depth: int) -> sa.Connection:
        return borrow(engine) if depth == 0 else nested(depth - 1)

    engine = watched(make_engine, telemetry, size=20, capture_stacks=True)
    borrow(engine).close()
    connection = nested(5)
    (event,) = leak_events(telemetry, 1)
    assert event[catalog.SITE_SOURCE] == catalog.SITE_CHECKOUT
    assert event[catalog.CODE_FUNCTION] == "borrow"
    frames = event[catalog.CODE_STACKTRACE].splitlines()
    assert len(frames) >= 8  # borrow, six calls of nested, this test
    connection.close()


def test_a_connection_dropped_before_any_sample_says_its_site_was_not_captured(
    make_engine: Engine, telemetry: Capture
) -> None:
    """Never returned, never walked, never sampled: the event says how to get the site."""
    engine = watched(make_engine, telemetry, size=20)
    borrow(engine).close()
    raw = engine.raw_connection()
    del raw
    gc.collect()
    (event,) = telemetry.events(catalog.EVENT_NEVER_RETURNED)
    assert catalog.CODE_FUNCTION not in event.attributes
    assert "borrow site not captured" in str(event.body)


def test_a_stack_that_cannot_be_sampled_still_leaves_the_leak_reported(
    make_engine: Engine, telemetry: Capture, monkeypatch: Any
) -> None:
    """Sampling raising inside poolwatch: counted as an internal error, the leak still reported."""

    def broken(*_args: Any) -> Any:
        raise RuntimeError("unreadable stack")

    monkeypatch.setattr(_sites.SiteCapture, "of_holder", broken)
    engine = watched(make_engine, telemetry, size=20)
    borrow(engine).close()
    connection = borrow(engine)  # not walked: its site would come from sampling
    (event,) = leak_events(telemetry, 1)
    assert catalog.CODE_FUNCTION not in event
    assert _guard.error_counts()["sites.sample"] >= 1
    connection.close()
