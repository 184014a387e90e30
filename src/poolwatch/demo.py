"""``poolwatch demo``: a scripted pool incident on SQLite, watched by poolwatch, printed as it goes.

No server is needed: the OpenTelemetry SDK runs in process with in-memory readers. The workload
walks a small pool through the phases of a real incident (healthy, saturation, exhaustion with
timeouts, recovery) and prints what poolwatch reports after each phase.
"""

from __future__ import annotations

import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import sqlalchemy as sa

import poolwatch
from poolwatch import catalog
from poolwatch._histogram import quantile
from poolwatch.testing import Capture

POOL = "demo"


@dataclass(frozen=True)
class Phase:
    """One step of the incident: how many callers, how long each holds its connection."""

    name: str
    callers: int
    hold: float
    rounds: int


PHASES = (
    Phase("healthy", callers=3, hold=0.005, rounds=40),
    Phase("saturation", callers=5, hold=0.05, rounds=6),
    Phase("exhaustion", callers=9, hold=0.4, rounds=2),
    Phase("recovery", callers=2, hold=0.005, rounds=40),
)


def run_phase(engine: sa.Engine, phase: Phase) -> int:
    """Run ``phase``: each caller checks out, queries, holds, checks in; returns failed checkouts."""
    failures: list[BaseException] = []

    def caller() -> None:
        for _ in range(phase.rounds):
            try:
                with engine.connect() as connection:
                    connection.exec_driver_sql("SELECT 1")
                    time.sleep(phase.hold)
            except sa.exc.TimeoutError as error:
                failures.append(error)

    threads = [
        threading.Thread(target=caller, name=f"{phase.name}-{i}") for i in range(phase.callers)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(failures)


def summary(sink: Capture) -> str:
    """One line of what poolwatch reports for the demo pool right now."""
    metrics = sink.metrics()

    def value(metric: catalog.Metric, **extra: str) -> object:
        for point in metrics.get(metric.name, []):
            wanted = {catalog.POOL_NAME: POOL, **extra}
            if all(point.attributes.get(key) == val for key, val in wanted.items()):
                return point.value
        return None

    wait = sorted(
        (
            (point.attributes[catalog.LE], point.value)
            for point in metrics.get(catalog.WAIT_TIME_BUCKET.name, [])
            if point.attributes.get(catalog.POOL_NAME) == POOL
        ),
        key=lambda pair: float(pair[0]),
    )
    p99 = quantile(0.99, wait)
    return (
        f"used={value(catalog.CONNECTION_COUNT, **{catalog.STATE: catalog.STATE_USED})} "
        f"idle={value(catalog.CONNECTION_COUNT, **{catalog.STATE: catalog.STATE_IDLE})} "
        f"max={value(catalog.CONNECTION_MAX)} "
        f"pending={value(catalog.CONNECTION_PENDING_REQUESTS)} "
        f"checkouts={wait[-1][1] if wait else 0} "
        f"wait_p99={'-' if p99 is None else f'{p99 * 1000:.1f}ms'} "
        f"timeouts={value(catalog.CONNECTION_TIMEOUTS)}"
    )


def run(out: TextIO, phases: tuple[Phase, ...] = PHASES, directory: Path | None = None) -> int:
    """Run the whole demo, writing to ``out``; returns the number of timeouts seen."""
    sink = Capture()
    with tempfile.TemporaryDirectory() as tmp:
        path = (directory or Path(tmp)) / "demo.db"
        engine = sa.create_engine(
            f"sqlite:///{path}",
            poolclass=sa.pool.QueuePool,
            pool_size=3,
            max_overflow=2,
            pool_timeout=0.25,
        )
        poolwatch.instrument_sqlalchemy(engine, pool_name=POOL, **sink.providers)
        out.write("poolwatch demo: a pool of 3 + 2 overflow, timeout 0.25 s, on SQLite\n")
        total = 0
        try:
            for phase in phases:
                failed = run_phase(engine, phase)
                total += failed
                out.write(f"[{phase.name:>10}] {summary(sink)}\n")
                for event in sink.events(catalog.EVENT_POOL_TIMEOUT)[:3]:
                    out.write(f"    event {event.event_name}: {event.body}\n")
                sink.clear()
        finally:
            poolwatch.uninstrument_sqlalchemy(engine)
            engine.dispose()
            sink.shutdown()
    out.write(
        f"done: {total} checkouts timed out, each reported as "
        f"{catalog.CONNECTION_TIMEOUTS.name} and a {catalog.EVENT_POOL_TIMEOUT} event\n"
    )
    return total
