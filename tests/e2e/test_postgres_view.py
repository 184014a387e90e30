"""PostgreSQL's own view of its connections, from a real server to Prometheus.

The test session's throwaway PostgreSQL holds a known set of client connections: idle ones and
idle-in-transaction ones, under three application names, two users and two databases.
``collector/postgres.yaml`` (the shipped monitor: sqlquery and postgresql receivers, every
second here) forwards to ``collector/gateway.yaml``, which remote-writes into Prometheus. Every
count must arrive exactly, the oldest-idle ages must be plausible, ``max_connections`` must be the
server's setting, and the postgresql receiver's standard metrics must arrive too.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from poolwatch import catalog
from poolwatch.monitoring import names
from tests.support import pipeline
from tests.support.exhaustion import RULE_SETTINGS
from tests.support.pipeline import COLLECTOR_DIR, Processes, Webhook
from tests.support.postgres import PostgresCluster

MONITOR_USER = "poolwatch_e2e_monitor"
MONITOR_PASSWORD = "monitor-secret"
OTHER_USER = "poolwatch_e2e_reporter"
#: (application_name, user, database, idle, idle in transaction) the server is made to hold.
HELD = (
    ("e2e-web", "poolwatch", "poolwatch", 3, 0),
    ("e2e-worker", "poolwatch", "poolwatch", 1, 2),
    ("e2e-report", OTHER_USER, "postgres", 2, 1),
)
#: Every state postgres.yaml always reports (0 when empty).
STATES = ("active", "idle", "idle in transaction", "idle in transaction (aborted)")
CONNECTIONS = names.prometheus_name(catalog.PG_CONNECTIONS)
OLDEST_IDLE = names.prometheus_name(catalog.PG_OLDEST_IDLE)
OLDEST_IN_TX = names.prometheus_name(catalog.PG_OLDEST_IDLE_IN_TRANSACTION)
MAX_CONNECTIONS = names.prometheus_name(catalog.PG_MAX_CONNECTIONS)
APPLICATION = names.prometheus_label(catalog.PG_APPLICATION)
USER = names.prometheus_label(catalog.PG_USER)
DATABASE = names.prometheus_label(catalog.PG_DATABASE)
STATE = names.prometheus_label(catalog.PG_STATE)
JOB = names.SERVICE_LABEL
#: How long the test waits for the monitor's first complete set of series.
DATA_TIMEOUT = 90.0
#: Slack for the ages: query, export, batch and remote-write delays on a busy machine.
AGE_SLACK_S = 30.0


@pytest.fixture
def roles(postgres: PostgresCluster) -> Iterator[None]:
    """A pg_monitor role for the collector and a second ordinary user; dropped afterwards."""
    with postgres.admin_connection() as admin:
        admin.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} IN ROLE pg_monitor").format(
                sql.Identifier(MONITOR_USER), sql.Literal(MONITOR_PASSWORD)
            )
        )
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(OTHER_USER)))
    try:
        yield
    finally:
        with postgres.admin_connection() as admin:
            for role in (MONITOR_USER, OTHER_USER):
                admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def hold_connections(postgres: PostgresCluster, stack: ExitStack) -> None:
    """Open every connection of HELD; idle ones ran a query, the others left a transaction open."""
    for application, user, database, idle, in_transaction in HELD:
        for index in range(idle + in_transaction):
            conn = stack.enter_context(
                psycopg.connect(
                    host=postgres.host,
                    port=postgres.port,
                    user=user,
                    dbname=database,
                    application_name=application,
                )
            )
            conn.execute("SELECT 1")
            if index < idle:
                conn.commit()  # idle; otherwise the implicit transaction stays open


def monitor_env(postgres: PostgresCluster, gateway: pipeline.Collector) -> dict[str, str]:
    """postgres.yaml pointed at the test server and the gateway, querying every second."""
    return {
        "POOLWATCH_PG_HOST": postgres.host,
        "POOLWATCH_PG_PORT": str(postgres.port),
        "POOLWATCH_PG_DATABASE": postgres.database,
        "POOLWATCH_PG_USER": MONITOR_USER,
        "POOLWATCH_PG_PASSWORD": MONITOR_PASSWORD,
        "POOLWATCH_PG_INTERVAL": "1s",
        "POOLWATCH_GATEWAY_ENDPOINT": gateway.otlp_grpc,
    }


def values(backends: pipeline.Backends, promql: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Instant-query result by label set (``__name__`` dropped)."""
    return {
        tuple(sorted((k, v) for k, v in item["metric"].items() if k != "__name__")): float(
            item["value"][1]
        )
        for item in backends.query(promql)
    }


def one(backends: pipeline.Backends, promql: str) -> float:
    """The value of a query expected to return exactly one series."""
    found = list(values(backends, promql).values())
    assert len(found) == 1, (promql, found)
    return found[0]


def held_series_arrived(backends: pipeline.Backends) -> bool:
    """Every application of HELD has its connection, age and limit series in Prometheus."""
    apps = "|".join(application for application, *_ in HELD)
    queries = [
        f'{CONNECTIONS}{{{APPLICATION}=~"{apps}"}}',
        f'{OLDEST_IDLE}{{{APPLICATION}=~"{apps}"}}',
        f'{OLDEST_IN_TX}{{{APPLICATION}=~"{apps}"}}',
    ]
    complete = all(len(backends.query(q)) >= len(HELD) for q in queries)
    return (
        complete
        and bool(backends.query(MAX_CONNECTIONS))
        and bool(backends.query(f'{{__name__=~"postgresql_.+", {JOB}="postgresql"}}'))
    )


