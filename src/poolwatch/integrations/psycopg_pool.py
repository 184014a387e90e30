"""psycopg_pool adapter: ``ConnectionPool`` and ``AsyncConnectionPool`` checkouts as recorder facts.

psycopg_pool has no hooks, so ``getconn``, ``putconn`` and ``_connect`` are replaced at class level
by plain functions (sync and async); counts are read from the pool's ``get_stats()`` at collection
time. A loan is keyed by a weak reference to the connection, so a connection the application
drops without ``putconn`` is reported as never returned. Connections opened after attaching get an
``application_name`` (the pool's name by default) unless the user set one. Every attempt to
open a connection goes through ``_connect`` (private: see :data:`COMPATIBILITY`), timed there,
its failures counted.
"""

from __future__ import annotations

import os
import re
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

from opentelemetry.trace import Span
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolTimeout

from poolwatch import _guard, _process, _state
from poolwatch._context import SPAN_KEY, current_context
from poolwatch._filling import OPENING, Filling, Work
from poolwatch._instrumentation import Instrumentation
from poolwatch.integrations._compat import Hook, Table
from poolwatch.integrations._graveyard import Graveyard
from poolwatch.integrations._replacing import Replacements
from poolwatch.naming import (
    APPLICATION_NAME,
    REGISTRY,
    Target,
    application_name,
    dsn_target,
)
from poolwatch.recorder import PoolRecorder, PoolState, Traced

_ATTR = "_poolwatch_binding"
_LIBRARY = "psycopg_pool"
_perf = time.perf_counter
_weakref = weakref.ref

#: Names psycopg_pool makes up for pools created without one; poolwatch treats them as unset.
_AUTO_NAME = re.compile(r"pool-\d+\Z")
#: Connection parameters that may complete the pool's name when passed as ``kwargs``.
_NAME_PARAMETERS = ("user", "host", "port", "dbname")
#: The methods replaced on each class: checkout, checkin, and the opening of a connection.
_METHODS = ("getconn", "putconn", "_connect")
_CLASSES: tuple[type[Any], ...] = (ConnectionPool, AsyncConnectionPool)
_WITHOUT_CONNECT = "create time and failed connection opens are not recorded"
#: Every private attribute of psycopg_pool that poolwatch uses, checked when instrumenting.
COMPATIBILITY = Table(
    "psycopg_pool",
    "psycopg-pool",
    (
        Hook(
            "psycopg_pool.pool",
            "ConnectionPool",
            "_connect",
            "connection opening",
            _WITHOUT_CONNECT,
        ),
        Hook(
            "psycopg_pool.pool_async",
            "AsyncConnectionPool",
            "_connect",
            "connection opening",
            _WITHOUT_CONNECT,
        ),
    ),
)


class _Binding:
    """Ties one recorder to the pool it watches, and collects loans whose connection died."""

    def __init__(self, pool: Any) -> None:
        self.pool_ref = weakref.ref(pool)
        self.recorder: PoolRecorder | None = None
        #: Loan keys (weak references) whose connection was garbage-collected while out.
        #: Filled from inside the garbage collector, so only appended to, never locked.
        self.collected: deque[weakref.ref[Any]] = deque()
        #: The pool's ``kwargs`` before and after poolwatch added ``application_name``.
        self.kwargs_swap: tuple[Any, dict[str, Any]] | None = None
        #: The ``application_name`` template, while poolwatch names the pool's connections.
        self.template: str | None = None

    def drained(self) -> bool:
        """Whether the pool opened connections and has none open now (its name may move)."""
        return self.recorder is not None and self.recorder.drained()

    def rename(self, name: str) -> None:
        """Report, and name new connections, under ``name`` from now on."""
        if self.recorder is not None:
            self.recorder.rename(name)
        pool = self.pool_ref()
        if pool is not None and self.kwargs_swap is not None and self.template is not None:
            before, after = self.kwargs_swap
            if pool.kwargs is after:
                renamed = {**after, "application_name": application_name(self.template, name)}
                pool.kwargs = renamed
                self.kwargs_swap = (before, renamed)

    def read_state(self) -> PoolState | None:
        self.reap()
        pool = self.pool_ref()
        if pool is None or (pool.closed and getattr(pool, "_opened", True)):
            return None  # gone, or closed for good (a psycopg pool cannot be reopened)
        return pool_state(pool)

    def key(self, connection: Any) -> weakref.ref[Any]:
        """The loan key: equal to ``weakref.ref(connection)`` while the connection lives."""
        return _weakref(connection, self.collected.append)

    def reap(self) -> None:
        """Report loans whose connection was garbage-collected without ``putconn``."""
        while self.collected and self.recorder is not None:
            try:
                key = self.collected.popleft()
            except IndexError:  # another thread took the last one
                return
            self.recorder.forget(key)


