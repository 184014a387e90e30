"""agent-loadbalancing.yaml sends every series of one process to one gateway replica.

Real processes on loopback: two gateways (gateway.yaml, metrics written to a file each) and one
agent built from the shipped agent-loadbalancing.yaml with only its DNS resolver swapped for a
static list of the two gateways (a test cannot make a name resolve to two loopback ports).
Metrics of eight processes, six series each, go in over OTLP/HTTP; each process must arrive
whole at exactly one gateway, and both gateways must get some.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support import pipeline
from tests.support.pipeline import COLLECTOR_DIR, Processes

PROCESSES = [f"shop-worker-{n}" for n in range(8)]
SERIES = 6
ROUNDS = 2
TIMEOUT_S = 60


def _agent_config(path: Path, gateways: list[str]) -> Path:
    """The shipped agent config, its exporters resolving the gateways from a static list."""
    config = yaml.safe_load((COLLECTOR_DIR / "agent-loadbalancing.yaml").read_text())
    for exporter in config["exporters"].values():
        exporter["resolver"] = {"static": {"hostnames": gateways}}
    return pipeline.write_yaml(path, config)


def _gateway_override(path: Path, out: Path) -> Path:
    """gateway.yaml's metrics pipeline written to ``out`` instead of remote write."""
    return pipeline.write_yaml(
        path,
        {
            "exporters": {"file/test": {"path": str(out), "flush_interval": "200ms"}},
            "service": {"pipelines": {"metrics": {"exporters": ["file/test"]}}},
        },
    )


def _export(round_: int) -> dict[str, Any]:
    """One OTLP/JSON metrics request: every process, each with SERIES gauges."""

    def attribute(key: str, value: str) -> dict[str, Any]:
        return {"key": key, "value": {"stringValue": value}}

    now = str(1_700_000_000_000_000_000 + round_ * 1_000_000_000)
    return {
        "resourceMetrics": [
            {
                "resource": {
                    "attributes": [
                        attribute("service.name", "shop"),
                        attribute("service.instance.id", instance),
                    ]
                },
                "scopeMetrics": [
                    {
                        "scope": {"name": "poolwatch"},
                        "metrics": [
                            {
                                "name": f"poolwatch.test.series_{n}",
                                "gauge": {
                                    "dataPoints": [
                                        {
                                            "timeUnixNano": now,
                                            "asInt": str(round_),
                                            "attributes": [attribute("pool", f"pool-{n}")],
                                        }
                                    ]
                                },
                            }
                            for n in range(SERIES)
                        ],
                    }
                ],
            }
            for instance in PROCESSES
        ]
    }


def _points_by_instance(out: Path) -> dict[str, int]:
    """Data points per service.instance.id in one gateway's file output."""
    counts: dict[str, int] = defaultdict(int)
    if not out.exists():
        return counts
    for line in out.read_text().splitlines():
        try:
            doc = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line being written right now
        for rm in doc.get("resourceMetrics", []):
            attributes = {
                kv["key"]: kv["value"].get("stringValue")
                for kv in rm.get("resource", {}).get("attributes", [])
            }
            instance = attributes.get("service.instance.id", "")
            for sm in rm.get("scopeMetrics", []):
                for metric in sm.get("metrics", []):
                    counts[instance] += len(metric.get("gauge", {}).get("dataPoints", []))
    return counts


@pytest.mark.slow
def test_each_process_lands_whole_at_one_gateway(processes: Processes, tmp_path: Path) -> None:
    """Routing by resource: all of one process's series pass one gateway; both gateways work."""
    outs = [tmp_path / f"gateway-{n}.jsonl" for n in range(2)]
    gateways = []
    for n, out in enumerate(outs):
        env = {
            "POOLWATCH_REMOTE_WRITE_URL": f"http://{pipeline.loopback(pipeline.free_port())}/w",
            "POOLWATCH_TEMPO_ENDPOINT": pipeline.loopback(pipeline.free_port()),
            "POOLWATCH_LOKI_ENDPOINT": f"http://{pipeline.loopback(pipeline.free_port())}/otlp",
        }
        override = _gateway_override(tmp_path / f"gateway-{n}-override.yaml", out)
        gateways.append(
            pipeline.start_collector(
                processes, f"gateway-{n}", [COLLECTOR_DIR / "gateway.yaml", override], env
            )
        )
    agent_config = _agent_config(tmp_path / "agent.yaml", [g.otlp_grpc for g in gateways])
    agent = pipeline.start_collector(processes, "agent", [agent_config], {})

    for round_ in range(ROUNDS):
        response = httpx.post(f"{agent.otlp_http}/v1/metrics", json=_export(round_), timeout=10)
        assert response.status_code == 200, response.text

    def everything_arrived() -> list[dict[str, int]] | None:
        seen = [_points_by_instance(out) for out in outs]
        total = sum(sum(counts.values()) for counts in seen)
        return seen if total >= len(PROCESSES) * SERIES * ROUNDS else None

    seen = pipeline.wait_for(
        "every data point at a gateway", everything_arrived, processes, TIMEOUT_S
    )

    where = {
        instance: [n for n, counts in enumerate(seen) if instance in counts]
        for instance in PROCESSES
    }
    assert all(len(gateways_of) == 1 for gateways_of in where.values()), where
    for instance, (gateway,) in where.items():
        assert seen[gateway][instance] == SERIES * ROUNDS, (instance, seen)
    assert {gateway for (gateway,) in where.values()} == {0, 1}, where
