"""SQLAlchemy session and transaction conflicts, translated into conflict facts.

``already attached`` is raised by ``Session._before_attach`` before any session event fires, so
that method is wrapped; concurrent use and stale data surface from the public session methods;
deadlocks and serialization failures reach the engine's ``handle_error`` event. Every original
exception reaches the application unchanged.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable
from typing import Any

import wrapt
from opentelemetry.instrumentation.utils import unwrap
from sqlalchemy import event, exc
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, object_session
from sqlalchemy.orm.exc import StaleDataError

from poolwatch import _guard, _sites, catalog
from poolwatch.telemetry import Telemetry

_SITE_ATTR = "_poolwatch_site"
_SEEN_ATTR = "_poolwatch_seen"
#: Public Session methods through which concurrent use and stale data surface.
SESSION_METHODS = (
    "flush",
    "commit",
    "rollback",
    "close",
    "execute",
    "connection",
    "get",
    "refresh",
)

# SQLSTATE (PostgreSQL and the standard) and MySQL error numbers that mean "two sessions collided".
_SQLSTATE_KINDS = {
    "40P01": catalog.CONFLICT_DEADLOCK,
    "40001": catalog.CONFLICT_SERIALIZATION,
    "55P03": catalog.CONFLICT_LOCK_TIMEOUT,
}
_MYSQL_KINDS = {1213: catalog.CONFLICT_DEADLOCK, 1205: catalog.CONFLICT_LOCK_TIMEOUT}
_CONCURRENT = re.compile(r"already flushing|concurrent operations are not permitted|isce")

TelemetryFinder = Callable[[Any], Telemetry | None]


class SessionConflicts:
    """Installs the session wrappers and the ``handle_error`` listener once; reports conflicts."""

    def __init__(self, find: TelemetryFinder) -> None:
        self._find = find
        self.installed = False

    def install(self) -> None:
        """Wrap ``Session`` and listen to every engine's errors."""
        if self.installed:
            return
        wrapt.wrap_function_wrapper(Session, "__init__", self._session_created)
        wrapt.wrap_function_wrapper(Session, "_before_attach", self._before_attach)
        for name in SESSION_METHODS:
            wrapt.wrap_function_wrapper(Session, name, self._session_call)
        event.listen(Engine, "handle_error", self._handle_error)
        self.installed = True

    def uninstall(self) -> None:
        """Restore ``Session`` and stop listening."""
        if not self.installed:
            return
        for name in ("__init__", "_before_attach", *SESSION_METHODS):
            unwrap(Session, name)
        event.remove(Engine, "handle_error", self._handle_error)
        self.installed = False

    # --- hooks -----------------------------------------------------------------------------

    def _session_created(self, wrapped: Any, session: Any, args: Any, kwargs: Any) -> None:
        wrapped(*args, **kwargs)
        try:
            telemetry = self._find(session)
            if telemetry is not None:
                setattr(session, _SITE_ATTR, telemetry.sites.capture())
        except Exception as error:  # noqa: BLE001 - the hook boundary
            _guard.internal_error("sqlalchemy.session", error)

    def _before_attach(self, wrapped: Any, session: Any, args: Any, kwargs: Any) -> Any:
        try:
            return wrapped(*args, **kwargs)
        except exc.InvalidRequestError as conflict:
            if "is already attached to session" in str(conflict):
                _guard.guarded(
                    "sqlalchemy.session", self._already_attached, session, args, conflict
                )
            raise

    def _session_call(self, wrapped: Any, session: Any, args: Any, kwargs: Any) -> Any:
        try:
            return wrapped(*args, **kwargs)
        except (exc.InvalidRequestError, StaleDataError) as conflict:
            kind = _session_kind(conflict)
            if kind is not None and not getattr(conflict, _SEEN_ATTR, False):
                _guard.guarded("sqlalchemy.session", self._report, session, kind, conflict)
            raise

    def _handle_error(self, context: Any) -> None:
        try:
            kind, code = _database_kind(context.original_exception)
            if kind is None:
                return
            telemetry = self._find(context.engine)
            if telemetry is None:
                return
            attributes: dict[str, Any] = {
                catalog.ERROR_TYPE: type(context.original_exception).__qualname__,
                catalog.DB_STATUS_CODE: str(code),
            }
            pool = getattr(context.engine.pool, "_poolwatch_recorder", None)
            if pool is not None:
                attributes[catalog.POOL_NAME] = pool.name
            message = str(context.original_exception).strip().split("\n")[0]
            telemetry.conflict(kind, attributes, f"{kind.replace('_', ' ')} ({code}): {message}")
        except Exception as error:  # noqa: BLE001
            _guard.internal_error("sqlalchemy.handle_error", error)

    # --- reporting -------------------------------------------------------------------------

    def _already_attached(self, session: Any, args: Any, conflict: BaseException) -> None:
        setattr(conflict, _SEEN_ATTR, True)
        telemetry = self._find(session)
        if telemetry is None:
            return
        state, obj = args[0], args[1]
        owner = object_session(obj)
        attributes: dict[str, Any] = {
            catalog.OBJECT_CLASS: f"{type(obj).__module__}.{type(obj).__qualname__}",
            catalog.SESSION_OWNER: str(state.session_id),
            catalog.SESSION_CURRENT: str(session.hash_key),
            catalog.SESSION_CURRENT_SITE: _sites.describe(getattr(session, _SITE_ATTR, ())),
        }
        if owner is not None:
            attributes[catalog.SESSION_OWNER_SITE] = _sites.describe(getattr(owner, _SITE_ATTR, ()))
        body = (
            f"{type(obj).__qualname__} belongs to session {state.session_id} (created at "
            f"{attributes.get(catalog.SESSION_OWNER_SITE, 'unknown')}), not to session "
            f"{session.hash_key} (created at {attributes[catalog.SESSION_CURRENT_SITE]})"
        )
        telemetry.conflict(catalog.CONFLICT_ALREADY_ATTACHED, attributes, body)

    def _report(self, session: Any, kind: str, conflict: BaseException) -> None:
        setattr(conflict, _SEEN_ATTR, True)
        telemetry = self._find(session)
        if telemetry is None:
            return
        attributes: dict[str, Any] = {
            catalog.ERROR_TYPE: type(conflict).__qualname__,
            catalog.SESSION_CURRENT: str(session.hash_key),
            catalog.SESSION_CURRENT_SITE: _sites.describe(getattr(session, _SITE_ATTR, ())),
        }
        message = str(conflict).strip().split("\n")[0]
        telemetry.conflict(kind, attributes, f"{kind.replace('_', ' ')}: {message}")


def _session_kind(conflict: BaseException) -> str | None:
    if isinstance(conflict, StaleDataError):
        return catalog.CONFLICT_STALE_DATA
    if isinstance(conflict, exc.IllegalStateChangeError) or _CONCURRENT.search(str(conflict)):
        return catalog.CONFLICT_CONCURRENT_USE
    return None


def _database_kind(error: BaseException | None) -> tuple[str | None, object]:
    """The conflict kind and the driver's code for a DBAPI error, or (None, None)."""
    if error is None:
        return None, None
    sqlstate = getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)
    if isinstance(sqlstate, str) and sqlstate in _SQLSTATE_KINDS:
        return _SQLSTATE_KINDS[sqlstate], sqlstate
    args = getattr(error, "args", ())
    if args and isinstance(args[0], int) and args[0] in _MYSQL_KINDS:
        return _MYSQL_KINDS[args[0]], args[0]
    if isinstance(error, sqlite3.OperationalError) and "database is locked" in str(error):
        return catalog.CONFLICT_LOCK_TIMEOUT, "SQLITE_BUSY"
    return None, None
