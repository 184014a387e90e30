"""A saturated PgBouncer pool becomes an alert at the webhook that leads back to the app's pool.

An instrumented psycopg_pool pool (poolwatch names its connections' ``application_name`` after
the pool) sends ``WORKERS`` concurrent transactions through a real PgBouncer whose pool holds
``POOL_SIZE`` server connections, so the rest of the clients queue inside PgBouncer. The shipped
``collector/pgbouncer.yaml`` reads PgBouncer's admin console every 500 ms and forwards to the
shipped gateway, which remote-writes into Prometheus (both collectors' batches and the
remote-write flush shortened to 100 ms); Prometheus evaluates the generated rules every second
(``for:`` shortened through the monitoring config) and Alertmanager (``group_wait`` 100 ms)
notifies a webhook on loopback. Saturation starts once Prometheus holds the pool's zero waiting clients.
The clients-waiting alert must arrive naming PgBouncer's database and user, and PostgreSQL's
``pg_stat_activity`` must show the app pool's name on PgBouncer's server connections. The time
from the start of the saturation to the webhook is printed stage by stage (:class:`Timeline`)
against the rule's ``for:`` plus two evaluation intervals (informational; not asserted).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import psycopg
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
#: The test stack's own waits, short so that for: plus two evaluation intervals bounds the alert:
#: the monitor's query interval, both collectors' batch timeout, the gateway's remote-write flush
#: (shorter than the query interval, so every batch leaves as it arrives) and Alertmanager's
#: group_wait. The shipped defaults are 15 s, 2 s, 5 s; group_wait is Alertmanager's 30 s.
QUERY_INTERVAL = "500ms"
BATCH_TIMEOUT = "100ms"
FLUSH_INTERVAL = "100ms"
GROUP_WAIT = "100ms"
#: How often the watch polls PgBouncer and Prometheus, and how far back samples are read.
POLL_S = 0.05
LOOKBACK = "5m"


def monitor_env(bouncer: PgBouncer, gateway: pipeline.Collector) -> dict[str, str]:
    """pgbouncer.yaml pointed at the test PgBouncer and the gateway, querying every QUERY_INTERVAL."""
    return {
        "POOLWATCH_PGBOUNCER_HOST": bouncer.host,
        "POOLWATCH_PGBOUNCER_PORT": str(bouncer.port),
        "POOLWATCH_PGBOUNCER_USER": bouncer.user,
        "POOLWATCH_PGBOUNCER_PASSWORD": bouncer.password,
        "POOLWATCH_PGBOUNCER_INTERVAL": QUERY_INTERVAL,
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


class Watch:
    """Polls PgBouncer and Prometheus in a thread for the first waiting client each one shows.

    ``queued``: the first ``SHOW POOLS`` with a waiting client of the test pool (every
    ``POLL_S``); ``queryable``: the first instant query of Prometheus that returns it.
    """

    def __init__(self, bouncer: PgBouncer, backends: pipeline.Backends) -> None:
        self.bouncer = bouncer
        self.backends = backends
        self.queued: float | None = None
        self.queryable: float | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._poll, name="watch", daemon=True)

    def _poll(self) -> None:
        with self.bouncer.console() as console:
            while not self.stop.is_set() and (self.queued is None or self.queryable is None):
                # Each time is taken just before its request: the state it finds may be older.
                now = time.time()
                if self.queued is None and self._waiting(console):
                    self.queued = now
                now = time.time()
                if self.queryable is None and any(
                    value > 0 for value in waiting_in_prometheus(self.backends, self.bouncer)
                ):
                    self.queryable = now
                self.stop.wait(POLL_S)

    def _waiting(self, console: psycopg.Connection[Any]) -> bool:
        cursor = console.execute("SHOW POOLS")
        columns = [column.name for column in cursor.description or ()]
        rows = [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
        return any(
            row["database"] == self.bouncer.database and int(row["cl_waiting"]) > 0 for row in rows
        )

    def __enter__(self) -> Watch:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)


def first_sample(backends: pipeline.Backends, selector: str) -> float:
    """The timestamp of the earliest sample above 0 that Prometheus holds for ``selector``."""
    found = [
        float(when)
        for series in backends.query(f"{selector}[{LOOKBACK}]")
        for when, value in series["values"]
        if float(value) > 0
    ]
    assert found, f"no sample above 0 for {selector}"
    return min(found)


@dataclass(frozen=True)
class Timeline:
    """When each stage between saturation and the webhook happened (epoch seconds)."""

    saturated: float  # the app's workers start
    queued: float  # PgBouncer lists a waiting client (polled)
    sampled: float  # the monitor's query that saw it: the sample's timestamp in Prometheus
    queryable: float  # Prometheus answers a query with it (polled)
    pending: float  # the rule evaluation that made the alert pending (ALERTS)
    firing: float  # the rule evaluation that made it fire (ALERTS)
    notified: float  # Alertmanager's notification reaches the webhook

    STAGES: ClassVar[tuple[tuple[str, str, str], ...]] = (
        ("saturated", "queued", "saturation -> PgBouncer queue"),
        ("queued", "sampled", "queue -> monitor query"),
        ("sampled", "queryable", "query -> queryable in Prometheus"),
        ("queryable", "pending", "queryable -> pending"),
        ("pending", "firing", "pending -> firing"),
        ("firing", "notified", "firing -> webhook"),
        ("saturated", "notified", "total"),
    )

    def stages(self) -> dict[str, float]:
        """Seconds each stage took, in order, and the total."""
        return {name: getattr(self, end) - getattr(self, start) for start, end, name in self.STAGES}


def alert_timeline(
    backends: pipeline.Backends, watch: Watch, saturated: float, notified: float
) -> Timeline:
    """The stages of one alert, from the watch, Prometheus's samples and ALERTS, and the webhook."""
    assert watch.queued is not None and watch.queryable is not None, vars(watch)
    waiting = (
        f'{names.prometheus_name(catalog.PGB_CLIENTS)}{{job="pgbouncer", '
        f'{catalog.PGB_STATE}="waiting", {catalog.PGB_DATABASE}="{watch.bouncer.database}"}}'
    )
    alert = f'ALERTS{{alertname="{ALERT}", {catalog.PGB_DATABASE}="{watch.bouncer.database}"'
    return Timeline(
        saturated=saturated,
        queued=watch.queued,
        sampled=first_sample(backends, waiting),
        queryable=watch.queryable,
        pending=first_sample(backends, alert + ', alertstate="pending"}'),
        firing=first_sample(backends, alert + ', alertstate="firing"}'),
        notified=notified,
    )


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
    backends = pipeline.start_backends(tmp_path, processes, webhook, RULES, group_wait=GROUP_WAIT)
    batch = pipeline.write_yaml(
        tmp_path / "batch.yaml", {"processors": {"batch": {"timeout": BATCH_TIMEOUT}}}
    )
    gateway = pipeline.start_collector(
        processes,
        "gateway",
        [COLLECTOR_DIR / "gateway.yaml", batch],
        {**pipeline.gateway_env(backends), "POOLWATCH_REMOTE_WRITE_FLUSH_INTERVAL": FLUSH_INTERVAL},
    )
    pipeline.start_collector(
        processes, "pgbouncer-monitor", [COLLECTOR_DIR / "pgbouncer.yaml", batch],
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
    with Watch(bouncer, backends) as watch, Saturation(pool) as saturation:
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
    timeline = alert_timeline(backends, watch, saturation.started, arrived)
    # The rule saw the monitor's sample (evaluations read samples at or before their time) and
    # held for its whole for: before firing.
    assert timeline.sampled <= timeline.pending, timeline
    held_ms = round((timeline.firing - timeline.pending) * 1000)  # Prometheus keeps ms
    assert held_ms >= config.seconds(WAITING_FOR) * 1000, timeline
    stages = " | ".join(f"{name} {took:.2f}" for name, took in timeline.stages().items())
    print(
        f"\n{ALERT} stages (s): {stages} (budget: for: {WAITING_FOR} + 2 x {interval} s "
        f"evaluation = {budget} s); {saturation.transactions} transactions ran"
    )
