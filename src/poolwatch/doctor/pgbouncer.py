"""What PgBouncer says (its admin console) and the doctor's rules for apps behind it.

Checks both sides of PgBouncer: the app pools' possible client connections against
``max_client_conn``, the server connections PgBouncer may open against PostgreSQL's usable slots,
the habits that break under transaction pooling, and (given the monitoring config) whether the
client-connections alert measures against PgBouncer's real ``max_client_conn``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from poolwatch.doctor.checks import HIGH_USE, Capacity, Settings
from poolwatch.doctor.findings import Finding, Level
from poolwatch.doctor.server import Server

if TYPE_CHECKING:
    # Type only: the monitoring extra (PyYAML) is needed only to load one.
    from poolwatch.monitoring.config import MonitoringConfig

#: The admin console's database.
CONSOLE = "pgbouncer"
#: PgBouncer tracks protocol-level prepared statements in transaction pooling from this release.
PREPARED_STATEMENTS_FROM = (1, 21)


@dataclass(frozen=True)
class BouncerDatabase:
    """One [databases] entry: its pool size (plus reserve), mode and per-database cap."""

    name: str
    pool_size: int
    reserve_pool: int
    pool_mode: str
    max_connections: int
    users: int

    @property
    def possible(self) -> int:
        """Server connections this database's pools may open (pool and reserve, every user)."""
        possible = (self.pool_size + self.reserve_pool) * self.users
        return min(possible, self.max_connections) if self.max_connections else possible


@dataclass(frozen=True)
class Bouncer:
    """PgBouncer's version, settings (SHOW CONFIG) and databases."""

    version: tuple[int, ...]
    config: dict[str, str]
    databases: list[BouncerDatabase]

    @property
    def max_client_conn(self) -> int:
        """The most client connections PgBouncer accepts."""
        return int(self.config["max_client_conn"])

    @property
    def possible_servers(self) -> int:
        """Server connections PgBouncer may open to PostgreSQL, all pools full."""
        return sum(database.possible for database in self.databases)

    def transaction_pooled(self) -> list[str]:
        """Databases pooled per transaction."""
        return [d.name for d in self.databases if d.pool_mode == "transaction"]


def console_url(url: str) -> str:
    """``url`` pointed at the admin console database."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{CONSOLE}"))


def _show(conn: Any, what: str) -> list[dict[str, Any]]:
    cursor = conn.execute(f"SHOW {what}")
    names = [column.name for column in cursor.description or ()]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _version(conn: Any) -> tuple[int, ...]:
    text = str(conn.execute("SHOW VERSION").fetchone()[0])
    found = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    return tuple(int(part) for part in found.groups() if part) if found else ()


def _databases(
    rows: list[dict[str, Any]], pools: list[dict[str, Any]], default_mode: str
) -> list[BouncerDatabase]:
    users: dict[str, set[str]] = {}
    for pool in pools:
        users.setdefault(pool["database"], set()).add(pool["user"])
    return [
        BouncerDatabase(
            name=row["name"],
            pool_size=int(row["pool_size"]),
            reserve_pool=int(row.get("reserve_pool") or 0),
            pool_mode=row.get("pool_mode") or default_mode,
            max_connections=int(row.get("max_connections") or 0),
            users=1 if row.get("force_user") else max(1, len(users.get(row["name"], ()))),
        )
        for row in rows
        if row["name"] != CONSOLE
    ]


def read_bouncer(url: str, timeout: float) -> Bouncer:
    """Read PgBouncer's admin console at ``url`` (any database name; the console is used)."""
    import psycopg

    # The console speaks only the simple query protocol: a ClientCursor sends it.
    with psycopg.connect(
        console_url(url),
        autocommit=True,
        connect_timeout=max(1, int(timeout)),
        cursor_factory=psycopg.ClientCursor,
    ) as conn:
        config = {str(row["key"]): str(row["value"]) for row in _show(conn, "CONFIG")}
        databases = _databases(
            _show(conn, "DATABASES"), _show(conn, "POOLS"), config.get("pool_mode", "session")
        )
        return Bouncer(_version(conn), config, databases)


def client_findings(app: Capacity | None, bouncer: Bouncer) -> list[Finding]:
    """Do the app pools, all full, fit in ``max_client_conn``?"""
    if app is None:
        return [Finding(Level.UNCHECKED, "pgbouncer.clients_unknown",
                        "app connections against PgBouncer's max_client_conn not checked: give "
                        "--pool-size (with --max-overflow, --workers, --replicas)")]  # fmt: skip
    limit = bouncer.max_client_conn
    share = f"{app.possible:g} possible app connections for max_client_conn {limit}"
    if app.possible > limit:
        return [Finding(Level.PROBLEM, "pgbouncer.clients_exceed_max_client_conn",
                        f"{share}: when every pool fills, PgBouncer refuses the rest "
                        "(no more connections allowed)")]  # fmt: skip
    if app.possible > HIGH_USE * limit:
        return [Finding(Level.WARNING, "pgbouncer.clients_near_max_client_conn",
                        f"{share} ({app.possible / limit:.0%}): little room for deploys "
                        "and consoles")]  # fmt: skip
    return [Finding(Level.OK, "pgbouncer.clients_fit", f"{share}: fits")]


