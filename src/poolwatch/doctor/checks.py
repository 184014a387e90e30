"""The doctor's rules: each takes what it knows and returns findings in plain words."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from poolwatch.doctor.findings import Finding, Level
from poolwatch.doctor.observed import ObservedPool
from poolwatch.doctor.server import Server

#: Above this share of a limit a pool or a server is close enough to exhaustion to warn.
HIGH_USE = 0.8
#: SQLAlchemy's default ``max_overflow``, used when only ``--pool-size`` is given.
DEFAULT_MAX_OVERFLOW = 10


@dataclass(frozen=True)
class Settings:
    """What the user told the doctor about their deployment (None: not told)."""

    pool_size: int | None = None
    max_overflow: int | None = None
    workers: int = 1
    replicas: int = 1
    pool_pre_ping: bool | None = None
    pool_recycle: float | None = None
    conn_max_age: float | None = None
    asgi: bool = False
    network_idle_timeout: float | None = None


@dataclass(frozen=True)
class Capacity:
    """Client connections the deployment may open, how that was worked out, and the server's room."""

    possible: float
    formula: str
    source: str
    usable: int

    def as_json(self) -> dict[str, Any]:
        """The capacity part of ``--json``."""
        return vars(self) | {"share_of_usable": round(self.possible / self.usable, 4)}


def capacity(settings: Settings, server: Server, pools: list[ObservedPool]) -> Capacity | None:
    """Possible connections from the flags, else from the pools Prometheus saw; None if neither."""
    if settings.pool_size is not None:
        overflow = DEFAULT_MAX_OVERFLOW if settings.max_overflow is None else settings.max_overflow
        possible = (settings.pool_size + overflow) * settings.workers * settings.replicas
        formula = (
            f"(pool_size {settings.pool_size} + max_overflow {overflow}) x "
            f"{settings.workers} workers x {settings.replicas} replicas = {possible}"
        )
        return Capacity(possible, formula, "flags", server.usable)
    if pools:
        possible_observed = sum(pool.max for pool in pools)
        parts = " + ".join(f"{pool.pool} {pool.max:g}" for pool in pools)
        formula = f"{parts} = {possible_observed:g} (max of every process seen)"
        return Capacity(possible_observed, formula, "prometheus", server.usable)
    return None


def capacity_findings(found: Capacity | None) -> list[Finding]:
    """Will the pools, all full at once, fit in the server's usable slots?"""
    if found is None:
        return [Finding(Level.UNCHECKED, "capacity.unknown",
                        "total possible connections not checked: give --pool-size (with "
                        "--max-overflow, --workers, --replicas) or --prometheus-url")]  # fmt: skip
    share = f"{found.possible:g} possible connections for {found.usable} usable server slots"
    if found.possible > found.usable:
        return [Finding(Level.PROBLEM, "capacity.exceeds_server",
                        f"{share}: when every pool fills, new connections are refused "
                        "(too many clients already)")]  # fmt: skip
    if found.possible > HIGH_USE * found.usable:
        return [Finding(Level.WARNING, "capacity.near_server",
                        f"{share} ({found.possible / found.usable:.0%}): little room for "
                        "deploys, migrations and consoles")]  # fmt: skip
    return [Finding(Level.OK, "capacity.ok", f"{share}: fits")]


def pool_findings(pool: ObservedPool) -> list[Finding]:
    """Does the observed load fit the pool (Little's law), and did it run dry?"""
    name, found = f"pool {pool.pool} of {pool.service or 'unknown service'}", []
    load = pool.littles_law
    if load is not None and load >= pool.max:
        found.append(Finding(Level.PROBLEM, "pool.undersized",
                             f"{name}: the load keeps {load:.2f} connections busy on average "
                             f"(Little's law), at or above its max {pool.max:g}: it queues "
                             "and times out"))  # fmt: skip
    elif load is not None and load > HIGH_USE * pool.max:
        found.append(Finding(Level.WARNING, "pool.near_capacity",
                             f"{name}: the load keeps {load:.2f} connections busy on average, "
                             f"over {HIGH_USE:.0%} of its max {pool.max:g}"))  # fmt: skip
    if pool.peak_used is not None and pool.peak_used >= pool.max:
        found.append(Finding(Level.WARNING, "pool.reached_max",
                             f"{name}: every connection was in use at the peak "
                             f"({pool.peak_used:g} of {pool.max:g})"))  # fmt: skip
    if pool.timeouts_per_second:
        found.append(Finding(Level.WARNING, "pool.timeouts",
                             f"{name}: {pool.timeouts_per_second:.3g} checkouts per second "
                             "gave up waiting"))  # fmt: skip
    return found or [Finding(Level.OK, "pool.ok", f"{name}: the observed load fits")]


def _recycle_findings(settings: Settings, server: Server) -> list[Finding]:
    recycle = settings.pool_recycle
    long_lived = recycle is None or recycle <= 0
    found = []
    if settings.pool_pre_ping is False and long_lived:
        found.append(Finding(Level.WARNING, "settings.no_pre_ping",
                             "no pool_pre_ping and no pool_recycle: a connection closed by the "
                             "server, a proxy or a failover is found broken only when a request "
                             "uses it"))  # fmt: skip
    timeouts = [t for t in (server.idle_session_timeout, settings.network_idle_timeout) if t]
    if recycle is not None and timeouts and (long_lived or recycle >= min(timeouts)):
        found.append(Finding(Level.WARNING, "settings.recycle_after_idle_timeout",
                             f"pool_recycle {'never' if long_lived else f'{recycle:g}s'} is not "
                             f"shorter than the idle timeout of {min(timeouts):g}s between the "
                             "app and the server: idle pooled connections get cut"))  # fmt: skip
    return found


def settings_findings(settings: Settings, server: Server) -> list[Finding]:
    """Risky settings the doctor can see or was told about."""
    found = _recycle_findings(settings, server)
    if settings.asgi and settings.conn_max_age is not None and settings.conn_max_age != 0:
        found.append(Finding(Level.WARNING, "settings.conn_max_age_asgi",
                             f"CONN_MAX_AGE={settings.conn_max_age:g} under ASGI: each request "
                             "may run in a new thread, so persistent connections pile up "
                             "instead of being reused"))  # fmt: skip
    if server.idle_in_transaction_timeout == 0:
        found.append(Finding(Level.WARNING, "server.no_idle_in_transaction_timeout",
                             "idle_in_transaction_session_timeout is off: a connection left in "
                             "an open transaction holds its slot and its locks forever"))  # fmt: skip
    if server.unnamed:
        found.append(Finding(Level.WARNING, "server.unnamed_connections",
                             f"{server.unnamed} connections set no application_name: nobody can "
                             "tell which service holds them"))  # fmt: skip
    return found
