"""Real contention on a pool of two: callers that hold a connection until the others have given
up (at most HOLD s), and callers that give up after the 0.3 s pool timeout."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager

from poolwatch import catalog
from poolwatch.testing import Capture
from tests.support.readings import buckets, counts, gauge, total

HOLD = 10.0
TIMEOUT = 0.3
POOL = 2


class TimedOut:
    """For asyncio callers: holders wait until ``expected`` others have counted a timeout."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.seen = 0
        self.done = asyncio.Event()

    def count(self) -> None:
        self.seen += 1
        if self.seen == self.expected:
            self.done.set()

    async def wait(self) -> None:
        await asyncio.wait_for(self.done.wait(), HOLD)


def hold_from_threads(
    callers: int,
    connection: Callable[[], AbstractContextManager[object]],
    timeout_error: type[BaseException],
) -> int:
    """Start ``callers`` threads at once, each holding a ``connection()`` until the callers
    beyond POOL have timed out (at most HOLD seconds); how many got ``timeout_error``."""
    start = threading.Barrier(callers)
    errors: list[BaseException] = []
    lock = threading.Lock()
    others_timed_out = threading.Event()

    def caller() -> None:
        start.wait()
        try:
            with connection():
                others_timed_out.wait(HOLD)
        except timeout_error as error:
            with lock:
                errors.append(error)
                if len(errors) == callers - POOL:
                    others_timed_out.set()

    threads = [threading.Thread(target=caller) for _ in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    return len(errors)


def assert_served_and_timed_out(
    telemetry: Capture, pool: str, timed_out: int, waited_within: str
) -> None:
    """POOL immediate checkouts held HOLD s, ``timed_out`` waits of TIMEOUT s that gave up, all
    of them in the wait bucket ``waited_within`` (its bound leaves slack for a busy machine)."""
    callers = POOL + timed_out
    assert gauge(telemetry, catalog.CONNECTION_TIMEOUTS, pool) == timed_out
    wait = buckets(telemetry, catalog.CONNECTION_WAIT_TIME, pool)
    assert (wait["0.1"], wait[waited_within], wait["+Inf"]) == (
        POOL,  # served at once
        callers,
        callers,
    )
    # nobody gave up before the timeout
    assert total(telemetry, catalog.CONNECTION_WAIT_TIME, pool) >= timed_out * TIMEOUT
    use = buckets(telemetry, catalog.CONNECTION_USE_TIME, pool)
    assert (use["0.1"], use["10.0"], use["+Inf"]) == (0, POOL, POOL)  # the holds
    assert gauge(telemetry, catalog.CONNECTION_PENDING_REQUESTS, pool) == 0
    assert counts(telemetry, pool) == (0, POOL)
    assert len(telemetry.events(catalog.EVENT_POOL_TIMEOUT)) == timed_out
