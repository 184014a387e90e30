"""The last pool timeout each thread or task saw: the likely cause of a session conflict after it.

A conflict (``Object is already attached to session``) often follows a pool timeout in the same
thread or task, whose error handler reused an object of the failed session. Telemetry keeps the
last timeout per caller here, bounded, and names it in the conflict's event.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict

#: Callers remembered at most (the oldest is forgotten first).
KEPT = 4096


class RecentTimeout:
    """A pool timeout seen by one thread or task, kept to explain a conflict that follows it."""

    __slots__ = ("at", "message", "pool")

    def __init__(self, at: float, pool: str, message: str) -> None:
        self.at = at
        self.pool = pool
        self.message = message


def caller_key() -> tuple[int, int]:
    """Identifies the running thread and asyncio task (0 outside a task)."""
    task = asyncio.current_task() if asyncio.events._get_running_loop() is not None else None
    return threading.get_ident(), id(task) if task is not None else 0


class RecentTimeouts:
    """The last pool timeout of each caller, at most :data:`KEPT` callers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._recent: OrderedDict[tuple[int, int], RecentTimeout] = OrderedDict()

    def remember(self, pool: str, message: str) -> None:
        """The calling thread or task just saw ``pool`` time out with ``message``."""
        key = caller_key()
        with self._lock:
            self._recent[key] = RecentTimeout(time.monotonic(), pool, message)
            self._recent.move_to_end(key)
            while len(self._recent) > KEPT:
                self._recent.popitem(last=False)

    def find(self, window: float) -> RecentTimeout | None:
        """The timeout the calling thread or task saw within ``window`` seconds, if any."""
        with self._lock:
            recent = self._recent.get(caller_key())
        if recent is None or time.monotonic() - recent.at > window:
            return None
        return recent