@pytest.mark.postgres
@pytest.mark.slow
def test_server_side_connections_reach_prometheus_exactly(
    tmp_path: Path, processes: Processes, webhook: Webhook, postgres: PostgresCluster, roles: None
) -> None:
    """Connections by state and owner, ages and max_connections arrive as the server holds them."""
    backends = pipeline.start_backends(tmp_path, processes, webhook, RULE_SETTINGS)
    gateway = pipeline.start_collector(
        processes, "gateway", [COLLECTOR_DIR / "gateway.yaml"], pipeline.gateway_env(backends)
    )
    with ExitStack() as stack:
        held_since = time.time()
        hold_connections(postgres, stack)
        with postgres.admin_connection() as admin:
            row = admin.execute("SHOW max_connections").fetchone()
        assert row is not None
        max_connections = int(row[0])
        pipeline.start_collector(
            processes, "monitor", [COLLECTOR_DIR / "postgres.yaml"], monitor_env(postgres, gateway)
        )
        pipeline.wait_for(
            "the PostgreSQL monitor's series in Prometheus",
            lambda: held_series_arrived(backends),
            processes,
            DATA_TIMEOUT,
        )
        observed_by = time.time()

        assert_connection_counts(backends)
        assert_ages(backends, observed_by - held_since)
    assert one(backends, f'{MAX_CONNECTIONS}{{{JOB}="postgresql"}}') == max_connections
    assert_postgresql_receiver(backends, postgres, max_connections)


def assert_connection_counts(backends: pipeline.Backends) -> None:
    """Each owner's connections by state, zero states included, and nothing else of theirs."""
    for application, user, database, idle, in_transaction in HELD:
        expected = dict.fromkeys(STATES, 0.0) | {
            "idle": float(idle),
            "idle in transaction": float(in_transaction),
        }
        found = values(backends, f'{CONNECTIONS}{{{APPLICATION}="{application}"}}')
        by_state = {dict(labels)[STATE]: value for labels, value in found.items()}
        # A state some other session passed through (a backend still starting reads as
        # "unknown") is reported for every owner from then on, as 0 for these.
        others = {state: value for state, value in by_state.items() if state not in expected}
        assert {state: by_state.get(state) for state in expected} == expected, (application, found)
        assert set(others.values()) <= {0.0}, (application, others)
        for labels in found:
            label = dict(labels)
            assert (label[USER], label[DATABASE], label[JOB]) == (
                user,
                database,
                "postgresql",
            ), label
    mine = f'{CONNECTIONS}{{{APPLICATION}=~"e2e-.+"}}'
    total = one(backends, f"sum({mine})")
    assert total == sum(idle + in_tx for *_, idle, in_tx in HELD)
    by_user = values(backends, f"sum by ({USER}) ({mine})")
    assert by_user == {((USER, "poolwatch"),): 6.0, ((USER, OTHER_USER),): 3.0}
    by_db = values(backends, f"sum by ({DATABASE}) ({mine})")
    assert by_db == {((DATABASE, "poolwatch"),): 6.0, ((DATABASE, "postgres"),): 3.0}


def assert_ages(backends: pipeline.Backends, at_most: float) -> None:
    """Oldest idle / idle-in-transaction ages: positive where such connections exist, else 0."""
    for application, _, _, idle, in_transaction in HELD:
        idle_age = one(backends, f'{OLDEST_IDLE}{{{APPLICATION}="{application}"}}')
        tx_age = one(backends, f'{OLDEST_IN_TX}{{{APPLICATION}="{application}"}}')
        for age, held in ((idle_age, idle), (tx_age, in_transaction)):
            if held:
                assert 0 < age <= at_most + AGE_SLACK_S, (application, age, at_most)
            else:
                assert age == 0, (application, age)


def assert_postgresql_receiver(
    backends: pipeline.Backends, postgres: PostgresCluster, max_connections: int
) -> None:
    """The postgresql receiver's standard metrics arrive under the monitor's job and instance."""
    found: list[dict[str, Any]] = backends.query(
        f'{{__name__=~"postgresql_.+", {JOB}="postgresql"}}'
    )
    metric_names = {item["metric"]["__name__"] for item in found}
    backends_by_db = values(backends, f'postgresql_backends{{{JOB}="postgresql"}}')
    by_db = {
        dict(labels).get("postgresql_database_name"): value
        for labels, value in backends_by_db.items()
    }
    # One series per database (the monitor copies the resource attribute onto the points);
    # at least the connections held here, plus the monitor's own sessions.
    assert by_db["poolwatch"] >= 6, by_db
    assert by_db["postgres"] >= 3, by_db
    assert {
        "postgresql_backends",
        "postgresql_connection_max",
        "postgresql_commits_total",
        "postgresql_db_size_bytes",
    } <= metric_names, metric_names
    assert one(backends, f'postgresql_connection_max{{{JOB}="postgresql"}}') == max_connections
    instances = {item["metric"].get("instance") for item in found}
    assert instances == {f"{postgres.host}:{postgres.port}"}