def pool_state(pool: Any) -> PoolState:
    """What psycopg_pool reports: connections open or opening, and those waiting in the pool.

    A connection being opened or reset by a pool worker counts as used.
    """
    stats = pool.get_stats()
    idle = stats.get("pool_available", 0)
    return PoolState(
        used=max(stats.get("pool_size", 0) - idle, 0),
        idle=idle,
        max=pool.max_size,
        idle_max=pool.max_size,
        idle_min=pool.min_size,
    )


def user_set_application_name(pool: Any) -> bool:
    """Whether the pool's connections already get an ``application_name`` (or we cannot tell)."""
    conninfo, kwargs = getattr(pool, "conninfo", None), getattr(pool, "kwargs", None)
    if not isinstance(conninfo, str) or not (kwargs is None or isinstance(kwargs, dict)):
        return True  # resolved by a callable per connection: leave it alone
    if "PGAPPNAME" in os.environ or (kwargs and "application_name" in kwargs):
        return True
    return "application_name" in conninfo_to_dict(conninfo)


def name_connections(binding: _Binding, pool: Any, template: str | None, name: str) -> None:
    """Give connections the pool opens from now on an ``application_name``, unless set."""
    if template is None or user_set_application_name(pool):
        return
    before = pool.kwargs
    after = {**(before or {}), "application_name": application_name(template, name)}
    pool.kwargs = after
    binding.kwargs_swap = (before, after)
    binding.template = template


def chosen_name(pool: Any) -> str | None:
    """The pool's own ``name`` if the user chose one (not one psycopg_pool made up)."""
    chosen = getattr(pool, "name", None)
    return str(chosen) if chosen and not _AUTO_NAME.match(str(chosen)) else None


def pool_target(pool: Any) -> Target:
    """What the pool connects to, from its conninfo and connection ``kwargs``."""
    conninfo = getattr(pool, "conninfo", "")
    if not isinstance(conninfo, str):
        # a callable resolved per connection: no stable server, but still PostgreSQL
        return Target("postgresql")
    kwargs = pool.kwargs if isinstance(getattr(pool, "kwargs", None), dict) else {}
    extra = {key: kwargs[key] for key in _NAME_PARAMETERS if kwargs.get(key)}
    return dsn_target(make_conninfo(conninfo, **extra) if extra else conninfo)


