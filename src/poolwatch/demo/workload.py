"""The scripted incident: two SQLite pools, one walked from healthy to exhausted and back.

Each phase runs worker threads until its deadline (or until asked to stop) and joins them before
the next phase starts, so one phase's traffic never leaks into the next one's figures.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from opentelemetry.trace import Tracer

from poolwatch.demo import shop

#: The module of the demo's application (its frames are the application's).
SHOP = shop.__name__

#: The pool the incident happens to, and a neighbour that stays healthy throughout.
POOL = "orders"
NEIGHBOUR = "reports"
POOL_SIZE, MAX_OVERFLOW, POOL_TIMEOUT = 3, 2, 0.5
#: Children the scheduler fans out in the conflict phase: it holds one connection itself, so
#: ``POOL_SIZE + MAX_OVERFLOW - 1`` children get one and the rest time out.
CHILDREN = POOL_SIZE + MAX_OVERFLOW + 1
EXPECTED_CONFLICTS = CHILDREN - (POOL_SIZE + MAX_OVERFLOW - 1)


@dataclass
class Workload:
    """Engines, tracer and stop flag shared by every phase."""

    engine: sa.Engine
    neighbour: sa.Engine
    tracer: Tracer
    stop: threading.Event

    def stopping(self, deadline: float) -> bool:
        """True once the phase's deadline has passed or the demo was interrupted."""
        return self.stop.is_set() or time.monotonic() >= deadline


def engines(directory: Path) -> tuple[sa.Engine, sa.Engine]:
    """The incident's engine (small pool, short timeout) and its healthy neighbour."""
    return shop.engines(directory, POOL_SIZE, MAX_OVERFLOW, POOL_TIMEOUT)


def _threads(count: int, target: Callable[[], None], name: str) -> None:
    threads = [threading.Thread(target=target, name=f"{name}-{i}") for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def steady(callers: int, hold: float, pause: float) -> Callable[[Workload, str, float], None]:
    """A phase of ``callers`` threads looping over requests until the deadline."""

    def run(work: Workload, phase: str, deadline: float) -> None:
        def caller() -> None:
            while not work.stopping(deadline):
                shop.handle_request(work.engine, work.tracer, work.stop, hold)
                work.stop.wait(pause)

        _threads(callers, caller, phase)

    return run


def leaked_connection(work: Workload, phase: str, deadline: float) -> None:
    """A report keeps a connection past the leak threshold while light traffic goes on."""
    seconds = deadline - time.monotonic()
    leak = threading.Thread(
        target=shop.forgetful_report, args=(work.engine, work.stop, seconds), name="report"
    )
    leak.start()
    steady(2, 0.01, 0.05)(work, phase, deadline)
    leak.join()


def exhausted_scheduler(work: Workload, phase: str, deadline: float) -> None:
    """The exhaustion incident once (children time out, then conflict), then light traffic."""
    shop.fan_out_orders(work.engine, work.stop, CHILDREN, slow_io=POOL_TIMEOUT * 2)
    steady(2, 0.01, 0.05)(work, phase, deadline)


def background(work: Workload, done: threading.Event) -> None:
    """The neighbour pool's light, steady traffic for the whole demo."""
    while not (done.is_set() or work.stop.is_set()):
        shop.refresh_report(work.neighbour)
        done.wait(0.1)


#: Longer than any connection is held on purpose outside the leak phase (1 s at most), so the
#: leak phase's forgotten connection is the one leak the demo reports.
LEAK_THRESHOLD = 2.0
#: No phase runs shorter than this, however small ``--duration`` is.
MIN_PHASE_SECONDS = 1.0


@dataclass(frozen=True)
class Phase:
    """One step of the incident: its name, what happens, its share of the demo's duration."""

    name: str
    story: str
    seconds: float
    run: Callable[[Workload, str, float], None]
    #: The shortest the phase can tell its story in.
    min_seconds: float = MIN_PHASE_SECONDS


PHASES: tuple[Phase, ...] = (
    Phase("healthy", "2 callers, short queries: the pool is mostly idle", 4, steady(2, 0.01, 0.05)),
    Phase("saturation", "5 callers hold their connections: every one is used", 4,
          steady(5, 0.1, 0.01)),
    Phase("waits", "7 callers share 5 connections: checkouts queue and wait", 4,
          steady(7, 0.1, 0.05)),
    Phase("timeouts", "8 callers hold connections past the pool timeout: checkouts fail", 4,
          steady(8, POOL_TIMEOUT * 1.6, 0.0)),
    Phase("leak", "a report keeps its connection past the leak threshold", 5, leaked_connection,
          min_seconds=LEAK_THRESHOLD * 1.5),
    Phase("conflict", "a scheduler fans out while holding a connection: the pool runs dry", 4,
          exhausted_scheduler),
    Phase("recovery", "back to 2 callers: waits and timeouts stop", 3, steady(2, 0.01, 0.05)),
)  # fmt: skip

DEFAULT_SECONDS = sum(phase.seconds for phase in PHASES)


def scaled(duration: float) -> list[tuple[Phase, float]]:
    """Each phase with its length for a demo of about ``duration`` seconds."""
    factor = duration / DEFAULT_SECONDS
    return [(phase, max(phase.seconds * factor, phase.min_seconds)) for phase in PHASES]
