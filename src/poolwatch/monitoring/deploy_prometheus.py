"""``poolwatch deploy prometheus``: rule files into a rules directory (then reload), or a ruler.

Rule files are checked (``promtool check rules`` when promtool is available) before anything is
written, written to temporary files beside their targets and renamed into place; when a rename
or the reload fails, every replaced file gets its previous content back. The Mimir/Cortex ruler
path records each group it changes and restores them the same way.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote, urlsplit

import yaml

from poolwatch._exit import EXIT_FAILED, EXIT_USAGE
from poolwatch.monitoring import alerts, config
from poolwatch.monitoring.generate import to_yaml
from poolwatch.monitoring.transport import (
    DeployError,
    Http,
    Transaction,
    plan_line,
    report_rollback,
)

MIMIR_TOKEN_ENV = "MIMIR_TOKEN"
MIMIR_TENANT_ENV = "MIMIR_TENANT"
RULER_PATH = "/prometheus/config/v1/rules"


def rule_files(settings: config.MonitoringConfig) -> dict[str, str]:
    """One rule file per group: file name -> content."""
    groups = alerts.prometheus_rule_groups(settings)["groups"]
    return {f"{group['name']}.rules.yaml": to_yaml({"groups": [group]}) for group in groups}


def run_prometheus(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Validate the rules, then write them to ``--rules-dir`` or push them to ``--ruler-url``."""
    try:
        settings = config.load(args.config, args.overrides)
        files = rule_files(settings)
        check_rules(files, args.promtool)
        if args.rules_dir is not None:
            _to_directory(args, files, out, err)
        else:
            _to_ruler(args, files, out, err)
    except config.ConfigError as exc:
        print(f"poolwatch deploy prometheus: {exc}", file=err)
        return EXIT_USAGE
    except DeployError as exc:
        print(f"poolwatch deploy prometheus: {exc}", file=err)
        return EXIT_FAILED
    return 0


def check_rules(files: dict[str, str], promtool: str | None) -> None:
    """Every file parses as YAML with groups; and passes ``promtool check rules`` if available."""
    for name, text in files.items():
        data = yaml.safe_load(text)
        if not isinstance(data, dict) or not data.get("groups"):
            raise DeployError(f"{name}: no rule groups")
    tool = shutil.which(promtool or "promtool")
    if tool is None:
        if promtool:
            raise DeployError(f"--promtool {promtool}: no such executable")
        return
    with tempfile.TemporaryDirectory(prefix="poolwatch-rules-") as tmp:
        paths = []
        for name, text in files.items():
            path = Path(tmp, name)
            path.write_text(text, encoding="utf-8")
            paths.append(str(path))
        try:
            result = subprocess.run(
                [tool, "check", "rules", *paths], capture_output=True, text=True, check=False
            )
        except OSError as exc:
            raise DeployError(f"cannot run {tool}: {exc.strerror}") from None
    if result.returncode != 0:
        raise DeployError(f"promtool rejected the rules: {(result.stdout + result.stderr).strip()}")


# --- rules directory ---------------------------------------------------------------------------------


def _to_directory(
    args: argparse.Namespace, files: dict[str, str], out: TextIO, err: TextIO
) -> None:
    directory: Path = args.rules_dir
    if not directory.is_dir():
        raise DeployError(f"rules directory {directory} does not exist")
    changed = {
        directory / name: text for name, text in files.items() if _read(directory / name) != text
    }
    lines = []
    for name in files:
        action = "unchanged" if directory / name not in changed else (
            "update" if (directory / name).exists() else "create")  # fmt: skip
        lines.append(plan_line(action, str(directory / name), args.dry_run))
    if not args.dry_run and changed:
        previous = replace_files(changed)
        if args.reload_url:
            _reload(args, previous, err)
    print("\n".join(lines), file=out)  # after the writes: only what actually happened


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def replace_files(files: dict[Path, str]) -> dict[Path, str | None]:
    """Write every file atomically (temp file + rename); all or none. Returns previous contents."""
    previous = {path: _read(path) for path in files}
    temps: dict[Path, Path] = {}
    try:
        for path, text in files.items():
            temps[path] = _write_temp(path, text)
        for path, temp in list(temps.items()):
            os.replace(temp, path)
            del temps[path]
    except OSError as exc:
        for temp in temps.values():
            temp.unlink(missing_ok=True)
        failed = f"writing rule files failed ({exc.strerror}: {exc.filename})"
        try:
            restore_files(previous)
        except OSError as again:
            raise DeployError(f"{failed}; restoring the previous files failed too "
                              f"({again.strerror}: {again.filename})") from None  # fmt: skip
        raise DeployError(f"{failed}; the previous files are in place") from None
    return previous


