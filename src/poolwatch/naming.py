"""Pool names: stable across restarts, unique within a process, and never holding a secret."""

from __future__ import annotations

import logging
import threading
import weakref
from typing import Any

_logger = logging.getLogger("poolwatch")


def url_pool_name(url: Any) -> str:
    """``backend://user@host:port/database`` from a SQLAlchemy URL, with no password or query.

    The driver is left out so a name survives a driver change (psycopg2 to psycopg); the query
    string is left out because it can carry credentials (``?password=``, ``sslkey=``).
    """
    backend = url.get_backend_name()
    user = f"{url.username}@" if url.username else ""
    host = url.host or ""
    port = f":{url.port}" if url.port else ""
    database = url.database or ""
    if host or user:
        return f"{backend}://{user}{host}{port}/{database}"
    return f"{backend}:///{database}" if database else f"{backend}://"


def dsn_pool_name(conninfo: str) -> str:
    """``postgresql://user@host:port/dbname`` from a libpq connection string, with no password."""
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(conninfo)
    user = f"{params['user']}@" if params.get("user") else ""
    host = str(params.get("host", ""))
    port = f":{params['port']}" if params.get("port") else ""
    return f"postgresql://{user}{host}{port}/{params.get('dbname', '')}"


class NameRegistry:
    """Hands out unique names: the first pool gets ``name``, later ones ``name#2``, ``name#3``.

    A name is released when its owner is garbage-collected or released, so a process that
    re-creates engines does not grow an unbounded set of names.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owners: dict[str, weakref.ref[Any]] = {}

    def claim(self, wanted: str, owner: Any) -> str:
        """Reserve a unique name derived from ``wanted`` for ``owner``."""
        with self._lock:
            candidate, n = wanted, 1
            while self._live(candidate):
                n += 1
                candidate = f"{wanted}#{n}"
            self._owners[candidate] = weakref.ref(owner)
            return candidate

    def release(self, owner: Any) -> None:
        """Free every name held by ``owner``."""
        with self._lock:
            for name, ref in list(self._owners.items()):
                if ref() is owner:
                    del self._owners[name]

    def after_fork(self) -> None:
        """In a forked child: a fresh lock (the parent's may have been held at the fork)."""
        self._lock = threading.Lock()

    def _live(self, name: str) -> bool:
        ref = self._owners.get(name)
        return ref is not None and ref() is not None


#: The default ``application_name`` poolwatch gives a pool's connections: the pool's name, so
#: ``pg_stat_activity`` rows match the ``db.client.connection.pool.name`` of the metrics.
APPLICATION_NAME = "{pool}"


def application_name(template: str, pool_name: str) -> str:
    """``template`` with ``{pool}`` replaced by the pool's name (no other field is formatted)."""
    return template.replace("{pool}", pool_name)
