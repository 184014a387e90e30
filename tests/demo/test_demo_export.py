"""The demo's telemetry loads elsewhere: the real collector replays its file; a collector receives it."""

from __future__ import annotations

import json
import re
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from poolwatch import catalog
from poolwatch.demo import INTERRUPTED, TELEMETRY_FILE
from poolwatch.demo.workload import EXPECTED_CONFLICTS, POOL
from tests.demo.conftest import (
    DEMO_TIMEOUT_S,
    DemoRun,
    attributes,
    demo_command,
    demo_env,
    log_records,
    metrics,
    run_demo,
    spans,
)
from tests.support import pipeline
from tests.support.otlp_receiver import OtlpReceiver
from tests.support.polling import poll

#: How long the collector may take to replay the file (it polls every 200 ms).
REPLAY_TIMEOUT_S = 90


def collector_config(tmp_path: Path, telemetry: Path, replayed: Path) -> Path:
    """otlpjsonfile (the demo's file) -> file exporter, for all three signals, nothing listening."""
    config = tmp_path / "replay.yaml"
    pipeline = "      receivers: [otlpjsonfile]\n      exporters: [file]\n"
    config.write_text(
        "receivers:\n"
        f"  otlpjsonfile:\n    include: [{json.dumps(str(telemetry))}]\n"
        "    start_at: beginning\n    poll_interval: 200ms\n"
        f"exporters:\n  file:\n    path: {json.dumps(str(replayed))}\n"
        "service:\n  telemetry:\n    metrics:\n      level: none\n  pipelines:\n"
        + "".join(
            f"    {signal_name}:\n{pipeline}" for signal_name in ("metrics", "traces", "logs")
        )
    )
    return config


def read_lines(path: Path) -> list[dict[str, Any]]:
    """The JSON lines the file exporter has written so far (a partial last line is skipped)."""
    if not path.exists():
        return []
    found = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            found.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return found


@pytest.mark.slow
def test_the_real_collector_replays_the_demo_file_unchanged(
    finished_demo: DemoRun, otelcol: Path, tmp_path: Path
) -> None:
    """otlpjsonfile reads every request; the file exporter re-exports the same spans, events, metrics."""
    written = finished_demo.requests()
    replayed_path = tmp_path / "replayed.jsonl"
    config = collector_config(tmp_path, finished_demo.directory / TELEMETRY_FILE, replayed_path)
    log = (tmp_path / "otelcol.log").open("wb")
    collector = subprocess.Popen([str(otelcol), f"--config={config}"], stdout=log,
                                 stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)  # fmt: skip
    expected_spans = sum(1 for _ in spans(written))
    try:
        expected_logs = sum(1 for _ in log_records(written))
        expected_metrics = {m["name"] for m in metrics(written)}

        def replayed_all() -> list[Any]:
            assert collector.poll() is None, (tmp_path / "otelcol.log").read_text()
            lines = read_lines(replayed_path)
            done = (
                sum(1 for _ in spans(lines)) >= expected_spans
                and sum(1 for _ in log_records(lines)) >= expected_logs
                and {m["name"] for m in metrics(lines)} >= expected_metrics
            )
            return lines if done else []

        replayed = poll(replayed_all, REPLAY_TIMEOUT_S, 0.3)
        assert replayed, (tmp_path / "otelcol.log").read_text()[-3000:]
    finally:
        collector.terminate()
        collector.wait(timeout=30)
        log.close()
    conflicts = [r for r in log_records(replayed) if r.get("eventName") == catalog.EVENT_CONFLICT]
    assert len(conflicts) == EXPECTED_CONFLICTS
    assert {attributes(r)[catalog.CONFLICT_CAUSE] for r in conflicts} == {
        catalog.CAUSE_POOL_TIMEOUT
    }
    assert sorted(s["spanId"] for s in spans(replayed)) == sorted(
        s["spanId"] for s in spans(written)
    )
    assert {m["name"] for m in metrics(replayed)} == {m["name"] for m in metrics(written)}
    assert sum(1 for _ in log_records(replayed)) == sum(1 for _ in log_records(written))


