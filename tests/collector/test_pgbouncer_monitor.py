"""collector/pgbouncer.yaml reads a real PgBouncer's admin console into poolwatch.pgbouncer.*.

A real PgBouncer (transaction pooling, one server connection per pool) in front of the test
PostgreSQL; one client holds the only server connection inside a transaction while a second one
waits for it. The shipped config runs in the real collector with only its exporter swapped for
OTLP/HTTP to the suite's receiver, and must report exactly that: one active and one waiting
client, one active server connection, a wait of at least a second and the client count that
max_client_conn limits.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from poolwatch import catalog
from tests.support import pipeline
from tests.support.otlp_receiver import OtlpReceiver, Points
from tests.support.pgbouncer import PgBouncer
from tests.support.pipeline import COLLECTOR_DIR, Processes

TIMEOUT_S = 60


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    """The suite's OTLP/HTTP receiver on a free loopback port."""
    with OtlpReceiver() as otlp:
        yield otlp


def _value(points: Points, **attributes: str) -> Any:
    values = [v for a, v in points if all(a.get(k) == w for k, w in attributes.items())]
    assert len(values) == 1, (attributes, points)
    return values[0]


@pytest.mark.postgres
@pytest.mark.slow
def test_pgbouncer_monitor_reports_pools_and_waiting_clients(
    processes: Processes,
    pgbouncer: Callable[..., PgBouncer],
    receiver: OtlpReceiver,
    tmp_path: Path,
) -> None:
    """Holder in a transaction, waiter queued: the monitor's metrics say so, by database/user."""
    bouncer = pgbouncer(default_pool_size=1)
    holder = bouncer.connect()
    holder.execute("SELECT 1")  # a transaction is open: the one server connection is held
    waited = threading.Event()

    def wait_for_server() -> None:
        with bouncer.connect() as waiter:
            waiter.execute("SELECT 1")
        waited.set()

    waiter = threading.Thread(target=wait_for_server, daemon=True)
    waiter.start()
    override = pipeline.write_yaml(
        tmp_path / "override.yaml",
        {
            "exporters": {"otlp_http/test": {"endpoint": receiver.endpoint}},
            "service": {"pipelines": {"metrics": {"exporters": ["otlp_http/test"]}}},
        },
    )
    env = {
        "POOLWATCH_PGBOUNCER_HOST": bouncer.host,
        "POOLWATCH_PGBOUNCER_PORT": str(bouncer.port),
        "POOLWATCH_PGBOUNCER_USER": bouncer.user,
        "POOLWATCH_PGBOUNCER_PASSWORD": bouncer.password,
        "POOLWATCH_PGBOUNCER_INTERVAL": "1s",
        "POOLWATCH_GATEWAY_ENDPOINT": pipeline.loopback(pipeline.free_port()),
    }
    try:
        monitor = pipeline.start_collector(
            processes, "pgbouncer-monitor", [COLLECTOR_DIR / "pgbouncer.yaml", override], env
        )
        mine = {catalog.PGB_DATABASE: bouncer.database, catalog.PGB_USER: bouncer.user}

        def waited_a_second() -> bool:
            points = receiver.metric_points(catalog.PGB_MAX_WAIT.name)
            return any(
                all(a.get(k) == v for k, v in mine.items()) and value >= 1 for a, value in points
            )

        pipeline.wait_for("a max_wait of 1 s or more", waited_a_second, processes, TIMEOUT_S)
        clients = receiver.metric_points(catalog.PGB_CLIENTS.name)
        servers = receiver.metric_points(catalog.PGB_SERVERS.name)
        lists = receiver.metric_points(catalog.PGB_LIST_ITEMS.name)
        assert not waited.is_set()
    finally:
        holder.commit()
        holder.close()
        waiter.join(timeout=30)

    assert waited.is_set()
    # Every query reads cleanly through the admin console's simple protocol.
    log = monitor.started.log.read_text()
    assert "\terror\t" not in log and "\twarn\t" not in log, log
    assert _value(clients, **mine, **{catalog.PGB_STATE: "active"}) == 1
    assert _value(clients, **mine, **{catalog.PGB_STATE: "waiting"}) == 1
    assert _value(servers, **mine, **{catalog.PGB_STATE: "active"}) == 1
    for state in ("idle", "used", "tested", "login"):
        assert _value(servers, **mine, **{catalog.PGB_STATE: state}) == 0
    # holder, waiter and the monitor's own console connection
    assert _value(lists, **{catalog.PGB_LIST: "used_clients"}) == 3
    assert {a[catalog.PGB_STATE] for a, _ in clients} == set(catalog.PGB_CLIENT_STATES)
    assert {a[catalog.PGB_STATE] for a, _ in servers} == set(catalog.PGB_SERVER_STATES)
