"""The whole pipeline with real processes on loopback: an exhausted pool becomes alerts.

``apps/exhaust_app.py`` runs under ``opentelemetry-instrument`` (poolwatch found through its
entry point) and exports OTLP/HTTP every 500 ms to the collector built by collector/build.sh,
running a minimal test config (otlp receiver -> prometheus exporter). Debian's Prometheus scrapes
the collector every second and evaluates poolwatch's generated rules every second, with short
``for:`` durations and rate window from the MonitoringConfig API; it sends alerts to Debian's
Alertmanager, which routes everything to a webhook served by the test.

The test asserts that both severities of the checkout-timeout and pool-saturation alerts arrive
with the pool's and the service's labels, and prints how long after the app's first pool timeout
each one arrived (informational; no timing is asserted). Every process listens on 127.0.0.1 only
and is killed in teardown, also when the test fails; a failure message carries the tail of every
process's log.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import yaml

from poolwatch.monitoring import alerts, config, generate
from tests.monitoring.conftest import free_port, http_ok

REPO = Path(__file__).resolve().parents[2]
APP = Path(__file__).parent / "apps" / "exhaust_app.py"
LAUNCHER = Path(sys.executable).parent / "opentelemetry-instrument"
BUILD_SCRIPT = REPO / "collector" / "build.sh"

SERVICE = "poolwatch-e2e-orders"
POOL = "orders"
#: Seconds the app keeps its pool exhausted.
APP_DURATION = 20
EXPORT_INTERVAL_MS = 500
#: The alerts that must arrive, by (alertname, severity).
EXPECTED = {
    ("PoolwatchCheckoutTimeouts", "warning"),
    ("PoolwatchCheckoutTimeouts", "critical"),
    ("PoolwatchPoolSaturation", "warning"),
    ("PoolwatchPoolSaturation", "critical"),
}
#: Short intervals so the alerts fire within seconds; everything else keeps its default.
RULE_SETTINGS: dict[str, Any] = {
    "rule_interval": "1s",
    "rate_window": "30s",
    "thresholds": {
        "pool_saturation": {"warning_for": "2s", "critical_for": "3s"},
        "checkout_timeouts": {"warning_for": "2s", "critical_for": "3s"},
    },
}

READY_TIMEOUT = 60.0
FIRST_TIMEOUT_TIMEOUT = 60.0
#: Seconds after the app's first pool timeout by which every expected alert must have arrived.
ALERT_TIMEOUT = 60.0
LOG_TAIL_LINES = 25
#: The one Alertmanager receiver: the test's webhook.
RECEIVER = "e2e-webhook"


def _require(*candidates: str) -> str:
    """The first executable candidate; skip locally and fail under CI when there is none."""
    for candidate in candidates:
        found = shutil.which(candidate) or (candidate if os.access(candidate, os.X_OK) else None)
        if found:
            return found
    message = f"{candidates[0]} is not available"
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _collector_binary() -> str:
    """The poolwatch-otelcol binary from collector/build.sh (cached after the first build)."""
    if not (shutil.which("go") or Path("/usr/local/go/bin/go").exists() or os.environ.get("GO")):
        _require("go")
    result = subprocess.run(
        ["bash", str(BUILD_SCRIPT)], capture_output=True, text=True, timeout=45 * 60, check=False
    )
    if result.returncode != 0:
        tail = "\n".join(result.stderr.splitlines()[-40:])
        pytest.fail(f"collector/build.sh exited {result.returncode}:\n{tail}", pytrace=False)
    return result.stdout.strip().splitlines()[-1]


# --- processes ------------------------------------------------------------------------------------


@dataclass
class Started:
    """One process the test started: its name, handle and log file."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    #: The app exits by itself; the servers must not.
    may_exit: bool = False

    def tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError as error:
            return f"(no log: {error})"
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


