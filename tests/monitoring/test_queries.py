"""Every PromQL query poolwatch generates parses, and reads only series poolwatch exports.

promtool has no parse-only command for bare expressions, so all of them go into one temporary
rule file as recording rules and ``promtool check rules`` parses them in one run. Series names
are checked against the catalog through the same name translation the collector applies.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from poolwatch.monitoring import alerts, config, dashboards, names, promql

GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}
SERIES = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{")
LABEL_VALUES = re.compile(r"^label_values\((.*), *[a-zA-Z_][a-zA-Z0-9_]*\)$")
#: A selector on every application series, so every series name in a rule is followed by "{".
LINT_SELECTOR = 'cluster="lint"'


def _panel_queries(model: dict[str, Any]) -> list[str]:
    found = []
    for panel in dashboards._panels(model["panels"]):
        if panel.get("datasource", {}).get("type") != "prometheus":
            continue
        found += [target["expr"] for target in panel.get("targets", [])]
    for variable in model["templating"]["list"]:
        if variable["type"] == "query":
            match = LABEL_VALUES.match(variable["query"])
            assert match, variable["query"]
            found.append(match.group(1))
    return found


def _queries(mode: config.HistogramMode) -> list[str]:
    settings = config.MonitoringConfig(selector=LINT_SELECTOR, histograms=mode)
    found = [q for board in dashboards.dashboards(settings) for q in _panel_queries(board.model)]
    found += [rule.expr for rule in alerts.rules(settings)]
    return found


def _promql(query: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        query = query.replace(variable, value)
    return query


@pytest.mark.parametrize("mode", ["aggregated", "standard"])
def test_every_query_parses_as_promql(mode: config.HistogramMode, promtool: str,
                                      tmp_path: Path) -> None:  # fmt: skip
    """promtool parses every panel, variable and alert query (both histogram modes)."""
    queries = _queries(mode)
    rules = [{"record": f"poolwatch:lint_{n}", "expr": _promql(q)} for n, q in enumerate(queries)]
    path = tmp_path / "lint.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "lint", "rules": rules}]}, width=4096))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True,
                            text=True, check=False, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(queries)} rules found" in result.stdout


@pytest.mark.parametrize("mode", ["aggregated", "standard"])
def test_queries_use_only_series_poolwatch_exports(mode: config.HistogramMode) -> None:
    """Every series name in a query is one the catalog translates to, and each query has one."""
    exported = names.exported_series()
    for query in _queries(mode):
        used = set(SERIES.findall(query))
        assert used, f"no series in {query}"
        assert used <= exported, f"{sorted(used - exported)} not exported; in {query}"


def test_histogram_switch_changes_only_the_histogram_series() -> None:
    """The standard mode reads _bucket/_count/_sum; the default reads the le counters."""
    aggregated = promql.dashboard_scope(config.MonitoringConfig())
    standard = promql.dashboard_scope(config.MonitoringConfig(histograms="standard"))
    assert "poolwatch_connection_wait_time_bucket_total{" in promql.quantile(
        aggregated, promql.WAIT, 0.99
    )
    assert 'le="+Inf"' in promql.checkout_rate(aggregated)
    assert "db_client_connection_wait_time_seconds_bucket{" in promql.quantile(
        standard, promql.WAIT, 0.99
    )
    assert "db_client_connection_wait_time_seconds_count{" in promql.checkout_rate(standard)


def test_selectors_come_from_the_config_and_the_dashboard_variables() -> None:
    """The config's selector reaches every series; dashboards add $service and $pool."""
    settings = config.MonitoringConfig(selector='cluster="prod"')
    alert = promql.saturation(promql.alert_scope(settings))
    board = promql.saturation(promql.dashboard_scope(settings))
    assert alert.count('cluster="prod"') == 2 and "$service" not in alert
    assert (
        board.count('job=~"$service"') == 2
        and board.count('db_client_connection_pool_name=~"$pool"') == 2
    )
