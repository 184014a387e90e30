"""Loans and leaks: who holds which connection, since when, borrowed where; and the watchdog.

A pool's :class:`Loans` is its book of connections out right now. The recorder writes it on
the hot path (a plain dict of :data:`LoanEntry` tuples, one store per checkout); everything
slower happens here: sampling the stacks of holders whose borrow site was not captured,
finding loans held past the leak threshold (once each), confirming with the adapter that a
loan is really out, listing holders for a timeout. :func:`check` is the leak policy, run by
the one :class:`Watchdog` thread per process or called directly (tests, a user's own loop).

Nothing here talks to OpenTelemetry: a leak found is handed to whoever asked, as a
:class:`Loan` (a readable view of one entry) to report.
"""

from __future__ import annotations

import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from poolwatch import _guard, _process, _sites, _state, catalog

#: A weak reference (or anything called the same way) to what the application holds.
OwnerRef = Callable[[], object]

#: What is kept per checkout: (started, owner, site, thread, task, current span). A plain tuple:
#: building one costs a fifth of an object with an ``__init__``, and it runs on every checkout.
#: ``site`` is empty when the borrow site was not captured at checkout. The span is kept as the
#: adapter found it (or None); only telemetry reads it, if the loan is reported.
LoanEntry = tuple[float, "OwnerRef | None", _sites.Site, threading.Thread, Any, Any]

#: A holder's stack sampled while it held a connection, and the loan's age at that moment.
Sample = tuple[_sites.Site, float]

#: Loans without a borrow site get the holder's stack sampled once they are this old (seconds).
SAMPLE_AFTER = 1.0

Clock = Callable[[], float]


class Loan:
    """A readable view of one checked-out connection, built only when it is reported."""

    def __init__(
        self,
        entry: LoanEntry,
        leaked: bool = False,
        sampled: Sample | None = None,
        sites: _sites.SiteCapture | None = None,
    ) -> None:
        self.started, self.owner, self.site, thread, task, self.span = entry
        #: How :attr:`site` was found, and when (seconds after checkout) if it was sampled.
        self.site_source = catalog.SITE_CHECKOUT if self.site else None
        self.sampled_after: float | None = None
        if not self.site and sampled is not None:
            self.site, self.sampled_after = sampled
            self.site_source = catalog.SITE_HOLDER_SAMPLE if self.site else None
        self.thread_id = thread.ident
        # the name outlives the thread: a thread that died holding a connection is still named
        self.thread_name = thread.name
        self.task: str | None = (
            _sites.task_label(sites, task)
            if sites is not None
            else (task.get_name() if task is not None else None)
        )
        self.leaked = leaked

    def collected(self) -> bool:
        """Whether the application's handle was garbage-collected without being returned."""
        return self.owner is not None and self.owner() is None

    def holder(self) -> str:
        """The thread (and asyncio task) that borrowed the connection."""
        return self.thread_name if self.task is None else f"{self.thread_name}/{self.task}"