@dataclass
class Processes:
    """Processes in their own sessions, output to log files, all killed by :meth:`stop_all`."""

    directory: Path
    started: list[Started] = field(default_factory=list)

    def start(
        self,
        name: str,
        args: list[str],
        *,
        env: dict[str, str] | None = None,
        may_exit: bool = False,
    ) -> Started:
        log = self.directory / f"{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                args,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=self.directory,
                start_new_session=True,
            )
        started = Started(name, proc, log, may_exit)
        self.started.append(started)
        return started

    def report(self) -> str:
        """Every process's state and the tail of its log."""
        parts = []
        for item in self.started:
            code = item.proc.poll()
            state = "running" if code is None else f"exited {code}"
            parts.append(f"--- {item.name} ({state}), last lines of {item.log}:\n{item.tail()}")
        return "\n".join(parts)

    def check(self) -> None:
        """Fail at once when a server died, or the app failed."""
        for item in self.started:
            code = item.proc.poll()
            if code is not None and not (item.may_exit and code == 0):
                pytest.fail(f"{item.name} exited with {code}\n{self.report()}", pytrace=False)

    def stop_all(self) -> None:
        """SIGTERM every process group still running, SIGKILL whatever outlives 5 s."""
        for item in self.started:
            if item.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(item.proc.pid, signal.SIGTERM)
        for item in self.started:
            try:
                item.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(item.proc.pid, signal.SIGKILL)
                item.proc.wait(timeout=10)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    """Start processes for the test; every one is stopped afterwards, pass or fail."""
    running = Processes(tmp_path)
    try:
        yield running
    finally:
        running.stop_all()


# --- the webhook --------------------------------------------------------------------------------


@dataclass
class Webhook:
    """An HTTP server recording each Alertmanager notification with the time it arrived."""

    url: str
    received: list[tuple[float, dict[str, Any]]]
    lock: threading.Lock

    def arrivals(self) -> dict[tuple[str, str], tuple[float, dict[str, Any], str]]:
        """First arrival of each firing (alertname, severity): time, alert, receiver."""
        with self.lock:
            received = list(self.received)
        first: dict[tuple[str, str], tuple[float, dict[str, Any], str]] = {}
        for when, payload in received:
            for alert in payload.get("alerts", []):
                labels = alert.get("labels", {})
                key = (labels.get("alertname", ""), labels.get("severity", ""))
                if alert.get("status") == "firing" and key not in first:
                    first[key] = (when, alert, payload.get("receiver", ""))
        return first


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    """A webhook receiver on a free loopback port, shut down after the test."""
    received: list[tuple[float, dict[str, Any]]] = []
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            arrived = time.time()
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            try:
                payload = json.loads(body)
            except ValueError:
                payload = {"undecodable": body.decode(errors="replace")}
            with lock:
                received.append((arrived, payload))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, name="webhook", daemon=True)
    thread.start()
    try:
        yield Webhook(f"http://127.0.0.1:{server.server_address[1]}/alerts", received, lock)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def wait_for(
    what: str,
    check: Callable[[], bool],
    processes: Processes,
    timeout: float,
    context: Callable[[], str] = lambda: "",
) -> None:
    """Poll ``check``; fail with ``context()`` and every log tail if a process dies or time runs out."""
    deadline = time.monotonic() + timeout
    while not check():
        processes.check()
        if time.monotonic() > deadline:
            pytest.fail(
                f"timed out after {timeout:.0f}s waiting for {what}\n{context()}\n"
                f"{processes.report()}",
                pytrace=False,
            )
        time.sleep(0.2)


def _get_json(url: str) -> Any:
    try:
        return httpx.get(url, timeout=2).json()
    except (httpx.HTTPError, ValueError) as error:
        return {"error": repr(error)}


# --- configs --------------------------------------------------------------------------------------


def _write_yaml(path: Path, data: Any) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _rules(path: Path) -> Path:
    settings = config.from_mapping(RULE_SETTINGS)
    path.write_text(generate.to_yaml(alerts.prometheus_rule_groups(settings)))
    return path


