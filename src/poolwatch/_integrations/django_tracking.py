"""Django's open connections: who opened each one, in which request, and which are orphans.

A :class:`Tracker` keeps one record per open ``DatabaseWrapper`` connection (watched through a
weak reference, so poolwatch never keeps an orphan alive), counts opens and closes by reason,
and finds orphans from a light daemon thread.
"""

from __future__ import annotations

import contextvars
import functools
import os
import threading
import time
import weakref
from collections import Counter, deque
from collections.abc import Iterator
from typing import Any

from poolwatch import _guard, _naming, _process, _sites, catalog
from poolwatch._instrumentation import Instrumentation
from poolwatch._naming import REGISTRY
from poolwatch._recorder import PoolRecorder, PoolState

_monotonic = time.monotonic
_current_thread = threading.current_thread
_MISSING = object()
_LIBRARY = "django"


def _append(queue: deque[int], key: int, _ref: object) -> None:
    queue.append(key)  # runs inside the garbage collector: no lock


#: Seconds between orphan checks; a request must have ended this long ago before its
#: connection counts as outliving it (Django closes it in ``request_finished``, just before).
CHECK_INTERVAL = 0.5


class RequestInfo:
    """One HTTP request as Django serves it: method, then route and view once resolved."""

    __slots__ = ("ended_at", "method", "route", "view")

    def __init__(self, method: str | None) -> None:
        self.method = method
        self.route: str | None = None
        self.view: str | None = None
        self.ended_at: float | None = None

    def end(self) -> None:
        """The request is over (first call wins)."""
        if self.ended_at is None:
            self.ended_at = _monotonic()

    def attributes(self) -> dict[str, str]:
        found = {
            catalog.HTTP_METHOD: self.method,
            catalog.HTTP_ROUTE: self.route,
            catalog.DJANGO_VIEW: self.view,
        }
        return {key: value for key, value in found.items() if value is not None}


#: The request being served in this context (thread, or asyncio task and its sync threads).
CURRENT_REQUEST: contextvars.ContextVar[RequestInfo | None] = contextvars.ContextVar(
    "poolwatch_django_request", default=None
)


class ConnectionRecord:
    """One open Django connection: where, when, by which thread and in which request."""

    __slots__ = (
        "alias",
        "application_name",
        "backend_pid",
        "last_query_at",
        "last_site",
        "opened_at",
        "orphaned",
        "ref",
        "request",
        "site",
        "thread",
        "tracker",
    )

    def __init__(self, tracker: Tracker, alias: str, site: _sites.Site) -> None:
        self.tracker = tracker
        self.ref: weakref.ref[Any] | None = None
        self.alias = alias
        self.opened_at = self.last_query_at = _monotonic()
        self.site = site
        self.last_site: _sites.Site = ()
        self.thread = _current_thread()
        request = CURRENT_REQUEST.get()
        self.request = request if request is not None and request.ended_at is None else None
        #: Read from the live connection when it is reported (not on the hot path).
        self.backend_pid: int | None = None
        self.application_name: str | None = None
        #: Why it was found orphaned (None while it is not).
        self.orphaned: str | None = None

    def state(self, wrapper: Any, now: float) -> str:
        """The connection's state right now (orphaned wins over everything else)."""
        if self.orphaned is not None:
            return catalog.DJANGO_ORPHANED
        if in_transaction(wrapper):
            return catalog.DJANGO_IN_TRANSACTION
        request = self.request
        if request is not None and request.ended_at is None:
            return catalog.DJANGO_IN_REQUEST
        return catalog.DJANGO_IDLE


def backend_pid(connection: Any) -> int | None:
    """The PostgreSQL server process of a psycopg 3 or psycopg2 connection, else None."""
    info = getattr(connection, "info", None)
    pid = getattr(info, "backend_pid", None)
    if pid is None and hasattr(connection, "get_backend_pid"):
        pid = connection.get_backend_pid()
    return pid if isinstance(pid, int) else None


def _read_backend(record: ConnectionRecord, connection: Any) -> None:
    """The server process and ``application_name`` of an orphan, if its connection can say."""
    if connection is None:
        return
    try:
        record.backend_pid = backend_pid(connection)
        record.application_name = server_application_name(connection)
    except Exception:  # noqa: BLE001 - a closed or broken connection names no backend
        pass


def server_application_name(connection: Any) -> str | None:
    """The ``application_name`` PostgreSQL reports for a psycopg 3 connection, else None."""
    info = getattr(connection, "info", None)
    status = getattr(info, "parameter_status", None)
    name = status("application_name") if status is not None else None
    return name.decode() if isinstance(name, bytes) else name


