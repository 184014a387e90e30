"""The one way tests wait for something outside their control: poll a predicate until it holds."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def poll(predicate: Callable[[], T], timeout: float = 5.0, interval: float = 0.05) -> T | None:
    """Call ``predicate()`` every ``interval`` seconds until it returns something truthy, and
    return that; None once ``timeout`` seconds have passed without it. ``predicate`` may raise
    to stop early (a process that died)."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval)
