"""The ``generate`` and ``deploy`` sub-commands of ``poolwatch``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

INSTALL_HINT = "poolwatch {command} needs the monitoring extra ({missing} is missing): " \
    "pip install 'poolwatch[monitoring]'"  # fmt: skip


def add_commands(subparsers: Any) -> None:
    """Register ``generate`` and ``deploy`` on the ``poolwatch`` argument parser."""
    generate = subparsers.add_parser(
        "generate",
        help="write dashboards, alert rules and runbooks (and the sections of documents that hold "
        "poolwatch's generated-section markers)",
    )
    _config_options(generate)
    generate.add_argument(
        "--root", type=Path, default=Path.cwd(), help="repository root to write into (default: .)"
    )
    generate.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 listing stale files"
    )
    generate.set_defaults(run=_generate)

    deploy = subparsers.add_parser("deploy", help="push dashboards and rules to Grafana/Prometheus")
    targets = deploy.add_subparsers(dest="target", required=True)
    _add_deploy_grafana(targets)
    _add_deploy_prometheus(targets)


def _config_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="YAML or JSON file overriding the defaults")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one setting, e.g. thresholds.pool_saturation.warning=0.7 (repeatable)",
    )


def _add_deploy_grafana(targets: Any) -> None:
    grafana = targets.add_parser(
        "grafana",
        help="dashboards and alert rules via Grafana's HTTP API (GRAFANA_URL, GRAFANA_TOKEN)",
    )
    _config_options(grafana)
    grafana.add_argument("--dry-run", action="store_true", help="show what would change")
    grafana.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    grafana.set_defaults(run=_deploy)


def _add_deploy_prometheus(targets: Any) -> None:
    prometheus = targets.add_parser(
        "prometheus", help="rule files into a rules directory, or a Mimir/Cortex ruler"
    )
    _config_options(prometheus)
    where = prometheus.add_mutually_exclusive_group(required=True)
    where.add_argument("--rules-dir", type=Path, help="directory Prometheus loads rule files from")
    where.add_argument("--ruler-url", help="Mimir/Cortex base URL (token: MIMIR_TOKEN)")
    prometheus.add_argument("--reload-url", help="POST here after writing, e.g. .../-/reload")
    prometheus.add_argument("--namespace", default="poolwatch", help="ruler namespace")
    prometheus.add_argument("--promtool", help="promtool to validate with (default: on PATH)")
    prometheus.add_argument("--dry-run", action="store_true", help="show what would change")
    prometheus.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    prometheus.set_defaults(run=_deploy)


def _generate(args: argparse.Namespace) -> int:
    try:
        from poolwatch.monitoring import config, generate
    except ImportError as missing:
        print(INSTALL_HINT.format(command="generate", missing=missing.name), file=sys.stderr)
        return 2
    try:
        settings = config.load(args.config, args.overrides)
    except config.ConfigError as exc:
        print(f"poolwatch generate: {exc}", file=sys.stderr)
        return 2
    files = generate.render_for(args.root, settings)
    if args.check:
        stale = generate.stale(args.root, files)
        for path in stale:
            print(f"stale: {path}", file=sys.stderr)
        if stale:
            print("run `poolwatch generate` and commit the result", file=sys.stderr)
        return 1 if stale else 0
    for path in generate.write(args.root, files):
        print(f"wrote {path}")
    return 0


def _deploy(args: argparse.Namespace) -> int:
    try:
        from poolwatch.monitoring import deploy
    except ImportError as missing:
        print(INSTALL_HINT.format(command="deploy", missing=missing.name), file=sys.stderr)
        return 2
    run = deploy.run_grafana if args.target == "grafana" else deploy.run_prometheus
    return run(args, sys.stdout, sys.stderr)
