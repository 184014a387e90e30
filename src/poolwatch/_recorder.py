"""Per-pool bookkeeping: what adapters report, kept in plain Python on the hot path.

Adapters report facts (a checkout began, succeeded, failed; a connection came back, was
detached, was created) to a :class:`PoolRecorder`. It keeps pending callers, timeouts, the three
histograms and the loans (who holds which connection, since when, borrowed where). Everything
that leaves the process goes out through :class:`Signals` (implemented by telemetry, which this
module never imports); loans and leaks are kept in :mod:`poolwatch._leaks`.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from poolwatch import _errors, _filling, _guard, _leaks, _sites, catalog
from poolwatch._histogram import Buckets, ExponentialBuckets, Histogram
from poolwatch._leaks import Loan, LoanEntry, Loans, OwnerRef
from poolwatch.config import Config

_perf = time.perf_counter
#: Buffered waits per pool past which a checkout that records its site folds them into the buckets.
_FOLD_AT = 1024
_current_thread = threading.current_thread
_running_loop = asyncio.events._get_running_loop
_current_task = asyncio.current_task


class PoolState(NamedTuple):
    """What a pool looks like right now, as its own library reports it.

    A named tuple rather than a frozen dataclass: it is built on every traced checkout, and a
    frozen dataclass costs about a microsecond to construct.
    """

    used: int
    idle: int
    max: int | None = None
    idle_max: int | None = None
    idle_min: int | None = None


#: Reads a pool's state; returns None once the pool is gone.
StateReader = Callable[[], "PoolState | None"]


class Traced:
    """A checkout being traced: when its wait began, and the pool's state at that moment.

    Its span is made once the checkout is over, with this start time and every attribute at
    once: one attribute set in the SDK instead of two, and the same span as one started before
    the wait (nothing is ever its child, and an unfinished span is not exported).
    """

    __slots__ = ("started_ns", "state")

    def __init__(self, state: dict[str, Any]) -> None:
        self.started_ns = time.time_ns()
        #: Span attributes describing the pool when the wait began (reused by the timeout event).
        self.state = state


#: An exemplar (the slowest traced wait of its bucket) gives way to any later one once this old.
EXEMPLAR_TTL_NS = 60_000_000_000


class Exemplar(NamedTuple):
    """A traced wait kept to stand for its bucket: the value, when, and the checkout span."""

    value: float
    time_ns: int
    #: The checkout span's context (whatever :meth:`Signals.checkout_span` returned).
    context: Any


#: Without ``capture_stacks``, one checkout in this many records its borrow site (a power of two).
SITE_EVERY = 64
_SITE_MASK = SITE_EVERY - 1
#: ... and every checkout does while at least this share of the pool's maximum is checked out.
BUSY_SHARE = 0.5
#: Loans without a borrow site get the holder's stack sampled once they are this old (seconds).
SAMPLE_AFTER = _leaks.SAMPLE_AFTER


class Recording(Protocol):
    """A histogram that takes one value at a time (an SDK histogram in ``standard`` mode)."""

    def record(self, amount: float, attributes: Any = None) -> None: ...


class Standard(Protocol):
    """The per-checkout histograms of ``standard`` mode."""

    @property
    def wait(self) -> Recording: ...

    @property
    def use(self) -> Recording: ...

    @property
    def create(self) -> Recording: ...


class Signals(Protocol):
    """What the recorder reports, and to whom: implemented by :class:`poolwatch._telemetry.Telemetry`.

    The recorder keeps the books; everything that leaves the process goes through these calls.
    """

    def checkout_span(
        self, started_ns: int, state: dict[str, Any], waited: float, error: BaseException | None
    ) -> Any:
        """Make the span of one traced checkout; returns its context for the wait's exemplar
        (None when there is nothing to link to)."""

    def timed_out(
        self, pool: str, state: dict[str, Any], waited: float, exc: BaseException
    ) -> None: ...

    def connection_failed(
        self, pool: str, state: dict[str, Any], error: BaseException, code: str | None
    ) -> None: ...

    def leaked(self, recorder: PoolRecorder, loan: Loan, threshold: float) -> None: ...

    def returned(self, recorder: PoolRecorder, loan: Loan, held: float) -> None: ...

    def never_returned(self, recorder: PoolRecorder, loan: Loan, held: float) -> None: ...


@dataclass(frozen=True)
class Settings:
    """What a recorder needs to know, decided once per instrumentation.

    ``exponential``: keep exponential buckets (``otlp`` mode with exponential aggregation);
    ``standard``: the SDK histograms to record each value into (``standard`` mode), or None;
    ``clock``: seconds, monotonic (tests inject their own).
    """

    config: Config
    exponential: bool = False
    standard: Standard | None = None
    clock: Callable[[], float] = _perf


class PoolRecorder:
    """Bookkeeping for one pool: pending callers, timeouts, loans and the three histograms.

    The checkout path is :meth:`begin`, optionally :meth:`trace`, then :meth:`succeeded` or
    :meth:`failed`. Callers blocked right now are the length of a deque (appends and pops are
    atomic), so beginning a checkout takes no lock.

    Walking the stack for a borrow site is the dearest part of a checkout, so unless
    ``capture_stacks`` is on it happens only for one checkout in :data:`SITE_EVERY` and for every
    checkout while the pool is busy (:data:`BUSY_SHARE` of its maximum out), when holders matter.
    Other loans get their holder's stack sampled once they are :data:`SAMPLE_AFTER` old (by the
    watchdog), or when a timeout lists the holders.
    """

    def __init__(
        self,
        name: str,
        read_state: StateReader,
        *,
        settings: Settings,
        signals: Signals,
        sites: _sites.SiteCapture,
        identity: Mapping[str, str | int] | None = None,
        first_checkout: Callable[[], None] | None = None,
        owner: Any = None,
    ) -> None:
        #: The instrumentation this pool belongs to (opaque here: adapters read it).
        self.owner = owner
        self.settings = settings
        self.signals = signals
        self._first_checkout = first_checkout
        self.read_state = read_state
        #: ``db.system.name``, ``db.namespace``, ``server.*``: constant for the pool's life.
        self.identity: dict[str, str | int] = dict(identity or {})
        self.name = name
        #: The attributes of every metric point of this pool: its name and identity.
        self.attributes: dict[str, str | int] = {catalog.POOL_NAME: name, **self.identity}
        #: A copy for the SDK's own histograms (``standard`` mode), which keep the dict of a
        #: series' first measurement: replaced, never changed, when the pool is renamed.
        self._sdk_attributes = dict(self.attributes)
        #: When recording began (the start time of the cumulative histograms).
        self.started_ns = time.time_ns()
        self.timeouts = 0
        self.never_returned = 0
        #: Failed opens by (error.type, database code or None).
        self.create_errors: dict[tuple[str, str | None], int] = {}
        #: When the last open failed (a burst ends after CREATE_BURST_GAP without one).
        self._failed_open_at = -catalog.CREATE_BURST_GAP
        #: What this pool's durations are measured with (adapters time opens with it too).
        self.clock = settings.clock
        self._sites = sites
        #: Connections out right now, who holds them, which were reported as leaked.
        self.loans = Loans(name, sites, settings.clock)
        # the book's containers, read on every checkout and checkin without an attribute hop
        self._out = self.loans.out
        self._leaked = self.loans.leaked
        self._sampled = self.loans.sampled
        self._tick = 0
        #: Loans out from which on every checkout records its site (-1: not worked out yet).
        self._busy_at = -1
        self._waiting: deque[None] = deque()
        # Waits and hold times are appended here (atomic, no lock) and folded into the buckets
        # at collection or past _FOLD_AT waits: cheaper per checkout than a lock and a bisect.
        self._waits: deque[float] = deque()
        self._uses: deque[float] = deque()
        self._lock = threading.Lock()
        config = settings.config
        exponential = settings.exponential
        self.wait = _histogram(config.wait_time_buckets, exponential)
        self.use = _histogram(config.use_time_buckets, exponential)
        self.create = _histogram(config.create_time_buckets, exponential)
        #: The slowest traced wait per bucket of :attr:`wait` (exported as exemplars).
        self.exemplars: dict[int, Exemplar] = {}
        self.spans = config.spans
        self.root_spans = config.root_spans
        self._standard = settings.standard
        self._capture_all = config.capture_stacks
        #: Connections being opened or pinged for callers that have no loan yet.
        self.filling = _filling.Filling(settings.clock)

    def after_fork(self) -> None:
        """In a forked child: books of its own, from zero (the parent's loans, counts and locks
        are the parent's)."""
        still_out = self.loans.still_out
        PoolRecorder.__init__(
            self,
            self.name,
            self.read_state,
            settings=self.settings,
            signals=self.signals,
            sites=self._sites,
            identity=self.identity,
            first_checkout=self._first_checkout,
            owner=self.owner,
        )
        self.loans.still_out = still_out

    @property
    def still_out(self) -> Callable[[object, LoanEntry], bool] | None:
        """The adapter's answer to "is this loan still out?" (None: it cannot tell). Asked
        before a loan is reported as leaked, so a checkin poolwatch missed is no leak."""
        return self.loans.still_out

    @still_out.setter
    def still_out(self, answer: Callable[[object, LoanEntry], bool] | None) -> None:
        self.loans.still_out = answer

    @property
    def leaks(self) -> int:
        """Loans reported as leaked since the pool was first seen."""
        return self.loans.leaks

    def rename(self, name: str) -> None:
        """Report under ``name`` from now on (the registry gave this pool's name to another)."""
        self.name = name
        self.loans.name = name
        # in place: the histogram bridge holds this very dict (same keys, so a reader iterating
        # it meanwhile is safe)
        self.attributes[catalog.POOL_NAME] = name
        self._sdk_attributes = dict(self.attributes)

    def drained(self) -> bool:
        """Whether the pool opened connections and has none open now (its name can move)."""
        if not self.create.count:
            return False
        state = self.read_state()
        return state is None or state.used + state.idle == 0

    @property
    def pending(self) -> int:
        """Callers waiting for a connection right now."""
        return len(self._waiting)

    # --- checkout -------------------------------------------------------------------------

    def begin(self) -> float:
        """A caller asked the pool for a connection; returns the start time to hand back later."""
        self._waiting.append(None)
        return self.clock()

    def abandoned(self) -> None:
        """A checkout ended in a way the adapter could not follow: the caller waits no more."""
        self._waiting.pop()

    def trace(self) -> Traced:
        """Trace this checkout: the adapter calls it when :attr:`spans` is on and the current span
        records (or :attr:`root_spans` is on), checking that itself so an untraced checkout makes
        no call."""
        return Traced(self.state_attributes(self.state_now(), self.pending))

    def succeeded(
        self,
        started: float,
        traced: Traced | None,
        key: object,
        owner: OwnerRef | None,
        parent: Any,
    ) -> None:
        """The caller got a connection.

        ``key`` identifies the connection until it comes back; ``owner`` weakly references what
        the caller holds (dead once it is garbage-collected); ``parent`` is the current span, if
        there is one.
        """
        now = self.clock()
        waited = now - started
        self._waiting.pop()
        self._waits.append(waited)
        loans = self._out
        if key not in loans:
            tick = self._tick
            self._tick = tick + 1
            if not tick & _SITE_MASK or self._capture_all or len(loans) >= self._busy_at:
                site = self._upkeep_and_site(tick)
            else:
                site = ()
            # who borrows it, from where: the LoanEntry tuple, built inline (a call is a tenth
            # of what the checkout costs poolwatch)
            loans[key] = (
                now,
                owner,
                site,
                _current_thread(),
                _current_task() if _running_loop() is not None else None,
                parent,
            )
        if self._standard is not None:
            self._standard.wait.record(waited, self._sdk_attributes)
        if traced is not None:
            self._exemplar(
                waited, self.signals.checkout_span(traced.started_ns, traced.state, waited, None)
            )

    def _upkeep_and_site(self, tick: int) -> _sites.Site:
        """What a checkout that records its site also does, then that site. Never raises: the
        loan is recorded whatever fails here (without a site if the stack cannot be read)."""
        try:
            if not tick and self._first_checkout is not None:
                # this process's first checkout (a forked child starts at 0)
                self._first_checkout()
            if self._busy_at < 0:
                self._busy_at = self._busy_threshold()
            # the buffers are bounded here, at most once every SITE_EVERY checkouts: every
            # value buffered comes from a checkout or the checkin of one
            if len(self._waits) > _FOLD_AT:
                self.fold()
            return self._sites.capture(4)
        except Exception as exc:  # noqa: BLE001 - the loan matters more than its site
            _guard.internal_error("recorder.checkout", exc)
            return ()

    def failed(
        self,
        started: float,
        traced: Traced | None,
        exc: BaseException,
        timed_out: bool,
        timeout: float | None = None,
    ) -> None:
        """The caller got an exception instead of a connection (a pool timeout, or any other);
        ``timeout`` is the pool's configured checkout timeout, when the adapter knows it."""
        waited = self.clock() - started
        state = None
        # the caller stops waiting whatever fails below; counts come before anything reported
        try:
            if timed_out:
                with self._lock:
                    self.timeouts += 1
            with self._lock:
                self.wait.observe(waited)
            if timed_out:
                state = (
                    traced.state
                    if traced is not None
                    else self.state_attributes(self.state_now(), self.pending)
                )
        finally:
            self._waiting.pop()
        if self._standard is not None:
            self._standard.wait.record(waited, self._sdk_attributes)
        if traced is not None:
            self._exemplar(
                waited, self.signals.checkout_span(traced.started_ns, traced.state, waited, exc)
            )
        if state is not None:
            state[catalog.POOL_HOLDERS] = self.loans.holders() + self.filling.listing(
                self._task_label
            )
            state.update(self.filling.explain(started, timeout))
            self.signals.timed_out(self.name, state, waited, exc)

    def _exemplar(self, waited: float, context: Any) -> None:
        """Keep ``waited`` as its bucket's exemplar if it is the slowest there (or the slot is old).

        Only traced checkouts get here; a race between two of them loses one exemplar, never a count.
        """
        if context is None:
            return
        index = self.wait.index(waited)
        now = time.time_ns()
        kept = self.exemplars.get(index)
        if kept is None or waited >= kept.value or now - kept.time_ns > EXEMPLAR_TTL_NS:
            self.exemplars[index] = Exemplar(waited, now, context)

    # --- connections coming back, being made ------------------------------------------------

    def checked_in(self, key: object) -> None:
        """A connection came back to the pool."""
        entry = self._out.pop(key, None)
        if entry is None:
            return
        held = self.clock() - entry[0]
        self._uses.append(held)
        owner = entry[1]
        # one test on the common path: nothing sampled or leaked, and the owner still alive
        if self._sampled or self._leaked or (owner is not None and owner() is None):
            sampled, leaked = self.loans.ended(key)  # the books first: reporting may fail
            collected = owner is not None and owner() is None
            if collected:
                with self._lock:
                    self.never_returned += 1
            if leaked or collected:
                self._came_back(Loan(entry, leaked, sampled, self._sites), held)
        if self._standard is not None:
            self._standard.use.record(held, self._sdk_attributes)

    def forget(self, key: object) -> None:
        """A connection left the pool's books without coming back (detached from the pool)."""
        entry = self._out.pop(key, None)
        sampled, leaked = self.loans.ended(key)  # the books first: reporting below may fail
        if entry is not None and entry[1] is not None and entry[1]() is None:
            with self._lock:
                self.never_returned += 1
            self._came_back(Loan(entry, leaked, sampled, self._sites), self.clock() - entry[0])

    def _came_back(self, loan: Loan, held: float) -> None:
        """Report a loan that ended after a leak report, or with its handle collected (counted
        already: this only reports)."""
        if loan.collected():
            self.signals.never_returned(self, loan, held)
        elif loan.leaked:
            self.signals.returned(self, loan, held)

    def connection_created(self, seconds: float) -> None:
        """The pool opened a new database connection, taking ``seconds``."""
        with self._lock:
            self.create.observe(seconds)
        if self._standard is not None:
            self._standard.create.record(seconds, self._sdk_attributes)

    def connection_failed(self, error: BaseException) -> None:
        """Opening a new database connection failed with ``error`` (the app may never see it:
        a pool's background opener retries). The first failure of a burst is reported."""
        key = (_errors.error_type(error), _errors.status_code(error))
        now = self.clock()
        with self._lock:
            self.create_errors[key] = self.create_errors.get(key, 0) + 1
            starts = now - self._failed_open_at >= catalog.CREATE_BURST_GAP
            self._failed_open_at = now
        if starts:
            state = self.state_attributes(self.state_now(), self.pending)
            self.signals.connection_failed(self.name, state, error, key[1])

    def fold(self) -> None:
        """Move buffered waits and hold times into their buckets (collection calls this)."""
        self.drain()
        self._busy_at = self._busy_threshold()

    def drain(self) -> None:
        """Move buffered waits and hold times into their buckets, reading nothing of the pool."""
        with self._lock:
            _drain(self._waits, self.wait)
            _drain(self._uses, self.use)

    def _busy_threshold(self) -> int:
        state = self.read_state()
        limit = state.max if state is not None else None
        return max(1, int(limit * BUSY_SHARE)) if limit else sys.maxsize

    # --- leaks ----------------------------------------------------------------------------

    def leaked_now(self) -> int:
        """Connections held past the threshold right now."""
        return self.loans.leaked_now()

    def _task_label(self, task: Any) -> str | None:
        return _sites.task_label(self._sites, task)

    # --- reading -----------------------------------------------------------------------------

    def state_now(self) -> PoolState:
        """The pool's state, for spans and events."""
        state = self.read_state()
        return state if state is not None else PoolState(used=len(self._out), idle=0)

    def state_attributes(self, state: PoolState, pending: int) -> dict[str, Any]:
        """Span/event attributes describing ``state`` (and ``pending`` callers) for this pool."""
        attributes: dict[str, Any] = {
            **self.attributes,
            catalog.POOL_USED: state.used,
            catalog.POOL_IDLE: state.idle,
            catalog.POOL_PENDING: pending,
        }
        if state.max is not None:
            attributes[catalog.POOL_MAX] = state.max
        return attributes


def _histogram(bounds: tuple[float, ...], exponential: bool) -> Histogram:
    if exponential:
        return ExponentialBuckets(catalog.EXPONENTIAL_SCALE)
    return Buckets(bounds)


def _drain(values: deque[float], buckets: Histogram) -> None:
    """Observe the values in ``values`` now (others may append meanwhile; only one drains)."""
    take = values.popleft
    buckets.observe_many([take() for _ in range(len(values))])
