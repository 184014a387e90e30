"""A gateway restart mid-run loses no metric point: the agent's disk queue holds them meanwhile.

``apps/sequence_app.py`` numbers its metric collections (the n-th reports ``e2e_collections``
= n) and exports every 500 ms to ``collector/agent.yaml`` (sending queue in ``file_storage``),
which forwards to ``collector/gateway.yaml``, which remote-writes into Prometheus. Both configs
run as shipped, with only endpoints, directories and the remote-write flush interval set through
their environment variables. The test stops the gateway, lets the app go on for several export
intervals, starts the gateway again and finally stops the app. Prometheus must then hold exactly
the samples 1..N of the sequence, N being the app's last collection, and one
``db_client_connection_max`` sample of the app's pool for each from the first collection that
saw the pool. Replayed batches may arrive out of order, so Prometheus accepts samples up to 30
minutes old (``out_of_order_time_window``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from poolwatch import catalog
from poolwatch.monitoring import names
from tests.support import pipeline
from tests.support.exhaustion import RULE_SETTINGS
from tests.support.pipeline import COLLECTOR_DIR, Processes, Webhook

APP = Path(__file__).parent / "apps" / "sequence_app.py"
SERVICE = "poolwatch-e2e-ledger"
POOL = "ledger"
EXPORT_INTERVAL_MS = 500
SEQUENCE = "e2e_collections_total"
POOL_MAX = names.prometheus_name(catalog.CONNECTION_MAX)
#: Collections made while the gateway is down (at 500 ms each), and after it is back.
COLLECTIONS_WHILE_DOWN = 12
COLLECTIONS_AFTER = 6
WAIT_TIMEOUT = 60.0
#: The agent retries with backoff up to 30 s; then the gateway's WAL sends every second.
DELIVERY_TIMEOUT = 120.0


def collected(app: pipeline.Started) -> list[int]:
    """The numbers of the app's collections so far."""
    return [int(line.split()[0]) for line in app.lines_starting("COLLECTED ")]


def samples(
    backends: pipeline.Backends, series: str, matchers: str = ""
) -> list[tuple[float, float]]:
    """Every raw (timestamp, value) sample Prometheus holds for ``series`` of the app, sorted."""
    result = backends.query(f'{series}{{{names.SERVICE_LABEL}="{SERVICE}"{matchers}}}[1h]')
    points = [(float(t), float(v)) for item in result for t, v in item["values"]]
    return sorted(points)


def sequence(backends: pipeline.Backends) -> list[int]:
    """The collection numbers Prometheus holds, in timestamp order."""
    return [int(value) for _, value in samples(backends, SEQUENCE)]


@pytest.mark.slow
def test_gateway_restart_loses_no_metric_point(
    tmp_path: Path, processes: Processes, webhook: Webhook
) -> None:
    """Every collection made before, during and after the gateway's downtime reaches Prometheus."""
    backends = pipeline.start_backends(
        tmp_path, processes, webhook, RULE_SETTINGS, out_of_order_window="30m"
    )
    gateway = pipeline.start_collector(
        processes, "gateway", [COLLECTOR_DIR / "gateway.yaml"], pipeline.gateway_env(backends)
    )
    agent = pipeline.start_collector(
        processes,
        "agent",
        [COLLECTOR_DIR / "agent.yaml"],
        {"POOLWATCH_GATEWAY_ENDPOINT": gateway.otlp_grpc},
    )
    stop_file = tmp_path / "stop-app"
    app = pipeline.start_app(
        processes,
        APP,
        SERVICE,
        agent.otlp_http,
        EXPORT_INTERVAL_MS,
        POOLWATCH_APP_DB=str(tmp_path / "ledger.db"),
        POOLWATCH_APP_STOP_FILE=str(stop_file),
    )

    def report() -> str:
        return f"collected {collected(app)[-1:]}, in prometheus {sequence(backends)}"

    pipeline.wait_for(
        "the first samples in Prometheus",
        lambda: len(sequence(backends)) >= 3,
        processes,
        WAIT_TIMEOUT,
        report,
    )
    assert pipeline.http_ok(gateway.health)
    assert processes.stop(gateway.started) == 0
    down_at = max(collected(app))
    pipeline.wait_for(
        f"{COLLECTIONS_WHILE_DOWN} collections with the gateway down",
        lambda: max(collected(app)) >= down_at + COLLECTIONS_WHILE_DOWN,
        processes,
        WAIT_TIMEOUT,
    )
    in_prometheus_while_down = max(sequence(backends))
    restarted = processes.restart(gateway.started)
    pipeline.wait_for(
        "the gateway healthy again",
        lambda: pipeline.http_ok(gateway.health),
        processes,
        pipeline.READY_TIMEOUT,
    )
    back_at = max(collected(app))
    pipeline.wait_for(
        f"{COLLECTIONS_AFTER} collections after the restart",
        lambda: max(collected(app)) >= back_at + COLLECTIONS_AFTER,
        processes,
        WAIT_TIMEOUT,
    )
    stop_file.touch()
    assert app.proc.wait(timeout=WAIT_TIMEOUT) == 0
    last = max(collected(app))
    expected = list(range(1, last + 1))

    pipeline.wait_for(
        f"the samples 1..{last} in Prometheus",
        lambda: sequence(backends) == expected,
        processes,
        DELIVERY_TIMEOUT,
        report,
    )

    assert collected(app) == expected
    assert sequence(backends) == expected
    # The gateway really was down: what was collected meanwhile reached Prometheus only later.
    assert in_prometheus_while_down < down_at + COLLECTIONS_WHILE_DOWN
    # poolwatch's own series came through the same way: one sample per collection.
    # (The first collections may come before the app has touched its pool: compare from the
    # first one that has it, which must precede the downtime.)
    pool_points = samples(
        backends, POOL_MAX, f', {names.prometheus_label(catalog.POOL_NAME)}="{POOL}"'
    )
    sequence_times = [t for t, _ in samples(backends, SEQUENCE)]
    pool_times = [t for t, _ in pool_points]
    assert pool_times, f"no {POOL_MAX} sample of the app's pool"
    assert pool_times[0] <= sequence_times[down_at - 1]
    assert pool_times == [t for t in sequence_times if t >= pool_times[0]]
    assert {v for _, v in pool_points} == {2.0}
    assert restarted.proc.poll() is None
    print(
        f"\ncollections 1..{last}; gateway down from collection {down_at} to {back_at}; "
        f"Prometheus held up to {in_prometheus_while_down} meanwhile"
    )
