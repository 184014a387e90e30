"""SQLAlchemy adapter: translates pool hooks (sync and async engines) into recorder facts.

SQLAlchemy fires no event before a checkout waits nor on a pool timeout, so ``Pool.connect`` is
replaced at class level. Checkins are seen by replacing ``_ConnectionRecord.checkin`` at class
level too: it is what fires the ``checkin`` pool event, unchanged from SQLAlchemy 2.0 to 2.1, and
a plain function there costs a third of an event listener on a path every checkout takes.
Opening a connection is timed, and its failures counted, around each pool's ``_invoke_creator``
(the driver's connect alone; a ``connect`` listener would also switch an asyncio pool's
first-connect lock to the asyncio one). Detaches come from a pool event. Counts are read from the
pool itself at collection time, so they cannot drift. :data:`COMPATIBILITY` lists every private
attribute used.
"""

from __future__ import annotations

import functools
import os
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import wrapt
from opentelemetry.instrumentation.utils import unwrap

from poolwatch import _guard, _state
from poolwatch._context import SPAN_KEY, current_context
from poolwatch._filling import OPENING, PINGING
from poolwatch._instrumentation import Instrumentation
from poolwatch._integrations._compat import Hook, Table
from poolwatch._integrations._extras import requires
from poolwatch._integrations._pool_adapter import Binding, PoolAdapter, wants_span
from poolwatch._integrations._replacing import is_replacement
from poolwatch._naming import APPLICATION_NAME, Target, application_name, url_target
from poolwatch._recorder import PoolRecorder, PoolState, Traced

with requires("sqlalchemy", "sqlalchemy", "sqlalchemy"):
    from sqlalchemy import event, exc
    from sqlalchemy.engine import Engine
    from sqlalchemy.pool import (
        AssertionPool,
        NullPool,
        Pool,
        QueuePool,
        SingletonThreadPool,
        StaticPool,
    )
    from sqlalchemy.pool.base import _ConnectionRecord

    from poolwatch._integrations.sqlalchemy_orm import (
        BEFORE_ATTACH,
        HANDLE_DBAPI_EXCEPTION,
        SessionConflicts,
    )

_ATTR = "_poolwatch_recorder"
_BASE = "sqlalchemy.pool.base"
_LOANS = "leak detection"
_WITHOUT_LOANS = "no loans are kept: leaks, never-returned connections and holders go unreported"

CHECKIN = Hook(
    _BASE,
    "_ConnectionRecord",
    "checkin",
    "fast checkins",
    "checkins are seen through the public `checkin` pool event instead (slower)",
)
RECORD_POOL = Hook(
    _BASE,
    "_ConnectionRecord",
    "_ConnectionRecord__pool",
    "fast checkins",
    "checkins are seen through the public `checkin` pool event instead (slower)",
    instance=True,
)
FAIRY_RECORD = Hook(
    _BASE, "_ConnectionFairy", "_connection_record", _LOANS, _WITHOUT_LOANS, instance=True
)
FAIRY_REF = Hook(_BASE, "_ConnectionRecord", "fairy_ref", _LOANS, _WITHOUT_LOANS, instance=True)
INVOKE_CREATOR = Hook(
    _BASE,
    "Pool",
    "_invoke_creator",
    "connection opening",
    "create time and failed connection opens are not recorded",
    instance=True,
)
#: Every private attribute of SQLAlchemy that poolwatch uses, checked when instrumenting.
COMPATIBILITY = Table(
    "SQLAlchemy",
    "sqlalchemy",
    (CHECKIN, RECORD_POOL, FAIRY_RECORD, FAIRY_REF, INVOKE_CREATOR, BEFORE_ATTACH,
     HANDLE_DBAPI_EXCEPTION),
)  # fmt: skip
_LIBRARY = "sqlalchemy"
#: Private names (SQLAlchemy 2.0 and 2.1): the record's connect and its pool, and the pre-ping.
_RECORD_CONNECT = "_ConnectionRecord__connect"
_RECORD_POOL = "_ConnectionRecord__pool"
_PING = "_do_ping_w_event"
#: PostgreSQL drivers that take ``application_name`` as a keyword argument of ``connect``.
_APPNAME_KEYWORD = frozenset({"psycopg", "psycopg2", "psycopg2cffi", "pg8000"})