def _collector_config(path: Path, otlp: int, scrape: int, health: int) -> Path:
    pipeline = {"receivers": ["otlp"], "processors": ["batch"], "exporters": ["prometheus"]}
    return _write_yaml(
        path,
        {
            "extensions": {"health_check": {"endpoint": f"127.0.0.1:{health}"}},
            "receivers": {"otlp": {"protocols": {"http": {"endpoint": f"127.0.0.1:{otlp}"}}}},
            "processors": {"batch": {"timeout": "200ms"}},
            "exporters": {
                "prometheus": {
                    "endpoint": f"127.0.0.1:{scrape}",
                    # service.name becomes the job label, as in gateway-scrape.yaml.
                    "resource_to_telemetry_conversion": {"enabled": False},
                }
            },
            "service": {
                "extensions": ["health_check"],
                "pipelines": {"metrics": pipeline},
                "telemetry": {"metrics": {"level": "none"}},
            },
        },
    )


def _alertmanager_config(path: Path, webhook_url: str) -> Path:
    return _write_yaml(
        path,
        {
            "route": {
                "receiver": RECEIVER,
                "group_by": ["alertname", "severity", "job", "db_client_connection_pool_name"],
                "group_wait": "1s",
                "group_interval": "1s",
                "repeat_interval": "1h",
            },
            "receivers": [
                {
                    "name": RECEIVER,
                    "webhook_configs": [{"url": webhook_url, "send_resolved": False}],
                }
            ],
        },
    )


def _prometheus_config(path: Path, rules: Path, scrape: int, alertmanager: int) -> Path:
    return _write_yaml(
        path,
        {
            "global": {
                "scrape_interval": "1s",
                "scrape_timeout": "1s",
                "evaluation_interval": "1s",
            },
            "rule_files": [str(rules)],
            "alerting": {
                "alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{alertmanager}"]}]}]
            },
            "scrape_configs": [
                {
                    "job_name": "poolwatch-collector",
                    # Keep the job label the collector derives from service.name.
                    "honor_labels": True,
                    "static_configs": [{"targets": [f"127.0.0.1:{scrape}"]}],
                }
            ],
        },
    )


# --- starting the pipeline ----------------------------------------------------------------------


@dataclass(frozen=True)
class Pipeline:
    """Where the running collector and Prometheus listen."""

    otlp_endpoint: str
    prometheus: str


def _start_pipeline(tmp_path: Path, processes: Processes, webhook: Webhook) -> Pipeline:
    """Start Alertmanager, the collector and Prometheus; return once all are ready and linked."""
    prometheus_bin = _require("/usr/bin/prometheus", "prometheus")
    alertmanager_bin = _require("/usr/bin/prometheus-alertmanager", "alertmanager")
    otelcol = _collector_binary()
    otlp, scrape, health = free_port(), free_port(), free_port()
    prometheus_port, alertmanager_port = free_port(), free_port()
    prometheus = f"http://127.0.0.1:{prometheus_port}"
    alertmanager = f"http://127.0.0.1:{alertmanager_port}"

    am_config = _alertmanager_config(tmp_path / "alertmanager.yaml", webhook.url)
    processes.start(
        "alertmanager",
        [
            alertmanager_bin,
            f"--config.file={am_config}",
            f"--storage.path={tmp_path / 'alertmanager-data'}",
            f"--web.listen-address=127.0.0.1:{alertmanager_port}",
            # No cluster: nothing to gossip with, and no wait for gossip to settle.
            "--cluster.listen-address=",
        ],
    )
    collector_config = _collector_config(tmp_path / "otelcol.yaml", otlp, scrape, health)
    processes.start("collector", [otelcol, f"--config={collector_config}"])
    rules = _rules(tmp_path / "rules.yaml")
    prom_config = _prometheus_config(tmp_path / "prometheus.yml", rules, scrape, alertmanager_port)
    processes.start(
        "prometheus",
        [
            prometheus_bin,
            f"--config.file={prom_config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prometheus_port}",
        ],
    )

    def ready(url: str) -> Callable[[], bool]:
        return lambda: http_ok(url)

    def rules_loaded() -> bool:
        groups = _get_json(f"{prometheus}/api/v1/rules").get("data", {}).get("groups", [])
        return any(group["name"] == "poolwatch-pool" for group in groups)

    def alertmanager_known() -> bool:
        data = _get_json(f"{prometheus}/api/v1/alertmanagers").get("data", {})
        return bool(data.get("activeAlertmanagers"))

    wait_for("alertmanager ready", ready(f"{alertmanager}/-/ready"), processes, READY_TIMEOUT)
    wait_for("collector healthy", ready(f"http://127.0.0.1:{health}/"), processes, READY_TIMEOUT)
    wait_for("prometheus ready", ready(f"{prometheus}/-/ready"), processes, READY_TIMEOUT)
    wait_for("prometheus to load the rules", rules_loaded, processes, READY_TIMEOUT)
    wait_for("prometheus to find alertmanager", alertmanager_known, processes, READY_TIMEOUT)
    return Pipeline(f"http://127.0.0.1:{otlp}", prometheus)


