"""SQLAlchemy session and transaction conflicts, translated into conflict facts.

``already attached`` is raised by ``Session._before_attach`` before any session event fires, so
that method is replaced; concurrent use and stale data surface from the public session methods,
replaced too. Deadlocks and serialization failures pass through
``Connection._handle_dbapi_exception``, the method every error raised while executing goes
through; it is replaced rather than listening to the public ``handle_error`` event, because any
``handle_error`` listener also sets the dialect's ``_has_events`` flag, and every execution of
every engine then dispatches the dialect's execute events. Every original exception reaches the
application unchanged. The replacements are plain functions (see
:mod:`poolwatch._integrations._replacing`): they run on every session call of the app.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable
from typing import Any

from sqlalchemy import exc
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session, object_session
from sqlalchemy.orm.exc import StaleDataError

from poolwatch import _guard, _sites, catalog
from poolwatch._instrumentation import Instrumentation
from poolwatch._integrations._compat import Hook
from poolwatch._integrations._replacing import Replacements
from poolwatch._recorder import PoolRecorder

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

TelemetryFinder = Callable[[Any], Instrumentation | None]

BEFORE_ATTACH = Hook(
    "sqlalchemy.orm.session",
    "Session",
    "_before_attach",
    "already-attached conflicts",
    "`already attached to session` conflicts are not reported",
)
HANDLE_DBAPI_EXCEPTION = Hook(
    "sqlalchemy.engine.base",
    "Connection",
    "_handle_dbapi_exception",
    "database conflicts",
    "deadlocks, serialization failures and lock timeouts are not reported as conflicts",
)


class SessionConflicts:
    """Installs the session and execution-error replacements once; reports conflicts."""

    def __init__(self, find: TelemetryFinder) -> None:
        self._find = find
        self._replaced = Replacements()
        self.installed = False

    def install(self) -> None:
        """Replace ``Session``'s methods and the path of every execution error."""
        if self.installed:
            return
        self._replaced.replace(Session, "__init__", self._init)
        self._replaced.replace(Session, BEFORE_ATTACH.attribute, self._before_attach)
        for name in SESSION_METHODS:
            self._replaced.replace(Session, name, self._session_method)
        self._replaced.replace(Connection, HANDLE_DBAPI_EXCEPTION.attribute, self._execution_error)
        self.installed = True

    def uninstall(self) -> None:
        """Restore ``Session`` and ``Connection``."""
        if not self.installed:
            return
        self._replaced.restore()
        self.installed = False

    # --- replacements ----------------------------------------------------------------------

    def _init(self, original: Callable[..., None]) -> Callable[..., None]:
        def __init__(session: Any, *args: Any, **kwargs: Any) -> None:
            original(session, *args, **kwargs)
            try:
                telemetry = self._find(session)
                if telemetry is not None:
                    # conflicts name the innermost application frame only: walk no further
                    setattr(session, _SITE_ATTR, telemetry.sites.capture(limit=1))
            except Exception as error:  # noqa: BLE001 - the hook boundary
                _guard.internal_error("sqlalchemy.session", error)

        return __init__

    def _before_attach(self, original: Callable[..., Any]) -> Callable[..., Any]:
        def _before_attach(session: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return original(session, *args, **kwargs)
            except exc.InvalidRequestError as conflict:
                _guard.guarded(
                    "sqlalchemy.session", self._already_attached, session, args, conflict
                )
                raise

        return _before_attach

    def _session_method(self, original: Callable[..., Any]) -> Callable[..., Any]:
        def method(session: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return original(session, *args, **kwargs)
            except (exc.InvalidRequestError, StaleDataError) as conflict:
                if not getattr(conflict, _SEEN_ATTR, False):
                    _guard.guarded("sqlalchemy.session", self._report, session, conflict)
                raise

        return method

    def _execution_error(self, original: Callable[..., Any]) -> Callable[..., Any]:
        def _handle_dbapi_exception(
            connection: Any, e: BaseException, *args: Any, **kw: Any
        ) -> Any:
            try:
                self._database_error(connection.engine, e)
            except Exception as error:  # noqa: BLE001 - the hook boundary
                _guard.internal_error("sqlalchemy.execution_error", error)
            return original(connection, e, *args, **kw)

        return _handle_dbapi_exception

    def _database_error(self, engine: Any, error: BaseException) -> None:
        """A DBAPI error while executing: a conflict if its code says two sessions collided."""
        kind, code = _database_kind(error)
        if kind is None:
            return
        telemetry = self._find(engine)
        if telemetry is None:
            return
        attributes: dict[str, Any] = {
            catalog.ERROR_TYPE: type(error).__qualname__,
            catalog.DB_STATUS_CODE: str(code),
        }
        pool = getattr(engine.pool, "_poolwatch_recorder", None)
        if isinstance(pool, PoolRecorder):
            attributes[catalog.POOL_NAME] = pool.name
        telemetry.conflict(kind, attributes, str(error).strip().split("\n")[0])

    # --- reporting -------------------------------------------------------------------------

    def _already_attached(self, session: Any, args: Any, conflict: BaseException) -> None:
        if "is already attached to session" not in str(conflict):
            return
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
        telemetry.conflict(catalog.CONFLICT_ALREADY_ATTACHED, attributes)

    def _report(self, session: Any, conflict: BaseException) -> None:
        """A session method raised ``conflict``: reported if it is a concurrency conflict."""
        kind = _session_kind(conflict)
        if kind is None:
            return
        setattr(conflict, _SEEN_ATTR, True)
        telemetry = self._find(session)
        if telemetry is None:
            return
        attributes: dict[str, Any] = {
            catalog.ERROR_TYPE: type(conflict).__qualname__,
            catalog.SESSION_CURRENT: str(session.hash_key),
            catalog.SESSION_CURRENT_SITE: _sites.describe(getattr(session, _SITE_ATTR, ())),
        }
        telemetry.conflict(kind, attributes, str(conflict).strip().split("\n")[0])


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
