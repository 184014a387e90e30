"""The dashboards: pools, Django connections, the PostgreSQL server; plus import and provisioning.

Each dashboard has datasource variables for Prometheus, Loki and Tempo, ``service``/``pool``/
``instance`` (or ``server``) variables and a stable uid; panels come from :mod:`poolwatch.monitoring.panels`.
:func:`import_variant` adds ``__inputs`` for Grafana's "Import dashboard" screen.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

from grafana_foundation_sdk.builders import dashboard as gd
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DashboardLinkType,
    VariableRefresh,
    VariableSort,
)

from poolwatch import catalog
from poolwatch.monitoring import panels, promql
from poolwatch.monitoring.config import MonitoringConfig
from poolwatch.monitoring.names import INSTANCE_LABEL, SERVICE_LABEL, prometheus_name
from poolwatch.monitoring.promql import Scope, Source

TAG: Final = "poolwatch"
#: The Grafana release the pinned grafana-foundation-sdk build targets.
GRAFANA_VERSION: Final = "11.6.0"
#: Datasource variables and the ``__inputs`` the import variant fills them from.
DATASOURCES: Final = {
    "prometheus": ("DS_PROMETHEUS", "Prometheus"),
    "loki": ("DS_LOKI", "Loki"),
    "tempo": ("DS_TEMPO", "Tempo"),
}
#: Where the provisioning file expects the dashboard JSON files.
PROVISIONING_PATH: Final = "/var/lib/grafana/dashboards/poolwatch"


@dataclass(frozen=True, slots=True)
class Dashboard:
    """A generated dashboard: its file stem and its JSON model."""

    slug: str
    model: dict[str, Any]

    @property
    def uid(self) -> str:
        return str(self.model["uid"])

    @property
    def title(self) -> str:
        return str(self.model["title"])


def _datasource_variable(name: str) -> gd.DatasourceVariable:
    return gd.DatasourceVariable(name).label(DATASOURCES[name][1]).type(name)


def _query_variable(name: str, label: str, query: str) -> gd.QueryVariable:
    return (
        gd.QueryVariable(name)
        .label(label)
        .datasource(panels.PROMETHEUS)
        .query(query)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
    )


def _service_variable(config: MonitoringConfig) -> gd.QueryVariable:
    series = promql.alert_scope(config).select(
        prometheus_name(catalog.CONNECTION_COUNT), source=Source.APP
    )
    return _query_variable("service", "Service", f"label_values({series}, {SERVICE_LABEL})")


def _pool_variable(scope: Scope) -> gd.QueryVariable:
    series = scope.select(prometheus_name(catalog.CONNECTION_COUNT), source=Source.APP)
    return _query_variable("pool", "Pool", f"label_values({series}, {promql.POOL})")


def _instance_variable(scope: Scope) -> gd.QueryVariable:
    series = scope.select(prometheus_name(catalog.CONNECTION_MAX), promql.POOL_MATCHER,
                          source=Source.APP)  # fmt: skip
    return _query_variable(
        "instance", "Process (service.instance.id)", f"label_values({series}, {INSTANCE_LABEL})"
    )


def _server_variable(config: MonitoringConfig) -> gd.QueryVariable:
    series = promql.alert_scope(config).select(
        prometheus_name(catalog.PG_MAX_CONNECTIONS), source=Source.POSTGRES
    )
    return _query_variable(
        "server", "PostgreSQL server", f"label_values({series}, {INSTANCE_LABEL})"
    )


def _base(title: str, uid: str, description: str) -> gd.Dashboard:
    return (
        gd.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags([TAG])
        .editable()
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .time("now-6h", "now")
        .refresh("1m")
        .timezone("browser")
        .link(
            gd.DashboardLink("poolwatch")
            .type(DashboardLinkType.DASHBOARDS)
            .tags([TAG])
            .as_dropdown(True)
            .include_vars(True)
            .keep_time(True)
        )
    )


def pools_dashboard(config: MonitoringConfig) -> gd.Dashboard:
    """Connection pools: saturation, waits, lifecycle, leaks and conflicts, PgBouncer's pools in
    front of the server, events and traces."""
    scope = promql.dashboard_scope(config)
    return (
        _base(
            "poolwatch / Connection pools",
            "poolwatch-pools",
            "Application-side connection pools instrumented by poolwatch.",
        )
        .with_variable(_datasource_variable("prometheus"))
        .with_variable(_datasource_variable("loki"))
        .with_variable(_datasource_variable("tempo"))
        .with_variable(_service_variable(config))
        .with_variable(_pool_variable(scope))
        .with_variable(_instance_variable(scope))
        .with_row(gd.Row("Saturation"))
        .with_panel(panels.saturation_now(scope, config))
        .with_panel(panels.saturation_over_time(scope, config))
        .with_panel(panels.connections(scope))
        .with_row(gd.Row("Processes"))
        .with_panel(panels.top_saturation(scope))
        .with_panel(panels.top_wait(scope))
        .with_panel(panels.top_timeouts(scope))
        .with_panel(panels.process_detail(scope))
        .with_row(gd.Row("Waiting"))
        .with_panel(panels.wait_quantiles(scope))
        .with_panel(panels.wait_heatmap(scope))
        .with_panel(panels.pending_requests(scope))
        .with_panel(panels.timeouts(scope))
        .with_panel(panels.checkouts(scope))
        .with_panel(panels.exhaustion_forecast(scope, config))
        .with_row(gd.Row("Connection lifecycle"))
        .with_panel(panels.create_time(scope))
        .with_panel(panels.use_time(scope))
        .with_row(gd.Row("Leaks and conflicts"))
        .with_panel(panels.leaked_connections(scope))
        .with_panel(panels.never_returned(scope))
        .with_panel(panels.create_errors(scope))
        .with_panel(panels.conflicts(scope))
        .with_row(gd.Row("PgBouncer"))
        .with_panel(panels.pgb_clients(scope))
        .with_panel(panels.pgb_servers(scope))
        .with_panel(panels.pgb_max_wait(scope, config))
        .with_panel(panels.pgb_client_connections(scope, config))
        .with_row(gd.Row("Events and traces"))
        .with_panel(panels.events(catalog.EVENTS, "poolwatch events"))
        .with_panel(panels.slow_checkouts(config))
    )


def django_dashboard(config: MonitoringConfig) -> gd.Dashboard:
    """Django's connections: states, orphans, close reasons, ages, orphan events."""
    scope = promql.dashboard_scope(config)
    return (
        _base(
            "poolwatch / Django connections",
            "poolwatch-django",
            "Django's per-thread database connections as poolwatch sees them.",
        )
        .with_variable(_datasource_variable("prometheus"))
        .with_variable(_datasource_variable("loki"))
        .with_variable(_service_variable(config))
        .with_row(gd.Row("Connections"))
        .with_panel(panels.django_by_state(scope))
        .with_panel(panels.django_orphaned(scope))
        .with_panel(panels.django_closed(scope))
        .with_panel(panels.django_opened(scope))
        .with_panel(panels.django_ages(scope))
        .with_row(gd.Row("Events"))
        .with_panel(panels.events((catalog.EVENT_ORPHANED,), "Orphaned-connection events"))
    )