@dataclass
class _Shadows:
    """What poolwatch changed on one engine's pool and dialect, undone when it is detached."""

    #: Pool event listeners, as ``(event name, listener)``.
    listeners: list[tuple[str, Callable[..., None]]] = field(default_factory=list)
    #: Pools whose ``_invoke_creator`` poolwatch wrapped (weakly).
    timed: list[weakref.ref[Pool]] = field(default_factory=list)
    #: The dialect whose ``connect`` poolwatch shadows to set ``application_name``.
    named_dialect: Any = None
    #: The dialect whose pre-ping poolwatch shadows to list pings in timeouts.
    pinged_dialect: Any = None


_Binding = Binding[_Shadows]


def pool_state(pool: Pool, loans: int) -> PoolState:
    """The state SQLAlchemy reports for ``pool``; ``loans`` is poolwatch's count of checkouts."""
    if isinstance(pool, QueuePool):  # AsyncAdaptedQueuePool too
        return _queue_pool_state(pool)
    if isinstance(pool, SingletonThreadPool):
        opened = len(pool._all_conns)
        return PoolState(loans, max(opened - loans, 0), pool.size, pool.size, 0)
    if isinstance(pool, (StaticPool, AssertionPool)):
        opened = 1 if ("connection" in vars(pool) or loans) else 0
        used = min(loans, 1)
        return PoolState(used, max(opened - used, 0), 1, 1, 0)
    if isinstance(pool, NullPool):
        return PoolState(used=loans, idle=0, max=None, idle_max=0, idle_min=0)
    return PoolState(used=loans, idle=0)


def _queue_pool_state(pool: QueuePool) -> PoolState:
    size = pool.size()
    overflow = pool._max_overflow
    # One read of the queue for both counts: checkedout() reads it again, under its lock, and a
    # connection coming back in between would make the two disagree. Same formula as checkedout().
    idle = pool.checkedin()
    return PoolState(
        used=size - idle + pool._overflow,
        idle=idle,
        max=size + overflow if overflow >= 0 else None,
        idle_max=size,
        idle_min=0,
    )


