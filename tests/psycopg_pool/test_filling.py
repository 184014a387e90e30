"""A psycopg pool timing out while its workers open connections lists them as opening."""

from __future__ import annotations

import re
import threading
from typing import Any

import pytest
from psycopg_pool import PoolTimeout

import poolwatch
from poolwatch import catalog
from poolwatch.testing import Capture, FakeClock
from tests.psycopg_pool.conftest import PoolFactory


def test_connections_being_opened_by_the_pool_are_listed(
    make_pool: PoolFactory, telemetry: Capture, poolwatch_clock: FakeClock
) -> None:
    """A slow ``configure`` keeps a worker opening a connection: the timeout lists it, names
    the worker thread, its age, and gives the configured timeout."""
    configuring, release = threading.Event(), threading.Event()

    def slow_configure(_connection: Any) -> None:
        configuring.set()
        release.wait(10)

    pool = make_pool(min_size=0, max_size=1, timeout=0.3, configure=slow_configure)
    poolwatch.instrument_psycopg_pool(pool, pool_name="filling", **telemetry.providers)
    pool.open()
    waiter = threading.Thread(target=lambda: pool.putconn(pool.getconn(timeout=10)))
    waiter.start()
    assert configuring.wait(10)
    poolwatch_clock.advance(1.5)
    try:
        with pytest.raises(PoolTimeout):
            pool.getconn()
    finally:
        release.set()
    waiter.join(10)
    (event,) = telemetry.events(catalog.EVENT_POOL_TIMEOUT)
    attributes = event.attributes
    assert attributes[catalog.POOL_OPENING] == 1
    assert attributes[catalog.POOL_TIMEOUT] == 0.3
    (entry,) = attributes[catalog.POOL_HOLDERS]
    assert re.fullmatch(r"1 x opening a connection \(oldest 1\.5s, pool-\d+-worker-\d+\)", entry)
    assert "configured timeout 0.30s" in str(event.body)
