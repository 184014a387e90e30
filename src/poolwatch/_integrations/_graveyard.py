"""Forgetting pools whose engine or pool object was garbage-collected, without ever blocking.

A finalizer runs inside the garbage collector, on whichever thread triggered it, possibly while
another thread holds the adapter's lock and waits for this one (a starting thread collects
garbage before it reports itself started). So a finalizer only queues the binding's key; the
adapter detaches queued bindings the next time it holds its own lock.
"""

from __future__ import annotations

import weakref
from collections import deque
from collections.abc import Callable
from typing import TypeVar

B = TypeVar("B")


class Graveyard:
    """Keys of bindings whose owner was collected, waiting to be detached."""

    def __init__(self) -> None:
        self._keys: deque[int] = deque()

    def watch(self, owner: object, key: int) -> None:
        """Queue ``key`` once ``owner`` is garbage-collected.

        Not at interpreter exit: the SDK's own exit handler runs after ours and must still see
        every pool for its final export.
        """
        weakref.finalize(owner, self._keys.append, key).atexit = False

    def reap(self, bindings: dict[int, B], detach: Callable[[int, B], None]) -> None:
        """Detach every queued binding still in ``bindings``; call with the adapter's lock held."""
        while self._keys:
            key = self._keys.popleft()
            binding = bindings.get(key)
            if binding is not None:
                detach(key, binding)

    def clear(self) -> None:
        """Forget everything queued (the adapter is detaching all its bindings anyway)."""
        self._keys.clear()