class PsycopgPoolAdapter:
    """Installs the class-level replacements once and attaches recorders to pools."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._installed = False
        self._auto: Instrumentation | None = None
        self._application_name: str | None = APPLICATION_NAME
        self._bindings: dict[int, _Binding] = {}
        self._replaced = Replacements()
        self._graveyard = Graveyard()
        _process.on_fork("psycopg_pool", self._after_fork)

    def _after_fork(self) -> None:
        self._lock = threading.RLock()
        for binding in self._bindings.values():
            binding.collected.clear()  # the parent's loans: the recorder forgot them

    @property
    def installed(self) -> bool:
        """Whether psycopg_pool's classes are patched right now."""
        return self._installed

    def instrument_all(
        self, telemetry: Instrumentation, application_name: str | None = APPLICATION_NAME
    ) -> None:
        """Record every pool from its first checkout on."""
        with self._lock:
            self._install()
            self._auto = telemetry
            self._application_name = application_name

    def instrument_pool(
        self,
        pool: Any,
        telemetry: Instrumentation,
        pool_name: str | None = None,
        application_name: str | None = APPLICATION_NAME,
    ) -> PoolRecorder:
        """Record one pool (sync or async); a second call returns the first recorder."""
        with self._lock:
            self._install()
            existing: _Binding | None = vars(pool).get(_ATTR)
            if existing is not None and existing.recorder is not None:
                return existing.recorder
            return self._attach(pool, telemetry, pool_name, application_name)

    def uninstrument_pool(self, pool: Any) -> None:
        """Stop recording one pool."""
        with self._lock:
            binding = vars(pool).get(_ATTR)
            if binding is not None and id(binding) in self._bindings:
                self._detach(id(binding), binding)
            self._maybe_uninstall()

    def uninstrument_all(self) -> None:
        """Stop recording every pool and restore psycopg_pool exactly as it was."""
        with self._lock:
            self._auto = None
            self._graveyard.clear()
            for key, binding in list(self._bindings.items()):
                self._detach(key, binding)
            self._maybe_uninstall()

    def auto_attach(self, pool: Any) -> _Binding | None:
        """Attach a pool first seen after :meth:`instrument_all`, else None."""
        if self._auto is None:
            return None
        with self._lock:
            existing: _Binding | None = vars(pool).get(_ATTR)
            if existing is not None or self._auto is None:
                return existing
            self._attach(pool, self._auto, None, self._application_name)
            return vars(pool)[_ATTR]  # type: ignore[no-any-return]

    # --- attaching ----------------------------------------------------------------------------

    def _attach(
        self, pool: Any, telemetry: Instrumentation, pool_name: str | None, app_name: str | None
    ) -> PoolRecorder:
        self._reap()
        binding = _Binding(pool)
        chosen = pool_name or chosen_name(pool)
        target = pool_target(pool)
        name = REGISTRY.claim(
            chosen or target.derived_name(_LIBRARY),
            owner=binding,
            library=_LIBRARY,
            explicit=bool(chosen),
        )
        binding.recorder = recorder = telemetry.pool(name, binding.read_state, target.attributes())
        name_connections(binding, pool, app_name, name)
        setattr(pool, _ATTR, binding)
        self._bindings[id(binding)] = binding
        self._graveyard.watch(pool, id(binding))
        return recorder

    def _reap(self) -> None:
        self._graveyard.reap(self._bindings, self._detach)

    def _detach(self, key: int, binding: _Binding) -> None:
        del self._bindings[key]
        pool = binding.pool_ref()
        if pool is not None and vars(pool).get(_ATTR) is binding:
            delattr(pool, _ATTR)
        if pool is not None and binding.kwargs_swap is not None:
            before, after = binding.kwargs_swap
            if pool.kwargs is after:
                pool.kwargs = before
        if binding.recorder is not None:
            binding.recorder.owner.drop(binding.recorder)
        REGISTRY.release(binding)

    def _install(self) -> None:
        if self._installed:
            return
        COMPATIBILITY.check()
        for cls in _CLASSES:
            asynchronous = cls is AsyncConnectionPool
            for method in _METHODS:
                # a psycopg_pool without this method: that fact goes unrecorded
                self._replaced.replace(cls, method, _REPLACEMENTS[asynchronous, method])
        self._installed = True

    def _maybe_uninstall(self) -> None:
        if not self._installed or self._auto is not None or self._bindings:
            return
        self._replaced.restore()
        self._installed = False


ADAPTER = PsycopgPoolAdapter()
_state.adapters["psycopg_pool"] = ADAPTER


# --- the hot path ------------------------------------------------------------------------------
# Plain functions rather than wrapt proxies: they run on every checkout and checkin.

_Begun = tuple[_Binding, float, "Span | None", "Traced | None"]


