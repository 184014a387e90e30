"""`poolwatch deploy prometheus` into a real Prometheus (loopback, --web.enable-lifecycle)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from poolwatch.cli import main
from poolwatch.monitoring import alerts, config
from tests.support.pipeline import Processes, free_port, http_ok, loopback, wait_for

GROUPS = [
    "poolwatch-django", "poolwatch-pgbouncer", "poolwatch-pool", "poolwatch-postgresql",
    "poolwatch-recording", "poolwatch-telemetry",
]  # fmt: skip


@pytest.fixture
def prometheus(prometheus_bin: str, servers: Processes, tmp_path: Path) -> tuple[str, Path]:
    """A Prometheus loading every *.yaml in a rules directory; returns (base URL, directory)."""
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    settings = tmp_path / "prometheus.yml"
    settings.write_text(
        f"global:\n  evaluation_interval: 1m\nrule_files:\n  - {rules_dir}/*.yaml\n"
    )
    port = free_port()
    servers.start(
        "prometheus",
        [prometheus_bin, f"--config.file={settings}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address={loopback(port)}", "--web.enable-lifecycle"],
    )  # fmt: skip
    base = f"http://{loopback(port)}"
    wait_for("prometheus ready", lambda: http_ok(f"{base}/-/ready"), servers, timeout=60)
    return base, rules_dir


def _loaded(base: str) -> dict[str, list[dict[str, Any]]]:
    groups = httpx.get(f"{base}/api/v1/rules", timeout=5).json()["data"]["groups"]
    return {group["name"]: group["rules"] for group in groups}


def test_rules_are_written_and_loaded_by_prometheus(prometheus: tuple[str, Path]) -> None:
    """After the deploy and its reload, Prometheus runs every poolwatch rule."""
    base, rules_dir = prometheus

    code = main(["deploy", "prometheus", "--rules-dir", str(rules_dir),
                 "--reload-url", f"{base}/-/reload"])  # fmt: skip

    assert code == 0
    assert sorted(p.name for p in rules_dir.iterdir()) == [f"{g}.rules.yaml" for g in GROUPS]
    loaded = _loaded(base)
    assert sorted(loaded) == GROUPS
    settings = config.MonitoringConfig()
    assert sum(len(rules) for rules in loaded.values()) == len(alerts.rules(settings)) + len(
        alerts.recording_group(settings)["rules"]
    )


def test_dry_run_writes_no_file(
    prometheus: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """--dry-run lists the files it would create and leaves the directory empty."""
    _base, rules_dir = prometheus

    assert main(["deploy", "prometheus", "--rules-dir", str(rules_dir), "--dry-run"]) == 0

    assert list(rules_dir.iterdir()) == []
    assert f"would create: {rules_dir / 'poolwatch-pool.rules.yaml'}" in capsys.readouterr().out


def test_failed_reload_puts_the_previous_rules_back(
    prometheus: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """When Prometheus refuses the reload, the old files return and the old rules keep running."""
    base, rules_dir = prometheus
    reload = ["--rules-dir", str(rules_dir), "--reload-url", f"{base}/-/reload"]
    assert main(["deploy", "prometheus", *reload]) == 0
    before = {p.name: p.read_text() for p in rules_dir.iterdir()}
    (rules_dir / "someone-else.yaml").write_text("groups:\n- name: x\n  rules:\n  - alert: [\n")

    code = main(
        ["deploy", "prometheus", *reload, "--set", "thresholds.pool_saturation.warning=0.5"]
    )

    assert code == 1
    assert "reload failed" in capsys.readouterr().err
    after = {p.name: p.read_text() for p in rules_dir.iterdir() if p.name != "someone-else.yaml"}
    assert after == before
    saturation = [
        r for r in _loaded(base)["poolwatch-pool"] if r["name"] == "PoolwatchPoolSaturation"
    ]
    assert any(r["query"].endswith("> 0.8") for r in saturation)


def test_invalid_rules_are_refused_before_anything_is_written(
    prometheus: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """A selector that breaks the PromQL is caught by promtool and no file is written."""
    _base, rules_dir = prometheus

    code = main(["deploy", "prometheus", "--rules-dir", str(rules_dir), "--set", "selector=oops{"])

    assert code == 1
    assert "promtool rejected the rules" in capsys.readouterr().err
    assert list(rules_dir.iterdir()) == []