def in_transaction(wrapper: Any) -> bool:
    """Whether Django has a transaction open on the wrapper (an atomic block, or autocommit off)."""
    return bool(wrapper.in_atomic_block) or wrapper.autocommit is False


def closes_at_request_end(wrapper: Any) -> bool:
    """``CONN_MAX_AGE = 0``: Django closes the connection when the request finishes."""
    return bool(wrapper.settings_dict.get("CONN_MAX_AGE") == 0)


class Tracker:
    """The open Django connections of one instrumentation, and what became of closed ones."""

    def __init__(self, telemetry: Instrumentation) -> None:
        self.telemetry = telemetry
        self.config = telemetry.config
        self.active = True
        self._lock = threading.Lock()
        self._check_lock = threading.Lock()
        self._records: dict[int, ConnectionRecord] = {}
        #: Keys of records whose wrapper was garbage-collected (appended inside the collector).
        self._collected: deque[int] = deque()
        self.opened: dict[str, int] = {}
        self.closed: dict[tuple[str, str], int] = {}
        self.orphans: dict[str, int] = {}
        self._aliases: dict[str, PoolRecorder | None] = {}
        #: Opening and last-query sites: the innermost application frame is what is reported
        #: (the whole stack with ``capture_stacks``), and walking less of the stack is cheaper.
        packages = self.config.library_packages
        self.sites = (
            telemetry.sites
            if self.config.capture_stacks
            else _sites.SiteCapture(1, library_packages=packages)
        )
        self.query_sites = _sites.SiteCapture(limit=1, library_packages=packages)
        self._checker: threading.Thread | None = None
        self._checker_generation = -1
        self._stop = threading.Event()
        #: Whether queries are seen (set by the adapter): idle orphans need the last query time.
        self.queries_seen = True

    # --- facts from the hooks -------------------------------------------------------------------

    def connection_opened(self, wrapper: Any, seconds: float, pooled: bool) -> ConnectionRecord:
        """``wrapper`` has just connected, taking ``seconds``."""
        alias: str = wrapper.alias
        record = ConnectionRecord(self, alias, self.sites.capture(3))
        key = id(record)
        record.ref = weakref.ref(wrapper, functools.partial(_append, self._collected, key))
        with self._lock:
            self._records[key] = record
            self.opened[alias] = self.opened.get(alias, 0) + 1
        standard = self._standard_recorder(alias, pooled, wrapper)
        if standard is not None:
            standard.connection_created(seconds)
        if self._checker_generation != _process.generation():
            self.ensure_checker()
        return record

    def connection_failed(self, alias: str, wrapper: Any, error: Exception) -> None:
        """Opening a connection for ``alias`` (without Django's pool) failed with ``error``."""
        recorder = self._standard_recorder(alias, False, wrapper)
        if recorder is not None:
            recorder.connection_failed(error)

    def connection_closed(self, record: ConnectionRecord, reason: str) -> None:
        """The connection of ``record`` was closed (or handed back to Django's pool)."""
        key = record.alias, reason
        with self._lock:
            if self._records.pop(id(record), None) is None:
                return
            self.closed[key] = self.closed.get(key, 0) + 1
        record.ref = None

    def _standard_recorder(self, alias: str, pooled: bool, wrapper: Any) -> PoolRecorder | None:
        """The ``db.client.connection.*`` recorder for ``alias`` (none when Django's pool,
        recorded by the psycopg_pool adapter, stands behind it)."""
        found = self._aliases.get(alias, _MISSING)
        if found is not _MISSING:
            return found  # type: ignore[return-value]
        with self._lock:
            if alias not in self._aliases:
                self._aliases[alias] = None if pooled else self._claim(alias, wrapper)
            return self._aliases[alias]

    def _claim(self, alias: str, wrapper: Any) -> PoolRecorder:
        """A recorder for ``alias``, named through the registry every adapter shares."""
        target = settings_target(wrapper.vendor, wrapper.settings_dict)
        recorder = self.telemetry.pool(pool_name(alias), self._reader(alias), target.attributes())
        recorder.rename(REGISTRY.claim(recorder.name, recorder, _LIBRARY, explicit=True))
        return recorder

    def _reader(self, alias: str) -> Any:
        def read_state() -> PoolState | None:
            if not self.active:
                return None
            counts = self.snapshot().get(alias)
            states = counts[0] if counts else Counter()
            used = states[catalog.DJANGO_IN_REQUEST] + states[catalog.DJANGO_IN_TRANSACTION]
            idle = states[catalog.DJANGO_IDLE] + states[catalog.DJANGO_ORPHANED]
            return PoolState(used=used, idle=idle)

        return read_state

    # --- reading --------------------------------------------------------------------------------

    def live(self) -> Iterator[tuple[ConnectionRecord, Any]]:
        """Every open connection whose wrapper is still alive, with that wrapper."""
        self.reap()
        with self._lock:
            records = list(self._records.values())
        for record in records:
            wrapper = record.ref() if record.ref is not None else None
            if wrapper is not None:
                yield record, wrapper

    def snapshot(self) -> dict[str, tuple[Counter[str], float, float]]:
        """Per alias: connections by state, the oldest connection's age, the longest idle time."""
        now = _monotonic()
        found: dict[str, tuple[Counter[str], float, float]] = {
            alias: (Counter(), 0.0, 0.0) for alias in self.known_aliases()
        }
        for record, wrapper in self.live():
            states, age, idle = found.setdefault(record.alias, (Counter(), 0.0, 0.0))
            states[record.state(wrapper, now)] += 1
            age = max(age, now - record.opened_at)
            idle = max(idle, now - record.last_query_at)
            found[record.alias] = (states, age, idle)
        return found

    def known_aliases(self) -> list[str]:
        with self._lock:
            return sorted(set(self.opened) | set(self._aliases))

    def counted(self, counts: dict[Any, int]) -> list[tuple[Any, int]]:
        """One of the tracker's counters, sorted, read under its lock."""
        with self._lock:
            return sorted(counts.items())

    def reap(self) -> None:
        """Count connections whose wrapper was garbage-collected while open."""
        while self._collected:
            try:
                key = self._collected.popleft()
            except IndexError:  # another thread took the last one
                return
            with self._lock:
                record = self._records.pop(key, None)
                if record is not None:
                    closed = record.alias, catalog.CLOSE_GARBAGE_COLLECTED
                    self.closed[closed] = self.closed.get(closed, 0) + 1

    # --- orphans --------------------------------------------------------------------------------

    def check(self) -> None:
        """Report connections that have just become orphans (and close certain ones, if asked)."""
        with self._check_lock:  # the checker thread, or anyone who wants a check right now
            self._check(_monotonic())

    def _check(self, now: float) -> None:
        # one connection at a time: a broken or closed one costs only its own report
        for record, wrapper in self.live():
            try:
                self._check_one(record, wrapper, now)
            except Exception as exc:  # noqa: BLE001 - the next connection is still checked
                _guard.internal_error("django.orphans", exc)

    def _check_one(self, record: ConnectionRecord, wrapper: Any, now: float) -> None:
        if record.orphaned is None:
            reason = self._orphan_reason(record, wrapper, now)
            if reason is not None:
                record.orphaned = reason
                with self._lock:
                    self.orphans[record.alias] = self.orphans.get(record.alias, 0) + 1
                _read_backend(record, wrapper.connection)
                self._report(record, reason, now)
        if self.config.close_orphans and not record.thread.is_alive():
            self._close_orphan(record, wrapper)

    def _orphan_reason(self, record: ConnectionRecord, wrapper: Any, now: float) -> str | None:
        """Why the connection is an orphan now, or None: a request that ended without closing
        it (named first: it is the cause), a dead thread, a transaction left idle, or a
        connection no request ever used left idle."""
        thread_dead = not record.thread.is_alive()
        request = record.request
        if (
            request is not None
            and request.ended_at is not None
            and (thread_dead or now - request.ended_at >= CHECK_INTERVAL)
            and closes_at_request_end(wrapper)
        ):
            return catalog.ORPHAN_REQUEST_ENDED
        if thread_dead:
            return catalog.ORPHAN_THREAD_DEAD
        if not self.queries_seen:
            return None  # idle since when? unknown: no idle orphan rather than a false one
        idle = now - record.last_query_at
        threshold = self.config.django_idle_in_transaction
        if threshold > 0 and idle >= threshold and in_transaction(wrapper):
            return catalog.ORPHAN_IDLE_IN_TRANSACTION
        outside = self.config.django_idle_outside_request
        if outside > 0 and idle >= outside and request is None:
            return catalog.ORPHAN_IDLE_OUTSIDE_REQUEST
        return None

    def _report(self, record: ConnectionRecord, reason: str, now: float) -> None:
        attributes: dict[str, Any] = {
            catalog.DJANGO_ALIAS: record.alias,
            catalog.ORPHAN_REASON: reason,
            catalog.THREAD_NAME: record.thread.name,
            catalog.CONNECTION_AGE: now - record.opened_at,
            catalog.CONNECTION_IDLE: now - record.last_query_at,
            catalog.LAST_QUERY_SITE: _sites.describe(record.last_site),
        }
        if record.thread.ident is not None:
            attributes[catalog.THREAD_ID] = record.thread.ident
        if record.request is not None:
            attributes.update(record.request.attributes())
        if record.backend_pid is not None:
            attributes[catalog.BACKEND_PID] = record.backend_pid
        if record.application_name is not None:
            attributes[catalog.BACKEND_APPLICATION] = record.application_name
        self.telemetry.orphaned(attributes, record.site)

    def _close_orphan(self, record: ConnectionRecord, wrapper: Any) -> None:
        """Close a dead thread's connection from the checker thread (nobody else can use it).

        ``close()`` itself refuses to run outside the owner thread, so the backend's own
        ``_close`` runs (it hands a pooled connection back to Django's pool).
        """
        try:
            wrapper._close()
        finally:
            wrapper.connection = None
            self.connection_closed(record, catalog.CLOSE_ORPHAN_REAPED)

    # --- the checker thread ---------------------------------------------------------------------

    def ensure_checker(self) -> None:
        """Start the orphan checker unless it runs in this process (a fork has none)."""
        with self._lock:
            if self._checker_generation == _process.generation() or not self.active:
                return
            self._checker_generation = _process.generation()
            self._checker = threading.Thread(
                target=self._run, name="poolwatch-django-orphans", daemon=True
            )
            self._checker.start()

    def after_fork(self) -> None:
        """In a forked child: fresh locks, no checker yet (the next connection starts one), and
        counts of the child's own; the parent's open connections are the parent's."""
        self._lock = threading.Lock()
        self._check_lock = threading.Lock()
        self._records.clear()
        self._collected.clear()
        self.opened.clear()
        self.closed.clear()
        self.orphans.clear()
        self._checker = None
        if self.active:
            self._stop = threading.Event()  # its lock may have been held by the parent's checker

    def _run(self) -> None:
        while not self._stop.wait(CHECK_INTERVAL):
            try:
                self.check()
            except Exception as exc:  # noqa: BLE001 - the boundary of the checker thread
                _guard.internal_error("django.orphans", exc)

    def shutdown(self) -> None:
        """Stop checking and reporting."""
        self.active = False
        self._stop.set()
        for recorder in self._aliases.values():
            if recorder is not None:
                self.telemetry.drop(recorder)
                REGISTRY.release(recorder)


