"""Which code a leak names: the borrow site at checkout, or the holder's stack sampled later.

By default the stack is walked at checkout for one checkout in ``SITE_EVERY`` and for every
checkout while half the pool is out; other loans get their holder's stack sampled by the
watchdog. ``capture_stacks`` walks it at every checkout.
"""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

import poolwatch
from poolwatch import _guard, _sites, catalog
from poolwatch import _recorder as recorder
from poolwatch.testing import Capture, FakeClock, check_leaks
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


def leak_events(telemetry: Capture, clock: FakeClock, count: int) -> list[dict[str, Any]]:
    """Move ``clock`` past the threshold and check: the leak events' attributes, oldest first."""
    clock.advance(THRESHOLD)
    check_leaks()  # samples the holders' stacks first, as the watchdog does
    events = telemetry.events(catalog.EVENT_LEAK)
    assert len(events) == count
    return sorted(
        (dict(event.attributes) for event in events), key=lambda a: -a[catalog.CONNECTION_AGE]
    )


def test_one_checkout_in_sixteen_records_its_borrow_site(
    make_engine: Engine, telemetry: Capture, poolwatch_clock: FakeClock
) -> None:
    """Checkout 1 and checkout 1 + SITE_EVERY walk the stack; the one after does not."""
    engine = watched(make_engine, telemetry, size=20)
    for _ in range(recorder.SITE_EVERY):
        borrow(engine).close()
    walked = borrow(engine)  # checkout SITE_EVERY + 1
    poolwatch_clock.advance(0.05)
    sampled = borrow(engine)  # the next one: no walk, sampled later
    walked_event, sampled_event = leak_events(telemetry, poolwatch_clock, 2)

    assert walked_event[catalog.SITE_SOURCE] == catalog.SITE_CHECKOUT
    assert walked_event[catalog.CODE_FUNCTION] == "borrow"
    assert walked_event[catalog.CONNECTION_AGE] == pytest.approx(THRESHOLD + 0.05)
    assert catalog.SITE_SAMPLED_AFTER not in walked_event
    # sampled while the main thread runs the check (called by leak_events)
    assert sampled_event[catalog.SITE_SOURCE] == catalog.SITE_HOLDER_SAMPLE
    assert sampled_event[catalog.CODE_FUNCTION] == "leak_events"
    assert "in test_one_checkout_in_sixteen" in sampled_event[catalog.CODE_STACKTRACE]
    assert sampled_event[catalog.SITE_SAMPLED_AFTER] == pytest.approx(THRESHOLD)
    walked.close()
    sampled.close()


def test_a_worker_holding_a_connection_is_sampled_where_it_waits(
    make_engine: Engine, telemetry: Capture
) -> None:
    """The holder's live stack: the worker thread, in the function it is blocked in.

    On the real clock, sampled and reported by the watchdog thread (an end-to-end proof)."""
    engine = watched(make_engine, telemetry, size=20)
    borrow(engine).close()  # checkout 1 walks the stack; the worker's does not
    release = threading.Event()

    def worker() -> None:
        with engine.connect():
            hold_until(release)

    thread = threading.Thread(target=worker, name="report-builder")
    thread.start()
    try:  # on the real clock: the watchdog thread samples the worker and reports the leak
        wait_for(lambda: bool(telemetry.events(catalog.EVENT_LEAK)))
        (event,) = (dict(e.attributes) for e in telemetry.events(catalog.EVENT_LEAK))
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
    telemetry: Capture, tmp_path: Path, poolwatch_clock: FakeClock
) -> None:
    """A suspended task's coroutines, innermost first, not just its outermost frame."""
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}", pool_size=20)
    poolwatch.instrument_sqlalchemy(
        engine, pool_name="async", leak_threshold=THRESHOLD, **telemetry.providers
    )

    suspended, done = asyncio.Event(), asyncio.Event()

    async def slow_io() -> None:
        suspended.set()
        await done.wait()

    async def handler() -> None:
        async with engine.connect() as connection:
            await connection.exec_driver_sql("SELECT 1")
            await slow_io()

    async def main() -> None:
        async with engine.connect():  # checkout 1 walks the stack
            pass
        task = asyncio.create_task(handler(), name="handler-task")
        await suspended.wait()
        poolwatch_clock.advance(THRESHOLD)
        check_leaks()
        done.set()
        await task
        await engine.dispose()

    asyncio.run(main())
    (event,) = telemetry.events(catalog.EVENT_LEAK)
    attributes = event.attributes
    assert attributes[catalog.TASK_NAME] == "handler-task"
    assert attributes[catalog.SITE_SOURCE] == catalog.SITE_HOLDER_SAMPLE
    assert attributes[catalog.CODE_FUNCTION].endswith("slow_io")
    assert attributes[catalog.SITE_SAMPLED_AFTER] == pytest.approx(THRESHOLD)
    stack = attributes[catalog.CODE_STACKTRACE]
    assert stack.index("<locals>.slow_io") < stack.index("<locals>.handler")


def test_every_checkout_records_its_site_while_half_the_pool_is_out(
    make_engine: Engine, telemetry: Capture, poolwatch_clock: FakeClock
) -> None:
    """Pool of 4: the second checkout is sampled later, the third (2 out already) is walked."""
    engine = watched(make_engine, telemetry, size=4)
    first = borrow(engine)  # checkout 1: walked
    poolwatch_clock.advance(0.02)
    second = borrow(engine)  # 1 out of 4: not walked
    poolwatch_clock.advance(0.02)
    third = borrow(engine)  # 2 out of 4: busy, walked
    first_event, second_event, third_event = leak_events(telemetry, poolwatch_clock, 3)
    assert first_event[catalog.SITE_SOURCE] == catalog.SITE_CHECKOUT
    assert second_event[catalog.SITE_SOURCE] == catalog.SITE_HOLDER_SAMPLE
    assert third_event[catalog.SITE_SOURCE] == catalog.SITE_CHECKOUT
    assert first_event[catalog.CODE_FUNCTION] == third_event[catalog.CODE_FUNCTION] == "borrow"
    for connection in (first, second, third):
        connection.close()


def test_capture_stacks_records_every_checkout_with_its_whole_stack(
    make_engine: Engine, telemetry: Capture, poolwatch_clock: FakeClock
) -> None:
    """Checkout 2 of an idle pool is walked too, and the stack goes past three frames."""

    def nested(depth: int) -> sa.Connection:
        return borrow(engine) if depth == 0 else nested(depth - 1)

    engine = watched(make_engine, telemetry, size=20, capture_stacks=True)
    borrow(engine).close()
    connection = nested(5)
    (event,) = leak_events(telemetry, poolwatch_clock, 1)
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
    make_engine: Engine, telemetry: Capture, monkeypatch: Any, poolwatch_clock: FakeClock
) -> None:
    """Sampling raising inside poolwatch: counted as an internal error, the leak still reported."""

    def broken(*_args: Any) -> Any:
        raise RuntimeError("unreadable stack")

    monkeypatch.setattr(_sites.SiteCapture, "of_holder", broken)
    engine = watched(make_engine, telemetry, size=20)
    borrow(engine).close()
    connection = borrow(engine)  # not walked: its site would come from sampling
    (event,) = leak_events(telemetry, poolwatch_clock, 1)
    assert catalog.CODE_FUNCTION not in event
    assert _guard.error_counts()["sites.sample"] == 1
    connection.close()