def server_findings(bouncer: Bouncer, server: Server) -> list[Finding]:
    """Do PgBouncer's pools (pool_size + reserve_pool per database and user) fit in PostgreSQL?"""
    parts = " + ".join(
        f"{d.name} ({d.pool_size}+{d.reserve_pool}) x {d.users} user{'s' * (d.users != 1)}"
        + (f" capped at {d.max_connections}" if d.max_connections else "")
        for d in bouncer.databases
    )
    possible = bouncer.possible_servers
    share = (
        f"PgBouncer may open {possible} server connections ({parts}) for {server.usable} "
        "usable PostgreSQL slots"
    )
    if possible > server.usable:
        return [Finding(Level.PROBLEM, "pgbouncer.servers_exceed_postgres",
                        f"{share}: when its pools fill, PostgreSQL refuses connections "
                        "(too many clients already)")]  # fmt: skip
    if possible > HIGH_USE * server.usable:
        return [Finding(Level.WARNING, "pgbouncer.servers_near_postgres",
                        f"{share} ({possible / server.usable:.0%}): little room for other "
                        "clients")]  # fmt: skip
    return [Finding(Level.OK, "pgbouncer.servers_fit", f"{share}: fits")]


def transaction_findings(bouncer: Bouncer, settings: Settings) -> list[Finding]:
    """What breaks when a client's transactions run on different server connections."""
    pooled = bouncer.transaction_pooled()
    if not pooled:
        return []
    names = ", ".join(pooled)
    state = Finding(Level.WARNING, "pgbouncer.transaction_session_state",
                    f"transaction pooling ({names}): session state does not follow the client "
                    "from one transaction to the next (SET without LOCAL, LISTEN, advisory "
                    "locks, temporary tables, WITH HOLD cursors); keep it inside transactions "
                    "or use session pooling for what needs it")  # fmt: skip
    found = [state]
    if bouncer.version < PREPARED_STATEMENTS_FROM or bouncer.config.get(
        "max_prepared_statements", "0"
    ) in ("0", ""):
        found.append(Finding(Level.WARNING, "pgbouncer.transaction_prepared_statements",
                             f"transaction pooling ({names}) without max_prepared_statements "
                             f"(PgBouncer {'.'.join(map(str, bouncer.version))}; 1.21 and "
                             "later track them): a prepared statement is missing on the next "
                             "server connection; turn them off in the driver (psycopg "
                             "prepare_threshold=None, asyncpg statement_cache_size=0)"))  # fmt: skip
    if settings.conn_max_age:
        found.append(Finding(Level.WARNING, "pgbouncer.transaction_conn_max_age",
                             f"CONN_MAX_AGE={settings.conn_max_age:g} with transaction pooling "
                             f"({names}): Django's persistent connections carry session state "
                             "and server-side cursors across transactions; set "
                             "DISABLE_SERVER_SIDE_CURSORS = True, or CONN_MAX_AGE = 0"))  # fmt: skip
    return found


def alert_findings(bouncer: Bouncer, monitoring: MonitoringConfig) -> list[Finding]:
    """Does the monitoring config's ``pgbouncer_max_client_conn`` equal PgBouncer's limit?

    PgBouncer's monitor cannot read ``max_client_conn`` (see collector/pgbouncer.yaml), so the
    client-connections alert takes it from the monitoring config.
    """
    limit = bouncer.max_client_conn
    configured = monitoring.pgbouncer_max_client_conn
    real = f"PgBouncer's max_client_conn is {limit}"
    if configured is None:
        return [Finding(Level.WARNING, "pgbouncer.alert_limit_unset",
                        "the monitoring config sets no pgbouncer_max_client_conn, so the "
                        f"PgBouncer client-connections alert is left out; {real}: set it to "
                        "that and regenerate")]  # fmt: skip
    if configured != limit:
        return [Finding(Level.WARNING, "pgbouncer.alert_limit_differs",
                        f"the monitoring config's pgbouncer_max_client_conn is {configured} but "
                        f"{real}: the client-connections alert measures against the wrong "
                        "limit; set it to that and regenerate")]  # fmt: skip
    return [Finding(Level.OK, "pgbouncer.alert_limit_matches",
                    f"{real}, as the monitoring config's pgbouncer_max_client_conn says")]  # fmt: skip


def findings(
    bouncer: Bouncer,
    server: Server,
    settings: Settings,
    app: Capacity | None,
    *,
    monitoring: MonitoringConfig | None = None,
) -> list[Finding]:
    """Every PgBouncer rule; the alert's limit only when the monitoring config is given."""
    return [
        *client_findings(app, bouncer),
        *server_findings(bouncer, server),
        *transaction_findings(bouncer, settings),
        *(alert_findings(bouncer, monitoring) if monitoring is not None else ()),
    ]


def check(
    url: str,
    timeout: float,
    server: Server,
    settings: Settings,
    app: Capacity | None,
    *,
    monitoring: MonitoringConfig | None = None,
) -> list[Finding]:
    """Read PgBouncer at ``url`` and apply every rule; unreadable is an unchecked finding."""
    try:
        bouncer = read_bouncer(url, timeout)
    except Exception as exc:  # noqa: BLE001 - psycopg's errors, DNS, bad URLs: all "cannot read"
        return [Finding(Level.UNCHECKED, "pgbouncer.unreachable",
                        f"cannot read PgBouncer's admin console: {str(exc).strip()}")]  # fmt: skip
    return findings(bouncer, server, settings, app, monitoring=monitoring)