def _write_temp(path: Path, text: str) -> Path:
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    return Path(name)


def restore_files(previous: dict[Path, str | None]) -> None:
    """Put back what :func:`replace_files` replaced (and remove files it created)."""
    for path, text in previous.items():
        if text is None:
            path.unlink(missing_ok=True)
        elif _read(path) != text:
            os.replace(_write_temp(path, text), path)


def _reload(args: argparse.Namespace, previous: dict[Path, str | None], err: TextIO) -> None:
    url = urlsplit(args.reload_url)
    path = url.path or "/-/reload"
    http = Http(f"{url.scheme}://{url.netloc}", None, args.timeout)
    try:
        http.call("POST", path)
    except DeployError as exc:
        restore_files(previous)
        print("restored the previous rule files", file=err)
        try:
            http.call("POST", path)
        except DeployError:
            print("reloading the previous rules failed too", file=err)
        raise DeployError(f"reload failed: {exc}") from None
    finally:
        http.close()


# --- Mimir / Cortex ruler -----------------------------------------------------------------------------


def _to_ruler(args: argparse.Namespace, files: dict[str, str], out: TextIO, err: TextIO) -> None:
    tenant = os.environ.get(MIMIR_TENANT_ENV)
    headers = {"X-Scope-OrgID": tenant} if tenant else {}
    http = Http(args.ruler_url, os.environ.get(MIMIR_TOKEN_ENV), args.timeout, headers)
    namespace = quote(args.namespace, safe="")
    try:
        plan = [_ruler_step(http, namespace, text) for text in files.values()]
        if not args.dry_run:
            _apply_ruler(http, namespace, plan, out, err)
        for name, action, _group, _previous in plan:
            print(plan_line(action, f"rule group {args.namespace}/{name}", args.dry_run), file=out)
    finally:
        http.close()


def _ruler_step(http: Http, namespace: str, text: str) -> tuple[str, str, dict[str, Any], Any]:
    group = yaml.safe_load(text)["groups"][0]
    response = http.call("GET", f"{RULER_PATH}/{namespace}/{quote(group['name'], safe='')}")
    previous = yaml.safe_load(response.text) if response is not None else None
    action = "create" if previous is None else ("unchanged" if previous == group else "update")
    return group["name"], action, group, previous


def _apply_ruler(
    http: Http, namespace: str, plan: list[tuple[str, str, dict[str, Any], Any]],
    out: TextIO, err: TextIO,
) -> None:  # fmt: skip
    done = Transaction()

    def post(group: dict[str, Any]) -> object:
        body = yaml.safe_dump(group, sort_keys=False)
        headers = {"Content-Type": "application/yaml"}
        return http.call("POST", f"{RULER_PATH}/{namespace}", content=body, headers=headers)

    def delete(name: str) -> object:
        return http.call("DELETE", f"{RULER_PATH}/{namespace}/{quote(name, safe='')}")

    for name, action, group, previous in plan:
        if action == "unchanged":
            continue
        try:
            post(group)
        except DeployError:
            report_rollback(done.rollback(err), out)
            raise
        undo = (lambda n=name: delete(n)) if previous is None else (lambda p=previous: post(p))
        done.record(plan_line(action, f"rule group {name}", False), undo)
