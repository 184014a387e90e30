"""Real processes on loopback for the end-to-end tests and the detection-latency benchmark.

Starts the poolwatch collector build (collector/build.sh), Debian's Prometheus and Alertmanager
and an app under ``opentelemetry-instrument``, each in its own session with its output in a log
file; serves the webhook Alertmanager notifies. Failures raise :class:`PipelineError` (an
``AssertionError``) carrying every process's log tail; a missing program raises
:class:`ToolMissing`, which the tests turn into a skip (or a failure under CI).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import yaml

from poolwatch import catalog
from poolwatch.monitoring import alerts, config, generate, names

REPO = Path(__file__).resolve().parents[2]
COLLECTOR_DIR = REPO / "collector"
BUILD_SCRIPT = COLLECTOR_DIR / "build.sh"
LAUNCHER = Path(sys.executable).parent / "opentelemetry-instrument"
PROMETHEUS = ("/usr/bin/prometheus", "prometheus")
ALERTMANAGER = ("/usr/bin/prometheus-alertmanager", "alertmanager")

READY_TIMEOUT = 60.0
LOG_TAIL_LINES = 25
#: The one Alertmanager receiver: the webhook.
RECEIVER = "e2e-webhook"
#: What Alertmanager groups notifications by: one notification per alert, severity and pool.
GROUP_BY = (
    "alertname",
    "severity",
    names.SERVICE_LABEL,
    names.prometheus_label(catalog.POOL_NAME),
)


class PipelineError(AssertionError):
    """A process died, or something did not happen in time; the message has every log tail."""


class ToolMissing(RuntimeError):
    """A program the pipeline needs is not installed."""


def find_tool(*candidates: str) -> str:
    """The first executable candidate (a path or a name on PATH)."""
    for candidate in candidates:
        found = shutil.which(candidate) or (candidate if os.access(candidate, os.X_OK) else None)
        if found:
            return found
    raise ToolMissing(f"{candidates[0]} is not available (run .ci/setup-system.sh)")


def collector_binary() -> str:
    """The poolwatch-otelcol binary: ``$POOLWATCH_OTELCOL`` (set by the test command), else
    built by collector/build.sh (cached per machine after the first build)."""
    built = os.environ.get("POOLWATCH_OTELCOL")
    if not built:
        if not (
            shutil.which("go") or Path("/usr/local/go/bin/go").exists() or os.environ.get("GO")
        ):
            raise ToolMissing("no Go toolchain to build the collector with")
        result = subprocess.run(
            ["bash", str(BUILD_SCRIPT)],
            capture_output=True,
            text=True,
            timeout=45 * 60,
            check=False,
        )
        if result.returncode != 0:
            tail = "\n".join(result.stderr.splitlines()[-40:])
            raise PipelineError(f"collector/build.sh exited {result.returncode}:\n{tail}")
        lines = result.stdout.strip().splitlines()
        if not lines:
            raise PipelineError("collector/build.sh printed no binary path")
        built = lines[-1]
    if not (Path(built).is_file() and os.access(built, os.X_OK)):
        raise PipelineError(f"{built} is not an executable collector")
    return built


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def loopback(port: int) -> str:
    """``127.0.0.1:<port>``."""
    return f"127.0.0.1:{port}"


def http_ok(url: str) -> bool:
    """True when ``url`` answers 200."""
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def get_json(url: str) -> Any:
    """The JSON at ``url``, or ``{"error": ...}`` when there is none yet."""
    try:
        return httpx.get(url, timeout=5).json()
    except (httpx.HTTPError, ValueError) as error:
        return {"error": repr(error)}


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without POOLWATCH_*, PG* and OTEL_* settings, plus ``extra``.

    The collector configs read POOLWATCH_* variables, the collector's PostgreSQL drivers read
    libpq's PG* ones and the launcher reads OTEL_*: none left in the caller's shell may steer them.
    """
    prefixes = ("POOLWATCH_", "PG", "OTEL_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.update(extra)
    return env


# --- processes ------------------------------------------------------------------------------------


@dataclass
class Started:
    """One process: its name, handle, log file and how it was started (for a restart)."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    args: list[str]
    env: dict[str, str] | None
    #: The app exits by itself; the servers must not.
    may_exit: bool = False
    #: Stopped on purpose by :meth:`Processes.stop`.
    stopped: bool = False

    def tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last lines of the process's output."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError as error:
            return f"(no log: {error})"
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"

    def lines_starting(self, prefix: str) -> list[str]:
        """Every output line starting with ``prefix``, the prefix removed."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return []
        return [line[len(prefix) :] for line in text.splitlines() if line.startswith(prefix)]


@dataclass
class Processes:
    """Processes in their own sessions, output to log files, all stopped by :meth:`stop_all`."""

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
        """Start ``args``; its output goes to ``<directory>/<name>.log`` (appended)."""
        log = self.directory / f"{name}.log"
        with log.open("ab") as out:
            proc = subprocess.Popen(
                args,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=self.directory,
                start_new_session=True,
            )
        started = Started(name, proc, log, args, env, may_exit)
        self.started = [item for item in self.started if item.name != name] + [started]
        return started

    def stop(self, item: Started, timeout: float = 30.0) -> int:
        """SIGTERM one process group, SIGKILL it if it outlives ``timeout``; its exit code."""
        item.stopped = True
        if item.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(item.proc.pid, signal.SIGTERM)
            try:
                item.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(item.proc.pid, signal.SIGKILL)
                item.proc.wait(timeout=10)
        return item.proc.returncode

    def restart(self, item: Started) -> Started:
        """Start a stopped process again with the same arguments and environment."""
        return self.start(item.name, item.args, env=item.env, may_exit=item.may_exit)

    def report(self) -> str:
        """Every process's state and the tail of its log."""
        parts = []
        for item in self.started:
            code = item.proc.poll()
            state = "running" if code is None else f"exited {code}"
            parts.append(f"--- {item.name} ({state}), last lines of {item.log}:\n{item.tail()}")
        return "\n".join(parts)

    def check(self) -> None:
        """Raise at once when a server died, or the app failed."""
        for item in self.started:
            code = item.proc.poll()
            if code is not None and not item.stopped and not (item.may_exit and code == 0):
                raise PipelineError(f"{item.name} exited with {code}\n{self.report()}")

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


@contextlib.contextmanager
def running_processes(directory: Path) -> Iterator[Processes]:
    """Processes started inside the block are all stopped at its end, pass or fail."""
    processes = Processes(directory)
    try:
        yield processes
    finally:
        processes.stop_all()


def wait_for(
    what: str,
    check: Callable[[], Any],
    processes: Processes,
    timeout: float,
    context: Callable[[], str] = lambda: "",
) -> Any:
    """Poll ``check`` until truthy, return its value; raise with logs on a death or timeout."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        processes.check()
        if time.monotonic() > deadline:
            raise PipelineError(
                f"timed out after {timeout:.0f}s waiting for {what}\n{context()}\n"
                f"{processes.report()}"
            )
        time.sleep(0.2)


# --- the webhook ------------------------------------------------------------------------------------


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


@contextlib.contextmanager
def serve_webhook() -> Iterator[Webhook]:
    """A webhook receiver on a free loopback port, shut down at the end of the block."""
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


# --- configs --------------------------------------------------------------------------------------


def write_yaml(path: Path, data: Any) -> Path:
    """``data`` as YAML at ``path``."""
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def write_rules(path: Path, settings: Mapping[str, Any]) -> Path:
    """poolwatch's generated Prometheus rules, built with ``settings`` overriding the defaults."""
    path.write_text(generate.to_yaml(alerts.prometheus_rule_groups(config.from_mapping(settings))))
    return path


def alertmanager_config(path: Path, webhook_url: str, group_wait: str = "1s") -> Path:
    """Everything to the webhook at once: group_interval 1 s, no resolved messages."""
    route = {
        "receiver": RECEIVER,
        "group_by": list(GROUP_BY),
        "group_wait": group_wait,
        "group_interval": "1s",
        "repeat_interval": "1h",
    }
    receiver = {"name": RECEIVER, "webhook_configs": [{"url": webhook_url, "send_resolved": False}]}
    return write_yaml(path, {"route": route, "receivers": [receiver]})


def prometheus_config(
    path: Path,
    rules: Path,
    alertmanager_port: int,
    scrape_port: int | None = None,
    out_of_order_window: str | None = None,
) -> Path:
    """Evaluation (and scraping, with ``scrape_port``) every second; alerts to Alertmanager."""
    data: dict[str, Any] = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        "alerting": {
            "alertmanagers": [{"static_configs": [{"targets": [loopback(alertmanager_port)]}]}]
        },
    }
    if scrape_port is not None:
        data["scrape_configs"] = [
            {
                "job_name": "poolwatch-collector",
                # Keep the job label the collector derives from service.name.
                "honor_labels": True,
                "static_configs": [{"targets": [loopback(scrape_port)]}],
            }
        ]
    if out_of_order_window is not None:
        data["storage"] = {"tsdb": {"out_of_order_time_window": out_of_order_window}}
    return write_yaml(path, data)


