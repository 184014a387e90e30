"""A saturated PgBouncer pool becomes an alert at the webhook that leads back to the app's pool.

An instrumented psycopg_pool pool (poolwatch names its connections' ``application_name`` after
the pool) sends ``WORKERS`` concurrent transactions through a real PgBouncer whose pool holds
``POOL_SIZE`` server connections, so the rest of the clients queue inside PgBouncer. The shipped
``collector/pgbouncer.yaml`` reads PgBouncer's admin console every second and forwards to the
shipped gateway, which remote-writes into Prometheus; Prometheus evaluates the generated rules
every second (``for:`` shortened through the monitoring config) and Alertmanager notifies a
webhook on loopback. Saturation starts once Prometheus holds the pool's zero waiting clients.
The clients-waiting alert must arrive naming PgBouncer's database and user, and PostgreSQL's
``pg_stat_activity`` must show the app pool's name on PgBouncer's server connections. The time
from the start of the saturation to the webhook is printed against the rule's ``for:`` plus two
evaluation intervals (informational; not asserted).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from psycopg_pool import ConnectionPool

import poolwatch
from poolwatch import catalog
from poolwatch.monitoring import config, names
from tests.support import pipeline
from tests.support.exhaustion import RULE_SETTINGS
from tests.support.pgbouncer import PgBouncer
from tests.support.pipeline import COLLECTOR_DIR, Processes, Webhook
from tests.support.postgres import PostgresCluster

ALERT = "PoolwatchPgBouncerClientsWaiting"
APP_POOL = "e2e-bouncer-orders"
#: PgBouncer's server connections per database/user pair, and the app's concurrent transactions.
POOL_SIZE = 2
WORKERS = 6
#: Each transaction holds its server connection this long.
HOLD_S = 0.5
#: Every worker stops by itself after this long, alert or not.
SATURATION_LIMIT_S = 120.0
WAITING_FOR = "5s"
RULES: dict[str, Any] = {
    **RULE_SETTINGS,
    "thresholds": {
        **RULE_SETTINGS["thresholds"],
        "pgbouncer_clients_waiting": {"warning_for": WAITING_FOR},
    },
}
ALERT_TIMEOUT = 90.0


def monitor_env(bouncer: PgBouncer, gateway: pipeline.Collector) -> dict[str, str]:
    """pgbouncer.yaml pointed at the test PgBouncer and the gateway, querying every second."""
    return {
        "POOLWATCH_PGBOUNCER_HOST": bouncer.host,
        "POOLWATCH_PGBOUNCER_PORT": str(bouncer.port),
        "POOLWATCH_PGBOUNCER_USER": bouncer.user,
        "POOLWATCH_PGBOUNCER_PASSWORD": bouncer.password,
        "POOLWATCH_PGBOUNCER_INTERVAL": "1s",
        "POOLWATCH_GATEWAY_ENDPOINT": gateway.otlp_grpc,
    }


@pytest.fixture
def app_pool(
    pgbouncer: Callable[..., PgBouncer],
) -> Iterator[tuple[PgBouncer, ConnectionPool[Any]]]:
    """An instrumented psycopg_pool pool of WORKERS connections through a PgBouncer of POOL_SIZE."""
    bouncer = pgbouncer(default_pool_size=POOL_SIZE, max_client_conn=50)
    pool: ConnectionPool[Any] = ConnectionPool(
        bouncer.url(),
        # One connection from the start: PgBouncer lists a pool once a client logged in to it.
        min_size=1,
        max_size=WORKERS,
        # PgBouncer 1.18 in transaction pooling cannot keep server-side prepared statements.
        kwargs={"prepare_threshold": None},
        name=APP_POOL,
        open=False,
    )
    poolwatch.instrument_psycopg_pool(pool, meter_provider=MeterProvider())
    pool.open(wait=True, timeout=30)
    try:
        yield bouncer, pool
    finally:
        pool.close()
        poolwatch.uninstrument_psycopg_pool(pool)


class Saturation:
    """WORKERS threads, each looping over HOLD_S transactions until stopped or out of time."""

    def __init__(self, pool: ConnectionPool[Any]) -> None:
        self.pool = pool
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.transactions = 0
        self.lock = threading.Lock()
        self.threads = [
            threading.Thread(target=self._work, name=f"saturate-{n}", daemon=True)
            for n in range(WORKERS)
        ]

    def _work(self) -> None:
        deadline = time.monotonic() + SATURATION_LIMIT_S
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                with self.pool.connection(timeout=30) as conn, conn.transaction():
                    conn.execute("SELECT pg_sleep(%s)", (HOLD_S,))
            except Exception as exc:  # reported by the test, never swallowed
                self.errors.append(exc)
                return
            with self.lock:
                self.transactions += 1

    def __enter__(self) -> Saturation:
        self.started = time.time()
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)


def server_applications(bouncer: PgBouncer, postgres: PostgresCluster) -> list[str]:
    """application_name of PgBouncer's server connections for the test database, joined by port.

    SHOW SERVERS gives each server connection's local port; pg_stat_activity's client_port is
    the same socket seen from PostgreSQL.
    """
    ports = [
        int(row["local_port"])
        for row in bouncer.show("SERVERS")
        if row["database"] == bouncer.database and row["user"] == bouncer.user
    ]
    with postgres.admin_connection() as admin:
        rows = admin.execute(
            "SELECT application_name FROM pg_stat_activity WHERE client_port = ANY(%s)", (ports,)
        ).fetchall()
    return [row[0] for row in rows]


def waiting_in_prometheus(backends: pipeline.Backends, bouncer: PgBouncer) -> list[float]:
    """The waiting-clients values Prometheus holds for the test database and user."""
    series = names.prometheus_name(catalog.PGB_CLIENTS)
    query = (
        f'{series}{{job="pgbouncer", {catalog.PGB_STATE}="waiting", '
        f'{catalog.PGB_DATABASE}="{bouncer.database}", {catalog.PGB_USER}="{bouncer.user}"}}'
    )
    return [float(item["value"][1]) for item in backends.query(query)]


@pytest.mark.postgres
@pytest.mark.slow
def test_saturated_pgbouncer_pool_alert_reaches_the_webhook_and_names_the_app_pool(
    tmp_path: Path,
    processes: Processes,
    webhook: Webhook,
    postgres: PostgresCluster,
    app_pool: tuple[PgBouncer, ConnectionPool[Any]],
) -> None:
    """Clients queue in PgBouncer: the waiting alert names its database and user, and the server
    connections it waits for carry the app pool's name in pg_stat_activity."""
    bouncer, pool = app_pool
    backends = pipeline.start_backends(tmp_path, processes, webhook, RULES)
    gateway = pipeline.start_collector(
        processes, "gateway", [COLLECTOR_DIR / "gateway.yaml"], pipeline.gateway_env(backends)
    )
    pipeline.start_collector(
        processes, "pgbouncer-monitor", [COLLECTOR_DIR / "pgbouncer.yaml"],
        monitor_env(bouncer, gateway),
    )  # fmt: skip
    # The pipeline carries the pool's zero first: the alert starts quiet, and the measurement
    # starts from a pipeline already flowing.
    pipeline.wait_for(
        "PgBouncer's waiting clients (0) in Prometheus",
        lambda: waiting_in_prometheus(backends, bouncer) == [0.0],
        processes,
        ALERT_TIMEOUT,
    )
    assert (ALERT, "warning") not in webhook.arrivals()
    with Saturation(pool) as saturation:
        pipeline.wait_for(
            f"{ALERT} at the webhook",
            lambda: (ALERT, "warning") in webhook.arrivals() or bool(saturation.errors),
            processes,
            ALERT_TIMEOUT,
            context=lambda: str(backends.firing()),
        )
        applications = server_applications(bouncer, postgres)
        waiting = [row for row in bouncer.show("POOLS") if row["database"] == bouncer.database]
    assert not saturation.errors, saturation.errors
    arrived, alert, receiver = webhook.arrivals()[(ALERT, "warning")]
    assert receiver == pipeline.RECEIVER
    labels = alert["labels"]
    assert {k: labels.get(k) for k in ("job", "instance", "database", "user")} == {
        "job": "pgbouncer",
        "instance": f"{bouncer.host}:{bouncer.port}",
        catalog.PGB_DATABASE: bouncer.database,
        catalog.PGB_USER: bouncer.user,
    }
    # PgBouncer's pool was full of the app's transactions, with clients queued behind them.
    assert sum(int(row["cl_waiting"]) for row in waiting) >= 1, waiting
    assert len(applications) == POOL_SIZE and set(applications) == {APP_POOL}, applications
    interval = config.seconds(RULES["rule_interval"])
    budget = config.seconds(WAITING_FOR) + 2 * interval
    print(
        f"\n{ALERT}: saturation start -> webhook {arrived - saturation.started:.1f} s "
        f"(for: {WAITING_FOR} + 2 x {interval} s evaluation = {budget} s; monitor query every "
        f"1 s, its batch 2 s, gateway remote write every {pipeline.REMOTE_WRITE_FLUSH_INTERVAL}, "
        f"Alertmanager group_wait 1 s); {saturation.transactions} transactions ran"
    )
