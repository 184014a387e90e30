"""What PostgreSQL says: its connection limits, its timeouts, and who holds connections now."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

#: Settings the doctor reads; ``reserved_connections`` exists from PostgreSQL 16 on.
SETTINGS = (
    "max_connections",
    "superuser_reserved_connections",
    "reserved_connections",
    "idle_in_transaction_session_timeout",
    "idle_session_timeout",
)

_SETTINGS_QUERY = "SELECT name, setting, unit FROM pg_settings WHERE name = ANY(%s)"
_ACTIVITY_QUERY = (
    "SELECT application_name, coalesce(state, 'unknown'), count(*) FROM pg_stat_activity"
    " WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
    " GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2"
)
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "min": 60.0}


@dataclass(frozen=True)
class Holder:
    """Client connections of one application_name in one state."""

    application_name: str
    state: str
    connections: int


@dataclass(frozen=True)
class Server:
    """The server's limits and timeouts (seconds; 0 is off) and its client connections now."""

    max_connections: int
    superuser_reserved: int
    reserved: int | None
    idle_in_transaction_timeout: float
    idle_session_timeout: float | None
    holders: list[Holder] = field(default_factory=list)

    @property
    def usable(self) -> int:
        """Slots ordinary roles can take: max_connections less the reserved ones."""
        return self.max_connections - self.superuser_reserved - (self.reserved or 0)

    @property
    def in_use(self) -> int:
        """Client connections open now (this check's own excluded)."""
        return sum(holder.connections for holder in self.holders)

    @property
    def unnamed(self) -> int:
        """Client connections that set no application_name."""
        return sum(h.connections for h in self.holders if not h.application_name)

    def as_json(self) -> dict[str, Any]:
        """The server's part of ``--json``."""
        return {
            "max_connections": self.max_connections,
            "superuser_reserved_connections": self.superuser_reserved,
            "reserved_connections": self.reserved,
            "usable_connections": self.usable,
            "idle_in_transaction_session_timeout_seconds": self.idle_in_transaction_timeout,
            "idle_session_timeout_seconds": self.idle_session_timeout,
            "connections_now": self.in_use,
            "holders": [vars(holder) for holder in self.holders],
        }


def libpq_url(url: str) -> str:
    """A SQLAlchemy URL (``postgresql+psycopg://``) as libpq takes it (``postgresql://``)."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme.split('+', 1)[0]}{sep}{rest}" if sep else url


@contextmanager
def _connect(url: str, timeout: float) -> Iterator[Any]:
    import psycopg

    with psycopg.connect(
        libpq_url(url), connect_timeout=max(1, int(timeout)), application_name="poolwatch-doctor",
        autocommit=True,
    ) as connection:  # fmt: skip
        yield connection


def _seconds(setting: str, unit: str | None) -> float:
    return float(setting) * _UNIT_SECONDS.get(unit or "s", 1.0)


def read(url: str, timeout: float = 10.0) -> Server:
    """Read the settings and pg_stat_activity; raises ``psycopg.Error`` when it cannot."""
    with _connect(url, timeout) as connection:
        rows = connection.execute(_SETTINGS_QUERY, (list(SETTINGS),)).fetchall()
        activity = connection.execute(_ACTIVITY_QUERY).fetchall()
    settings = {name: (setting, unit) for name, setting, unit in rows}
    idle_session = settings.get("idle_session_timeout")
    reserved = settings.get("reserved_connections")
    return Server(
        max_connections=int(settings["max_connections"][0]),
        superuser_reserved=int(settings["superuser_reserved_connections"][0]),
        reserved=int(reserved[0]) if reserved else None,
        idle_in_transaction_timeout=_seconds(*settings["idle_in_transaction_session_timeout"]),
        idle_session_timeout=_seconds(*idle_session) if idle_session else None,
        holders=[Holder(name or "", state, int(count)) for name, state, count in activity],
    )
