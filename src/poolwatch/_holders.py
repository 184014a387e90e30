"""Who holds a pool's connections, as a timeout event lists them, at a bounded cost.

One timeout samples the stacks of at most :data:`SAMPLE_LIMIT` holders that have no borrow site,
oldest first, from one snapshot of the threads' frames; timeouts of the same pool within
:data:`REUSE_FOR` of that (a storm of callers giving up together) reuse what it found. Every loan
is still counted: those whose stack was not sampled are listed as such.
"""

from __future__ import annotations

import gc
import heapq
import sys
import threading
import time
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any, Final, Protocol

from poolwatch import _guard, _sites

#: A loan as the book keeps it (``poolwatch._leaks.LoanEntry``, which imports this module):
#: (started, owner, site, thread, task, span).
LoanEntry = tuple[float, Any, _sites.Site, threading.Thread, Any, Any]

#: At most this many holders without a borrow site get their stack sampled per timeout.
SAMPLE_LIMIT: Final = 50
#: A timeout this soon (seconds) after one that sampled its pool's holders samples none.
REUSE_FOR: Final = 0.5
NOT_SAMPLED: Final = "borrow site not sampled"

_perf = time.perf_counter
#: CPython 3.11's ``sys._current_frames()`` holds the interpreter's thread-list lock while it
#: allocates; a garbage collection it triggers can run Python code that hands the GIL to a thread
#: that is exiting and waits for that lock: the whole process hangs (CPython gh-106883). 3.12
#: collects only between bytecodes; on 3.11 the collector is off during the snapshot, as
#: CPython's own later fix does.
GC_OFF_FOR_SNAPSHOT: Final = sys.implementation.name == "cpython" and sys.version_info < (3, 12)

#: A holder's stack sampled while it held a connection, and the loan's age at that moment.
Sample = tuple[_sites.Site, float]


class _Holding(Protocol):
    def holder(self) -> str: ...


def sample(
    loans: Mapping[object, LoanEntry],
    sampled: MutableMapping[object, Sample],
    capture: _sites.SiteCapture,
    older_than: float,
    *,
    most: int | None = None,
    clock: Callable[[], float] = _perf,
) -> None:
    """Sample the holder's stack for loans at least ``older_than`` old that have no site (the
    ``most`` oldest of them, if given) into ``sampled``, by loan key."""
    cutoff = clock() - older_than
    missing = [
        (key, entry)
        for key, entry in list(loans.items())
        if not entry[2] and entry[0] <= cutoff and key not in sampled
    ]
    if most is not None and len(missing) > most:
        missing = heapq.nsmallest(most, missing, key=_started)
    if not missing:
        return
    frames = current_frames()
    now = clock()
    for key, entry in missing:
        # a stack that cannot be read leaves the loan without a site; its leak or timeout
        # is still reported
        site = _guard.guarded("sites.sample", capture.of_holder, entry[3], entry[4], frames)
        sampled[key] = (site or (), now - entry[0])
        if loans.get(key) is not entry:  # came back meanwhile
            sampled.pop(key, None)


def current_frames(
    snapshot: Callable[[], dict[int, Any]] = sys._current_frames,
) -> dict[int, Any]:
    """Every thread's current frame, by thread id, taken where it cannot deadlock the process."""
    if not GC_OFF_FOR_SNAPSHOT or not gc.isenabled():
        return snapshot()
    gc.disable()
    try:
        return snapshot()
    finally:
        gc.enable()


def _started(item: tuple[object, LoanEntry]) -> float:
    return item[1][0]


