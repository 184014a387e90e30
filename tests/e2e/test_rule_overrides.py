"""The rules the end-to-end tests load are the shipped ones, with only their timing shortened."""

from __future__ import annotations

import re

from poolwatch.monitoring import alerts, config, generate
from tests.support import exhaustion, pipeline

_TIMING_LINE = re.compile(r"^(- )?\s*(interval|for): \S+$")
_HISTORY = re.compile(r"(count_over_time\([^)]*\) >= )\d+")


def _without_timing(rules_yaml: str, rate_window: str) -> list[str]:
    """The rule file's lines less ``interval``/``for``, its rate window written as ``W`` and the
    forecast's evaluations-of-history count (a multiple of the evaluation interval) as ``N``."""
    lines = [line for line in rules_yaml.splitlines() if not _TIMING_LINE.match(line)]
    window = re.compile(rf"(\[|over |last ){re.escape(rate_window)}\b")
    return [_HISTORY.sub(r"\1N", window.sub(r"\1W", line)) for line in lines]


def test_end_to_end_rules_differ_from_the_shipped_ones_only_in_timing() -> None:
    """Same groups, alerts, expressions, labels and annotations as alerts/poolwatch-rules.yaml."""
    shipped = (pipeline.REPO / "alerts" / "poolwatch-rules.yaml").read_text()
    settings = config.from_mapping(exhaustion.RULE_SETTINGS)
    tested = generate.to_yaml(alerts.prometheus_rule_groups(settings))

    assert _without_timing(tested, "30s") == _without_timing(shipped, "5m")
    assert tested.count("interval: 1s") == shipped.count("interval: 1m") > 0