class SQLAlchemyAdapter(PoolAdapter[_Shadows]):
    """Installs the class-level wrappers once and attaches recorders to pools; a binding follows
    its engine across ``dispose()``."""

    library = _LIBRARY
    compatibility = COMPATIBILITY

    def __init__(self) -> None:
        super().__init__()
        self.conflicts = SessionConflicts(self.telemetry_of)

    # --- public ------------------------------------------------------------------------------

    def instrument_engine(
        self,
        engine: Any,
        telemetry: Instrumentation,
        pool_name: str | None = None,
        application_name: str | None = APPLICATION_NAME,
    ) -> PoolRecorder:
        """Record one engine's pool (an ``AsyncEngine`` is unwrapped to its sync engine)."""
        sync_engine: Engine = getattr(engine, "sync_engine", engine)
        return self._instrument(
            sync_engine.pool, sync_engine, telemetry, pool_name, application_name
        )

    def instrument_pool(
        self, pool: Pool, telemetry: Instrumentation, pool_name: str | None = None
    ) -> PoolRecorder:
        """Record a pool made without an engine."""
        return self._instrument(pool, None, telemetry, pool_name, None)

    def uninstrument_engine(self, engine: Any) -> None:
        """Stop recording one engine's pool."""
        sync_engine: Engine = getattr(engine, "sync_engine", engine)
        with self._lock:
            self._uninstrument(self.binding_of(sync_engine.pool))

    def telemetry_of(self, target: Any) -> Instrumentation | None:
        """The telemetry recording ``target`` (an engine, or a session through its bind)."""
        bind = getattr(target, "bind", target)
        engine = getattr(bind, "engine", bind)
        recorder = getattr(getattr(engine, "pool", None), _ATTR, None)
        # anything may stand in for a bind (a mock in a test): only poolwatch's own recorder counts
        owner = recorder.owner if isinstance(recorder, PoolRecorder) else None
        if isinstance(owner, Instrumentation) and owner.active:
            return owner
        for candidate in (self._auto, self._latest):
            if candidate is not None and candidate.active:
                return candidate
        return None

    def rebind(self, old: Pool, new: Pool) -> None:
        """``Pool.recreate()`` made ``new`` to replace ``old``: keep recording under the same name."""
        recorder = getattr(old, _ATTR, None)
        if recorder is None:
            return
        setattr(new, _ATTR, recorder)
        for binding in self._bindings.values():
            if binding.recorder is recorder:
                _guard.guarded("sqlalchemy.recreate", _time_creator, binding, new)
                if binding.owner_ref is None:
                    binding.pool_ref = weakref.ref(new)

    # --- what the base asks of an adapter -----------------------------------------------------

    def binding_of(self, pool: Any) -> _Binding | None:
        # the pool carries its recorder (one lookup on the hot path), not its binding
        recorder = getattr(pool, _ATTR, None)
        if recorder is None:
            return None
        for binding in self._bindings.values():
            if binding.recorder is recorder:
                return binding
        return None

    def current_pool(self, binding: _Binding) -> Pool | None:
        if binding.owner_ref is not None:
            engine = binding.owner_ref()
            return engine.pool if engine is not None else None
        return binding.pool_ref()

    def read_state(self, binding: _Binding, pool: Pool) -> PoolState:
        return pool_state(pool, len(binding.recorder.loans))

    def _identify(self, pool: Pool, owner: Engine | None) -> tuple[str | None, Target]:
        chosen = getattr(pool, "logging_name", None)
        target = url_target(owner.url) if owner is not None else Target.unknown()
        return (str(chosen) if chosen else None), target

    def _details(self) -> _Shadows:
        return _Shadows()

    def _bind(self, binding: _Binding, pool: Pool, app_name: str | None) -> None:
        binding.recorder.still_out = still_out
        engine = binding.owner_ref() if binding.owner_ref is not None else None
        if engine is not None and app_name is not None:
            _name_connections(binding, engine, app_name)
        if engine is not None and getattr(pool, "_pre_ping", False):
            _watch_pings(binding, engine)
        self._listen(binding, pool)
        setattr(pool, _ATTR, binding.recorder)

    def _listen(self, binding: _Binding, pool: Pool) -> None:
        # Pool events only: a dialect or engine listener (``do_connect``, say) would set
        # SQLAlchemy's ``_has_events`` flag and make every execution dispatch those events.
        hooks = _PoolHooks(binding.recorder)
        names = ["detach"]
        if not (COMPATIBILITY.has(CHECKIN) and COMPATIBILITY.has(RECORD_POOL)):
            names.append("checkin")
        for name in names:
            fn = getattr(hooks, name)
            event.listen(pool, name, fn)
            binding.details.listeners.append((name, fn))
        # a failure here costs create time and failed opens only, not the pool's other metrics
        _guard.guarded("sqlalchemy.attach", _time_creator, binding, pool)

    def _unbind(self, binding: _Binding) -> None:
        pool = binding.pool()
        shadows = binding.details
        for name, fn in shadows.listeners:
            if pool is not None and event.contains(pool, name, fn):
                event.remove(pool, name, fn)
        _untime_creators(binding)
        for candidate in (pool, binding.pool_ref()):
            if candidate is not None and _ATTR in vars(candidate):
                delattr(candidate, _ATTR)
        dialect = shadows.named_dialect
        if dialect is not None and _is_named_connect(vars(dialect).get("connect")):
            del dialect.connect
        dialect = shadows.pinged_dialect
        shadow = vars(dialect).get(_PING) if dialect is not None else None
        if isinstance(shadow, functools.partial) and shadow.func is _pinging:
            delattr(dialect, _PING)

    def _hook(self) -> None:
        for cls in _pool_classes():
            self._replaced.replace(cls, "connect", _make_connect)
            if "recreate" in vars(cls):
                wrapt.wrap_function_wrapper(cls, "recreate", _wrap_recreate)
        if COMPATIBILITY.has(RECORD_POOL):
            self._replaced.replace(_ConnectionRecord, CHECKIN.attribute, _make_checkin)
        # private (name-mangled): without it, connections being opened go unlisted in timeouts
        if _RECORD_CONNECT not in vars(_ConnectionRecord):
            _guard.internal_error(
                "sqlalchemy.connect",
                AttributeError(
                    f"_ConnectionRecord.{_RECORD_CONNECT} is missing in this SQLAlchemy: "
                    "connections being opened are not listed in pool-timeout events"
                ),
            )
        self._replaced.replace(_ConnectionRecord, _RECORD_CONNECT, _make_record_connect)
        wrapt.wrap_function_wrapper(Engine, "__init__", _wrap_engine_init)
        self.conflicts.install()

    def _unhook(self) -> None:
        for cls in _pool_classes():
            if hasattr(vars(cls).get("recreate"), "__wrapped__"):
                unwrap(cls, "recreate")
        unwrap(Engine, "__init__")
        self.conflicts.uninstall()


