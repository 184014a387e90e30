"""A complete demo run: what it prints and the OTLP/JSON file it writes tell each phase's story."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from poolwatch import catalog
from poolwatch.demo import PHASES
from poolwatch.demo.workload import EXPECTED_CONFLICTS, MAX_OVERFLOW, NEIGHBOUR, POOL, POOL_SIZE
from tests.demo.conftest import (
    DemoRun,
    attributes,
    last_points,
    log_records,
    metrics,
    number,
    spans,
)

PHASE_NAMES = [phase.name for phase in PHASES]

pytestmark = pytest.mark.slow  # the shared demo run takes about 15 s


def summary_rows(output: str) -> dict[str, list[str]]:
    """The summary's per-phase rows: name -> [from, to, checkouts, timeouts, p99, pending]."""
    table = output.split("summary:", 1)[1].split("detected:", 1)[0]
    return {
        cells[0]: cells[1:]
        for cells in (line.split() for line in table.splitlines())
        if cells and cells[0] in PHASE_NAMES
    }


def events(run: DemoRun, name: str) -> list[dict[str, object]]:
    """Attributes of every log record of event ``name`` in the telemetry file."""
    return [
        attributes(record)
        for record in log_records(run.requests())
        if record.get("eventName") == name
    ]


def test_every_phase_is_announced_in_order(finished_demo: DemoRun) -> None:
    """The plain output names each of the seven phases once, in the scripted order."""
    announced = re.findall(r"phase (\d)/7 (\w+):", finished_demo.output)
    assert announced == [(str(i), name) for i, name in enumerate(PHASE_NAMES, start=1)]


def test_the_summary_has_a_row_per_phase_with_timeouts_only_where_the_pool_ran_dry(
    finished_demo: DemoRun,
) -> None:
    """Healthy, saturation, leak and recovery time nothing out; the conflict phase exactly two."""
    rows = summary_rows(finished_demo.output)
    assert list(rows) == PHASE_NAMES
    timeouts = {name: int(cells[3]) for name, cells in rows.items()}
    assert timeouts["healthy"] == timeouts["leak"] == timeouts["recovery"] == 0
    assert timeouts["timeouts"] >= 3
    assert timeouts["conflict"] == EXPECTED_CONFLICTS
    assert all(int(cells[2]) > 0 for cells in rows.values())  # every phase checked out


def test_the_summary_says_what_was_detected_and_in_which_phase(finished_demo: DemoRun) -> None:
    """Timeouts first seen under load, the leak in the leak phase, conflicts caused by timeouts."""
    detected = finished_demo.output.split("detected:", 1)[1]
    assert re.search(rf"{catalog.EVENT_LEAK} +1 x, first at [\d.]+s in leak, pool {POOL}", detected)
    assert re.search(
        rf"{catalog.EVENT_CONFLICT} +{EXPECTED_CONFLICTS} x, first at [\d.]+s in conflict, "
        rf"pool {POOL}, cause {catalog.CAUSE_POOL_TIMEOUT}",
        detected,
    )
    assert re.search(rf"{catalog.EVENT_POOL_TIMEOUT} +\d+ x, first at [\d.]+s in (waits|timeouts)",
                     detected)  # fmt: skip
    assert "forgetful_report" in detected


def test_the_otlp_file_counts_the_timeouts_it_has_events_for(finished_demo: DemoRun) -> None:
    """The last timeouts count of the pool equals the timeout events, and each names the pool."""
    requests = finished_demo.requests()
    (point,) = [
        p
        for p in last_points(requests, catalog.CONNECTION_TIMEOUTS.name)
        if attributes(p)[catalog.POOL_NAME] == POOL
    ]
    timeouts = events(finished_demo, catalog.EVENT_POOL_TIMEOUT)
    assert number(point) == len(timeouts) > EXPECTED_CONFLICTS
    assert {event[catalog.POOL_NAME] for event in timeouts} == {POOL}
    assert all(event[catalog.POOL_MAX] == 5 for event in timeouts)


def test_the_otlp_file_holds_the_conflicts_and_their_cause(finished_demo: DemoRun) -> None:
    """Each already-attached conflict names the pool timeout just before it, with its message."""
    conflicts = events(finished_demo, catalog.EVENT_CONFLICT)
    assert len(conflicts) == EXPECTED_CONFLICTS
    for event in conflicts:
        assert event[catalog.CONFLICT_KIND] == catalog.CONFLICT_ALREADY_ATTACHED
        assert event[catalog.CONFLICT_CAUSE] == catalog.CAUSE_POOL_TIMEOUT
        assert event[catalog.CONFLICT_CAUSE_POOL] == POOL
        assert f"QueuePool limit of size {POOL_SIZE} overflow {MAX_OVERFLOW} reached" in str(
            event[catalog.CONFLICT_CAUSE_MESSAGE]
        )
        assert event[catalog.OBJECT_CLASS] == "poolwatch.demo.shop.Order"
    (point,) = last_points(finished_demo.requests(), catalog.SESSION_CONFLICTS.name)
    assert attributes(point) == {catalog.CONFLICT_KIND: catalog.CONFLICT_ALREADY_ATTACHED}
    assert number(point) == EXPECTED_CONFLICTS


