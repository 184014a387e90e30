"""The committed dashboards against Grafana's dashboard model, plus lint checks.

No PyPI or npm package ships Grafana's dashboard JSON schema (@grafana/schema has TypeScript
types only), so two checks stand in for it: ``DASHBOARD_SCHEMA`` below, a JSON schema of the
fields and ranges Grafana requires of a dashboard (written for poolwatch from Grafana's dashboard
JSON model), and a round trip through the pinned grafana-foundation-sdk's models, which are
generated from Grafana's own schema: a key or value those models do not know is lost on the way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import Dashboard as SdkDashboard

from poolwatch.monitoring import config, dashboards
from poolwatch.monitoring.transport import contains
from tests.monitoring.conftest import REPO

FILES = sorted((REPO / "dashboards").glob("*.json"))
IMPORTS = sorted((REPO / "dashboards" / "import").glob("*.json"))
UIDS = {"poolwatch-pools", "poolwatch-django", "poolwatch-postgresql"}

_DATASOURCE = {
    "type": "object",
    "required": ["type", "uid"],
    "properties": {"type": {"type": "string"}, "uid": {"type": "string", "minLength": 1}},
}
_GRID = {
    "type": "object",
    "required": ["h", "w", "x", "y"],
    "properties": {
        "h": {"type": "integer", "minimum": 1},
        "w": {"type": "integer", "minimum": 1, "maximum": 24},
        "x": {"type": "integer", "minimum": 0, "maximum": 23},
        "y": {"type": "integer", "minimum": 0},
    },
}
_PANEL = {
    "type": "object",
    "required": ["type", "id", "gridPos", "title"],
    "properties": {
        "type": {"type": "string", "minLength": 1},
        "id": {"type": "integer", "minimum": 1},
        "title": {"type": "string"},
        "gridPos": _GRID,
        "datasource": _DATASOURCE,
        "targets": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["refId"],
                "properties": {"refId": {"type": "string", "minLength": 1}},
            },
        },
        "panels": {"type": "array", "items": {"$ref": "#/$defs/panel"}},
        "fieldConfig": {"type": "object", "required": ["defaults", "overrides"]},
        "options": {"type": "object"},
    },
}
_VARIABLE = {
    "type": "object",
    "required": ["name", "type"],
    "properties": {
        "name": {"type": "string", "pattern": "^[a-zA-Z_][a-zA-Z0-9_]*$"},
        "type": {
            "enum": [
                "query",
                "adhoc",
                "constant",
                "datasource",
                "interval",
                "textbox",
                "custom",
                "system",
                "snapshot",
                "groupby",
            ]
        },
        "query": {"type": ["string", "object"]},
        "refresh": {"enum": [0, 1, 2]},
    },
}
DASHBOARD_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$defs": {"panel": _PANEL},
    "type": "object",
    "required": [
        "title",
        "uid",
        "schemaVersion",
        "panels",
        "templating",
        "time",
        "editable",
        "graphTooltip",
        "annotations",
        "tags",
    ],
    "properties": {
        "title": {"type": "string", "minLength": 1},
        "uid": {"type": "string", "pattern": "^[a-zA-Z0-9_-]{1,40}$"},
        "schemaVersion": {"type": "integer", "minimum": 36},
        "editable": {"type": "boolean"},
        "graphTooltip": {"enum": [0, 1, 2]},
        "tags": {"type": "array", "items": {"type": "string"}},
        "time": {"type": "object", "required": ["from", "to"]},
        "refresh": {"type": "string"},
        "panels": {"type": "array", "items": {"$ref": "#/$defs/panel"}},
        "templating": {
            "type": "object",
            "required": ["list"],
            "properties": {"list": {"type": "array", "items": _VARIABLE}},
        },
        "annotations": {"type": "object", "required": ["list"]},
        "links": {"type": "array"},
    },
}


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def test_the_three_dashboards_are_committed_with_stable_uids() -> None:
    """Each dashboard is a file named after its fixed uid, plus its import variant."""
    assert {path.stem for path in FILES} == UIDS
    assert {path.stem for path in IMPORTS} == UIDS
    assert {_load(path)["uid"] for path in FILES} == UIDS


@pytest.mark.parametrize("path", FILES + IMPORTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_dashboard_matches_the_schema(path: Path) -> None:
    """The dashboard has every field Grafana requires, with valid types and ranges."""
    jsonschema.validate(_load(path), DASHBOARD_SCHEMA)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_dashboard_survives_the_sdk_models_unchanged(path: Path) -> None:
    """Decoding with grafana-foundation-sdk's models and encoding again loses no key or value."""
    model = _load(path)
    again = json.loads(json.dumps(SdkDashboard.from_json(model), cls=JSONEncoder))
    assert contains(again, model)


def test_the_schema_check_rejects_a_broken_dashboard() -> None:
    """A panel wider than the grid and a missing title are refused."""
    broken = _load(FILES[0])
    broken["panels"][1]["gridPos"]["w"] = 30
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, DASHBOARD_SCHEMA)
    del broken["title"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, DASHBOARD_SCHEMA)