class _PoolHooks:
    """Pool event listeners for one recorder; each is a hook boundary."""

    def __init__(self, recorder: PoolRecorder):
        self.recorder = recorder

    def detach(self, _dbapi_connection: Any, record: Any) -> None:
        try:
            self.recorder.forget(record)
        except Exception as error:  # noqa: BLE001
            _guard.internal_error("sqlalchemy.detach", error)

    def checkin(self, _dbapi_connection: Any, record: Any) -> None:
        """The public checkin event: used when ``_ConnectionRecord.checkin`` cannot be replaced."""
        try:
            self.recorder.checked_in(record)
        except Exception as error:  # noqa: BLE001
            _guard.internal_error("sqlalchemy.checkin", error)


def _time_creator(binding: _Binding, pool: Pool) -> None:
    """Time each connection ``pool`` opens, and count those that fail, around the pool's own
    ``_invoke_creator`` (the driver's connect, without any ``connect`` listener)."""
    original = vars(pool).get(INVOKE_CREATOR.attribute)
    if original is None or is_replacement(original):
        return
    pool_ref = weakref.ref(pool)
    clock = binding.recorder.clock

    def _invoke_creator(record: Any) -> Any:
        started = clock()
        try:
            connection = original(record)
        except Exception as failure:
            _opened(pool_ref, 0.0, failure)
            raise
        _opened(pool_ref, clock() - started, None)
        return connection

    # marked by hand: an instance attribute nothing introspects, and a forwarder would cost a
    # call per connection opened
    _invoke_creator.__wrapped__ = original  # type: ignore[attr-defined]
    _invoke_creator._poolwatch = True  # type: ignore[attr-defined]
    setattr(pool, INVOKE_CREATOR.attribute, _invoke_creator)
    # pools replaced by dispose() are gone: keep the list as long as the live ones
    binding.details.timed = [ref for ref in binding.details.timed if ref() is not None] + [pool_ref]


def _untime_creators(binding: _Binding) -> None:
    for ref in binding.details.timed:
        pool = ref()
        timed = vars(pool).get(INVOKE_CREATOR.attribute) if pool is not None else None
        if timed is not None and is_replacement(timed):
            setattr(pool, INVOKE_CREATOR.attribute, timed.__wrapped__)
    binding.details.timed.clear()


def _opened(pool_ref: weakref.ref[Pool], seconds: float, failure: Exception | None) -> None:
    pool = pool_ref()
    recorder = getattr(pool, _ATTR, None) if pool is not None else None
    if not isinstance(recorder, PoolRecorder):
        return
    try:
        if failure is None:
            recorder.connection_created(seconds)
        else:
            recorder.connection_failed(failure)
    except Exception as error:  # noqa: BLE001 - the hook boundary
        _guard.internal_error("sqlalchemy.connect", error)


def still_out(record: Any, entry: Any) -> bool:
    """Whether the connection record lent in ``entry`` is still checked out: SQLAlchemy clears
    ``fairy_ref`` when the connection comes back, and makes a new one on the next checkout."""
    return record.fairy_ref is not None and record.fairy_ref is entry[1]


def _pool_classes() -> list[type[Pool]]:
    """``Pool`` and every subclass SQLAlchemy ships, in a stable order."""
    found: list[type[Pool]] = []
    pending: list[type[Pool]] = [Pool]
    while pending:
        cls = pending.pop(0)
        if cls.__module__.startswith("sqlalchemy.") and cls not in found:
            found.append(cls)
            pending.extend(sorted(cls.__subclasses__(), key=lambda c: c.__qualname__))
    return found