def pool_name(alias: str) -> str:
    """The ``db.client.connection.pool.name`` of a Django alias (and of its psycopg pool):
    ``<service>:<alias>``, or ``django:<alias>`` with no service name. Also the connections'
    ``application_name``, so the service is seen in ``pg_stat_activity`` too."""
    return f"{service_name() or 'django'}:{alias}"


def service_name() -> str | None:
    """The service name the OpenTelemetry SDK will use, from its environment variables."""
    name = os.environ.get("OTEL_SERVICE_NAME", "").strip()
    if name:
        return name
    for pair in os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "").split(","):
        key, _, value = pair.partition("=")
        if key.strip() == "service.name" and value.strip():
            return value.strip()
    return None


def application_name(alias: str) -> str:
    """The alias's pool name, within PostgreSQL's 63 bytes: the join key between
    ``pg_stat_activity`` and the metrics."""
    return _naming.application_name(_naming.APPLICATION_NAME, pool_name(alias))


#: ``db.system.name`` of Django's database vendors, where the convention spells it differently.
_VENDOR_SYSTEMS = {"oracle": "oracle.db", "microsoft": "microsoft.sql_server"}


def settings_target(vendor: str, settings: dict[str, Any]) -> _naming.Target:
    """What a Django alias connects to, from its ``DATABASES`` entry."""
    system = _VENDOR_SYSTEMS.get(vendor, vendor)
    host = str(settings.get("HOST") or "") or None
    if system == "sqlite":
        host = None
    port = str(settings.get("PORT") or "")
    return _naming.Target(
        system,
        str(settings.get("NAME") or "") or None,
        host,
        int(port) if port.isdigit() else (_naming.default_port(system) if host else None),
    )