def postgres_dashboard(config: MonitoringConfig) -> gd.Dashboard:
    """PostgreSQL's own view of its connections (collector/postgres.yaml)."""
    scope = promql.dashboard_scope(config)
    return (
        _base(
            "poolwatch / PostgreSQL server",
            "poolwatch-postgresql",
            "What PostgreSQL holds (pg_stat_activity), next to what the pools believe.",
        )
        .with_variable(_datasource_variable("prometheus"))
        .with_variable(_server_variable(config))
        .with_row(gd.Row("Connection slots"))
        .with_panel(panels.pg_free_slots(scope))
        .with_panel(panels.pg_usage(scope, config))
        .with_panel(panels.pg_by_state(scope))
        .with_panel(panels.pg_by_application(scope))
        .with_panel(panels.pg_headroom(scope))
        .with_row(gd.Row("Idle sessions"))
        .with_panel(panels.pg_oldest_idle(scope))
        .with_panel(panels.pg_idle_in_transaction(scope, config))
    )


def dashboards(config: MonitoringConfig) -> list[Dashboard]:
    """Every dashboard as a JSON-ready model, panels numbered in order."""
    built = {
        "pools": pools_dashboard(config),
        "django": django_dashboard(config),
        "postgresql": postgres_dashboard(config),
    }
    return [Dashboard(slug, _finish(builder)) for slug, builder in built.items()]


