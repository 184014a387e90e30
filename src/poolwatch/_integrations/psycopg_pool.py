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
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from opentelemetry.trace import Span

from poolwatch import _guard, _state
from poolwatch._context import SPAN_KEY, current_context
from poolwatch._filling import OPENING, Filling, Work
from poolwatch._instrumentation import Instrumentation
from poolwatch._integrations._compat import Hook, Table
from poolwatch._integrations._extras import requires
from poolwatch._integrations._pool_adapter import Binding, PoolAdapter, wants_span
from poolwatch._naming import APPLICATION_NAME, Target, application_name, dsn_target
from poolwatch._recorder import PoolRecorder, PoolState, Traced

with requires("psycopg_pool", "psycopg", "psycopg", "psycopg_pool"):
    from psycopg.conninfo import conninfo_to_dict, make_conninfo
    from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolTimeout

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


@dataclass
class _Naming:
    """How poolwatch names one pool's connections (``application_name``), undone on detach."""

    #: The pool's ``kwargs`` before and after poolwatch added ``application_name``.
    kwargs_swap: tuple[Any, dict[str, Any]] | None = None
    #: The ``application_name`` template, while poolwatch names the pool's connections.
    template: str | None = None


_Binding = Binding[_Naming]


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
    binding.details.kwargs_swap = (before, after)
    binding.details.template = template


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


class PsycopgPoolAdapter(PoolAdapter[_Naming]):
    """Installs the class-level replacements once and attaches recorders to pools."""

    library = _LIBRARY
    compatibility = COMPATIBILITY

    def instrument_pool(
        self,
        pool: Any,
        telemetry: Instrumentation,
        pool_name: str | None = None,
        application_name: str | None = APPLICATION_NAME,
    ) -> PoolRecorder:
        """Record one pool (sync or async); a second call returns the first recorder."""
        return self._instrument(pool, None, telemetry, pool_name, application_name)

    def uninstrument_pool(self, pool: Any) -> None:
        """Stop recording one pool."""
        with self._lock:
            self._uninstrument(self.binding_of(pool))

    # --- what the base asks of an adapter -----------------------------------------------------

    def binding_of(self, pool: Any) -> _Binding | None:
        binding: _Binding | None = vars(pool).get(_ATTR)
        return binding

    def read_state(self, binding: _Binding, pool: Any) -> PoolState | None:
        if pool.closed and getattr(pool, "_opened", True):
            return None  # closed for good (a psycopg pool cannot be reopened)
        return pool_state(pool)

    def _identify(self, pool: Any, owner: Any) -> tuple[str | None, Target]:
        return chosen_name(pool), pool_target(pool)

    def _details(self) -> _Naming:
        return _Naming()

    def _bind(self, binding: _Binding, pool: Any, app_name: str | None) -> None:
        name_connections(binding, pool, app_name, binding.recorder.name)
        setattr(pool, _ATTR, binding)

    def _unbind(self, binding: _Binding) -> None:
        pool = binding.pool_ref()
        if pool is not None and vars(pool).get(_ATTR) is binding:
            delattr(pool, _ATTR)
        swap = binding.details.kwargs_swap
        if pool is not None and swap is not None:
            before, after = swap
            if pool.kwargs is after:
                pool.kwargs = before

    def _renamed(self, binding: _Binding, name: str) -> None:
        """Name new connections under ``name``, if poolwatch names them."""
        pool = binding.pool_ref()
        naming = binding.details
        if pool is not None and naming.kwargs_swap is not None and naming.template is not None:
            before, after = naming.kwargs_swap
            if pool.kwargs is after:
                renamed = {**after, "application_name": application_name(naming.template, name)}
                pool.kwargs = renamed
                naming.kwargs_swap = (before, renamed)

    def _hook(self) -> None:
        for cls in _CLASSES:
            asynchronous = cls is AsyncConnectionPool
            for method in _METHODS:
                # a psycopg_pool without this method: that fact goes unrecorded
                self._replaced.replace(cls, method, _REPLACEMENTS[asynchronous, method])


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
        parent = current_context().get(SPAN_KEY)
        started = recorder.begin()
    except Exception as error:  # noqa: BLE001 - the hook boundary
        _guard.internal_error("psycopg_pool.checkout", error)
        return None
    traced = (
        _guard.guarded("psycopg_pool.checkout", recorder.trace)
        if (parent is not None or recorder.root_spans) and wants_span(recorder, parent)
        else None
    )
    return binding, started, parent, traced


