"""The ``generate`` and ``deploy`` sub-commands of ``poolwatch``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from poolwatch._exit import EXIT_USAGE, CommandError

INSTALL_HINT = "poolwatch {command} needs the monitoring extra ({missing} is missing): " \
    "pip install 'poolwatch[monitoring]'"  # fmt: skip
EXTRA = "Needs the monitoring extra: pip install 'poolwatch[monitoring]'."


def add_commands(subparsers: Any) -> None:
    """Register ``generate`` and ``deploy`` on the ``poolwatch`` argument parser."""
    generate = subparsers.add_parser(
        "generate",
        help="write dashboards, alert rules and runbooks (and the sections of documents that hold "
        "poolwatch's generated-section markers)",
        description="Writes the Grafana dashboards, the Prometheus and Grafana alert rules and the "
        "runbooks from the metric catalog and the monitoring settings (--config, --set), and fills "
        "the generated sections of documents under --root that already hold poolwatch's markers "
        "(never any other file; --out DIR writes no document at all). "
        f"{EXTRA} Exit status: 0 written (or up to date with --check), 1 stale files with "
        "--check or a file could not be written, 2 bad settings.",
    )
    _config_options(generate)
    where = generate.add_mutually_exclusive_group()
    where.add_argument(
        "--root", type=Path, default=Path.cwd(), help="repository root to write into (default: .)"
    )
    where.add_argument(
        "--out",
        type=Path,
        help="write only dashboards, alert rules and runbooks into this directory (no document "
        "is read or written, whatever markers it holds)",
    )
    generate.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 listing stale files"
    )
    _debug(generate)
    generate.set_defaults(run=_generate)

    deploy = subparsers.add_parser(
        "deploy",
        help="push dashboards and rules to Grafana/Prometheus",
        description="Pushes what `poolwatch generate` writes to where it is used: `deploy "
        "grafana` (dashboards and Grafana-managed alert rules) or `deploy prometheus` (rule "
        "files or a Mimir/Cortex ruler). Every change is planned and checked first; a failure "
        f"part-way puts the previous state back. {EXTRA}",
    )
    targets = deploy.add_subparsers(dest="target", required=True, metavar="TARGET")
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
        description="Creates or updates the poolwatch folder, its dashboards and its alert rules "
        "through Grafana's HTTP API, at GRAFANA_URL with the service-account token in "
        f"GRAFANA_TOKEN (never printed). {EXTRA} Exit status: 0 deployed (or nothing to "
        "change), 1 a request failed (what was written is rolled back, and the output says "
        "what stayed), 2 bad settings or missing environment variables.",
    )
    _config_options(grafana)
    grafana.add_argument("--dry-run", action="store_true", help="show what would change")
    grafana.add_argument("--timeout", type=_seconds, default=30.0, help="seconds per request")
    _debug(grafana)
    grafana.set_defaults(run=_deploy)


def _add_deploy_prometheus(targets: Any) -> None:
    prometheus = targets.add_parser(
        "prometheus",
        help="rule files into a rules directory, or a Mimir/Cortex ruler",
        description="Checks the rule files (with promtool when available), then writes them "
        "atomically into --rules-dir (and POSTs --reload-url), or pushes them to a Mimir/Cortex "
        f"ruler at --ruler-url (MIMIR_TOKEN, MIMIR_TENANT). {EXTRA} Exit status: 0 deployed, "
        "1 a check, write, reload or request failed (previous files or groups restored), "
        "2 bad settings or options.",
    )
    _config_options(prometheus)
    where = prometheus.add_mutually_exclusive_group(required=True)
    where.add_argument("--rules-dir", type=Path, help="directory Prometheus loads rule files from")
    where.add_argument("--ruler-url", help="Mimir/Cortex base URL (token: MIMIR_TOKEN)")
    prometheus.add_argument("--reload-url", help="POST here after writing, e.g. .../-/reload")
    prometheus.add_argument("--namespace", default="poolwatch", help="ruler namespace")
    prometheus.add_argument("--promtool", help="promtool to validate with (default: on PATH)")
    prometheus.add_argument("--dry-run", action="store_true", help="show what would change")
    prometheus.add_argument("--timeout", type=_seconds, default=30.0, help="seconds per request")
    _debug(prometheus)
    prometheus.set_defaults(run=_deploy)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected seconds above 0, not {text!r}")
    return value


def _debug(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the traceback of an error, and debug logs")  # fmt: skip


def _generate(args: argparse.Namespace) -> int:
    try:
        from poolwatch.monitoring import config, generate
    except ImportError as missing:
        print(INSTALL_HINT.format(command="generate", missing=missing.name), file=sys.stderr)
        return EXIT_USAGE
    try:
        settings = config.load(args.config, args.overrides)
    except config.ConfigError as exc:
        print(f"poolwatch generate: {exc}", file=sys.stderr)
        return EXIT_USAGE
    root = args.out or args.root
    option = "--out" if args.out else "--root"
    if root.exists() and not root.is_dir():
        raise CommandError(f"{option} {root} is not a directory", EXIT_USAGE)
    files = generate.render(settings) if args.out else generate.render_for(root, settings)
    if args.check:
        stale = generate.stale(root, files)
        for path in stale:
            print(f"stale: {path}", file=sys.stderr)
        if stale:
            print("run `poolwatch generate` and commit the result", file=sys.stderr)
        return 1 if stale else 0
    for path in generate.write(root, files):
        print(f"wrote {path}")
    return 0


def _deploy(args: argparse.Namespace) -> int:
    try:
        from poolwatch.monitoring import deploy
    except ImportError as missing:
        print(INSTALL_HINT.format(command="deploy", missing=missing.name), file=sys.stderr)
        return EXIT_USAGE
    run = deploy.run_grafana if args.target == "grafana" else deploy.run_prometheus
    return run(args, sys.stdout, sys.stderr)
