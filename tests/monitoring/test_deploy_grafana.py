"""`poolwatch deploy grafana` against a fake Grafana that checks requests against Grafana's API."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from poolwatch.cli import main
from poolwatch.monitoring import alerts, config
from tests.monitoring.fake_grafana import FakeGrafana

TOKEN = "glsa_s3cr3t-t0ken-never-printed"
RULES = len(alerts.rules(config.MonitoringConfig()))


@pytest.fixture
def grafana(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGrafana]:
    """A fake Grafana on loopback, with GRAFANA_URL and GRAFANA_TOKEN pointing at it."""
    server = FakeGrafana(TOKEN)
    monkeypatch.setenv("GRAFANA_URL", server.url)
    monkeypatch.setenv("GRAFANA_TOKEN", TOKEN)
    yield server
    server.close()
    assert server.state.violations == []


def test_first_deploy_creates_folder_dashboards_and_rules(
    grafana: FakeGrafana, capsys: pytest.CaptureFixture[str]
) -> None:
    """The folder, three dashboards and every alert rule are created through the documented API."""
    assert main(["deploy", "grafana"]) == 0

    state = grafana.state
    assert list(state.folders) == ["poolwatch"]
    assert sorted(state.dashboards) == [
        "poolwatch-django",
        "poolwatch-pools",
        "poolwatch-postgresql",
    ]
    assert all(d["meta"]["folderUid"] == "poolwatch" for d in state.dashboards.values())
    assert len(state.rules) == RULES
    assert state.writes()[0] == ("POST", "/api/folders")
    assert state.writes().count(("POST", "/api/dashboards/db")) == 3
    assert state.writes().count(("POST", "/api/v1/provisioning/alert-rules")) == RULES
    assert (
        "create: dashboard poolwatch-pools (poolwatch / Connection pools)"
        in capsys.readouterr().out
    )


def test_second_deploy_changes_nothing(
    grafana: FakeGrafana, capsys: pytest.CaptureFixture[str]
) -> None:
    """Deploying the same thing again only reads: every object is reported unchanged."""
    assert main(["deploy", "grafana"]) == 0
    grafana.state.requests.clear()
    capsys.readouterr()

    assert main(["deploy", "grafana"]) == 0

    assert grafana.state.writes() == []
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 + 3 + RULES and all(line.startswith("unchanged: ") for line in out)


def test_changed_threshold_updates_only_that_rule(grafana: FakeGrafana) -> None:
    """A new threshold rewrites the one rule and the one dashboard it changes, nothing else."""
    assert main(["deploy", "grafana"]) == 0
    grafana.state.requests.clear()

    assert main(["deploy", "grafana", "--set", "thresholds.pool_saturation.warning=0.7"]) == 0

    assert grafana.state.writes() == [
        ("POST", "/api/dashboards/db"),  # the saturation panels draw the threshold
        ("PUT", "/api/v1/provisioning/alert-rules/poolwatch-pool-saturation-warning"),
    ]


def test_dry_run_writes_nothing(grafana: FakeGrafana, capsys: pytest.CaptureFixture[str]) -> None:
    """--dry-run reads the current state, prints what would change and sends no write."""
    assert main(["deploy", "grafana", "--dry-run"]) == 0

    assert grafana.state.writes() == []
    assert grafana.state.dashboards == {}
    out = capsys.readouterr().out
    assert "would create: folder poolwatch (poolwatch)" in out
    assert "would create: alert rule poolwatch-pool-saturation-critical" in out


def test_server_error_fails_clearly_without_the_token(
    grafana: FakeGrafana, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 500 gives exit 1 and a message naming request and status, and never the token."""
    grafana.state.fail = ("POST", "/api/folders", 1)

    assert main(["deploy", "grafana"]) == 1

    out, err = capsys.readouterr()
    assert f"POST {grafana.url}/api/folders returned HTTP 500" in err
    assert "database is locked" in err
    assert TOKEN not in out + err


