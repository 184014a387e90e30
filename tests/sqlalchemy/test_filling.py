"""A pool timeout while the pool fills: connections being opened or pre-pinged are listed as
such, and the event says what the configured timeout was and where a longer wait went."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

import poolwatch
from poolwatch import catalog
from poolwatch.testing import Capture

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


def test_connections_being_opened_are_listed_as_opening(
    telemetry: Capture, tmp_path: Path, workers: list[threading.Thread]
) -> None:
    """Two callers whose connections are still being opened hold the pool: the timeout says
    ``2 used (2 opening)`` and lists them, with the configured timeout."""
    path = tmp_path / "slow.db"

    def slow_connect() -> sqlite3.Connection:
        time.sleep(SLOW)
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
    for name in ("opener-1", "opener-2"):
        start(workers, lambda: engine.connect().close(), name)
    time.sleep(0.3)
    with pytest.raises(sa.exc.TimeoutError):
        engine.connect()
    event = timeout_event(telemetry)
    attributes = event.attributes
    assert attributes[catalog.POOL_USED] == 2
    assert attributes[catalog.POOL_OPENING] == 2
    assert attributes[catalog.POOL_PINGING] == 0
    assert attributes[catalog.POOL_TIMEOUT] == 0.3
    (entry,) = attributes[catalog.POOL_HOLDERS]
    assert entry.startswith("2 x opening a connection (oldest ")
    assert entry.endswith(", opener-1)")
    body = str(event.body)
    assert "2 used (2 opening), 0 idle, max 2" in body
    assert "configured timeout 0.30s" in body
    assert "held by 2 x opening a connection" in body


def test_connections_being_pinged_are_listed_as_pinging(
    telemetry: Capture, tmp_path: Path, workers: list[threading.Thread]
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

    def slow_ping(dbapi_connection: Any) -> bool:
        time.sleep(SLOW)
        return bool(original(dbapi_connection))

    engine.dialect.do_ping = slow_ping  # type: ignore[method-assign]
    for name in ("pinger-1", "pinger-2"):
        start(workers, lambda: engine.connect().close(), name)
    time.sleep(0.3)
    with pytest.raises(sa.exc.TimeoutError):
        engine.connect()
    attributes = timeout_event(telemetry).attributes
    assert attributes[catalog.POOL_PINGING] == 2
    assert attributes[catalog.POOL_OPENING] == 0
    (entry,) = attributes[catalog.POOL_HOLDERS]
    assert entry.startswith("2 x pinging a connection (pre-ping) (oldest ")


def test_a_wait_beyond_the_timeout_is_explained(telemetry: Capture, tmp_path: Path) -> None:
    """An event loop blocked past the timeout wakes the waiter late: the event gives the
    configured timeout, the time waiting for a connection and the time lost being woken."""
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
            await asyncio.sleep(0.05)
            time.sleep(1.0)  # the loop is blocked: the waiter's timeout fires late
            await task
        await engine.dispose()

    asyncio.run(main())
    event = timeout_event(telemetry)
    waited = event.attributes[catalog.WAIT_DURATION]
    assert waited > 0.9
    body = str(event.body)
    assert "configured timeout 0.20s; of the " in body
    assert "0.200s waiting for a free connection" in body
    late = waited - 0.2
    assert f"{late:.3f}s waiting to be woken (a busy event loop or interpreter)" in body
