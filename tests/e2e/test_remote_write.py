"""The shipped gateway config writing to Prometheus's remote-write receiver, end to end.

``collector/gateway.yaml`` runs as shipped, with only its listen addresses, storage directory and
backend endpoints set through its environment variables: OTLP in, the ``prometheusremotewrite``
exporter out into Debian's Prometheus started with ``--web.enable-remote-write-receiver`` and
poolwatch's generated rules (short ``for:``), alerts through Alertmanager to the test's webhook.
The exhausting app of ``test_pipeline.py`` exports to the gateway.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlencode

import pytest

from poolwatch.monitoring import names
from tests.support import catalog_series, exhaustion, pipeline
from tests.support.pipeline import COLLECTOR_DIR, Processes, Webhook


@pytest.mark.slow
def test_remote_written_pool_alerts_reach_the_webhook(
    tmp_path: Path, processes: Processes, webhook: Webhook
) -> None:
    """Through gateway.yaml's remote write, the timeout and saturation alerts fire with the pool's labels."""
    backends, otlp_http = exhaustion.start_remote_write_pipeline(tmp_path, processes, webhook)

    detection = exhaustion.exhaust(processes, webhook, backends, otlp_http)

    exhaustion.assert_pool_alerts(detection)
    exhaustion.print_latencies(
        f"gateway batch 2 s, remote-write flush {pipeline.REMOTE_WRITE_FLUSH_INTERVAL}; "
        f"{exhaustion.INTERVALS}",
        detection,
    )


def remote_written_series(backends: pipeline.Backends) -> dict[str, list[str]]:
    """Every remote-written series name with the label names it carries (``__name__`` left out).

    The alert rules' own series (``ALERTS``, ``ALERTS_FOR_STATE``) and the recording rules'
    (``level:metric:operation``, a colon in every name) carry the job label too and are left out.
    """
    query = urlencode({"match[]": f'{{job="{NAMES_SERVICE}", __name__!~"ALERTS.*|.+:.+"}}'})
    answer = pipeline.get_json(f"{backends.prometheus}/api/v1/series?{query}")
    found: dict[str, set[str]] = {}
    for labels in answer.get("data", []):
        found.setdefault(labels["__name__"], set()).update(set(labels) - {"__name__"})
    return {name: sorted(labels) for name, labels in sorted(found.items())}


#: The service.name of the OTLP document tests/support/catalog_series.py builds.
NAMES_SERVICE = "shop"
SCOPE_LABELS = {"otel_scope_name", "otel_scope_schema_url", "otel_scope_version"}


@pytest.mark.slow
def test_remote_write_names_every_catalog_metric_like_the_scrape_exporter(
    tmp_path: Path, processes: Processes, webhook: Webhook
) -> None:
    """Every catalog metric, remote-written by gateway.yaml, gets the series and labels names.py predicts."""
    backends = pipeline.start_backends(tmp_path, processes, webhook, exhaustion.RULE_SETTINGS)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    override = pipeline.write_yaml(
        tmp_path / "override.yaml",
        {
            "receivers": {
                "otlpjsonfile/test": {
                    "include": [f"{inbox}/*.json"],
                    "start_at": "beginning",
                    "poll_interval": "200ms",
                }
            },
            "service": {"pipelines": {"metrics": {"receivers": ["otlpjsonfile/test"]}}},
        },
    )
    pipeline.start_collector(
        processes,
        "gateway",
        [COLLECTOR_DIR / "gateway.yaml", override],
        pipeline.gateway_env(backends),
    )
    (inbox / "metrics.json").write_text(json.dumps(catalog_series.otlp_document()))

    expected = set(names.exported_series())
    series = pipeline.wait_for(
        "every catalog series in Prometheus",
        lambda: (found := remote_written_series(backends)) and expected <= set(found) and found,
        processes,
        pipeline.READY_TIMEOUT,
        lambda: str(sorted(expected - set(remote_written_series(backends)))),
    )

    # The same names as the scrape exporter, with two differences: no target_info series for a
    # resource holding nothing but service.name and service.instance.id, and no otel_scope_*
    # labels.
    scraped = {
        name: sorted(set(labels) - SCOPE_LABELS)
        for name, labels in catalog_series.scraped_series().items()
        if name != "target_info"
    }
    assert set(series) == expected
    assert series == scraped