def test_the_otlp_file_holds_the_one_leak_with_its_borrow_site(finished_demo: DemoRun) -> None:
    """The forgotten report connection is reported once, with where it was borrowed, and returned."""
    (leak,) = events(finished_demo, catalog.EVENT_LEAK)
    assert leak[catalog.POOL_NAME] == POOL
    assert leak[catalog.CODE_FUNCTION] == "forgetful_report"
    assert str(leak[catalog.CODE_FILE]).endswith("shop.py")
    assert leak[catalog.LEAK_THRESHOLD] == 2.0
    assert len(events(finished_demo, catalog.EVENT_RETURNED)) == 1
    (point,) = [
        p
        for p in last_points(finished_demo.requests(), catalog.CONNECTION_LEAKS.name)
        if attributes(p)[catalog.POOL_NAME] == POOL
    ]
    assert number(point) == 1


def test_the_otlp_file_holds_every_pool_metric_for_both_pools(finished_demo: DemoRun) -> None:
    """Standard and poolwatch metrics, for the pool in trouble and its healthy neighbour."""
    requests = finished_demo.requests()
    names = {metric["name"] for metric in metrics(requests)}
    for metric in (
        catalog.CONNECTION_COUNT,
        catalog.CONNECTION_MAX,
        catalog.CONNECTION_PENDING_REQUESTS,
        catalog.CONNECTION_TIMEOUTS,
        catalog.CONNECTION_WAIT_TIME,
        catalog.CONNECTION_USE_TIME,
        catalog.CONNECTION_LEAKS,
        catalog.SESSION_CONFLICTS,
    ):
        assert metric.name in names
    pools = {
        attributes(p)[catalog.POOL_NAME] for p in last_points(requests, catalog.CONNECTION_MAX.name)
    }
    assert pools == {POOL, NEIGHBOUR}
    maximum = {
        attributes(p)[catalog.POOL_NAME]: number(p)
        for p in last_points(requests, catalog.CONNECTION_MAX.name)
    }
    assert maximum == {POOL: 5, NEIGHBOUR: 12}


def test_the_otlp_file_uses_hex_ids_and_camel_case(finished_demo: DemoRun) -> None:
    """Spans carry 32- and 16-digit hex ids, and checkout spans sit under the request spans."""
    found = list(spans(finished_demo.requests()))
    requests = {span["spanId"]: span for span in found if span["name"] == "GET /orders"}
    checkouts = [span for span in found if span["name"] == catalog.SPAN_CHECKOUT]
    assert requests and checkouts
    for span in found:
        assert re.fullmatch(r"[0-9a-f]{32}", span["traceId"])
        assert re.fullmatch(r"[0-9a-f]{16}", span["spanId"])
        assert "startTimeUnixNano" in span and "start_time_unix_nano" not in span
    assert all(span["parentSpanId"] in requests for span in checkouts)


def test_dashboards_and_alerts_are_written_beside_the_telemetry(finished_demo: DemoRun) -> None:
    """The generated dashboards and Prometheus rules are in the output directory."""
    directory = finished_demo.directory
    assert list((directory / "dashboards").glob("*.json"))
    assert (directory / "alerts" / "poolwatch-rules.yaml").is_file()
    assert f"dashboards and alerts: {directory / 'dashboards'}" in finished_demo.output


def test_without_the_monitoring_extra_the_dashboards_are_skipped_with_a_hint(
    tmp_path: Path,
) -> None:
    """No PyYAML (the monitoring extra): the demo says how to get dashboards and writes none."""
    script = (
        "import sys; from pathlib import Path; sys.modules['yaml'] = None; "
        "from poolwatch.demo.runner import write_monitoring; "
        f"print(write_monitoring(Path({str(tmp_path)!r})))"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120, check=True)  # fmt: skip
    assert result.stdout.strip() == (
        "dashboards and alerts skipped: the monitoring extra is not installed (yaml is missing): "
        "pip install 'poolwatch[monitoring]'"
    )
    assert list(tmp_path.iterdir()) == []