def _finish(builder: gd.Dashboard) -> dict[str, Any]:
    model: dict[str, Any] = json.loads(json.dumps(builder.build(), cls=JSONEncoder))
    for number, panel in enumerate(_panels(model["panels"]), start=1):
        panel["id"] = number
    model["annotations"] = {"list": [_builtin_annotation()]}
    return model


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def _builtin_annotation() -> dict[str, Any]:
    return {
        "builtIn": 1,
        "datasource": {"type": "grafana", "uid": "-- Grafana --"},
        "enable": True,
        "hide": True,
        "iconColor": "rgba(0, 211, 255, 1)",
        "name": "Annotations & Alerts",
        "type": "dashboard",
    }


def import_variant(model: dict[str, Any]) -> dict[str, Any]:
    """The model for Grafana's "Import dashboard" screen: ``__inputs`` pick the datasources."""
    variant: dict[str, Any] = json.loads(json.dumps(model))
    used = [v for v in variant["templating"]["list"] if v.get("type") == "datasource"]
    inputs = []
    for variable in used:
        input_name, label = DATASOURCES[variable["name"]]
        inputs.append(
            {
                "name": input_name,
                "label": label,
                "description": f"{label} datasource for poolwatch",
                "type": "datasource",
                "pluginId": variable["query"],
                "pluginName": label,
            }
        )
        ref = "${" + input_name + "}"
        variable["current"] = {"selected": True, "text": ref, "value": ref}
    variant["__inputs"] = inputs
    variant["__requires"] = _requires(variant, used)
    variant.pop("id", None)
    return variant


def _requires(model: dict[str, Any], datasources: list[dict[str, Any]]) -> list[dict[str, str]]:
    requires = [{"type": "grafana", "id": "grafana", "name": "Grafana", "version": GRAFANA_VERSION}]
    for variable in datasources:
        plugin = variable["query"]
        requires.append({"type": "datasource", "id": plugin, "name": DATASOURCES[plugin][1]})
    panel_types = sorted({p["type"] for p in _panels(model["panels"]) if p["type"] != "row"})
    requires += [{"type": "panel", "id": kind, "name": kind} for kind in panel_types]
    return requires


def provisioning(config: MonitoringConfig) -> dict[str, Any]:
    """A file-provisioning provider that loads the dashboards into the poolwatch folder."""
    return {
        "apiVersion": 1,
        "providers": [
            {
                "name": "poolwatch",
                "orgId": 1,
                "type": "file",
                "folder": config.grafana_folder_title,
                "folderUid": config.grafana_folder_uid,
                "disableDeletion": False,
                "allowUiUpdates": False,
                "updateIntervalSeconds": 60,
                "options": {"path": PROVISIONING_PATH, "foldersFromFilesStructure": False},
            }
        ],
    }


def datasources_example(config: MonitoringConfig) -> dict[str, Any]:
    """Datasources with the uids the alert rules use; exemplars on Prometheus link to Tempo."""
    prometheus = {
        "name": "Prometheus",
        "type": "prometheus",
        "uid": config.prometheus_datasource_uid,
        "access": "proxy",
        "url": "http://prometheus:9090",
        "jsonData": {
            "exemplarTraceIdDestinations": [
                {"name": "trace_id", "datasourceUid": config.tempo_datasource_uid}
            ]
        },
    }
    loki = {
        "name": "Loki",
        "type": "loki",
        "uid": config.loki_datasource_uid,
        "access": "proxy",
        "url": "http://loki:3100",
    }
    tempo = {
        "name": "Tempo",
        "type": "tempo",
        "uid": config.tempo_datasource_uid,
        "access": "proxy",
        "url": "http://tempo:3200",
        "jsonData": {
            "tracesToLogsV2": {"datasourceUid": config.loki_datasource_uid},
            "serviceMap": {"datasourceUid": config.prometheus_datasource_uid},
        },
    }
    return {"apiVersion": 1, "datasources": [prometheus, loki, tempo]}