def _name_connections(binding: _Binding, engine: Engine, template: str) -> None:
    """Give the PostgreSQL connections ``engine`` opens from now on an ``application_name``
    (``template`` with the pool's current name), unless the URL, ``connect_args`` or
    ``PGAPPNAME`` set one. ``Dialect.connect`` is shadowed on this engine's dialect alone."""
    dialect = engine.dialect
    driver = getattr(dialect, "driver", "")
    if dialect.name != "postgresql" or (driver not in _APPNAME_KEYWORD and driver != "asyncpg"):
        return
    if "connect" in vars(dialect):
        return  # shadowed already (another engine on this dialect, or the user)
    dialect.connect = functools.partial(  # type: ignore[method-assign]
        _named_connect, type(dialect).connect, dialect, weakref.ref(binding), template
    )
    binding.details.named_dialect = dialect


def _named_connect(
    original: Callable[..., Any],
    dialect: Any,
    binding_ref: weakref.ref[_Binding],
    template: str,
    *cargs: Any,
    **cparams: Any,
) -> Any:
    binding = binding_ref()
    recorder = binding.recorder if binding is not None else None
    if recorder is not None:
        try:
            _add_application_name(
                dialect.driver, cparams, application_name(template, recorder.name)
            )
        except Exception as error:  # noqa: BLE001 - the hook boundary
            _guard.internal_error("sqlalchemy.application_name", error)
    return original(dialect, *cargs, **cparams)


def _add_application_name(driver: str, cparams: dict[str, Any], name: str) -> None:
    if driver == "asyncpg":
        settings = dict(cparams.get("server_settings") or {})
        if "application_name" not in settings:
            settings["application_name"] = name
            cparams["server_settings"] = settings
        return
    if "application_name" in cparams or "PGAPPNAME" in os.environ:
        return
    dsn = cparams.get("dsn") or cparams.get("conninfo")
    if isinstance(dsn, str) and "application_name" in dsn:
        return
    cparams["application_name"] = name


def _is_named_connect(candidate: Any) -> bool:
    return isinstance(candidate, functools.partial) and candidate.func is _named_connect


ADAPTER = SQLAlchemyAdapter()
_state.adapters["sqlalchemy"] = ADAPTER


# --- the hot path ------------------------------------------------------------------------------


def _make_connect(original: Callable[..., Any]) -> Callable[..., Any]:
    """A replacement for a pool class's ``connect``.

    A plain function rather than a ``wrapt`` proxy: this runs on every checkout, and a proxy
    call costs about 0.6 us, a tenth of a bare SQLite checkout+checkin.
    """

    def connect(self: Any) -> Any:
        recorder: PoolRecorder | None = getattr(self, _ATTR, None)
        if recorder is None:
            return _first_sight(connect, original, self)
        try:
            parent = current_context().get(SPAN_KEY)
        except Exception as error:  # noqa: BLE001 - the hook boundary
            _guard.internal_error("sqlalchemy.checkout", error)
            parent = None
        try:
            started = recorder.begin()
        except Exception as error:  # noqa: BLE001 - the hook boundary
            _guard.internal_error("sqlalchemy.checkout", error)
            return original(self)
        traced = (
            _guard.guarded("sqlalchemy.checkout", recorder.trace)
            if (parent is not None or recorder.root_spans) and wants_span(recorder, parent)
            else None
        )
        try:
            fairy = original(self)
        except BaseException as failure:
            _checkout_failed(recorder, started, traced, failure, self)
            raise
        try:
            record = fairy._connection_record
            # SQLAlchemy's own weak reference to the fairy: dead once the app dropped it
            owner = record.fairy_ref
        except Exception as error:  # noqa: BLE001
            _unkeyed(recorder, error)
            return fairy
        try:
            recorder.succeeded(started, traced, record, owner, parent)
        except Exception as error:  # noqa: BLE001
            _guard.internal_error("sqlalchemy.checkout", error)
        return fairy

    return connect


def _unkeyed(recorder: PoolRecorder, error: Exception) -> None:
    """A checkout whose connection record could not be read: no loan, the wait is over."""
    if not COMPATIBILITY.off(_LOANS):  # else said once, when instrumenting
        _guard.internal_error("sqlalchemy.checkout", error)
    _guard.guarded("sqlalchemy.checkout", recorder.abandoned)


