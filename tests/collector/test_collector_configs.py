"""The collector configs in collector/, checked by the binary they are written for.

A session fixture builds (or takes from its cache) the poolwatch-otelcol
distribution with collector/build.sh. Every config must pass ``validate``; a
broken one must be refused with the offending key named. Two tests run the real
collector: the gateway's log pipeline turning a record's event name into the
``event_name`` attribute, and the PostgreSQL monitor's sqlquery receiver
reading pg_stat_activity of the PostgreSQL server the test session starts.

Everything listens on and talks to loopback only, on free ports picked at run
time; every collector started here is stopped in teardown.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

from poolwatch import catalog
from tests.support import pipeline
from tests.support.pipeline import COLLECTOR_DIR, Processes

# Every config a user deploys; each one must validate.
EXPECTED_CONFIGS = {
    "agent.yaml",
    "agent-loadbalancing.yaml",
    "gateway.yaml",
    "gateway-scrape.yaml",
    "postgres.yaml",
    "pgbouncer.yaml",
}
#: Not collector configs: the builder manifest and the compose file (tests/collector/test_compose.py).
NOT_CONFIGS = {"manifest.yaml", "compose.yaml"}
CONFIGS = sorted(p.name for p in COLLECTOR_DIR.glob("*.yaml") if p.name not in NOT_CONFIGS)

COMMAND_TIMEOUT_S = 60
DATA_TIMEOUT_S = 60

TEST_APPLICATION_NAME = "poolwatch-collector-test"


# --------------------------------------------------------------------------- helpers


def _run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    kwargs.setdefault("env", pipeline.clean_env())
    return subprocess.run(
        args,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
        **kwargs,
    )


def _read_otlp_json_lines(path: Path) -> list[dict[str, Any]]:
    """The file exporter writes one OTLP/JSON document per line."""
    if not path.exists():
        return []
    docs = []
    for line in path.read_text().splitlines():
        try:
            docs.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line being written right now
    return docs


def _attrs(kvs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in kvs:
        value = kv.get("value", {})
        out[kv["key"]] = next(iter(value.values()), None) if value else None
    return out


@dataclass(frozen=True)
class Point:
    name: str
    attributes: dict[str, Any]
    value: float


def _metric_points(docs: list[dict[str, Any]]) -> list[Point]:
    points = []
    for doc in docs:
        for rm in doc.get("resourceMetrics", []):
            for sm in rm.get("scopeMetrics", []):
                for metric in sm.get("metrics", []):
                    data = metric.get("gauge") or metric.get("sum") or {}
                    for dp in data.get("dataPoints", []):
                        raw = dp.get("asInt", dp.get("asDouble", 0))
                        points.append(
                            Point(metric["name"], _attrs(dp.get("attributes", [])), float(raw))
                        )
    return points


def _log_records(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        record
        for doc in docs
        for rl in doc.get("resourceLogs", [])
        for sl in rl.get("scopeLogs", [])
        for record in sl.get("logRecords", [])
    ]


# --------------------------------------------------------------------------- validate


def test_all_expected_configs_exist() -> None:
    assert set(CONFIGS) >= EXPECTED_CONFIGS


def test_binary_has_the_components_the_configs_use(otelcol: Path) -> None:
    result = _run([str(otelcol), "components"])
    assert result.returncode == 0, result.stderr
    listing = result.stdout
    for name in (
        "otlp",
        "sqlquery",
        "postgresql",
        "otlpjsonfile",
        "batch",
        "memory_limiter",
        "resource",
        "transform",
        "otlp_grpc",
        "otlp_http",
        "prometheusremotewrite",
        "prometheus",
        "loadbalancing",
        "file",
        "debug",
        "file_storage",
        "health_check",
    ):
        assert f"name: {name}\n" in listing, f"component {name!r} missing from the build"


# Settings a config cannot default; anything else must validate with no
# POOLWATCH_* variable set.
REQUIRED_ENV = {
    "postgres.yaml": {"POOLWATCH_PG_PASSWORD": "validate-only"},
    "pgbouncer.yaml": {"POOLWATCH_PGBOUNCER_PASSWORD": "validate-only"},
}


@pytest.mark.parametrize("config", CONFIGS)
def test_config_validates(otelcol: Path, config: str) -> None:
    result = _run(
        [str(otelcol), "validate", f"--config={COLLECTOR_DIR / config}"],
        env=pipeline.clean_env(**REQUIRED_ENV.get(config, {})),
    )
    assert result.returncode == 0, f"{config} rejected:\n{result.stderr}"


def test_broken_config_is_rejected_naming_the_bad_key(otelcol: Path, tmp_path: Path) -> None:
    good = (COLLECTOR_DIR / "agent.yaml").read_text()
    broken = good.replace("send_batch_size:", "send_batch_sise:", 1)
    assert broken != good, "agent.yaml no longer has the key this test misspells"
    path = tmp_path / "broken.yaml"
    path.write_text(broken)

    result = _run([str(otelcol), "validate", f"--config={path}"])

    assert result.returncode != 0
    assert "send_batch_sise" in result.stderr, result.stderr


# --------------------------------------------------------------------------- gateway logs


@pytest.mark.slow
def test_gateway_copies_event_name_into_an_attribute(processes: Processes, tmp_path: Path) -> None:
    """The gateway's real log processors, fed from a file and written to a file."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    out = tmp_path / "logs.jsonl"
    # Only the log pipeline is rewired; everything else in gateway.yaml still
    # loads, so all its endpoints point at unused loopback ports.
    override = tmp_path / "override.yaml"
    override.write_text(
        f"""
receivers:
  otlpjsonfile/test:
    include: ["{inbox}/*.json"]
    start_at: beginning
    poll_interval: 200ms
exporters:
  file/test:
    path: {out}
    flush_interval: 200ms
service:
  pipelines:
    logs:
      receivers: [otlpjsonfile/test]
      exporters: [file/test]
"""
    )
    env = {
        "POOLWATCH_REMOTE_WRITE_URL": f"http://{pipeline.loopback(pipeline.free_port())}/api/v1/write",
        "POOLWATCH_TEMPO_ENDPOINT": pipeline.loopback(pipeline.free_port()),
        "POOLWATCH_LOKI_ENDPOINT": f"http://{pipeline.loopback(pipeline.free_port())}/otlp",
    }
    pipeline.start_collector(processes, "gateway", [COLLECTOR_DIR / "gateway.yaml", override], env)

    def record(event_name: str, body: str, attributes: dict[str, str]) -> dict[str, Any]:
        rec: dict[str, Any] = {
            "timeUnixNano": str(time.time_ns()),
            "body": {"stringValue": body},
            "attributes": [{"key": k, "value": {"stringValue": v}} for k, v in attributes.items()],
        }
        if event_name:
            rec["eventName"] = event_name
        return rec

    doc = {
        "resourceLogs": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "shop"}}]
                },
                "scopeLogs": [
                    {
                        "scope": {"name": catalog.INSTRUMENTATION_SCOPE},
                        "logRecords": [
                            record(catalog.EVENT_LEAK, "leak", {"case": "event"}),
                            record("", "plain log line", {"case": "plain"}),
                            record(
                                catalog.EVENT_CONFLICT,
                                "conflict",
                                {"case": "preset", "event_name": "kept"},
                            ),
                        ],
                    }
                ],
            }
        ]
    }
    (inbox / "events.json").write_text(json.dumps(doc) + "\n")

    def three_records() -> list[dict[str, Any]] | None:
        records = _log_records(_read_otlp_json_lines(out))
        return records if len(records) >= 3 else None

    records = pipeline.wait_for(
        "three log records in the file exporter's output", three_records, processes, DATA_TIMEOUT_S
    )

    by_case = {_attrs(r["attributes"])["case"]: _attrs(r["attributes"]) for r in records}
    assert by_case["event"]["event_name"] == catalog.EVENT_LEAK
    assert "event_name" not in by_case["plain"]
    assert by_case["preset"]["event_name"] == "kept"


