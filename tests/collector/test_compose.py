"""collector/compose.yaml, checked as far as this machine allows without container images.

Every file the compose file mounts must exist; every image must be pinned; the configs it mounts
must pass the real binaries' checks: the collector build's ``validate`` (with each collector
service's own environment), ``promtool check config`` (its rule files resolved to the mounted
host files), ``amtool check-config``. Grafana's provisioning must point where the dashboards are
mounted, and the datasources must have the uids the generated dashboards and rules use.
``docker compose config`` runs only when the compose plugin is installed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from poolwatch.monitoring import config
from tests.support import pipeline
from tests.support.fixtures import needed

COLLECTOR_DIR = pipeline.COLLECTOR_DIR
COMPOSE = COLLECTOR_DIR / "compose.yaml"
COLLECTOR_SERVICES = {"agent", "gateway", "postgres-monitor"}
TIMEOUT_S = 60


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose()["services"]
    return found


def bind_mounts(service: str) -> dict[str, Path]:
    """Container path -> host path of every bind mount of ``service`` (named volumes left out)."""
    mounts = {}
    for volume in services()[service].get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            mounts[target] = (COLLECTOR_DIR / source).resolve()
    return mounts


def tool(*candidates: str) -> str:
    try:
        return pipeline.find_tool(*candidates)
    except pipeline.ToolMissing as missing:
        needed(str(missing))


def run(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, capture_output=True, text=True, timeout=TIMEOUT_S, check=False, env=env
    )


def test_every_mounted_file_exists() -> None:
    """No service mounts a file or directory that is not in the repository."""
    for name in services():
        for target, source in bind_mounts(name).items():
            assert source.exists(), f"{name}: {source} (for {target}) does not exist"


def test_every_image_is_pinned() -> None:
    """Each image names a version tag, never latest."""
    for name, service in services().items():
        image = service["image"]
        assert re.fullmatch(r"[\w./-]+:v?\d+\.\d+(\.\d+)?(-[\w.]+)?", image), f"{name}: {image}"


def test_collectors_run_the_shipped_configs_and_their_release() -> None:
    """Each collector service runs a config from collector/ on the manifest's release."""
    manifest = (COLLECTOR_DIR / "manifest.yaml").read_text()
    release = re.search(r"otlpreceiver v(\d+\.\d+\.\d+)", manifest)
    assert release is not None
    for name in COLLECTOR_SERVICES:
        service = services()[name]
        assert service["image"].endswith(":" + release.group(1)), service["image"]
        (flag,) = service["command"]
        container_path = flag.removeprefix("--config=")
        assert bind_mounts(name)[container_path].parent == COLLECTOR_DIR


@pytest.mark.parametrize("service", sorted(COLLECTOR_SERVICES))
def test_collector_config_validates_with_the_service_environment(service: str) -> None:
    """The collector build accepts the mounted config with the service's environment."""
    try:
        otelcol = pipeline.collector_binary()
    except pipeline.ToolMissing as missing:
        pytest.skip(str(missing))
    settings = services()[service]
    (flag,) = settings["command"]
    config_file = bind_mounts(service)[flag.removeprefix("--config=")]
    env = pipeline.clean_env(**{k: str(v) for k, v in settings["environment"].items()})
    result = run([otelcol, "validate", f"--config={config_file}"], env)
    assert result.returncode == 0, result.stderr


def test_prometheus_config_and_rules_pass_promtool(tmp_path: Path) -> None:
    """promtool accepts the mounted config with its rule files resolved to the mounted rules."""
    promtool = tool("promtool")
    mounts = bind_mounts("prometheus")
    prometheus_config = yaml.safe_load(mounts["/etc/prometheus/prometheus.yml"].read_text())
    rule_files = prometheus_config["rule_files"]
    assert rule_files and all(path in mounts for path in rule_files), rule_files
    prometheus_config["rule_files"] = [str(mounts[path]) for path in rule_files]
    local = tmp_path / "prometheus.yml"
    local.write_text(yaml.safe_dump(prometheus_config))
    result = run([promtool, "check", "config", str(local)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "--web.enable-remote-write-receiver" in services()["prometheus"]["command"]


def test_alertmanager_config_passes_amtool() -> None:
    """amtool accepts the mounted example config."""
    amtool = tool("amtool")
    (command_file,) = [c for c in services()["alertmanager"]["command"] if c.startswith("--config")]
    source = bind_mounts("alertmanager")[command_file.split("=", 1)[1]]
    result = run([amtool, "check-config", str(source)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_grafana_provisioning_finds_the_dashboards_and_datasources() -> None:
    """The provider's path holds the mounted dashboards; datasource uids match the generated ones."""
    mounts = bind_mounts("grafana")
    provider_file = mounts["/etc/grafana/provisioning/dashboards/poolwatch.yaml"]
    (provider,) = yaml.safe_load(provider_file.read_text())["providers"]
    dashboards = {
        Path(t).name for t in mounts if Path(t).parent == Path(provider["options"]["path"])
    }
    assert dashboards == {p.name for p in (COLLECTOR_DIR.parent / "dashboards").glob("*.json")}
    datasources = mounts["/etc/grafana/provisioning/datasources/poolwatch.yaml"]
    uids = {d["uid"]: d["url"] for d in yaml.safe_load(datasources.read_text())["datasources"]}
    defaults = config.MonitoringConfig()
    assert uids == {
        defaults.prometheus_datasource_uid: "http://prometheus:9090",
        defaults.loki_datasource_uid: "http://loki:3100",
        defaults.tempo_datasource_uid: "http://tempo:3200",
    }
    assert "/etc/grafana/provisioning/alerting/poolwatch.yaml" in mounts


def test_backends_listen_where_the_gateway_sends() -> None:
    """Tempo takes OTLP/gRPC on 4317 and Loki serves on 3100, as the gateway's environment says."""
    gateway = services()["gateway"]["environment"]
    tempo = yaml.safe_load(bind_mounts("tempo")["/etc/tempo/poolwatch.yaml"].read_text())
    grpc = tempo["distributor"]["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
    assert gateway["POOLWATCH_TEMPO_ENDPOINT"] == "tempo:" + grpc.rsplit(":", 1)[1]
    loki = yaml.safe_load(bind_mounts("loki")["/etc/loki/poolwatch.yaml"].read_text())
    assert (
        gateway["POOLWATCH_LOKI_ENDPOINT"]
        == f"http://loki:{loki['server']['http_listen_port']}/otlp"
    )
    assert loki["limits_config"]["allow_structured_metadata"] is True


def test_docker_compose_accepts_the_file() -> None:
    """``docker compose config`` parses and resolves the file (needs the compose plugin)."""
    docker = shutil.which("docker")
    if docker is None or run([docker, "compose", "version"]).returncode != 0:
        pytest.skip("docker compose is not installed")
    result = run([docker, "compose", "-f", str(COMPOSE), "config", "--quiet"])
    assert result.returncode == 0, result.stderr
