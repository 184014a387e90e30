"""Django adapter: database connections and the requests that open them, as tracker facts.

``BaseDatabaseWrapper.connect``/``close`` (the close reason set by the Django method that decided
to close: end of request, CONN_MAX_AGE, health check, error), ``CursorWrapper`` (the last query's
location) and the request
lifecycle are replaced at class level by plain functions that :meth:`DjangoAdapter.uninstrument`
puts back. A request starts where Django sends ``request_started`` (``WSGIHandler.__call__``,
``ASGIHandler.handle``) and ends where it sends ``request_finished`` (``HttpResponseBase.close``)
or, under ASGI, when ``handle`` returns or raises even though ``request_finished`` never came.
Hooking those methods is cheaper per request than receivers, which every signal sent walks.
``BaseHandler.resolve_request`` gives the route and view. Each Django module is patched once the
application imports it, so neither instrumenting nor importing this module imports Django or
reads a setting. :data:`COMPATIBILITY` lists the internal methods used.
"""

from __future__ import annotations

import functools
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

import wrapt

from poolwatch import _guard, _process, _state, catalog
from poolwatch._instrumentation import Instrumentation
from poolwatch._integrations._compat import Hook, Table
from poolwatch._integrations._extras import check_installed
from poolwatch._integrations._replacing import Replacements
from poolwatch._integrations.django_metrics import register_metrics
from poolwatch._integrations.django_tracking import (
    CURRENT_REQUEST,
    ConnectionRecord,
    RequestInfo,
    Tracker,
    application_name,
    closes_at_request_end,
    pool_name,
)

#: Where a wrapper keeps its :class:`ConnectionRecord` while its connection is open.
_ATTR = "_poolwatch_connection"
_monotonic = time.monotonic
#: Orphans that stop being orphans when their owner queries again.
_IDLE = frozenset({catalog.ORPHAN_IDLE_IN_TRANSACTION, catalog.ORPHAN_IDLE_OUTSIDE_REQUEST})


