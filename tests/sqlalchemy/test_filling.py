"""A pool timeout while the pool fills: connections being opened or pre-pinged are listed as
such, and the event says what the configured timeout was and where a longer wait went."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

import poolwatch
from poolwatch import catalog
from poolwatch.testing import Capture, FakeClock

SLOW = 1.5


def timeout_event(telemetry: Capture) -> Any:
    (event,) = telemetry.events(catalog.EVENT_POOL_TIMEOUT)
    return event


@pytest.fixture
def workers() -> Iterator[list[threading.Thread]]:
    """Threads started by a test, joined at its end."""
    started: list[threading.Thread] = []
    yield started
    for worker in started:
        worker.join(10)


def start(workers: list[threading.Thread], target: Any, name: str) -> None:
    worker = threading.Thread(target=target, name=name)
    workers.append(worker)
    worker.start()


class Gate:
    """Where slow work waits until the test releases it; tells the test who is inside."""

    def __init__(self) -> None:
        self.inside = threading.Semaphore(0)
        self.release = threading.Event()

    def wait(self) -> None:
        self.inside.release()
        self.release.wait(10)

    def start_in_turn(
        self, workers: list[threading.Thread], target: Callable[[], Any], clock: FakeClock
    ) -> None:
        """Two callers, ``SLOW`` s apart on ``clock``, both waiting inside when it returns."""
        for name in ("first", "second"):
            start(workers, target, name)
            assert self.inside.acquire(timeout=10), f"{name} never reached the slow work"
            clock.advance(SLOW)


def test_connections_being_opened_are_listed_as_opening(
    telemetry: Capture,
    tmp_path: Path,
    workers: list[threading.Thread],
    poolwatch_clock: FakeClock,
) -> None:
    """Two callers whose connections are still being opened hold the pool: the timeout says
    ``2 used (2 opening)`` and lists them, oldest first, with the configured timeout."""
    path = tmp_path / "slow.db"
    gate = Gate()

    def slow_connect() -> sqlite3.Connection:
        gate.wait()
        return sqlite3.connect(path, check_same_thread=False)

    engine = sa.create_engine(
        "sqlite://",
        creator=slow_connect,
        poolclass=sa.pool.QueuePool,
        pool_size=1,
        max_overflow=1,
        pool_timeout=0.3,
    )
    poolwatch.instrument_sqlalchemy(engine, pool_name="filling", **telemetry.providers)
    gate.start_in_turn(workers, lambda: engine.connect().close(), poolwatch_clock)
    try:
        with pytest.raises(sa.exc.TimeoutError):
            engine.connect()
    finally:
        gate.release.set()
    event = timeout_event(telemetry)
    attributes = event.attributes
    assert attributes[catalog.POOL_USED] == 2
    assert attributes[catalog.POOL_OPENING] == 2
    assert attributes[catalog.POOL_PINGING] == 0
    assert attributes[catalog.POOL_TIMEOUT] == 0.3
    assert attributes[catalog.POOL_HOLDERS] == ("2 x opening a connection (oldest 3.0s, first)",)
    body = str(event.body)
    assert "2 used (2 opening), 0 idle, max 2" in body
    assert "configured timeout 0.30s" in body
    assert "held by 2 x opening a connection" in body


def test_connections_being_pinged_are_listed_as_pinging(
    telemetry: Capture,
    tmp_path: Path,
    workers: list[threading.Thread],
    poolwatch_clock: FakeClock,
) -> None:
    """With ``pool_pre_ping`` a slow ping holds a connection no loan names yet."""
    engine = sa.create_engine(
        f"sqlite:///{tmp_path / 'ping.db'}",
        poolclass=sa.pool.QueuePool,
        pool_size=2,
        max_overflow=0,
        pool_timeout=0.3,
        pool_pre_ping=True,
        connect_args={"check_same_thread": False},
    )
    poolwatch.instrument_sqlalchemy(engine, pool_name="pinging", **telemetry.providers)
    first, second = engine.connect(), engine.connect()
    first.close()
    second.close()
    original = engine.dialect.do_ping
    gate = Gate()

    def slow_ping(dbapi_connection: Any) -> bool:
        gate.wait()
        return bool(original(dbapi_connection))

    engine.dialect.do_ping = slow_ping  # type: ignore[method-assign]
    gate.start_in_turn(workers, lambda: engine.connect().close(), poolwatch_clock)
    try:
        with pytest.raises(sa.exc.TimeoutError):
            engine.connect()
    finally:
        gate.release.set()
    attributes = timeout_event(telemetry).attributes
    assert attributes[catalog.POOL_PINGING] == 2
    assert attributes[catalog.POOL_OPENING] == 0
    assert attributes[catalog.POOL_HOLDERS] == (
        "2 x pinging a connection (pre-ping) (oldest 3.0s, first)",
    )


def test_a_wait_beyond_the_timeout_is_explained(
    telemetry: Capture, tmp_path: Path, poolwatch_clock: FakeClock
) -> None:
    """An event loop busy past the timeout wakes the waiter late: the event gives the
    configured timeout, the time waiting for a connection and the time lost being woken.
    The clock moves 1 s while the waiter waits, before its 0.2 s timeout fires."""
    engine = create_async_engine(
        f"sqlite+aiosqlite:///{tmp_path / 'late.db'}", pool_size=1, max_overflow=0, pool_timeout=0.2
    )
    poolwatch.instrument_sqlalchemy(engine, pool_name="late", **telemetry.providers)

    async def main() -> None:
        async with engine.connect():

            async def waiter() -> None:
                with pytest.raises(sa.exc.TimeoutError):
                    async with engine.connect():
                        pass

            task = asyncio.create_task(waiter())
            # runs on the loop after the waiter has started waiting, before its timeout
            asyncio.get_running_loop().call_later(0.05, poolwatch_clock.advance, 1.0)
            await task
        await engine.dispose()

    asyncio.run(main())
    event = timeout_event(telemetry)
    assert event.attributes[catalog.WAIT_DURATION] == 1.0
    body = str(event.body)
    assert "configured timeout 0.20s; of the " in body
    assert "0.200s waiting for a free connection" in body
    assert "0.800s waiting to be woken (a busy event loop or interpreter)" in body
