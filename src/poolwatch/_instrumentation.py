"""One instrumentation: its settings, its pools, where their signals go, and its leak check.

Adapters hold an :class:`Instrumentation` and know nothing else of poolwatch's insides: they
ask it for a :class:`~poolwatch._recorder.PoolRecorder` per pool, hand it the conflicts and
orphans they see, and drop pools that are gone. Its :attr:`~Instrumentation.signals` (the
telemetry, made by the facade) is the one way out; this module never imports telemetry.

The leak watchdog (:mod:`poolwatch._leaks`) watches instrumentations, and
:meth:`Instrumentation.check_leaks` runs the leak policy on their pools now (what a test with an
injected clock calls instead of waiting for the thread).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from poolwatch import _leaks, _process, _sites, _state
from poolwatch._leaks import Loan
from poolwatch._recorder import PoolRecorder, Settings, Signals, StateReader
from poolwatch.config import Config

#: Reads one collection-time metric: (value, attributes) pairs.
Reading = Callable[[], Iterable[tuple[float, Mapping[str, Any]]]]


class Outlet(Signals, Protocol):
    """Everything an instrumentation sends out (implemented by telemetry)."""

    def conflict(self, kind: str, attributes: dict[str, Any], message: str | None) -> None:
        """A session conflict of ``kind``; ``message`` is the library's error text, if any."""

    def orphaned(self, attributes: dict[str, Any], site: _sites.Site) -> None:
        """A Django connection was found orphaned (``attributes`` say which and why; ``site``
        is where it was opened)."""

    def observe(self, metric: Any, read: Reading) -> None:
        """Read ``metric`` (a :class:`poolwatch.catalog.Metric`) with ``read`` at collection."""

    def after_fork(self) -> None: ...

    def shutdown(self) -> None: ...


class Instrumentation:
    """The pools of one set of settings and providers, shared by every adapter using them."""

    def __init__(self, config: Config, outlet: Outlet, settings: Settings) -> None:
        self.config = config
        self.signals = outlet
        self.settings = settings
        self.active = True
        self.sites = _sites.SiteCapture(
            limit=64 if config.capture_stacks else 3,
            library_packages=config.library_packages,
            app_packages=config.app_packages,
        )
        self._pools: list[PoolRecorder] = []
        self._lock = threading.Lock()
        _state.instrumentations.add(self)

    @property
    def leak_threshold(self) -> float:
        """Seconds a connection may be held before it is reported as leaked (0: never)."""
        return self.config.leak_threshold

    # --- pools ----------------------------------------------------------------------------

    def pool(
        self,
        name: str,
        read_state: StateReader,
        identity: Mapping[str, str | int] | None = None,
    ) -> PoolRecorder:
        """A recorder for a newly seen pool (starts the leak watchdog with the first one);
        ``identity`` (:meth:`poolwatch._naming.Target.attributes`) goes on all its points."""
        recorder = PoolRecorder(
            name,
            read_state,
            settings=self.settings,
            signals=self.signals,
            sites=self.sites,
            identity=identity,
            first_checkout=self.first_checkout,
            owner=self,
        )
        with self._lock:
            self._pools.append(recorder)
        if self.config.leak_threshold > 0:
            _leaks.watchdog().watch(self)
        return recorder

    def first_checkout(self) -> None:
        """A pool's first checkout in this process: the watchdog runs here too (a forked child
        starts one now, not at the fork)."""
        if self.active and self.config.leak_threshold > 0:
            _leaks.watchdog().watch(self)

    def drop(self, recorder: PoolRecorder) -> None:
        """Stop reporting a pool."""
        with self._lock:
            if recorder in self._pools:
                self._pools.remove(recorder)

    def pools(self) -> list[PoolRecorder]:
        """The pools reported right now (empty once this instrumentation is shut down)."""
        if not self.active:
            return []
        with self._lock:
            return list(self._pools)

    def shutdown(self) -> None:
        """Stop reporting; instruments stay registered (the API cannot remove them) but go quiet."""
        self.active = False
        with self._lock:
            self._pools.clear()
        self.signals.shutdown()

    def after_fork(self) -> None:
        """In a forked child: fresh locks, and books of the child's own."""
        self._lock = threading.Lock()
        for recorder in self._pools:
            recorder.after_fork()
        self.signals.after_fork()

    # --- what adapters report besides pool facts -------------------------------------------

    def check_leaks(self) -> None:
        """Report every connection that has just crossed the leak threshold, now."""
        threshold = self.config.leak_threshold
        if threshold <= 0:
            return
        report = self.signals.leaked

        def leaked(pool: Any, loan: Loan) -> None:
            report(pool, loan, threshold)

        _leaks.check(self.pools(), threshold, self.config.capture_stacks, leaked)

    def conflict(self, kind: str, attributes: dict[str, Any], message: str | None = None) -> None:
        """A session conflict seen by an adapter."""
        self.signals.conflict(kind, attributes, message)

    def orphaned(self, attributes: dict[str, Any], site: _sites.Site) -> None:
        """An orphaned connection found by an adapter, opened at ``site``."""
        self.signals.orphaned(attributes, site)

    def observe(self, metric: Any, read: Reading) -> None:
        """A collection-time metric of an adapter's own (read only while this one is active)."""

        def guarded() -> Iterable[tuple[float, Mapping[str, Any]]]:
            return read() if self.active else ()

        self.signals.observe(metric, guarded)


def _after_fork() -> None:
    for instrumentation in list(_state.instrumentations):
        instrumentation.after_fork()


_process.on_fork("instrumentations", _after_fork)