class DjangoAdapter:
    """Installs the class-level replacements once, for one tracker."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.tracker: Tracker | None = None
        self._replaced = Replacements()
        self._pools: list[weakref.ref[Any]] = []
        #: Telemetries whose meter has the Django instruments already (made once per meter).
        self._metered: weakref.WeakSet[Instrumentation] = weakref.WeakSet()
        _process.on_fork("django", self._after_fork)

    def _after_fork(self) -> None:
        self._lock = threading.RLock()
        if self.tracker is not None:
            self.tracker.after_fork()

    def _tracker_of(self, telemetry: Instrumentation) -> Tracker | None:
        """The live tracker reporting into ``telemetry``, if any (read by its instruments)."""
        tracker = self.tracker
        return tracker if tracker is not None and tracker.telemetry is telemetry else None

    @property
    def installed(self) -> bool:
        """Whether Django is patched right now."""
        return self.tracker is not None

    def instrument(self, telemetry: Instrumentation) -> None:
        """Track every Django connection from now on; a second call does nothing."""
        check_installed("django", "django", "django")
        with self._lock:
            if self.tracker is not None:
                return
            tracker = Tracker(telemetry)
            if telemetry not in self._metered:
                register_metrics(telemetry, functools.partial(self._tracker_of, telemetry))
                self._metered.add(telemetry)
            self.tracker = tracker
            for module in sorted({module for module, _cls, _name in _REPLACEMENTS}):
                # at once if Django's module is imported already, else right after its import
                hook = functools.partial(self._patch, tracker=tracker)
                wrapt.register_post_import_hook(hook, module)

    def _patch(self, module: Any, tracker: Tracker) -> None:
        """Replace the hooked methods of one Django module's classes (just imported)."""
        with self._lock:
            if self.tracker is not tracker:
                return  # uninstrumented, or instrumented again, before the module was imported
            COMPATIBILITY.check(module.__name__)
            tracker.queries_seen = not COMPATIBILITY.off(LAST_QUERY)
            for (module_name, class_name, name), make in _REPLACEMENTS.items():
                cls = getattr(module, class_name, None) if module_name == module.__name__ else None
                if cls is not None:
                    self._replaced.replace(cls, name, make)

    def uninstrument_all(self) -> None:
        """Undo everything (what a reset of poolwatch's state calls)."""
        self.uninstrument()

    def uninstrument(self) -> None:
        """Restore Django exactly as it was and stop reporting."""
        with self._lock:
            tracker, self.tracker = self.tracker, None
            if tracker is None:
                return
            self._replaced.restore()
            for _record, wrapper in tracker.live():
                wrapper.__dict__.pop(_ATTR, None)
            tracker.shutdown()
            self._release_pools()

    # --- connecting -----------------------------------------------------------------------

    def prepare(self, wrapper: Any, tracker: Tracker, pooled: bool) -> None:
        """Before a PostgreSQL ``connect``: name the connection, record Django's pool if any.

        The name comes from ``get_connection_params``, shadowed on the wrapper itself for the
        duration of ``connect`` (the wrapper belongs to this thread alone).
        """
        if tracker.config.django_application_name:
            wrapper.get_connection_params = functools.partial(
                _named_params, type(wrapper).get_connection_params, wrapper
            )
        if pooled:
            self._attach_pool(wrapper, tracker)

    def _attach_pool(self, wrapper: Any, tracker: Tracker) -> None:
        """Record Django's psycopg pool (5.1+) under ``django:<alias>`` before its first use."""
        pool = getattr(wrapper, "pool", None)  # Django 5.1+
        if pool is None or any(ref() is pool for ref in self._pools):
            return
        from poolwatch._integrations.psycopg_pool import ADAPTER as PSYCOPG_POOL

        with self._lock:
            if any(ref() is pool for ref in self._pools):
                return
            # The pool may predate this connect (Django reads it before connecting), so its
            # connections are named through the psycopg_pool adapter, unless the user named them.
            name = (
                application_name(wrapper.alias) if tracker.config.django_application_name else None
            )
            PSYCOPG_POOL.instrument_pool(pool, tracker.telemetry, pool_name(wrapper.alias), name)
            self._pools.append(weakref.ref(pool))

    def _release_pools(self) -> None:
        from poolwatch._integrations.psycopg_pool import ADAPTER as PSYCOPG_POOL

        for ref in self._pools:
            pool = ref()
            if pool is not None:
                PSYCOPG_POOL.uninstrument_pool(pool)
        self._pools.clear()


ADAPTER = DjangoAdapter()
_state.adapters["django"] = ADAPTER


def _named_params(method: Callable[[Any], dict[str, Any]], wrapper: Any) -> dict[str, Any]:
    """The wrapper's connection parameters with an ``application_name``, unless one is set."""
    params = method(wrapper)
    if "application_name" not in params and "PGAPPNAME" not in os.environ:
        params["application_name"] = application_name(wrapper.alias)
    return params


def _unshadow(wrapper: Any) -> None:
    shadow = wrapper.__dict__.get("get_connection_params")
    if isinstance(shadow, functools.partial) and shadow.func is _named_params:
        del wrapper.__dict__["get_connection_params"]


def _opened(tracker: Tracker, wrapper: Any, seconds: float, pooled: bool) -> None:
    stale: ConnectionRecord | None = wrapper.__dict__.get(_ATTR)
    if stale is not None:  # reconnected after a close inside an atomic block
        stale.tracker.connection_closed(stale, catalog.CLOSE_EXPLICIT)
    wrapper.__dict__[_ATTR] = tracker.connection_opened(wrapper, seconds, pooled)


#: Where a wrapper keeps, while one of Django's closing methods runs, why it may close.
_CLOSING = "_poolwatch_closing"
_RECYCLE = "recycle"