def test_the_sdk_round_trip_reports_an_unknown_key() -> None:
    """A key Grafana's model does not have disappears in the round trip, so it is caught."""
    model = _load(FILES[0])
    model["panels"][1]["maxDataPointz"] = 100
    again = json.loads(json.dumps(SdkDashboard.from_json(model), cls=JSONEncoder))
    assert not contains(again, model)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_panels_tile_the_grid_with_unique_ids(path: Path) -> None:
    """Panel ids are unique and panels neither overlap nor leave the 24-column grid."""
    panels = list(dashboards._panels(_load(path)["panels"]))
    assert len({p["id"] for p in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        mine = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"])
                for y in range(grid["y"], grid["y"] + grid["h"])}  # fmt: skip
        assert not cells & mine, f"{panel['title']} overlaps another panel"
        cells |= mine


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_panel_queries_through_a_datasource_variable(path: Path) -> None:
    """Panels name datasources only as ${prometheus}/${loki}/${tempo}, each variable defined."""
    model = _load(path)
    defined = {v["name"] for v in model["templating"]["list"] if v["type"] == "datasource"}
    for panel in dashboards._panels(model["panels"]):
        if panel["type"] == "row":
            continue
        uid = panel["datasource"]["uid"]
        assert uid.startswith("${") and uid[2:-1] in defined, panel["title"]
        assert panel["targets"] and all(t["refId"] for t in panel["targets"]), panel["title"]
        assert panel.get("description"), panel["title"]


def test_pool_dashboard_has_the_issue_s_variables_and_signals() -> None:
    """Datasources, service, pool and instance variables, logs, traces and the process tables."""
    model = _load(REPO / "dashboards" / "poolwatch-pools.json")
    variables = {v["name"]: v["type"] for v in model["templating"]["list"]}
    assert variables == {"prometheus": "datasource", "loki": "datasource", "tempo": "datasource",
                         "service": "query", "pool": "query", "instance": "query"}  # fmt: skip
    types = {p["type"] for p in dashboards._panels(model["panels"])}
    assert {"logs", "heatmap", "stat", "timeseries", "table"} <= types
    titles = {p["title"]: p for p in dashboards._panels(model["panels"])}
    assert titles["Top processes by saturation"]["targets"][0]["expr"] == (
        "topk(10, avg_over_time(job_instance_pool:poolwatch_saturation:ratio{"
        'job=~"$service", db_client_connection_pool_name=~"$pool", instance=~"$instance"}'
        "[$__rate_interval]) and job_instance_pool:poolwatch_saturation:ratio{"
        'job=~"$service", db_client_connection_pool_name=~"$pool", instance=~"$instance"})'
    )
    assert titles["Top processes by checkout wait p99"]["targets"][0]["expr"] == (
        "topk(10, job_instance_pool:poolwatch_wait_seconds:p99{"
        'job=~"$service", db_client_connection_pool_name=~"$pool", instance=~"$instance"})'
    )


@pytest.mark.parametrize("path", IMPORTS, ids=lambda p: p.name)
def test_import_variant_asks_for_each_datasource(path: Path) -> None:
    """__inputs lists one datasource per variable, and each variable defaults to its input."""
    model = _load(path)
    inputs = {i["name"]: i for i in model["__inputs"]}
    for variable in (v for v in model["templating"]["list"] if v["type"] == "datasource"):
        name = dashboards.DATASOURCES[variable["name"]][0]
        assert inputs[name]["type"] == "datasource"
        assert inputs[name]["pluginId"] == variable["query"]
        assert variable["current"]["value"] == "${" + name + "}"
    assert {"type": "grafana", "id": "grafana", "name": "Grafana",
            "version": dashboards.GRAFANA_VERSION} in model["__requires"]  # fmt: skip


def _pgbouncer_row(model: dict[str, Any]) -> dict[str, list[str]]:
    """Title -> query expressions of the panels after the PgBouncer row, up to the next row."""
    found: dict[str, list[str]] = {}
    inside = False
    for panel in model["panels"]:
        if panel["type"] == "row":
            inside = panel["title"] == "PgBouncer"
        elif inside:
            found[panel["title"]] = [t["expr"] for t in panel["targets"]]
    return found


def test_pool_dashboard_has_a_pgbouncer_row() -> None:
    """Clients, servers by state, max wait and used_clients, by PgBouncer pool; no limit line
    while pgbouncer_max_client_conn is unset."""
    row = _pgbouncer_row(_load(REPO / "dashboards" / "poolwatch-pools.json"))
    pool = "job, instance, database, user"
    assert row == {
        "PgBouncer clients": [
            f'sum by ({pool}, state) (poolwatch_pgbouncer_clients{{job="pgbouncer"}})'
        ],
        "PgBouncer server connections by state": [
            f'sum by ({pool}, state) (poolwatch_pgbouncer_servers{{job="pgbouncer"}})'
        ],
        "PgBouncer max wait": [
            f'max by ({pool}) (poolwatch_pgbouncer_max_wait_seconds{{job="pgbouncer"}})'
        ],
        "PgBouncer client connections": [
            'max by (job, instance) (poolwatch_pgbouncer_list_items{job="pgbouncer", '
            'list="used_clients"})'
        ],
    }


def test_pgbouncer_row_draws_max_client_conn_when_configured() -> None:
    """With pgbouncer_max_client_conn set, the client-connections panel draws the limit."""
    settings = config.MonitoringConfig(pgbouncer_max_client_conn=300)
    built = {d.slug: d.model for d in dashboards.dashboards(settings)}
    used = 'max by (job, instance) (poolwatch_pgbouncer_list_items{job="pgbouncer", ' \
        'list="used_clients"})'  # fmt: skip
    assert _pgbouncer_row(built["pools"])["PgBouncer client connections"] == [
        used,
        f"{used} * 0 + 300",
    ]