def _start_app(tmp_path: Path, processes: Processes, pipeline: Pipeline) -> Started:
    """Run the exhausting app under opentelemetry-instrument, exporting to the collector."""
    launcher = _require(str(LAUNCHER))
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "OTEL_SERVICE_NAME": SERVICE,
        "OTEL_EXPORTER_OTLP_ENDPOINT": pipeline.otlp_endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_METRIC_EXPORT_INTERVAL": str(EXPORT_INTERVAL_MS),
        "OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED": "false",
        "POOLWATCH_APP_DB": str(tmp_path / "orders.db"),
        "POOLWATCH_APP_DURATION": str(APP_DURATION),
    }
    return processes.start("app", [launcher, sys.executable, str(APP)], env=env, may_exit=True)


def _first_timeout(app: Started) -> float | None:
    """When the app's first checkout timed out (unix seconds), once it has said so."""
    for line in app.tail(lines=1000).splitlines():
        if line.startswith("FIRST_TIMEOUT "):
            return float(line.split()[1])
    return None


def _state(pipeline: Pipeline, webhook: Webhook, started: float) -> str:
    """What has arrived so far, what Prometheus fires, and the pool series it holds."""
    arrived = {key: round(when - started, 2) for key, (when, _, _) in webhook.arrivals().items()}
    listed = _get_json(f"{pipeline.prometheus}/api/v1/alerts").get("data", {}).get("alerts", [])
    firing = [
        (a["labels"].get("alertname"), a["labels"].get("severity"), a["state"]) for a in listed
    ]
    query = "db_client_connection_count or db_client_connection_max or db_client_connection_timeouts_total"
    series = _get_json(f"{pipeline.prometheus}/api/v1/query?{urlencode({'query': query})}")
    return (
        f"arrived at the webhook (s after the first timeout): {arrived}\n"
        f"alerts in prometheus: {firing}\nseries in prometheus: {json.dumps(series)[:3000]}"
    )


# --- the test ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_exhausted_pool_alerts_reach_the_webhook(
    tmp_path: Path, processes: Processes, webhook: Webhook
) -> None:
    """An exhausted pool's timeout and saturation alerts reach the webhook with the pool's labels."""
    pipeline = _start_pipeline(tmp_path, processes, webhook)
    app = _start_app(tmp_path, processes, pipeline)

    wait_for(
        "the app's first pool timeout",
        lambda: _first_timeout(app) is not None,
        processes,
        FIRST_TIMEOUT_TIMEOUT,
    )
    started = _first_timeout(app)
    assert started is not None
    wait_for(
        f"alerts {sorted(EXPECTED)} at the webhook",
        lambda: set(webhook.arrivals()) >= EXPECTED,
        processes,
        ALERT_TIMEOUT,
        lambda: _state(pipeline, webhook, started),
    )

    arrivals = webhook.arrivals()
    for alertname, severity in sorted(EXPECTED):
        _, alert, receiver = arrivals[(alertname, severity)]
        labels = alert["labels"]
        assert receiver == RECEIVER
        assert labels["alertname"] == alertname, labels
        assert labels["poolwatch_alert"] == alertname, labels
        assert labels["severity"] == severity, labels
        assert labels["db_client_connection_pool_name"] == POOL, labels
        assert labels["job"] == SERVICE, labels

    print(
        "\nseconds from the app's first pool timeout to the alert at the webhook "
        f"(export {EXPORT_INTERVAL_MS}ms, scrape 1s, evaluation 1s, for 2s warning / 3s critical, "
        "group_wait 1s):"
    )
    for key in sorted(EXPECTED):
        print(f"  {key[0]} {key[1]}: {arrivals[key][0] - started:.2f}")