def _close_reason(wrapper: Any, closing: str | None) -> str:
    """Why Django is closing the wrapper's connection, given the closing method running."""
    if closing is None:
        return catalog.CLOSE_EXPLICIT
    if closing != _RECYCLE:
        return closing
    autocommit = wrapper.settings_dict.get("AUTOCOMMIT", True)
    if wrapper.errors_occurred or wrapper.autocommit != autocommit:
        return catalog.CLOSE_ERROR
    if closes_at_request_end(wrapper):
        return catalog.CLOSE_REQUEST_END
    return catalog.CLOSE_MAX_AGE


# --- the replacements ---------------------------------------------------------------------------


def _connect(original: Callable[..., Any]) -> Callable[..., Any]:
    def connect(self: Any) -> None:
        tracker = ADAPTER.tracker
        if tracker is None:
            original(self)
            return
        postgresql = self.vendor == "postgresql"
        # Django's own pool (5.1+): read once, for naming and for the recorder
        pooled = bool(self.settings_dict.get("OPTIONS", {}).get("pool"))
        if postgresql:
            _guard.guarded("django.connect", ADAPTER.prepare, self, tracker, pooled)
        clock = tracker.telemetry.settings.clock
        started = clock()
        try:
            original(self)
        except Exception as failure:
            # Django's pool (5.1+) opens connections itself: counted by its adapter, per attempt
            if not pooled:
                _guard.guarded(
                    "django.connect", tracker.connection_failed, self.alias, self, failure
                )
            raise
        finally:
            if postgresql:
                _unshadow(self)
            if self.connection is not None:
                _guard.guarded("django.connect", _opened, tracker, self, clock() - started, pooled)

    return connect


def _close(original: Callable[..., Any]) -> Callable[..., Any]:
    def close(self: Any) -> None:
        record: ConnectionRecord | None = self.__dict__.get(_ATTR)
        if record is None:
            original(self)
            return
        try:
            original(self)
        finally:
            if self.connection is None or self.closed_in_transaction:
                self.__dict__.pop(_ATTR, None)  # uninstrument may have taken it already
                closing = self.__dict__.get(_CLOSING)
                _guard.guarded("django.close", _closed, record, self, closing)

    return close


def _closed(record: ConnectionRecord, wrapper: Any, closing: str | None) -> None:
    record.tracker.connection_closed(record, _close_reason(wrapper, closing))


