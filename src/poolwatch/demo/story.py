"""The demo's timeline: when each phase ran and what the pools looked like before, during, after."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from poolwatch.demo.signals import PoolReading
from poolwatch.demo.workload import Phase

Readings = dict[str, PoolReading]


@dataclass
class PhaseRecord:
    """One phase as it ran: seconds since start, readings at its edges, peaks seen during it."""

    number: int
    phase: Phase
    start: float
    before: Readings
    end: float | None = None
    after: Readings | None = None
    peak_used: dict[str, int] = field(default_factory=dict)
    peak_pending: dict[str, int] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The phase's name."""
        return self.phase.name

    def observe(self, pools: Readings) -> None:
        """Keep the highest used and pending counts seen."""
        for pool, reading in pools.items():
            self.peak_used[pool] = max(self.peak_used.get(pool, 0), reading.used)
            self.peak_pending[pool] = max(self.peak_pending.get(pool, 0), reading.pending)


class Story:
    """Phases in order, shared by the workload thread (which moves it on) and the view."""

    def __init__(self, started: float, collect: Callable[[], Readings], total: int) -> None:
        self.started = started
        self.total = total
        self._collect = collect
        self._lock = threading.Lock()
        self._records: list[PhaseRecord] = []

    def now(self) -> float:
        """Seconds since the demo started."""
        return time.monotonic() - self.started

    def begin(self, phase: Phase) -> None:
        """``phase`` starts now."""
        before = self._collect()
        with self._lock:
            record = PhaseRecord(len(self._records) + 1, phase, self.now(), before)
            self._records.append(record)

    def end(self) -> None:
        """The current phase is over."""
        after = self._collect()
        with self._lock:
            record = self._records[-1]
            record.end, record.after = self.now(), after
            record.observe(after)

    def observe(self, pools: Readings) -> None:
        """Record a collection made during the current phase."""
        with self._lock:
            if self._records and self._records[-1].end is None:
                self._records[-1].observe(pools)

    def records(self) -> list[PhaseRecord]:
        """Every phase begun so far."""
        with self._lock:
            return list(self._records)

    def current(self) -> PhaseRecord | None:
        """The phase running now (or the last one, once all are over)."""
        with self._lock:
            return self._records[-1] if self._records else None

    def phase_at(self, at: float) -> str:
        """The name of the phase running ``at`` seconds after the start."""
        name = "-"
        for record in self.records():
            if record.start <= at:
                name = record.name
        return name