@pytest.mark.slow
def test_otlp_endpoint_sends_everything_to_a_collector_instead_of_a_file(tmp_path: Path) -> None:
    """With --otlp-endpoint the metrics, spans and events arrive over OTLP/HTTP; no file is written."""
    with OtlpReceiver() as receiver:
        endpoint = receiver.endpoint
        run = run_demo(tmp_path / "out", "--otlp-endpoint", receiver.endpoint)
        assert run.returncode == 0, run.output
        assert receiver.errors == []
        conflicts = receiver.log_records(catalog.EVENT_CONFLICT)
        timeouts = receiver.log_records(catalog.EVENT_POOL_TIMEOUT)
        (counted,) = [
            value
            for attrs, value in receiver.metric_points(catalog.CONNECTION_TIMEOUTS.name)
            if attrs[catalog.POOL_NAME] == POOL
        ]
        assert receiver.spans("GET /orders")
    assert len(conflicts) == EXPECTED_CONFLICTS
    assert counted == len(timeouts)
    assert len(receiver.log_records(catalog.EVENT_LEAK)) == 1
    assert not (tmp_path / "out" / TELEMETRY_FILE).exists()
    assert f"telemetry: {endpoint} (OTLP/HTTP" in run.output


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_with_the_summary_so_far(tmp_path: Path) -> None:
    """SIGINT in the third phase: exit 130, a summary of the phases run, a complete file."""
    directory = tmp_path / "out"
    demo = subprocess.Popen(
        demo_command("--no-live", "--duration", "30", "--output", str(directory)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=demo_env(),
    )
    assert demo.stdout is not None
    seen = []
    for line in demo.stdout:  # bounded: the demo ends by itself after about 30 s
        seen.append(line)
        if "phase 3/7 waits" in line:
            demo.send_signal(signal.SIGINT)
            break
    rest, _ = demo.communicate(timeout=DEMO_TIMEOUT_S)
    output = "".join(seen) + rest
    assert demo.returncode == INTERRUPTED, output
    assert "summary so far (interrupted):" in output
    assert "Traceback" not in output
    table = output.split("summary so far (interrupted):", 1)[1].split("detected:", 1)[0]
    assert [line.split()[0] for line in table.splitlines()[2:] if line.strip()] == [
        "healthy",
        "saturation",
        "waits",
    ]
    lines = (directory / TELEMETRY_FILE).read_text(encoding="utf-8").splitlines()
    requests = [json.loads(line) for line in lines]  # every line is complete JSON
    assert any(m["name"] == catalog.CONNECTION_COUNT.name for m in metrics(requests))
    assert "phase 4/7" not in output


@pytest.mark.slow
def test_a_reader_that_stops_early_ends_the_demo_quietly(tmp_path: Path) -> None:
    """``poolwatch demo | head -3``: the demo stops its workload and exits without a traceback."""
    demo = subprocess.Popen(
        demo_command("--no-live", "--duration", "30", "--output", str(tmp_path / "out")),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=demo_env(),
    )
    assert demo.stdout is not None and demo.stderr is not None
    first = [demo.stdout.readline() for _ in range(3)]
    demo.stdout.close()
    errors = demo.stderr.read()
    demo.wait(timeout=DEMO_TIMEOUT_S)
    assert first[0].startswith("poolwatch demo:")
    assert demo.returncode == 1
    assert errors == ""


def _start_demo(directory: Path, *args: str, **popen: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        demo_command("--no-live", "--duration", "30", "--output", str(directory), *args),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **popen,
    )


def _read_until(demo: subprocess.Popen[str], marker: str) -> list[str]:
    """Lines up to and including the first holding ``marker`` (the demo ends by itself)."""
    assert demo.stdout is not None
    seen = []
    for line in demo.stdout:
        seen.append(line)
        if marker in line:
            break
    return seen


@pytest.mark.slow
def test_a_collector_that_goes_away_fails_the_demo_and_counts_what_was_lost(
    tmp_path: Path,
) -> None:
    """Exports after the collector stops are counted as failed; every phase still runs; exit 1."""
    receiver = OtlpReceiver().start()
    try:
        demo = _start_demo(tmp_path / "out", "--otlp-endpoint", receiver.endpoint,
                           "--duration", "11", env=demo_env())  # fmt: skip
        seen = _read_until(demo, "phase 2/7 saturation")
    finally:
        receiver.stop()
    rest, _ = demo.communicate(timeout=DEMO_TIMEOUT_S)
    output = "".join(seen) + rest
    assert demo.returncode == 1, output
    assert "Traceback" not in output
    announced = [int(n) for n in re.findall(r"phase (\d)/7 \w+:", output)]
    assert announced == [1, 2, 3, 4, 5, 6, 7]
    (telemetry,) = [line for line in output.splitlines() if "telemetry: " in line]
    # Connections kept alive may still deliver; every new one is refused and counted.
    failed = sum(int(n) for n in re.findall(r"\d+ sent, (\d+) failed", telemetry))
    assert failed >= 1, telemetry
    assert "FAILED" in telemetry
    assert f"poolwatch demo: {failed} telemetry exports failed" in output


def test_a_collector_that_is_not_there_stops_the_demo_before_it_starts(tmp_path: Path) -> None:
    """Nothing listens at --otlp-endpoint: exit 1 at once, naming it, and no directory left."""
    nobody = f"http://{pipeline.loopback(pipeline.free_port())}"
    run = run_demo(tmp_path / "out", "--otlp-endpoint", nobody)
    assert run.returncode == 1, run.output
    assert run.output.strip() == (
        f"poolwatch demo: cannot send telemetry to {nobody}/v1/metrics: [Errno 111] "
        "Connection refused"
    )
    assert not (tmp_path / "out").exists()


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.slow
def test_ctrl_c_stops_a_demo_started_with_sigint_ignored(tmp_path: Path) -> None:
    """A background job of a script inherits SIGINT ignored: the demo still stops on it."""
    demo = _start_demo(tmp_path / "out", env=demo_env(), preexec_fn=_ignore_sigint)
    seen = _read_until(demo, "phase 2/7 saturation")
    demo.send_signal(signal.SIGINT)
    rest, _ = demo.communicate(timeout=DEMO_TIMEOUT_S)
    output = "".join(seen) + rest
    assert demo.returncode == INTERRUPTED, output
    assert "summary so far (interrupted):" in output
    assert "phase 3/7" not in output


@pytest.mark.slow
def test_ctrl_c_at_once_leaves_no_temporary_database_and_a_complete_file(tmp_path: Path) -> None:
    """SIGINT right after the banner, while threads start: exit 130, no traceback, nothing left."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    demo = _start_demo(tmp_path / "out", env={**demo_env(), "TMPDIR": str(temp)})
    seen = _read_until(demo, "poolwatch demo:")
    demo.send_signal(signal.SIGINT)
    rest, _ = demo.communicate(timeout=DEMO_TIMEOUT_S)
    output = "".join(seen) + rest
    assert demo.returncode == INTERRUPTED, output
    assert "Traceback" not in output
    assert "summary so far (interrupted):" in output
    assert list(temp.iterdir()) == []
    lines = (tmp_path / "out" / TELEMETRY_FILE).read_text(encoding="utf-8").splitlines()
    assert all(json.loads(line) for line in lines)  # every line is complete JSON
