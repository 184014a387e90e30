"""Pool names and identities: one registry for every adapter, names stable and password-free.

A pool is named by the user (``pool_name=``, ``pool_logging_name``, psycopg_pool's ``name``, a
Django alias) or, failing that, as OpenTelemetry's conventions name unnamed pools: its
``db.namespace``, else its server (``host:port``), else its ``db.system.name``, else its library.
Every pool also carries its :class:`Target` as the identity attributes of every metric point.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any, Final

from poolwatch import _process, _state, catalog

_logger = logging.getLogger("poolwatch")

#: ``db.system.name`` of a SQLAlchemy backend, where the convention spells it differently.
_SYSTEMS: Final = {"mssql": "microsoft.sql_server", "oracle": "oracle.db"}
#: The port a client uses when none is given, per ``db.system.name``.
_DEFAULT_PORTS: Final = {
    "postgresql": 5432,
    "mysql": 3306,
    "mariadb": 3306,
    "microsoft.sql_server": 1433,
    "oracle.db": 1521,
}
#: ``db.system.name`` of a pool whose database poolwatch cannot tell (a bare pool's creator).
OTHER_SYSTEM: Final = "other_sql"
#: Seconds between two garbage collections a name collision may trigger.
COLLECT_EVERY: Final = 60.0
#: PostgreSQL keeps this many bytes of ``application_name``.
APPLICATION_NAME_BYTES: Final = 63


@dataclass(frozen=True)
class Target:
    """What a pool connects to: the ``db.system.name``, ``db.namespace`` and server it reports."""

    system: str
    namespace: str | None = None
    address: str | None = None
    port: int | None = None

    def attributes(self) -> dict[str, str | int]:
        """The identity attributes, leaving out what is unknown."""
        found: dict[str, str | int] = {catalog.DB_SYSTEM: self.system or OTHER_SYSTEM}
        if self.namespace:
            found[catalog.DB_NAMESPACE] = self.namespace
        if self.address:
            found[catalog.SERVER_ADDRESS] = self.address
            if self.port:
                found[catalog.SERVER_PORT] = self.port
        return found

    def derived_name(self, library: str) -> str:
        """The name of an unnamed pool: namespace, else server, else system, else library."""
        if self.namespace:
            return self.namespace
        if self.address:
            return f"{self.address}:{self.port}" if self.port else self.address
        return self.system or library

    @classmethod
    def unknown(cls) -> Target:
        """A pool whose database cannot be told (named after its library)."""
        return cls("")


def default_port(system: str) -> int | None:
    """The port a client of ``system`` uses when none is given."""
    return _DEFAULT_PORTS.get(system)


def url_target(url: Any) -> Target:
    """The target of a SQLAlchemy URL (the password and query never enter it)."""
    backend = url.get_backend_name()
    system = _SYSTEMS.get(backend, backend)
    port = url.port or (_DEFAULT_PORTS.get(system) if url.host else None)
    return Target(system, url.database or None, url.host or None, port)


def dsn_target(conninfo: str) -> Target:
    """The target of a libpq connection string (``PG*`` variables fill what it leaves out)."""
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(conninfo)

    def value(key: str, env: str) -> str | None:
        found = params.get(key) or os.environ.get(env)
        return str(found) if found else None

    host = value("host", "PGHOST")
    # several hosts (failover): the first one is the one libpq tries first
    host = host.split(",")[0] if host else None
    port = value("port", "PGPORT")
    port = port.split(",")[0] if port else None
    return Target(
        "postgresql",
        value("dbname", "PGDATABASE"),
        host,
        int(port) if port and port.isdigit() else (5432 if host else None),
    )


class Claim:
    """One pool's hold on a name.

    The owner (held weakly) may offer ``drained() -> bool`` (it opened connections and has none
    open now) and ``rename(name)`` (it is reported under another name from now on).
    """

    __slots__ = ("explicit", "library", "name", "owner", "wanted")

    def __init__(self, wanted: str, owner: Any, library: str, explicit: bool) -> None:
        self.wanted = wanted
        self.name = wanted
        self.owner = weakref.ref(owner)
        self.library = library
        self.explicit = explicit

    def alive(self) -> bool:
        return self.owner() is not None

    def yields(self) -> bool:
        """Whether the pool gives its name up to a newcomer: it opened connections, and has
        none open now (disposed, closed, or a ``NullPool`` engine done with its work)."""
        drained = getattr(self.owner(), "drained", None)
        try:
            return drained is not None and bool(drained())
        except Exception:  # noqa: BLE001 - a pool that cannot tell keeps its name
            return False

    def moved(self) -> None:
        rename = getattr(self.owner(), "rename", None)
        if rename is not None:
            rename(self.name)


class NameRegistry:
    """Hands out pool names, unique within the process, for every adapter.

    The rules, in order:

    * a free name goes to whoever asks for it;
    * a name held by a pool that opened connections and has none open now (an engine disposed,
      a pool closed, a ``NullPool`` migration engine done with its work, an engine the
      application dropped: the garbage collector runs once before the decision, at most once
      per :data:`COLLECT_EVERY` seconds) passes to the newcomer, and the old holder is reported
      under a suffixed name from then on;
    * otherwise the newcomer gets a suffix: ``#<library>`` when the holder is another library's
      pool (an SQLAlchemy engine and a psycopg pool on one database never share a series), else
      ``#2``, ``#3``, ... (two explicit pools asking for one name also get a warning).

    A pool that never connected keeps its name, so an application engine made at import is
    not displaced by a migration engine made at startup. Names are released when their pool is
    released or garbage-collected, so re-creating engines does not grow the set of names.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._claims: dict[str, Claim] = {}
        self._collected_at: float | None = None

    def claim(
        self,
        wanted: str,
        owner: Any,
        library: str = "",
        explicit: bool = False,
    ) -> str:
        """Reserve a name derived from ``wanted`` for ``owner`` (held weakly) and return it.

        When the holder of ``wanted`` keeps it, the garbage collector runs once (at most once
        per :data:`COLLECT_EVERY` seconds) before the newcomer settles for a suffix: an engine
        the application dropped (a migration engine with an idle connection) is often only
        unreachable, waiting for a collection, and once collected it yields its name.
        """
        claim = Claim(wanted, owner, library, explicit)
        with self._lock:
            holder = self._live(wanted)
            collect = holder is not None and not holder.yields() and self._may_collect()
        if collect:
            gc.collect()
        with self._lock:
            moved = self._place(claim)
        if moved is not None:
            moved.moved()
        return claim.name

    def _may_collect(self) -> bool:
        now = time.monotonic()
        if self._collected_at is not None and now - self._collected_at < COLLECT_EVERY:
            return False
        self._collected_at = now
        return True

    def _place(self, claim: Claim) -> Claim | None:
        """Give ``claim`` its name (under the lock); returns the holder it displaced, if any."""
        wanted, moved = claim.wanted, None
        holder = self._live(wanted)
        if holder is None:
            claim.name = wanted
        elif holder.yields():
            claim.name = wanted
            holder.name = self._suffixed(holder.wanted, holder.library, claim.library)
            self._claims[holder.name] = moved = holder
        else:
            claim.name = self._suffixed(wanted, claim.library, holder.library)
            if claim.explicit and holder.explicit:
                _logger.warning(
                    "poolwatch: two pools are named %r; the later one is reported as %r",
                    wanted,
                    claim.name,
                )
        self._claims[claim.name] = claim
        return moved

    def release(self, owner: Any) -> None:
        """Free every name held by ``owner``."""
        with self._lock:
            for name, claim in list(self._claims.items()):
                if claim.owner() is owner:
                    del self._claims[name]

    def names(self) -> dict[str, str]:
        """Every name held right now, with the library of its pool."""
        with self._lock:
            return {name: c.library for name, c in self._claims.items() if c.alive()}

    def clear(self) -> None:
        """Forget every name (tests, and a process that starts over)."""
        with self._lock:
            self._claims.clear()
            self._collected_at = None

    def after_fork(self) -> None:
        """In a forked child: a fresh lock (the parent's may have been held by another thread);
        the names stay, as the child inherits the pools that hold them."""
        self._lock = threading.Lock()

    def _live(self, name: str) -> Claim | None:
        claim = self._claims.get(name)
        if claim is not None and not claim.alive():
            del self._claims[name]
            return None
        return claim

    def _suffixed(self, wanted: str, library: str, holder_library: str) -> str:
        base = f"{wanted}#{library}" if library and library != holder_library else wanted
        if base != wanted and self._live(base) is None:
            return base
        n = 2
        while self._live(f"{base}#{n}") is not None:
            n += 1
        return f"{base}#{n}"


#: The one registry every adapter names its pools through.
REGISTRY: Final = NameRegistry()
_state.on_reset(REGISTRY.clear)
_process.on_fork("naming", REGISTRY.after_fork)


#: The default ``application_name`` poolwatch gives a pool's connections: the pool's name, so
#: ``pg_stat_activity`` rows match the ``db.client.connection.pool.name`` of the metrics.
APPLICATION_NAME = "{pool}"


def application_name(template: str, pool_name: str) -> str:
    """``template`` with ``{pool}`` replaced by the pool's name (no other field is formatted),
    cut to the bytes PostgreSQL keeps."""
    name = template.replace("{pool}", pool_name)
    return name.encode()[:APPLICATION_NAME_BYTES].decode(errors="ignore")