def _begin(pool: Any) -> _Begun | None:
    """Start recording a checkout of ``pool``; None if the pool is not recorded."""
    binding: _Binding | None = pool.__dict__.get(_ATTR)
    if binding is None:
        binding = _guard.guarded("psycopg_pool.attach", ADAPTER.auto_attach, pool)
        if binding is None:
            return None
    recorder = binding.recorder
    try:
        assert recorder is not None
        parent = current_context().get(SPAN_KEY)
        started = recorder.begin()
    except Exception as error:  # noqa: BLE001 - the hook boundary
        _guard.internal_error("psycopg_pool.checkout", error)
        return None
    traced = (
        _guard.guarded("psycopg_pool.checkout", recorder.trace)
        if recorder.spans
        and (recorder.root_spans or (parent is not None and parent.is_recording()))
        else None
    )
    return binding, started, parent, traced


def _succeeded(begun: _Begun, connection: Any) -> None:
    binding, started, parent, traced = begun
    try:
        key = binding.key(connection)
    except Exception as error:  # noqa: BLE001 - the hook boundary (a foreign object, say)
        _guard.internal_error("psycopg_pool.checkout", error)
        _guard.guarded("psycopg_pool.checkout", binding.recorder.abandoned)  # type: ignore[union-attr]
        return
    try:
        binding.recorder.succeeded(started, traced, key, key, parent)  # type: ignore[union-attr]
    except Exception as error:  # noqa: BLE001 - the hook boundary
        _guard.internal_error("psycopg_pool.checkout", error)


def _failed(begun: _Begun, failure: BaseException, timeout: float | None = None) -> None:
    binding, started, _parent, traced = begun
    try:
        timed_out = isinstance(failure, PoolTimeout)
        if timeout is None:
            pool = binding.pool_ref()
            timeout = getattr(pool, "timeout", None) if pool is not None else None
        binding.recorder.failed(  # type: ignore[union-attr]
            started, traced, failure, timed_out, timeout
        )
    except Exception as error:  # noqa: BLE001 - the hook boundary
        _guard.internal_error("psycopg_pool.checkout", error)


def _returned(pool: Any, connection: Any) -> None:
    binding: _Binding | None = pool.__dict__.get(_ATTR)
    if binding is None:
        return
    try:
        if binding.collected:
            binding.reap()
        binding.recorder.checked_in(_weakref(connection))  # type: ignore[union-attr]
    except Exception as error:  # noqa: BLE001 - the hook boundary (a foreign object, say)
        _guard.internal_error("psycopg_pool.checkin", error)


def _created(pool: Any, started: float) -> None:
    binding: _Binding | None = pool.__dict__.get(_ATTR)
    if binding is None:
        return
    try:
        binding.recorder.connection_created(_perf() - started)  # type: ignore[union-attr]
    except Exception as error:  # noqa: BLE001 - the hook boundary
        _guard.internal_error("psycopg_pool.connect", error)


def _open_failed(pool: Any, failure: Exception) -> None:
    binding: _Binding | None = pool.__dict__.get(_ATTR)
    if binding is None:
        return
    try:
        binding.recorder.connection_failed(failure)  # type: ignore[union-attr]
    except Exception as error:  # noqa: BLE001 - the hook boundary
        _guard.internal_error("psycopg_pool.connect", error)


