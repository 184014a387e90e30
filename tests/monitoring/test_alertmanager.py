"""The Alertmanager example: amtool's checks, its routes, and a real Alertmanager inhibiting."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from poolwatch.monitoring import alertmanager
from poolwatch.monitoring.generate import ALERTMANAGER
from tests.monitoring.conftest import REPO
from tests.support.pipeline import Processes, free_port, http_ok, loopback, wait_for

CONFIG = REPO / ALERTMANAGER
POOL = {"job": "shop", "db_client_connection_pool_name": "main"}


def _amtool(amtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([amtool, *args], capture_output=True, text=True, check=False, timeout=60)


def test_example_passes_amtool_check_config(amtool: str) -> None:
    """amtool accepts the committed example configuration."""
    result = _amtool(amtool, "check-config", str(CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 inhibit rules" in result.stdout


@pytest.mark.parametrize(
    ("severity", "receiver"),
    [
        ("critical", alertmanager.PAGER),
        ("warning", alertmanager.TICKETS),
        ("info", alertmanager.DEFAULT),
    ],
)
def test_alerts_route_by_severity(amtool: str, severity: str, receiver: str) -> None:
    """Critical alerts page, warnings open tickets, anything else goes to the default receiver."""
    result = _amtool(
        amtool, "config", "routes", "test", f"--config.file={CONFIG}",
        f"--verify.receivers={receiver}", "alertname=PoolwatchPoolSaturation",
        "poolwatch_alert=PoolwatchPoolSaturation", f"severity={severity}", "job=shop",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == receiver


def _loopback_config(tmp_path: Path) -> Path:
    """The example's routes and inhibit rules with receivers that send nothing anywhere."""
    data = yaml.safe_load(CONFIG.read_text())
    data["receivers"] = [{"name": receiver["name"]} for receiver in data["receivers"]]
    path = tmp_path / "alertmanager.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _alert(severity: str, **labels: str) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "labels": {
            "alertname": "PoolwatchPoolSaturation",
            "poolwatch_alert": "PoolwatchPoolSaturation",
            "severity": severity,
            **labels,
        },
        "annotations": {"summary": f"{severity} test"},
        "startsAt": now.isoformat(),
        "endsAt": (now + timedelta(minutes=10)).isoformat(),
    }


def _states(base: str) -> dict[tuple[str, str], tuple[str, list[str]]]:
    alerts = httpx.get(f"{base}/api/v2/alerts", timeout=5).json()
    return {
        (a["labels"]["severity"], a["labels"]["db_client_connection_pool_name"]): (
            a["status"]["state"],
            a["status"]["inhibitedBy"],
        )
        for a in alerts
    }


def test_critical_inhibits_the_warning_for_the_same_pool_only(
    alertmanager_bin: str, servers: Processes, tmp_path: Path
) -> None:
    """A real Alertmanager suppresses a pool's warning while its critical fires, not other pools'."""
    port, cluster = free_port(), free_port()
    servers.start(
        "alertmanager",
        [
            alertmanager_bin,
            f"--config.file={_loopback_config(tmp_path)}",
            f"--storage.path={tmp_path / 'data'}",
            f"--web.listen-address={loopback(port)}",
            f"--cluster.listen-address={loopback(cluster)}",
        ],
    )
    base = f"http://{loopback(port)}"
    wait_for("alertmanager ready", lambda: http_ok(f"{base}/-/ready"), servers, timeout=30)
    alerts = [
        _alert("warning", **POOL),
        _alert("critical", **POOL),
        _alert("warning", job="shop", db_client_connection_pool_name="other"),
    ]
    response = httpx.post(f"{base}/api/v2/alerts", json=alerts, timeout=5)
    assert response.status_code == 200, response.text

    def settled() -> bool:
        states = _states(base)
        return len(states) == 3 and states[("warning", "main")][0] == "suppressed"

    wait_for("the warning to be inhibited", settled, servers, timeout=30)
    states = _states(base)
    assert states[("warning", "main")][0] == "suppressed"
    assert len(states[("warning", "main")][1]) == 1
    assert states[("critical", "main")] == ("active", [])
    assert states[("warning", "other")] == ("active", [])
