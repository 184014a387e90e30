"""Every alert's default runbook link names a runbook file that `poolwatch generate` wrote."""

from __future__ import annotations

from pathlib import Path

import yaml

from poolwatch.cli import main
from poolwatch.monitoring import config, generate


def _runbook_urls(rules_file: Path) -> set[str]:
    data = yaml.safe_load(rules_file.read_text(encoding="utf-8"))
    return {
        rule["annotations"]["runbook_url"]
        for group in data["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }


def test_default_links_resolve_to_generated_runbooks(tmp_path: Path) -> None:
    """Each default runbook_url is a path under --root to a runbook written beside the rules."""
    assert main(["generate", "--root", str(tmp_path)]) == 0

    urls = _runbook_urls(tmp_path / generate.PROMETHEUS_RULES)

    assert len(urls) == len(list((tmp_path / generate.RUNBOOKS_DIR).glob("*.md")))
    for url in urls:
        assert url.startswith("alerts/runbooks/Poolwatch"), url
        assert (tmp_path / url).is_file(), url


def test_no_default_points_at_a_placeholder_host() -> None:
    """The default base is the generated runbooks folder, not a made-up web address."""
    assert config.MonitoringConfig().runbook_base_url == generate.RUNBOOKS_DIR


def test_a_configured_base_url_is_used_for_every_alert(tmp_path: Path) -> None:
    """runbook_base_url=https://wiki.internal/runbooks/ gives <base>/<alert>.md, one slash."""
    code = main(["generate", "--root", str(tmp_path),
                 "--set", "runbook_base_url=https://wiki.internal/runbooks/"])  # fmt: skip

    assert code == 0
    urls = _runbook_urls(tmp_path / generate.PROMETHEUS_RULES)
    assert "https://wiki.internal/runbooks/PoolwatchPoolSaturation.md" in urls
    assert all(url.startswith("https://wiki.internal/runbooks/Poolwatch") for url in urls)


def test_label_placeholders_are_code_spans_not_html_tags(tmp_path: Path) -> None:
    """A runbook's summary writes `<job>` in backticks; bare, Markdown would drop it as a tag."""
    assert main(["generate", "--root", str(tmp_path)]) == 0

    saturation = (tmp_path / generate.RUNBOOKS_DIR / "PoolwatchPoolSaturation.md").read_text()

    assert (
        "Connection pool `<db_client_connection_pool_name>` of `<job>` is nearly full in "
        "process `<instance>`." in saturation
    )