def _first_sight(connect: Callable[..., Any], original: Callable[..., Any], pool: Any) -> Any:
    """A checkout of a pool not attached yet: attached now in zero-code mode, else bare."""
    _guard.guarded("sqlalchemy.attach", ADAPTER.auto_attach, pool)
    return connect(pool) if getattr(pool, _ATTR, None) is not None else original(pool)


def _make_checkin(original: Callable[..., Any]) -> Callable[..., Any]:
    """A replacement for ``_ConnectionRecord.checkin``: the loan ends before the pool has the
    connection back, so no other caller can have borrowed it yet."""

    def checkin(self: Any, _fairy_was_created: bool = True) -> None:
        try:
            recorder: PoolRecorder | None = getattr(self._ConnectionRecord__pool, _ATTR, None)
            if recorder is not None:
                recorder.checked_in(self)
        except Exception as error:  # noqa: BLE001 - the hook boundary
            _guard.internal_error("sqlalchemy.checkin", error)
        original(self, _fairy_was_created)

    return checkin


def _checkout_failed(
    recorder: PoolRecorder,
    started: float,
    traced: Traced | None,
    failure: BaseException,
    pool: Any = None,
) -> None:
    try:
        timeout = getattr(pool, "_timeout", None)
        recorder.failed(
            started,
            traced,
            failure,
            isinstance(failure, exc.TimeoutError),
            float(timeout) if isinstance(timeout, (int, float)) else None,
        )
    except Exception as error:  # noqa: BLE001
        _guard.internal_error("sqlalchemy.checkout", error)


def _make_record_connect(original: Callable[..., Any]) -> Callable[..., Any]:
    """A replacement for ``_ConnectionRecord.__connect``: the connection being opened is listed
    (as opening, for whoever waits) until it is open or has failed."""

    def connect(record: Any) -> None:
        work = None
        try:
            recorder = getattr(getattr(record, _RECORD_POOL, None), _ATTR, None)
            if recorder is not None:
                work = recorder.filling, recorder.filling.begin(OPENING)
        except Exception as error:  # noqa: BLE001 - the hook boundary
            _guard.internal_error("sqlalchemy.connect", error)
        try:
            original(record)
        finally:
            if work is not None:
                work[0].end(work[1])

    return connect


def _watch_pings(binding: _Binding, engine: Engine) -> None:
    """List pre-pings in timeouts: ``_do_ping_w_event`` shadowed on this engine's dialect."""
    dialect = engine.dialect
    original = getattr(type(dialect), _PING, None)
    if original is None:
        _guard.internal_error(
            "sqlalchemy.pre_ping",
            AttributeError(
                f"Dialect.{_PING} is missing in this SQLAlchemy: pre-pings are not listed in "
                "pool-timeout events"
            ),
        )
        return
    if _PING in vars(dialect):
        return  # shadowed already (another engine on this dialect)
    setattr(dialect, _PING, functools.partial(_pinging, original, dialect, weakref.ref(binding)))
    binding.details.pinged_dialect = dialect


def _pinging(
    original: Callable[..., Any],
    dialect: Any,
    binding_ref: weakref.ref[_Binding],
    dbapi_connection: Any,
) -> Any:
    binding = binding_ref()
    recorder = binding.recorder if binding is not None else None
    if recorder is None:
        return original(dialect, dbapi_connection)
    work = recorder.filling.begin(PINGING)
    try:
        return original(dialect, dbapi_connection)
    finally:
        recorder.filling.end(work)


def _wrap_recreate(wrapped: Any, pool: Any, args: Any, kwargs: Any) -> Any:
    new = wrapped(*args, **kwargs)
    try:
        ADAPTER.rebind(pool, new)
    except Exception as error:  # noqa: BLE001
        _guard.internal_error("sqlalchemy.recreate", error)
    return new


def _wrap_engine_init(wrapped: Any, engine: Any, args: Any, kwargs: Any) -> None:
    wrapped(*args, **kwargs)
    try:
        ADAPTER.auto_attach(engine.pool, engine)
    except Exception as error:  # noqa: BLE001
        _guard.internal_error("sqlalchemy.attach", error)