class HolderList:
    """Lists one pool's holders for its timeout events; remembers when it last sampled."""

    def __init__(self, clock: Callable[[], float] = _perf) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._sampled_at: float | None = None

    def _turn(self) -> bool:
        """Whether this timeout samples: none of the pool's did within REUSE_FOR, and no other
        is sampling right now (that one's finds are used as far as they go)."""
        if not self._lock.acquire(blocking=False):
            return False
        try:
            now = self._clock()
            if self._sampled_at is not None and now - self._sampled_at < REUSE_FOR:
                return False
            self._sampled_at = now
            return True
        finally:
            self._lock.release()

    def describe(
        self,
        loans: Mapping[object, LoanEntry],
        sampled: MutableMapping[object, Sample],
        capture: _sites.SiteCapture,
        loan: Callable[[object, LoanEntry], _Holding],
        limit: int = 5,
    ) -> list[str]:
        """Who holds the pool's connections, by borrowing function, commonest first.

        Each entry reads ``N x path in function (lines a, b; oldest Ns, thread)``; then
        ``N x in M other functions (...)`` past ``limit`` functions, and ``N x borrow site not
        sampled (...)`` for holders whose stack was not sampled. The counts add up to the loans.
        """
        if self._turn():
            sample(loans, sampled, capture, 0.0, most=SAMPLE_LIMIT, clock=self._clock)
        groups, unsampled = _group(loans, sampled, self._clock())
        ranked = sorted(groups.items(), key=lambda item: (-item[1].count, -item[1].oldest))
        listed = [f"{g.count} x {where} ({g.detail(loan)})" for where, g in ranked[:limit]]
        if len(ranked) > limit:
            rest = _Group()
            for _, group in ranked[limit:]:
                rest.merge(group)
            listed.append(
                f"{rest.count} x in {len(ranked) - limit} other functions ({rest.age(loan)})"
            )
        if unsampled.count:
            listed.append(f"{unsampled.count} x {NOT_SAMPLED} ({unsampled.age(loan)})")
        return listed


def _group(
    loans: Mapping[object, LoanEntry], sampled: Mapping[object, Sample], now: float
) -> tuple[dict[str, _Group], _Group]:
    """The loans by borrowing function, and those with neither a site nor a sample."""
    groups: dict[str, _Group] = {}
    unsampled = _Group()
    # where a site's innermost frame is, by (code, offset) identity: a code object's own hash
    # is recomputed from its contents, and the sites stay alive during this call
    places: dict[tuple[int, int], tuple[str, int]] = {}
    for key, entry in list(loans.items()):
        site = entry[2]
        if not site:
            found = sampled.get(key)
            if found is None:
                unsampled.add(0, now - entry[0], key, entry)
                continue
            site = found[0]
        head = (id(site[0][0]), site[0][1]) if site else (0, 0)
        place = places.get(head)
        if place is None:
            place = places[head] = _sites.function_of(site)
        group = groups.get(place[0])
        if group is None:
            group = groups[place[0]] = _Group()
        group.add(place[1], now - entry[0], key, entry)
    return groups, unsampled


class _Group:
    """Connections held from one function: how many, from which lines, and the oldest loan
    (its holder is named only if the group is listed)."""

    __slots__ = ("count", "lines", "oldest", "oldest_loan")

    def __init__(self) -> None:
        self.count = 0
        self.lines: set[int] = set()
        self.oldest = -1.0
        self.oldest_loan: tuple[object, Any] | None = None

    def add(self, line: int, age: float, key: object, entry: LoanEntry) -> None:
        self.count += 1
        self.lines.add(line)
        if age > self.oldest:
            self.oldest, self.oldest_loan = age, (key, entry)

    def merge(self, other: _Group) -> None:
        self.count += other.count
        self.lines |= other.lines
        if other.oldest > self.oldest:
            self.oldest, self.oldest_loan = other.oldest, other.oldest_loan

    def age(self, loan: Callable[[object, LoanEntry], _Holding]) -> str:
        holder = loan(*self.oldest_loan).holder() if self.oldest_loan is not None else "?"
        return f"oldest {self.oldest:.1f}s, {holder}"

    def detail(self, loan: Callable[[object, LoanEntry], _Holding]) -> str:
        lines = ", ".join(str(line) for line in sorted(self.lines))
        return f"line{'s' if len(self.lines) > 1 else ''} {lines}; {self.age(loan)}"