class Loans:
    """One pool's connections out right now, and what is known of their holders.

    :attr:`out` is written by the recorder on every checkout and checkin; the rest is read and
    kept here, off the hot path. ``clock`` is the recorder's (``time.perf_counter`` unless a
    test injects another).
    """

    def __init__(self, name: str, sites: _sites.SiteCapture, clock: Clock) -> None:
        self.name = name
        self.sites = sites
        self.clock = clock
        #: Connections out right now, by the adapter's key for the connection.
        self.out: dict[object, LoanEntry] = {}
        #: Keys of loans already reported as leaked.
        self.leaked: set[object] = set()
        #: Holders' stacks sampled for loans that have no borrow site, by loan key.
        self.sampled: dict[object, Sample] = {}
        #: Loans reported as leaked since the pool was first seen (a counter).
        self.leaks = 0
        self._lock = threading.Lock()
        #: The adapter's answer to "is this loan still out?" (None: it cannot tell). Asked
        #: before a loan is reported as leaked, so a checkin poolwatch missed is no leak.
        self.still_out: Callable[[object, LoanEntry], bool] | None = None

    def __len__(self) -> int:
        return len(self.out)

    def ended(self, key: object) -> tuple[Sample | None, bool]:
        """A loan left the books: its sample, if any, and whether it had been reported leaked."""
        sampled = self.sampled.pop(key, None)
        leaked = key in self.leaked
        self.leaked.discard(key)
        return sampled, leaked

    def view(self, key: object, entry: LoanEntry, leaked: bool = False) -> Loan:
        """The readable view of one loan, with its sampled site if it has one."""
        return Loan(entry, leaked, self.sampled.get(key), self.sites)

    # --- borrow sites ----------------------------------------------------------------------

    def sample_sites(self, older_than: float) -> None:
        """Sample the holder's stack for loans at least ``older_than`` old that have no site."""
        cutoff = self.clock() - older_than
        sampled = self.sampled
        missing = [
            (key, entry)
            for key, entry in list(self.out.items())
            if not entry[2] and entry[0] <= cutoff and key not in sampled
        ]
        if not missing:
            return
        frames = sys._current_frames()
        now = self.clock()
        for key, entry in missing:
            # a stack that cannot be read leaves the loan without a site; its leak or timeout
            # is still reported
            site = _guard.guarded("sites.sample", self.sites.of_holder, entry[3], entry[4], frames)
            sampled[key] = (site or (), now - entry[0])
            if self.out.get(key) is not entry:  # came back meanwhile
                sampled.pop(key, None)

    def holders(self, limit: int = 5) -> list[str]:
        """Who holds the pool's connections, by borrowing function, commonest first.

        Each entry reads ``N x path in function (lines a, b; oldest Ns, thread)``.
        """
        self.sample_sites(0.0)
        now = self.clock()
        groups: dict[str, _Holders] = {}
        for key, entry in list(self.out.items()):
            loan = self.view(key, entry)
            where, line = _sites.function_of(loan.site)
            group = groups.setdefault(where, _Holders())
            group.add(line, now - loan.started, loan.holder())
        ranked = sorted(groups.items(), key=lambda item: (-item[1].count, -item[1].oldest))
        return [f"{group.count} x {where} ({group.detail()})" for where, group in ranked[:limit]]

    # --- leaks ---------------------------------------------------------------------------------

    def find(self, threshold: float) -> list[Loan]:
        """Loans older than ``threshold`` not reported yet; marks them reported and counts them."""
        cutoff = self.clock() - threshold
        found = [
            (key, entry)
            for key, entry in list(self.out.items())
            if entry[0] <= cutoff and key not in self.leaked
        ]
        if found and self.still_out is not None:
            found = [(key, entry) for key, entry in found if self._confirm(key, entry)]
        if not found:
            return []
        with self._lock:
            self.leaks += len(found)
        self.leaked.update(key for key, _ in found)
        return [self.view(key, entry, leaked=True) for key, entry in found]

    def _confirm(self, key: object, entry: LoanEntry) -> bool:
        """Whether the loan is really out; one whose checkin was missed leaves the books."""
        assert self.still_out is not None
        if self.still_out(key, entry):
            return True
        if self.out.get(key) is entry:
            self.out.pop(key, None)
            self.sampled.pop(key, None)
            _guard.internal_error("recorder.missed_checkin", _MissedCheckin(self.name))
        return False

    def leaked_now(self) -> int:
        """Connections held past the threshold right now."""
        return len(self.leaked & set(self.out))


class Watched(Protocol):
    """What the watchdog looks after: one instrumentation's pools and its leak settings."""

    @property
    def active(self) -> bool: ...

    @property
    def leak_threshold(self) -> float: ...

    def check_leaks(self) -> None: ...


class Pool(Protocol):
    """A pool as the leak policy sees it: its book of loans."""

    @property
    def loans(self) -> Loans: ...


def watchdog() -> Watchdog:
    """The process's one leak watchdog (kept in :mod:`poolwatch._state`), made on first use."""
    if _state.watchdog is None:
        _state.watchdog = Watchdog()
    return _state.watchdog  # type: ignore[no-any-return]


