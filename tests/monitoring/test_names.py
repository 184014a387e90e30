"""OpenTelemetry to Prometheus name translation, checked against what the real collector produced.

``fixtures/collector_prometheus_names.json`` holds the series and label names scraped from the
poolwatch collector build (collector/gateway-scrape.yaml's prometheus exporter) after feeding
it every catalog metric as OTLP JSON. The slow test regenerates it with the real binary and
compares; ``POOLWATCH_UPDATE_FIXTURES=1`` rewrites the file instead.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import pytest

from poolwatch import catalog
from poolwatch.monitoring import names
from tests.monitoring.conftest import REPO
from tests.support import catalog_series, pipeline


def test_translation_matches_every_series_the_collector_produced() -> None:
    """Every series the collector made from the catalog is predicted by prometheus_series()."""
    scraped = set(catalog_series.scraped_series()) - {"target_info"}
    assert names.exported_series() == scraped


@pytest.mark.parametrize(
    ("metric", "expected"),
    [
        (catalog.CONNECTION_COUNT, "db_client_connection_count"),
        (catalog.CONNECTION_TIMEOUTS, "db_client_connection_timeouts_total"),
        (catalog.WAIT_TIME_BUCKET, "poolwatch_connection_wait_time_bucket_total"),
        (catalog.WAIT_TIME_SUM, "poolwatch_connection_wait_time_sum_seconds_total"),
        (catalog.CONNECTION_WAIT_TIME, "db_client_connection_wait_time_seconds"),
        (catalog.PG_OLDEST_IDLE, "poolwatch_postgresql_oldest_idle_seconds"),
        (catalog.DJANGO_CONNECTION_AGE, "poolwatch_django_connection_max_age_seconds"),
    ],
)
def test_metric_names_translate_like_the_collector(metric: catalog.Metric, expected: str) -> None:
    """Units in braces vanish, seconds are appended once, counters end in _total."""
    assert names.prometheus_name(metric) == expected


def test_attributes_and_resource_become_these_labels() -> None:
    """The pool attribute becomes a label, service.name becomes job and the id instance."""
    labels = set(catalog_series.scraped_series()["db_client_connection_count"])
    assert names.prometheus_label(catalog.POOL_NAME) == "db_client_connection_pool_name"
    assert {"db_client_connection_pool_name", names.SERVICE_LABEL, names.INSTANCE_LABEL} <= labels
    assert "le" in catalog_series.scraped_series()["poolwatch_connection_wait_time_bucket_total"]


def test_units_outside_the_catalog_translate_like_otlptranslator() -> None:
    """Per-units, ratios and a total already in the name follow the translator's rules."""
    rate = catalog.Metric("x.bytes", catalog.Kind.COUNTER, "By/s", "")
    ratio = catalog.Metric("x.ratio", catalog.Kind.UP_DOWN_COUNTER, "1", "")
    total = catalog.Metric("x.total.calls", catalog.Kind.COUNTER, "{call}", "")
    assert names.prometheus_name(rate) == "x_bytes_per_second_total"
    assert names.prometheus_name(ratio) == "x_ratio"
    assert names.prometheus_name(total) == "x_calls_total"


# --- regeneration with the real collector ---------------------------------------------------------


def _parse_exposition(text: str) -> dict[str, list[str]]:
    series: dict[str, set[str]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, rest = line.partition("{")
        labels = {part.split("=", 1)[0] for part in _split_labels(rest.rsplit("}", 1)[0])}
        series.setdefault(name.split(" ")[0], set()).update(labels)
    return {name: sorted(labels) for name, labels in sorted(series.items())}


def _split_labels(text: str) -> list[str]:
    parts, current, quoted = [], "", False
    for char in text:
        if char == '"' and not current.endswith("\\"):
            quoted = not quoted
        if char == "," and not quoted:
            parts.append(current)
            current = ""
        else:
            current += char
    return [p for p in [*parts, current] if p]


@pytest.mark.slow
def test_fixture_matches_a_fresh_scrape_of_the_real_collector(
    processes: pipeline.Processes, tmp_path: Path
) -> None:
    """Feeding the catalog through the real collector gives exactly the checked-in names."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    override = tmp_path / "override.yaml"
    override.write_text(
        f'receivers:\n  otlpjsonfile/test:\n    include: ["{inbox}/*.json"]\n'
        "    start_at: beginning\n    poll_interval: 200ms\n"
        "service:\n  pipelines:\n    metrics:\n      receivers: [otlpjsonfile/test]\n"
    )
    scrape = pipeline.loopback(pipeline.free_port())
    backends = {
        "POOLWATCH_PROMETHEUS_ENDPOINT": scrape,
        "POOLWATCH_TEMPO_ENDPOINT": pipeline.loopback(pipeline.free_port()),
        "POOLWATCH_LOKI_ENDPOINT": f"http://{pipeline.loopback(pipeline.free_port())}/otlp",
    }
    configs = [REPO / "collector" / "gateway-scrape.yaml", override]
    pipeline.start_collector(processes, "otelcol", configs, backends)
    (inbox / "metrics.json").write_text(json.dumps(catalog_series.otlp_document()))
    url = f"http://{scrape}/metrics"

    def scraped() -> bool:
        try:
            return "db_client_connection_count{" in httpx.get(url, timeout=2).text
        except httpx.HTTPError:
            return False

    pipeline.wait_for("the collector to serve the metrics", scraped, processes, timeout=60)
    fresh = _parse_exposition(httpx.get(url, timeout=5).text)
    if os.environ.get("POOLWATCH_UPDATE_FIXTURES"):
        catalog_series.FIXTURE.write_text(
            json.dumps({"series": fresh}, indent=2, sort_keys=True) + "\n"
        )
    assert fresh == catalog_series.scraped_series()