def _closer(reason: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A replacement for a Django method that closes the connection for ``reason`` if it must:
    ``close`` reads the reason while it runs."""

    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        def closing_method(self: Any) -> Any:
            state = self.__dict__
            outer = state.get(_CLOSING)
            state[_CLOSING] = reason
            try:
                return original(self)
            finally:
                if outer is None:
                    state.pop(_CLOSING, None)
                else:
                    state[_CLOSING] = outer

        return closing_method

    return make


def _execute_with_wrappers(original: Callable[..., Any]) -> Callable[..., Any]:
    def _execute_with_wrappers(self: Any, sql: Any, params: Any, many: bool, executor: Any) -> Any:
        record: ConnectionRecord | None = self.db.__dict__.get(_ATTR)
        if record is not None:
            try:
                record.last_query_at = _monotonic()
                record.last_site = record.tracker.query_sites.capture()
                if record.orphaned in _IDLE:
                    record.orphaned = None  # its owner came back to it
                request = CURRENT_REQUEST.get()
                if request is not None and request.ended_at is None:
                    record.request = request
            except Exception as error:  # noqa: BLE001 - the hook boundary
                _guard.internal_error("django.execute", error)
        return original(self, sql, params, many, executor)

    return _execute_with_wrappers


def _asgi_handle(original: Callable[..., Any]) -> Callable[..., Any]:
    async def handle(self: Any, scope: Any, receive: Any, send: Any) -> Any:
        request = RequestInfo(scope.get("method"))
        token = CURRENT_REQUEST.set(request)
        try:
            return await original(self, scope, receive, send)
        finally:
            # Whether or not Django sent request_finished, the request is over.
            request.end()
            CURRENT_REQUEST.reset(token)

    return handle


def _resolve_request(original: Callable[..., Any]) -> Callable[..., Any]:
    def resolve_request(self: Any, request: Any) -> Any:
        match = original(self, request)
        current = CURRENT_REQUEST.get()
        if current is not None:
            try:
                current.route = getattr(match, "route", None) or None
                current.view = getattr(match, "_func_path", None)
            except Exception as error:  # noqa: BLE001 - the hook boundary
                _guard.internal_error("django.request", error)
        return match

    return resolve_request


def _begin_request(method: str | None) -> RequestInfo:
    """A request starts in this thread (so any earlier one here is over)."""
    previous = CURRENT_REQUEST.get()
    if previous is not None:
        previous.end()
    request = RequestInfo(method)
    CURRENT_REQUEST.set(request)
    return request


def _wsgi_call(original: Callable[..., Any]) -> Callable[..., Any]:
    def __call__(self: Any, environ: Any, start_response: Any) -> Any:
        try:
            _begin_request(environ.get("REQUEST_METHOD"))
        except Exception as error:  # noqa: BLE001 - the hook boundary
            _guard.internal_error("django.request", error)
        return original(self, environ, start_response)

    return __call__


def _response_close(original: Callable[..., Any]) -> Callable[..., Any]:
    def close(self: Any) -> None:
        try:
            original(self)  # sends request_finished: CONN_MAX_AGE = 0 connections close here
        finally:
            request = CURRENT_REQUEST.get()
            if request is not None:
                request.end()

    return close


_DB = "django.db.backends.base.base"
_UTILS = "django.db.backends.utils"
_HANDLERS = "django.core.handlers"
LAST_QUERY = "last-query tracking"
_CLOSE_REASONS = "close reasons"
#: Every internal Django method poolwatch replaces, with what breaks without it; checked as
#: each module is imported (public methods Django documents are not listed).
COMPATIBILITY = Table(
    "Django",
    "django",
    (
        Hook(
            _UTILS,
            "CursorWrapper",
            "_execute_with_wrappers",
            LAST_QUERY,
            "last query locations are unknown and idle orphans are not reported",
        ),
        Hook(
            _DB,
            "BaseDatabaseWrapper",
            "close_if_unusable_or_obsolete",
            _CLOSE_REASONS,
            "closes at request end, CONN_MAX_AGE and after errors are counted as explicit",
        ),
        Hook(
            _DB,
            "BaseDatabaseWrapper",
            "close_if_health_check_failed",
            _CLOSE_REASONS,
            "closes after a failed health check are counted as explicit",
        ),
        Hook(
            f"{_HANDLERS}.base",
            "BaseHandler",
            "resolve_request",
            "request routes",
            "orphan events name no route or view",
        ),
        Hook(
            f"{_HANDLERS}.asgi",
            "ASGIHandler",
            "handle",
            "ASGI request ends",
            "under ASGI, a request that never sends request_finished is not seen ending",
        ),
    ),
)
#: ``(module, class, method)`` to replace, and how. Each module is patched when it is imported
#: (hooking ``django.db`` alone would import the handlers while they are half imported).
_REPLACEMENTS: dict[tuple[str, str, str], Callable[[Callable[..., Any]], Callable[..., Any]]] = {
    (_DB, "BaseDatabaseWrapper", "connect"): _connect,
    (_DB, "BaseDatabaseWrapper", "close"): _close,
    (_DB, "BaseDatabaseWrapper", "close_if_unusable_or_obsolete"): _closer(_RECYCLE),
    (_DB, "BaseDatabaseWrapper", "close_if_health_check_failed"): _closer(
        catalog.CLOSE_HEALTH_CHECK
    ),
    (_UTILS, "CursorWrapper", "_execute_with_wrappers"): _execute_with_wrappers,
    (f"{_HANDLERS}.wsgi", "WSGIHandler", "__call__"): _wsgi_call,
    (f"{_HANDLERS}.asgi", "ASGIHandler", "handle"): _asgi_handle,
    (f"{_HANDLERS}.base", "BaseHandler", "resolve_request"): _resolve_request,
    ("django.http.response", "HttpResponseBase", "close"): _response_close,
}