# --------------------------------------------------------------------------- postgres


@dataclass(frozen=True)
class PgTarget:
    host: str
    port: int
    user: str
    password: str
    database: str


def _parse_pg_url(url: str) -> PgTarget:
    """Accepts libpq URLs and SQLAlchemy ones (``postgresql+psycopg://``)."""
    parts = urlsplit(url)
    assert parts.scheme.split("+")[0] in {"postgresql", "postgres"}, url
    host = parts.hostname or "127.0.0.1"
    return PgTarget(
        host=host,
        port=parts.port or 5432,
        user=unquote(parts.username or ""),
        password=unquote(parts.password or ""),
        database=unquote(parts.path.lstrip("/")) or "postgres",
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


#: What postgres.yaml's sqlquery receiver reports.
PG_METRICS = (
    catalog.PG_CONNECTIONS,
    catalog.PG_OLDEST_IDLE,
    catalog.PG_OLDEST_IDLE_IN_TRANSACTION,
    catalog.PG_MAX_CONNECTIONS,
    catalog.PG_RESERVED_CONNECTIONS,
)


@pytest.mark.postgres
@pytest.mark.slow
def test_postgres_monitor_reports_pg_stat_activity(
    request: pytest.FixtureRequest, processes: Processes, tmp_path: Path
) -> None:
    """postgres.yaml's receivers against a real server, exported to a file."""
    try:
        url = request.getfixturevalue("postgres_url")
    except pytest.FixtureLookupError:
        pytest.skip("no postgres_url fixture registered (tests/conftest.py)")
    target = _parse_pg_url(url)
    assert _is_loopback(target.host), f"refusing a non-loopback PostgreSQL: {target.host}"
    psycopg = pytest.importorskip("psycopg")

    def connect() -> Any:
        return psycopg.connect(
            host=target.host,
            port=target.port,
            user=target.user,
            password=target.password or None,
            dbname=target.database,
            application_name=TEST_APPLICATION_NAME,
        )

    # One connection left idle, one left idle inside an open transaction: the
    # two shapes of trouble the monitor is there to show.
    idle = connect()
    in_tx = connect()
    try:
        idle.execute("SELECT 1")
        idle.commit()
        in_tx.execute("SELECT 1")  # psycopg opened a transaction; it stays open
        with connect() as probe:
            max_connections = int(probe.execute("SHOW max_connections").fetchone()[0])
            superuser_reserved = int(
                probe.execute("SHOW superuser_reserved_connections").fetchone()[0]
            )
            row = probe.execute("SELECT current_setting('reserved_connections', true)").fetchone()
            reserved = superuser_reserved + int(row[0] or 0)

        out = tmp_path / "metrics.jsonl"
        override = tmp_path / "override.yaml"
        override.write_text(
            f"""
exporters:
  file/test:
    path: {out}
    flush_interval: 200ms
service:
  pipelines:
    metrics:
      exporters: [file/test]
"""
        )
        env = {
            "POOLWATCH_PG_HOST": target.host,
            "POOLWATCH_PG_PORT": str(target.port),
            "POOLWATCH_PG_DATABASE": target.database,
            "POOLWATCH_PG_USER": target.user,
            # The postgresql receiver insists on a password; the test server
            # may trust loopback and not need one.
            "POOLWATCH_PG_PASSWORD": target.password or "unused",
            "POOLWATCH_PG_INTERVAL": "1s",
            # Not in any pipeline here, but it must still resolve to loopback.
            "POOLWATCH_GATEWAY_ENDPOINT": pipeline.loopback(pipeline.free_port()),
        }
        pipeline.start_collector(
            processes, "postgres-monitor", [COLLECTOR_DIR / "postgres.yaml", override], env
        )

        def ready() -> list[Point] | None:
            points = _metric_points(_read_otlp_json_lines(out))
            names = {p.name for p in points}
            wanted = {metric.name for metric in PG_METRICS} | {"postgresql.backends"}
            mine = [
                p
                for p in points
                if p.name == catalog.PG_OLDEST_IDLE.name
                and p.attributes.get(catalog.PG_APPLICATION) == TEST_APPLICATION_NAME
                and p.value > 0
            ]
            return points if wanted <= names and mine else None

        points = pipeline.wait_for("PostgreSQL metrics", ready, processes, DATA_TIMEOUT_S)
    finally:
        idle.close()
        in_tx.close()

    def latest(metric: catalog.Metric, **attributes: str) -> float:
        matching = [
            p
            for p in points
            if p.name == metric.name
            and all(p.attributes.get(k) == v for k, v in attributes.items())
        ]
        assert matching, f"no {metric.name} point with {attributes}"
        return matching[-1].value

    mine = {
        catalog.PG_APPLICATION: TEST_APPLICATION_NAME,
        catalog.PG_USER: target.user,
        catalog.PG_DATABASE: target.database,
    }
    assert latest(catalog.PG_CONNECTIONS, state="idle", **mine) == 1
    assert latest(catalog.PG_CONNECTIONS, state="idle in transaction", **mine) == 1
    # Every standard state is reported, zero included.
    assert latest(catalog.PG_CONNECTIONS, state="active", **mine) == 0
    assert latest(catalog.PG_OLDEST_IDLE, **mine) > 0
    assert latest(catalog.PG_OLDEST_IDLE_IN_TRANSACTION, **mine) > 0
    assert latest(catalog.PG_MAX_CONNECTIONS) == max_connections
    assert latest(catalog.PG_RESERVED_CONNECTIONS) == reserved

    sqlquery_names = {p.name for p in points if not p.name.startswith("postgresql.")}
    assert all(n.startswith("poolwatch.postgresql.") for n in sqlquery_names), sqlquery_names
    # The sqlquery receiver's own session is not counted.
    assert not [
        p
        for p in points
        if p.name == catalog.PG_CONNECTIONS.name
        and p.attributes.get(catalog.PG_APPLICATION) == "poolwatch-otelcol"
        and p.value > 0
    ]
