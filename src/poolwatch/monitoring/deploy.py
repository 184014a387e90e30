"""``poolwatch deploy``: dashboards and alert rules into Grafana, rule files into Prometheus or a ruler.

Credentials come only from environment variables and are never printed. Every payload is built
and checked before the first write; each write records how to undo it, and a failure part-way
undoes the writes already made, so a failed deploy leaves the previous state.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO
from urllib.parse import quote

from poolwatch.monitoring import alerts, config, dashboards
from poolwatch.monitoring.deploy_prometheus import run_prometheus
from poolwatch.monitoring.transport import (
    DeployError,
    Http,
    Transaction,
    contains,
    plan_line,
    report_rollback,
)

__all__ = ["run_grafana", "run_prometheus"]

GRAFANA_URL_ENV = "GRAFANA_URL"
GRAFANA_TOKEN_ENV = "GRAFANA_TOKEN"


# --- Grafana ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Step:
    """One object to put into Grafana: how it reads, whether it changes, and how to write it."""

    description: str
    action: str  # create, update or unchanged
    write: Callable[[], object]
    undo: Callable[[], object]


def run_grafana(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``poolwatch deploy grafana``: plan every change, then apply it (or only show it)."""
    try:
        settings = config.load(args.config, args.overrides)
        url, token = _grafana_env()
    except (config.ConfigError, DeployError) as exc:
        print(f"poolwatch deploy grafana: {exc}", file=err)
        return 2
    http = Http(url, token, args.timeout)
    try:
        return _deploy_grafana(http, settings, bool(args.dry_run), out, err)
    finally:
        http.close()


def _grafana_env() -> tuple[str, str]:
    url, token = os.environ.get(GRAFANA_URL_ENV, ""), os.environ.get(GRAFANA_TOKEN_ENV, "")
    if not url or not token:
        raise DeployError(
            f"set {GRAFANA_URL_ENV} and {GRAFANA_TOKEN_ENV} (a service-account token) "
            "in the environment"
        )
    return url, token


def _deploy_grafana(
    http: Http, settings: config.MonitoringConfig, dry_run: bool, out: TextIO, err: TextIO
) -> int:
    boards = dashboards.dashboards(settings)
    rules = [alerts.grafana_rule(rule, settings) for rule in alerts.rules(settings)]
    try:
        _validate(boards, rules)
        steps = _plan(http, settings, boards, rules)
    except DeployError as exc:
        print(f"poolwatch deploy grafana: {exc}", file=err)
        return 1
    if dry_run:
        for step in steps:
            print(plan_line(step.action, step.description, dry_run), file=out)
        return 0
    return _apply(steps, out, err)


def _validate(boards: list[dashboards.Dashboard], rules: list[dict[str, Any]]) -> None:
    uids = [b.uid for b in boards] + [r["uid"] for r in rules]
    if len(set(uids)) != len(uids) or any(not uid or len(uid) > 40 for uid in uids):
        raise DeployError("every dashboard and rule needs a unique uid of at most 40 characters")
    titles = [r["title"] for r in rules]
    if len(set(titles)) != len(titles):
        raise DeployError("alert rule titles must be unique within the folder")


def _apply(steps: list[Step], out: TextIO, err: TextIO) -> int:
    """Write every change; on a failure undo the writes made and say what is left, on stdout too."""
    done = Transaction()
    for step in steps:
        if step.action == "unchanged":
            continue
        try:
            step.write()
        except DeployError as exc:
            print(f"poolwatch deploy grafana: {exc}", file=err)
            report_rollback(done.rollback(err), out)
            return 1
        done.record(plan_line(step.action, step.description, False), step.undo)
    for step in steps:
        print(plan_line(step.action, step.description, False), file=out)
    return 0


def _plan(
    http: Http,
    settings: config.MonitoringConfig,
    boards: list[dashboards.Dashboard],
    rules: list[dict[str, Any]],
) -> list[Step]:
    folder = settings.grafana_folder_uid
    steps = [_folder_step(http, folder, settings.grafana_folder_title)]
    steps += [_dashboard_step(http, folder, board) for board in boards]
    steps += [_rule_step(http, rule) for rule in rules]
    return steps


def _folder_step(http: Http, uid: str, title: str) -> Step:
    path = f"/api/folders/{quote(uid, safe='')}"
    response = http.call("GET", path)
    if response is None:
        return Step(
            f"folder {uid} ({title})",
            "create",
            lambda: http.call("POST", "/api/folders", json={"uid": uid, "title": title}),
            lambda: http.call("DELETE", path),
        )
    previous = str(response.json().get("title", ""))
    if previous == title:
        return Step(f"folder {uid} ({title})", "unchanged", lambda: None, lambda: None)

    def rename(to: str) -> object:
        return http.call("PUT", path, json={"title": to, "overwrite": True})

    return Step(
        f"folder {uid} ({previous} -> {title})",
        "update",
        lambda: rename(title),
        lambda: rename(previous),
    )


def _dashboard_step(http: Http, folder: str, board: dashboards.Dashboard) -> Step:
    path = f"/api/dashboards/uid/{quote(board.uid, safe='')}"
    response = http.call("GET", path)
    description = f"dashboard {board.uid} ({board.title})"

    def save(model: dict[str, Any], folder_uid: str) -> object:
        body = {"dashboard": model, "folderUid": folder_uid, "overwrite": True}
        return http.call("POST", "/api/dashboards/db", json={**body, "message": "poolwatch deploy"})

    if response is None:
        return Step(
            description,
            "create",
            lambda: save(board.model, folder),
            lambda: http.call("DELETE", path),
        )
    current = response.json()
    previous_folder = current.get("meta", {}).get("folderUid", "")
    previous = {k: v for k, v in current["dashboard"].items() if k not in {"id", "version"}}
    same = previous_folder == folder and contains(current["dashboard"], board.model)
    return Step(
        description,
        "unchanged" if same else "update",
        lambda: save(board.model, folder),
        lambda: save(previous, previous_folder),
    )


def _rule_step(http: Http, rule: dict[str, Any]) -> Step:
    path = f"/api/v1/provisioning/alert-rules/{quote(rule['uid'], safe='')}"
    response = http.call("GET", path)
    description = f"alert rule {rule['uid']} ({rule['title']})"
    if response is None:
        return Step(
            description,
            "create",
            lambda: http.call("POST", "/api/v1/provisioning/alert-rules", json=rule),
            lambda: http.call("DELETE", path),
        )
    current = response.json()
    return Step(
        description,
        "unchanged" if contains(current, rule) else "update",
        lambda: http.call("PUT", path, json=rule),
        lambda: http.call("PUT", path, json=current),
    )