def scrape_collector_config(path: Path, otlp: int, scrape: int, health: int) -> Path:
    """A minimal collector: OTLP/HTTP in, a Prometheus scrape endpoint out."""
    pipeline = {"receivers": ["otlp"], "processors": ["batch"], "exporters": ["prometheus"]}
    return write_yaml(
        path,
        {
            "extensions": {"health_check": {"endpoint": loopback(health)}},
            "receivers": {"otlp": {"protocols": {"http": {"endpoint": loopback(otlp)}}}},
            "processors": {"batch": {"timeout": "200ms"}},
            "exporters": {
                "prometheus": {
                    "endpoint": loopback(scrape),
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


# --- Prometheus and Alertmanager ------------------------------------------------------------------


@dataclass(frozen=True)
class Backends:
    """Where the running Prometheus and Alertmanager listen."""

    prometheus: str
    alertmanager: str

    @property
    def remote_write_url(self) -> str:
        """Prometheus's remote-write receiver."""
        return f"{self.prometheus}/api/v1/write"

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The result of an instant query (empty until there is one)."""
        answer = get_json(f"{self.prometheus}/api/v1/query?{urlencode({'query': promql})}")
        result: list[dict[str, Any]] = answer.get("data", {}).get("result", [])
        return result

    def firing(self) -> list[tuple[str, str, str]]:
        """(alertname, severity, state) of every alert Prometheus holds."""
        listed = get_json(f"{self.prometheus}/api/v1/alerts").get("data", {}).get("alerts", [])
        return [
            (a["labels"].get("alertname"), a["labels"].get("severity"), a["state"]) for a in listed
        ]


def start_backends(
    directory: Path,
    processes: Processes,
    webhook: Webhook,
    rule_settings: Mapping[str, Any],
    *,
    scrape_port: int | None = None,
    out_of_order_window: str | None = None,
    group_wait: str = "1s",
) -> Backends:
    """Alertmanager to the webhook, and Prometheus with poolwatch's rules, both ready.

    Prometheus accepts remote write always, and scrapes ``scrape_port`` when given; Alertmanager
    waits ``group_wait`` before it sends a new group.
    """
    prometheus_bin = find_tool(*PROMETHEUS)
    alertmanager_bin = find_tool(*ALERTMANAGER)
    prometheus_port, alertmanager_port = free_port(), free_port()
    backends = Backends(
        f"http://127.0.0.1:{prometheus_port}", f"http://127.0.0.1:{alertmanager_port}"
    )
    am_config = alertmanager_config(directory / "alertmanager.yaml", webhook.url, group_wait)
    processes.start(
        "alertmanager",
        [
            alertmanager_bin,
            f"--config.file={am_config}",
            f"--storage.path={directory / 'alertmanager-data'}",
            f"--web.listen-address={loopback(alertmanager_port)}",
            # No cluster: nothing to gossip with, and no wait for gossip to settle.
            "--cluster.listen-address=",
        ],
    )
    rules = write_rules(directory / "rules.yaml", rule_settings)
    prom_config = prometheus_config(
        directory / "prometheus.yml", rules, alertmanager_port, scrape_port, out_of_order_window
    )
    processes.start(
        "prometheus",
        [
            prometheus_bin,
            f"--config.file={prom_config}",
            f"--storage.tsdb.path={directory / 'tsdb'}",
            f"--web.listen-address={loopback(prometheus_port)}",
            # Prometheus 2.33+ (Debian 12 ships 2.42); the feature flag is the older spelling.
            "--web.enable-remote-write-receiver",
        ],
    )

    def rules_loaded() -> bool:
        groups = get_json(f"{backends.prometheus}/api/v1/rules").get("data", {}).get("groups", [])
        return any(group["name"] == "poolwatch-pool" for group in groups)

    def alertmanager_known() -> bool:
        data = get_json(f"{backends.prometheus}/api/v1/alertmanagers").get("data", {})
        return bool(data.get("activeAlertmanagers"))

    wait_for(
        "alertmanager ready",
        lambda: http_ok(f"{backends.alertmanager}/-/ready"),
        processes,
        READY_TIMEOUT,
    )
    wait_for(
        "prometheus ready",
        lambda: http_ok(f"{backends.prometheus}/-/ready"),
        processes,
        READY_TIMEOUT,
    )
    wait_for("prometheus to load the rules", rules_loaded, processes, READY_TIMEOUT)
    wait_for("prometheus to find alertmanager", alertmanager_known, processes, READY_TIMEOUT)
    return backends


# --- collectors --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Collector:
    """A running collector started from shipped configs: its process and where it listens."""

    started: Started
    otlp_grpc: str
    otlp_http: str
    health: str


def start_collector(
    processes: Processes,
    name: str,
    configs: list[Path],
    env: Mapping[str, str],
    storage: Path | None = None,
) -> Collector:
    """Run the collector build with ``configs`` on free loopback ports; return once healthy.

    Listen addresses, the health check and the collector's own metrics are set here;
    ``env`` adds the rest (backend endpoints). ``storage`` is the queue directory.
    """
    otelcol = collector_binary()
    ports = {key: free_port() for key in ("grpc", "http", "health", "telemetry")}
    settings = {
        "POOLWATCH_OTLP_GRPC_ENDPOINT": loopback(ports["grpc"]),
        "POOLWATCH_OTLP_HTTP_ENDPOINT": loopback(ports["http"]),
        "POOLWATCH_HEALTH_ENDPOINT": loopback(ports["health"]),
        "POOLWATCH_TELEMETRY_HOST": "127.0.0.1",
        "POOLWATCH_TELEMETRY_PORT": str(ports["telemetry"]),
        "POOLWATCH_STORAGE_DIR": str(storage or processes.directory / f"{name}-storage"),
        **env,
    }
    started = processes.start(
        name, [otelcol, *(f"--config={c}" for c in configs)], env=clean_env(**settings)
    )
    collector = Collector(
        started,
        loopback(ports["grpc"]),
        f"http://{loopback(ports['http'])}",
        f"http://{loopback(ports['health'])}/",
    )
    wait_for(f"{name} healthy", lambda: http_ok(collector.health), processes, READY_TIMEOUT)
    return collector


#: How often the gateway's remote-write WAL sends to Prometheus in the tests (shipped: 5s).
REMOTE_WRITE_FLUSH_INTERVAL = "1s"


def gateway_env(backends: Backends) -> dict[str, str]:
    """gateway.yaml's backends: remote write to ``backends``; Tempo and Loki on unused ports."""
    return {
        "POOLWATCH_REMOTE_WRITE_URL": backends.remote_write_url,
        "POOLWATCH_REMOTE_WRITE_FLUSH_INTERVAL": REMOTE_WRITE_FLUSH_INTERVAL,
        "POOLWATCH_TEMPO_ENDPOINT": loopback(free_port()),
        "POOLWATCH_LOKI_ENDPOINT": f"http://{loopback(free_port())}/otlp",
    }


# --- the app ----------------------------------------------------------------------------------------


def start_app(
    processes: Processes,
    app: Path,
    service: str,
    otlp_http_endpoint: str,
    export_interval_ms: int,
    **env: str,
) -> Started:
    """Run ``app`` under opentelemetry-instrument, exporting metrics over OTLP/HTTP."""
    launcher = find_tool(str(LAUNCHER))
    settings = {
        "PATH": os.environ.get("PATH", os.defpath),
        "OTEL_SERVICE_NAME": service,
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_http_endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_METRIC_EXPORT_INTERVAL": str(export_interval_ms),
        "OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED": "false",
        **env,
    }
    return processes.start("app", [launcher, sys.executable, str(app)], env=settings, may_exit=True)