def test_failure_midway_restores_the_previous_state(
    grafana: FakeGrafana, capsys: pytest.CaptureFixture[str]
) -> None:
    """When the 10th rule write fails, dashboards and rules already changed are put back."""
    assert main(["deploy", "grafana"]) == 0
    before = grafana.state.snapshot()
    grafana.state.requests.clear()
    capsys.readouterr()
    grafana.state.fail = ("PUT", "/api/v1/provisioning/alert-rules/", 10)

    code = main(["deploy", "grafana", "--set", "runbook_base_url=https://runbooks.example/pw",
                 "--set", "thresholds.pool_saturation.warning=0.5"])  # fmt: skip

    assert code == 1
    after = grafana.state.snapshot()
    # The pools dashboard (its threshold lines changed) has its old content again, as a new
    # version; the nine rules already replaced got their old bodies back.
    assert _without_versions(after[1]) == _without_versions(before[1])
    assert after[2] == before[2]
    out, err = capsys.readouterr()
    assert "returned HTTP 500" in err and "rolled back update: alert rule" in err
    assert out.splitlines() == [
        "nothing changed: the deploy failed and every write made was undone"
    ]


def _without_versions(boards: dict[str, Any]) -> dict[str, Any]:
    return {uid: {**b, "dashboard": {k: v for k, v in b["dashboard"].items() if k != "version"}}
            for uid, b in boards.items()}  # fmt: skip


def test_new_objects_are_removed_when_a_first_deploy_fails(grafana: FakeGrafana) -> None:
    """A first deploy that fails at the second dashboard leaves Grafana as empty as it was."""
    grafana.state.fail = ("POST", "/api/dashboards/db", 2)

    assert main(["deploy", "grafana"]) == 1

    assert grafana.state.snapshot() == [{}, {}, {}]


def test_missing_credentials_are_reported(monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """Without GRAFANA_URL and GRAFANA_TOKEN nothing is sent and exit is 2."""
    monkeypatch.delenv("GRAFANA_URL", raising=False)
    monkeypatch.delenv("GRAFANA_TOKEN", raising=False)

    assert main(["deploy", "grafana"]) == 2

    assert "set GRAFANA_URL and GRAFANA_TOKEN" in capsys.readouterr().err


def test_a_new_folder_title_renames_the_folder(
    grafana: FakeGrafana, capsys: pytest.CaptureFixture[str]
) -> None:
    """A changed grafana_folder_title is an update, applied with Grafana's folder PUT."""
    assert main(["deploy", "grafana"]) == 0
    grafana.state.requests.clear()
    capsys.readouterr()

    assert main(["deploy", "grafana", "--set", "grafana_folder_title=Databases"]) == 0

    assert grafana.state.folders["poolwatch"]["title"] == "Databases"
    assert grafana.state.writes() == [("PUT", "/api/folders/poolwatch")]
    assert "update: folder poolwatch (poolwatch -> Databases)" in capsys.readouterr().out


def test_a_failed_rename_is_undone_and_reported_truthfully(
    grafana: FakeGrafana, capsys: pytest.CaptureFixture[str]
) -> None:
    """The rename is put back when a later write fails; stdout lists no update that stayed."""
    assert main(["deploy", "grafana"]) == 0
    capsys.readouterr()
    grafana.state.fail = ("PUT", "/api/v1/provisioning/alert-rules/", 1)

    code = main(["deploy", "grafana", "--set", "grafana_folder_title=Databases",
                 "--set", "thresholds.pool_saturation.warning=0.5"])  # fmt: skip

    assert code == 1
    assert grafana.state.folders["poolwatch"]["title"] == "poolwatch"
    out, err = capsys.readouterr()
    assert "rolled back update: folder poolwatch (poolwatch -> Databases)" in err
    assert "update:" not in out and "create:" not in out