def _sync_getconn(original: Callable[..., Any]) -> Any:
    def getconn(self: Any, timeout: float | None = None) -> Any:
        # _begin and _succeeded inlined: two calls and a tuple are a tenth of the overhead
        binding: _Binding | None = self.__dict__.get(_ATTR)
        if binding is None or binding.recorder is None:
            return _getconn_first_sight(original, self, timeout)
        recorder = binding.recorder
        try:
            parent = current_context().get(SPAN_KEY)
            started = recorder.begin()
        except Exception as error:  # noqa: BLE001 - the hook boundary
            _guard.internal_error("psycopg_pool.checkout", error)
            return original(self, timeout)
        traced = (
            _guard.guarded("psycopg_pool.checkout", recorder.trace)
            if recorder.spans
            and (recorder.root_spans or (parent is not None and parent.is_recording()))
            else None
        )
        try:
            connection = original(self, timeout)
        except BaseException as failure:
            _failed((binding, started, parent, traced), failure, timeout)
            raise
        try:
            key = _weakref(connection, binding.collected.append)
        except Exception as error:  # noqa: BLE001 - the hook boundary (a foreign object, say)
            _guard.internal_error("psycopg_pool.checkout", error)
            _guard.guarded("psycopg_pool.checkout", recorder.abandoned)
            return connection
        try:
            recorder.succeeded(started, traced, key, key, parent)
        except Exception as error:  # noqa: BLE001 - the hook boundary
            _guard.internal_error("psycopg_pool.checkout", error)
        return connection

    return getconn


def _getconn_first_sight(original: Callable[..., Any], pool: Any, timeout: float | None) -> Any:
    """A checkout of a pool not attached yet: attached now in zero-code mode, else bare."""
    begun = _begin(pool)
    if begun is None:
        return original(pool, timeout)
    try:
        connection = original(pool, timeout)
    except BaseException as failure:
        _failed(begun, failure, timeout)
        raise
    _succeeded(begun, connection)
    return connection


def _async_getconn(original: Callable[..., Any]) -> Any:
    async def getconn(self: Any, timeout: float | None = None) -> Any:
        begun = _begin(self)
        if begun is None:
            return await original(self, timeout)
        try:
            connection = await original(self, timeout)
        except BaseException as failure:  # cancellation included: a failed wait, not a timeout
            _failed(begun, failure, timeout)
            raise
        _succeeded(begun, connection)
        return connection

    return getconn


def _sync_putconn(original: Callable[..., Any]) -> Any:
    def putconn(self: Any, conn: Any) -> None:
        _returned(self, conn)
        original(self, conn)

    return putconn


def _async_putconn(original: Callable[..., Any]) -> Any:
    async def putconn(self: Any, conn: Any) -> None:
        _returned(self, conn)
        await original(self, conn)

    return putconn


def _opening(pool: Any) -> tuple[Filling, Work] | None:
    """List a connection being opened by the pool (a worker, or the caller) as opening."""
    binding: _Binding | None = pool.__dict__.get(_ATTR)
    if binding is None or binding.recorder is None:
        return None
    try:
        filling = binding.recorder.filling
        return filling, filling.begin(OPENING)
    except Exception as error:  # noqa: BLE001 - the hook boundary
        _guard.internal_error("psycopg_pool.connect", error)
        return None


def _opened(work: tuple[Filling, Work] | None) -> None:
    if work is not None:
        work[0].end(work[1])


def _sync_connect(original: Callable[..., Any]) -> Any:
    def _connect(pool: Any, *args: Any, **kwargs: Any) -> Any:
        started = _perf()
        work = _opening(pool)
        try:
            connection = original(pool, *args, **kwargs)
        except Exception as failure:
            _open_failed(pool, failure)
            raise
        finally:
            _opened(work)
        _created(pool, started)
        return connection

    return _connect


def _async_connect(original: Callable[..., Any]) -> Any:
    async def _connect(pool: Any, *args: Any, **kwargs: Any) -> Any:
        started = _perf()
        work = _opening(pool)
        try:
            connection = await original(pool, *args, **kwargs)
        except Exception as failure:
            _open_failed(pool, failure)
            raise
        finally:
            _opened(work)
        _created(pool, started)
        return connection

    return _connect


_REPLACEMENTS: dict[tuple[bool, str], Callable[[Any], Any]] = {
    (False, "getconn"): _sync_getconn,
    (True, "getconn"): _async_getconn,
    (False, "putconn"): _sync_putconn,
    (True, "putconn"): _async_putconn,
    (False, "_connect"): _sync_connect,
    (True, "_connect"): _async_connect,
}
