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
SERIES = re.compile(r"(?<![:\w])([a-zA-Z_][a-zA-Z0-9_]*)\{")
#: Recording rules' series (level:metric:operation); alert rules read them without matchers.
RECORDED = re.compile(r"\b([a-zA-Z_]+:[a-zA-Z0-9_]+:[a-zA-Z0-9_]+)\b")
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
    found += [rule["expr"] for rule in alerts.recording_group(settings)["rules"]]
    return found


def _promql(query: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        query = query.replace(variable, value)
    return query


@pytest.mark.parametrize("mode", ["classic", "native"])
def test_every_query_parses_as_promql(mode: config.HistogramMode, promtool: str,
                                      tmp_path: Path) -> None:  # fmt: skip
    """promtool parses every panel, variable, recording and alert query (both histogram modes)."""
    queries = _queries(mode)
    rules = [{"record": f"poolwatch:lint_{n}", "expr": _promql(q)} for n, q in enumerate(queries)]
    path = tmp_path / "lint.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "lint", "rules": rules}]}, width=4096))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True,
                            text=True, check=False, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(queries)} rules found" in result.stdout


@pytest.mark.parametrize("mode", ["classic", "native"])
def test_queries_use_only_series_poolwatch_exports(mode: config.HistogramMode) -> None:
    """Every series in a query is one the catalog translates to or a recording; each has one."""
    settings = config.MonitoringConfig(histograms=mode)
    exported = set(names.exported_series())
    if mode == "native":
        exported |= {names.prometheus_name(m) for m in names.all_metrics()}
    recorded = {rule["record"] for rule in alerts.recording_group(settings)["rules"]}
    for query in _queries(mode):
        used = set(SERIES.findall(query)) - recorded
        reads = set(RECORDED.findall(query))
        assert used or reads, f"no series in {query}"
        assert used <= exported, f"{sorted(used - exported)} not exported; in {query}"
        assert reads <= recorded, f"{sorted(reads - recorded)} not recorded; in {query}"


def test_histogram_switch_changes_only_the_histogram_series() -> None:
    """Classic mode reads the standard _bucket/_count series; native reads the histogram itself."""
    classic = promql.alert_scope(config.MonitoringConfig())
    native = promql.alert_scope(config.MonitoringConfig(histograms="native"))
    assert promql.PROCESS_WAIT_P99.expression(classic).startswith(
        "histogram_quantile(0.99, sum by (job, instance, db_client_connection_pool_name, le) "
        "(rate(db_client_connection_wait_time_seconds_bucket[5m])))"
    )
    assert promql.POOL_CHECKOUTS.expression(classic) == (
        "sum by (job, db_client_connection_pool_name) "
        "(rate(db_client_connection_wait_time_seconds_count[5m]))"
    )
    assert promql.PROCESS_WAIT_P99.expression(native).startswith(
        "histogram_quantile(0.99, sum by (job, instance, db_client_connection_pool_name) "
        "(rate(db_client_connection_wait_time_seconds[5m])))"
    )
    assert promql.POOL_CHECKOUTS.expression(native) == (
        "sum by (job, db_client_connection_pool_name) "
        "(histogram_count(rate(db_client_connection_wait_time_seconds[5m])))"
    )


def test_selectors_come_from_the_config_and_the_dashboard_variables() -> None:
    """The config's selector reaches every raw series; dashboards add the variables."""
    settings = config.MonitoringConfig(selector='cluster="prod"')
    recording = promql.PROCESS_SATURATION.expression(promql.alert_scope(settings))
    board = promql.process_saturation(promql.dashboard_scope(settings))
    inline = promql.process_saturation(promql.dashboard_scope(settings, use_recorded=False))
    assert recording.count('cluster="prod"') == 2 and "$service" not in recording
    assert board.count('job=~"$service"') == 2 and board.count('instance=~"$instance"') == 2
    # inlined: used / max, once averaged over the window and once now
    assert inline.count('cluster="prod"') == 4 and inline.count('instance=~"$instance"') == 4


def test_recordings_sum_rates_never_rates_of_sums() -> None:
    """Per-pool counter recordings take each process's rate first, so restarts and departures
    of processes never show as negative or huge rates."""
    scope = promql.alert_scope(config.MonitoringConfig())
    for rule in promql.POOL_RULES:
        expr = rule.expression(scope)
        assert "rate(sum" not in expr and "increase(sum" not in expr, expr
        if "rate(" in expr:
            assert re.match(r"^sum by \([^)]*\) \((histogram_count\()?rate\(", expr), expr