def check(
    pools: Iterable[Pool],
    threshold: float,
    capture_stacks: bool,
    report: Callable[[Any, Loan], None],
) -> None:
    """The leak policy: report every loan that has just crossed ``threshold`` (seconds), once.

    Loans without a borrow site first get their holder's stack sampled, once they are
    :data:`SAMPLE_AFTER` old (or as old as the threshold, if it is lower), so the report can
    say where the holder is. ``report(pool, loan)`` is called for each leak found.
    """
    sample_after = min(SAMPLE_AFTER, threshold)
    for pool in pools:
        if not capture_stacks:
            # without a site the leak is still reported
            _guard.guarded("leak-watchdog", pool.loans.sample_sites, sample_after)
        # counted and marked before the views are built: a failure below loses reports only
        for loan in _guard.guarded("leak-watchdog", pool.loans.find, threshold) or ():
            _guard.guarded("leak-watchdog", report, pool, loan)


class Watchdog:
    """One daemon thread per process that looks for leaks in every watched instrumentation.

    It wakes a few times per leak threshold (the smallest among those watched) and ends by
    itself when nothing is left to watch; :meth:`watch` starts it again. A forked child has no
    copy of the thread: its first checkout starts one. :meth:`pause` holds it (tests that drive
    the leak check themselves, with an injected clock).
    """

    def __init__(self, sleep: Callable[[float], None] = time.sleep) -> None:
        self._lock = threading.Lock()
        self._watched: weakref.WeakSet[Any] = weakref.WeakSet()
        self._thread: threading.Thread | None = None
        self._sleep = sleep
        self._paused = threading.Event()
        _process.on_fork("watchdog", self._forget_thread)

    def watch(self, target: Watched) -> None:
        """Look for leaks in ``target``'s pools from now on."""
        with self._lock:
            self._watched.add(target)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="poolwatch-leaks", daemon=True
                )
                self._thread.start()

    def pause(self, paused: bool = True) -> None:
        """Hold the thread's passes (``False`` resumes them)."""
        if paused:
            self._paused.set()
        else:
            self._paused.clear()

    def running(self) -> bool:
        """Whether the watchdog thread is alive in this process."""
        with self._lock:
            return self._thread is not None and self._thread.is_alive()

    def forget(self) -> None:
        """Stop watching everything (the thread ends at its next wake-up)."""
        with self._lock:
            self._watched = weakref.WeakSet()

    def _forget_thread(self) -> None:
        self._lock = threading.Lock()
        self._thread = None

    def _targets(self) -> list[Watched]:
        with self._lock:
            targets = [t for t in self._watched if t.active and t.leak_threshold > 0]
            if not targets:
                self._thread = None
            return targets

    def _run(self) -> None:
        while targets := self._targets():
            # a few times per threshold, and often enough to sample holders soon after
            # SAMPLE_AFTER, while they are most likely still in the code that borrowed
            interval = min(min(t.leak_threshold for t in targets) / 4, SAMPLE_AFTER / 2)
            self._sleep(max(interval, 0.02))
            if self._paused.is_set():
                continue
            for target in targets:
                try:
                    target.check_leaks()
                except Exception as exc:  # noqa: BLE001 - the boundary of the watchdog thread
                    _guard.internal_error("leak-watchdog", exc)


class _MissedCheckin(Exception):
    """A connection came back to its pool without poolwatch seeing it (counted, not raised)."""

    def __init__(self, pool: str) -> None:
        super().__init__(f"a connection of pool {pool} came back unseen; its loan was dropped")


class _Holders:
    """Connections held from one function: how many, from which lines, the oldest and its holder."""

    def __init__(self) -> None:
        self.count = 0
        self.lines: set[int] = set()
        self.oldest = -1.0
        self.holder = ""

    def add(self, line: int, age: float, holder: str) -> None:
        self.count += 1
        self.lines.add(line)
        if age > self.oldest:
            self.oldest, self.holder = age, holder

    def detail(self) -> str:
        lines = ", ".join(str(line) for line in sorted(self.lines))
        return f"line{'s' if len(self.lines) > 1 else ''} {lines}; oldest {self.oldest:.1f}s, {self.holder}"