def _succeeded(begun: _Begun, connection: Any) -> None:
    binding, started, parent, traced = begun
    try:
        key = binding.key(connection)
    except Exception as error:  # noqa: BLE001 - the hook boundary (a foreign object, say)
        _guard.internal_error("psycopg_pool.checkout", error)
        _guard.guarded("psycopg_pool.checkout", binding.recorder.abandoned)
        return
    try:
        binding.recorder.succeeded(started, traced, key, key, parent)
    except Exception as error:  # noqa: BLE001 - the hook boundary
        _guard.internal_error("psycopg_pool.checkout", error)


def _failed(begun: _Begun, failure: BaseException, timeout: float | None = None) -> None:
    binding, started, _parent, traced = begun
    try:
        timed_out = isinstance(failure, PoolTimeout)
        if timeout is None:
            pool = binding.pool_ref()
            timeout = getattr(pool, "timeout", None) if pool is not None else None
        binding.recorder.failed(started, traced, failure, timed_out, timeout)
    except Exception as error:  # noqa: BLE001 - the hook boundary
        _guard.internal_error("psycopg_pool.checkout", error)


def _returned(pool: Any, connection: Any) -> None:
    binding: _Binding | None = pool.__dict__.get(_ATTR)
    if binding is None:
        return
    try:
        if binding.collected:
            binding.reap()
        binding.recorder.checked_in(_weakref(connection))
    except Exception as error:  # noqa: BLE001 - the hook boundary (a foreign object, say)
        _guard.internal_error("psycopg_pool.checkin", error)


def _on_open(pool: Any, report: Callable[[PoolRecorder], None]) -> None:
    """Hand an opened (or failed) connection of ``pool`` to its recorder, if it has one."""
    binding: _Binding | None = pool.__dict__.get(_ATTR)
    if binding is None:
        return
    try:
        report(binding.recorder)
    except Exception as error:  # noqa: BLE001 - the hook boundary
        _guard.internal_error("psycopg_pool.connect", error)


def _created(pool: Any, started: float) -> None:
    _on_open(pool, lambda recorder: recorder.connection_created(recorder.clock() - started))


def _open_failed(pool: Any, failure: Exception) -> None:
    _on_open(pool, lambda recorder: recorder.connection_failed(failure))


def _sync_getconn(original: Callable[..., Any]) -> Any:
    def getconn(self: Any, timeout: float | None = None) -> Any:
        # _begin and _succeeded inlined: two calls and a tuple are a tenth of the overhead
        binding: _Binding | None = self.__dict__.get(_ATTR)
        if binding is None:
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
            if (parent is not None or recorder.root_spans) and wants_span(recorder, parent)
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
    if binding is None:
        return None
    try:
        filling = binding.recorder.filling
        return filling, filling.begin(OPENING)
    except Exception as error:  # noqa: BLE001 - the hook boundary
        _guard.internal_error("psycopg_pool.connect", error)
        return None


def _clock_of(pool: Any) -> Callable[[], float]:
    """The clock ``pool``'s durations are measured with (its recorder's)."""
    binding: _Binding | None = pool.__dict__.get(_ATTR)
    return binding.recorder.clock if binding is not None else _perf


def _opened(work: tuple[Filling, Work] | None) -> None:
    if work is not None:
        work[0].end(work[1])


@contextmanager
def _connecting(pool: Any) -> Iterator[None]:
    """A connection being opened by ``pool``: listed as opening, its failure or its create time
    recorded (the same for the sync and the async pool)."""
    started = _clock_of(pool)()
    work = _opening(pool)
    try:
        yield
    except Exception as failure:
        _open_failed(pool, failure)
        raise
    finally:
        _opened(work)
    _created(pool, started)


def _sync_connect(original: Callable[..., Any]) -> Any:
    def _connect(pool: Any, *args: Any, **kwargs: Any) -> Any:
        with _connecting(pool):
            return original(pool, *args, **kwargs)

    return _connect


def _async_connect(original: Callable[..., Any]) -> Any:
    async def _connect(pool: Any, *args: Any, **kwargs: Any) -> Any:
        with _connecting(pool):
            return await original(pool, *args, **kwargs)

    return _connect


_REPLACEMENTS: dict[tuple[bool, str], Callable[[Any], Any]] = {
    (False, "getconn"): _sync_getconn,
    (True, "getconn"): _async_getconn,
    (False, "putconn"): _sync_putconn,
    (True, "putconn"): _async_putconn,
    (False, "_connect"): _sync_connect,
    (True, "_connect"): _async_connect,
}
