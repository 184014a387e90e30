"""Connections a pool is opening or pinging right now: the holders that have no loan yet.

While a pool fills, its ``used`` count includes connections being opened (and, with pre-ping,
tested) for callers that have not got them yet. Adapters report that work here, only when a
connection is opened or pinged, never on a plain checkout; a pool timeout lists it next to the
loans and says where a wait longer than the configured timeout went.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Final

from poolwatch import catalog

OPENING: Final = "opening a connection"
PINGING: Final = "pinging a connection (pre-ping)"
#: Finished pieces of work kept to explain a timeout that follows them.
_KEPT: Final = 64
#: A wait this much longer than the timeout is broken down in the event's body.
_NOTABLE: Final = 0.05

_perf = time.perf_counter
_current_thread = threading.current_thread
_running_loop = asyncio.events._get_running_loop


class Work:
    """One connection being opened or pinged: what, since when, and by whom."""

    __slots__ = ("kind", "started", "task", "thread")

    def __init__(self, kind: str, started: float) -> None:
        self.kind = kind
        self.started = started
        self.thread = _current_thread()
        self.task = asyncio.current_task() if _running_loop() is not None else None

    def caller(self) -> tuple[int | None, int]:
        return self.thread.ident, id(self.task) if self.task is not None else 0


def _caller() -> tuple[int | None, int]:
    task = asyncio.current_task() if _running_loop() is not None else None
    return threading.get_ident(), id(task) if task is not None else 0


class Filling:
    """The opening and pinging going on in one pool, and what finished lately."""

    def __init__(self, clock: Callable[[], float] = _perf) -> None:
        self._clock = clock
        self._active: dict[int, Work] = {}
        #: ``(caller, kind, started, ended)`` of finished work (appends are atomic).
        self._done: deque[tuple[tuple[int | None, int], str, float, float]] = deque(maxlen=_KEPT)

    def begin(self, kind: str) -> Work:
        """``kind`` work starts in the calling thread or task."""
        work = Work(kind, self._clock())
        self._active[id(work)] = work
        return work

    def end(self, work: Work) -> None:
        """``work`` is over (done or failed)."""
        self._active.pop(id(work), None)
        self._done.append((work.caller(), work.kind, work.started, self._clock()))

    def counts(self) -> dict[str, int]:
        """Pieces of work going on now, by kind."""
        found: dict[str, int] = {}
        for work in list(self._active.values()):
            found[work.kind] = found.get(work.kind, 0) + 1
        return found

    def listing(self, label: Callable[[Any], str | None]) -> list[str]:
        """``N x opening a connection (oldest 4.1s, Thread-3)``, one entry per kind;
        ``label`` names a holder's asyncio task."""
        now = self._clock()
        oldest: dict[str, Work] = {}
        counts = self.counts()
        for work in list(self._active.values()):
            if work.kind not in oldest or work.started < oldest[work.kind].started:
                oldest[work.kind] = work
        entries = []
        for kind, work in sorted(oldest.items()):
            task = label(work.task) if work.task is not None else None
            holder = work.thread.name if task is None else f"{work.thread.name}/{task}"
            entries.append(f"{counts[kind]} x {kind} (oldest {now - work.started:.1f}s, {holder})")
        return entries

    def spent(self, since: float) -> dict[str, float]:
        """Seconds the calling thread or task spent on each kind of work since ``since``."""
        caller = _caller()
        found: dict[str, float] = {}
        for who, kind, started, ended in list(self._done):
            if who == caller and ended >= since:
                found[kind] = found.get(kind, 0.0) + ended - max(started, since)
        for work in list(self._active.values()):
            if work.caller() == caller:
                found[work.kind] = (
                    found.get(work.kind, 0.0) + self._clock() - max(work.started, since)
                )
        return found

    def explain(self, since: float, timeout: float | None) -> dict[str, Any]:
        """Event attributes for a timeout of a checkout that began at ``since``."""
        attributes: dict[str, Any] = {}
        counts = self.counts()
        attributes[catalog.POOL_OPENING] = counts.get(OPENING, 0)
        attributes[catalog.POOL_PINGING] = counts.get(PINGING, 0)
        if timeout is not None:
            attributes[catalog.POOL_TIMEOUT] = timeout
        spent = self.spent(since)
        attributes[catalog.CHECKOUT_OPENING_TIME] = spent.get(OPENING, 0.0)
        attributes[catalog.CHECKOUT_PINGING_TIME] = spent.get(PINGING, 0.0)
        return attributes


def describe(attributes: dict[str, Any], waited: float) -> str:
    """What the wait was spent on, for a timeout event's body: the configured timeout and, when
    the wait outlasted it, the caller's own opening and pinging, the wait for a free connection
    (at most the timeout) and the rest (woken late: a busy event loop or interpreter)."""
    timeout = attributes.get(catalog.POOL_TIMEOUT)
    if timeout is None:
        return ""
    text = f"; configured timeout {timeout:.2f}s"
    if waited - timeout < _NOTABLE:
        return text
    opening = attributes.get(catalog.CHECKOUT_OPENING_TIME, 0.0)
    pinging = attributes.get(catalog.CHECKOUT_PINGING_TIME, 0.0)
    queued = min(timeout, max(waited - opening - pinging, 0.0))
    late = waited - opening - pinging - queued
    parts = [
        f"{seconds:.3f}s {what}"
        for seconds, what in (
            (opening, "opening a connection itself"),
            (pinging, "pinging a connection itself"),
            (queued, "waiting for a free connection"),
            (late, "waiting to be woken (a busy event loop or interpreter)"),
        )
        if seconds >= 0.001
    ]
    return f"{text}; of the {waited:.3f}s: " + ", ".join(parts)


def describe_used(attributes: dict[str, Any]) -> str:
    """``(2 opening a connection, 1 pinging)`` after the used count, when any."""
    parts = [
        f"{attributes[key]} {what}"
        for key, what in ((catalog.POOL_OPENING, "opening"), (catalog.POOL_PINGING, "pinging"))
        if attributes.get(key)
    ]
    return f" ({', '.join(parts)})" if parts else ""
