"""Everything poolwatch keeps per process, in one place, and how to start it afresh.

Other modules hold behaviour; the state they share across instrumentations lives here:

- counted internal errors and the warnings already given (:mod:`poolwatch._guard`);
- the resets a forked child runs and how many forks deep this process is
  (:mod:`poolwatch._process`);
- the adapters that are installed (one per library), so they can all be undone;
- the live instrumentations, shared by every ``instrument_*`` call with the same settings and
  providers (found by identity, never by ``id()``: an id is reused once its object is gone);
- the leak watchdog (:mod:`poolwatch._leaks`), made on first use.

:func:`reset` (public as :func:`poolwatch.testing.reset`) undoes every instrumentation and
forgets all of it. This module imports nothing of poolwatch: every other layer may use it.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable
from typing import Any, Protocol


class Adapter(Protocol):
    """An installed library adapter, as far as a reset needs it."""

    def uninstrument_all(self) -> None: ...


class Shared(Protocol):
    """A live instrumentation, as far as the shared registry needs it."""

    @property
    def active(self) -> bool: ...

    def shutdown(self) -> None: ...


#: Guards the errors and warnings below (never held while calling out).
lock = threading.Lock()
#: Guards the shared instrumentations (held while one is made: made once per key).
_shared_lock = threading.Lock()
#: Internal errors caught so far, by hook.
errors: Counter[str] = Counter()
#: Keys of one-time warnings already given in this process.
warned: set[str] = set()
#: What a forked child redoes, in registration order: (name, reset).
fork_resets: list[tuple[str, Callable[[], None]]] = []
#: How many forks this process descends from.
generation = 0
#: Library adapters by library name (each registers itself when its module is imported).
adapters: dict[str, Adapter] = {}
#: Every instrumentation made in this process (renewed in a forked child).
instrumentations: weakref.WeakSet[Any] = weakref.WeakSet()
#: Live shared instrumentations: (key objects, instrumentation), matched by identity of every key.
_shared: list[tuple[tuple[Any, ...], Shared]] = []
#: The clock new instrumentations measure with (seconds, monotonic): tests swap in their own.
clock: Callable[[], float] = time.perf_counter
#: The leak watchdog (a :class:`poolwatch._leaks.Watchdog`), made on first use.
watchdog: Any = None
#: Resets of state that other modules keep for the whole process (the pool-name registry).
_resets: list[Callable[[], None]] = []


def shared(key: tuple[Any, ...], make: Callable[[], Shared]) -> Any:
    """The live instrumentation for ``key`` (objects compared by identity, except the first,
    the settings, compared by value), made by ``make`` when there is none."""
    with _shared_lock:
        for known, instrumentation in _shared:
            if _same(known, key) and instrumentation.active:
                return instrumentation
        _shared[:] = [(k, i) for k, i in _shared if not _same(k, key) and i.active]
        made = make()
        _shared.append((key, made))
        return made


def _same(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    return (
        a[0] == b[0] and len(a) == len(b) and all(x is y for x, y in zip(a[1:], b[1:], strict=True))
    )


def forget(instrumentation: Shared) -> None:
    """Shut ``instrumentation`` down and drop it from the shared registry."""
    instrumentation.shutdown()
    with _shared_lock:
        _shared[:] = [(k, i) for k, i in _shared if i is not instrumentation]


def live() -> list[Any]:
    """Every live instrumentation (session-conflict hooks report to all of them)."""
    with _shared_lock:
        return [i for _, i in _shared if i.active]


def on_reset(reset: Callable[[], None]) -> None:
    """Run ``reset`` whenever :func:`reset` runs (for state a module must keep itself)."""
    _resets.append(reset)


def reset() -> None:
    """Undo every instrumentation and forget all process-wide state: adapters uninstalled,
    instrumentations shut down, errors and warnings forgotten, pool names released."""
    for adapter in list(adapters.values()):
        adapter.uninstrument_all()
    with _shared_lock:
        instrumentations = [i for _, i in _shared]
        _shared.clear()
    for instrumentation in instrumentations:
        instrumentation.shutdown()
    if watchdog is not None:
        watchdog.forget()
        watchdog.pause(False)
    for reset_one in list(_resets):
        reset_one()
    with lock:
        errors.clear()
        warned.clear()


def after_fork() -> None:
    """In a forked child: a fresh lock (the parent's may be held) and errors of its own."""
    global lock, _shared_lock, generation  # noqa: PLW0603 - renewed in a child
    lock = threading.Lock()
    _shared_lock = threading.Lock()
    generation += 1
    errors.clear()
    warned.clear()
