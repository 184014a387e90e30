"""The doctor's report, in plain words and as JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from poolwatch.doctor.checks import Capacity
from poolwatch.doctor.findings import Finding, exit_status
from poolwatch.doctor.observed import ObservedPool
from poolwatch.doctor.server import Server


@dataclass
class Report:
    """Everything the doctor found out, and what it concludes."""

    database: str
    server: Server | None = None
    capacity: Capacity | None = None
    pools: list[ObservedPool] = field(default_factory=list)
    window: str | None = None
    findings: list[Finding] = field(default_factory=list)

    @property
    def exit_status(self) -> int:
        """0 ok, 1 warnings, 2 problems, 3 could not check."""
        return exit_status(self.findings)

    def as_json(self) -> str:
        """The report as one JSON document."""
        data: dict[str, Any] = {
            "database": self.database,
            "server": self.server.as_json() if self.server else None,
            "capacity": self.capacity.as_json() if self.capacity else None,
            "window": self.window,
            "pools": [pool.as_json() for pool in self.pools],
            "findings": [finding.as_json() for finding in self.findings],
            "exit_status": self.exit_status,
        }
        return json.dumps(data, indent=2, sort_keys=True)

    def as_text(self) -> str:
        """The report in plain words."""
        lines = [f"poolwatch doctor: {self.database}"]
        if self.capacity:
            lines += ["", "capacity:", f"  possible client connections: {self.capacity.formula}"]
        if self.server:
            lines += _server_lines(self.server)
        if self.pools:
            lines += _pool_lines(self.pools, self.window or "")
        lines += ["", "findings:"]
        lines += [f"  {f.level.name:<9} {f.code}: {f.message}" for f in self.findings]
        lines += ["", f"exit status {self.exit_status}"]
        return "\n".join(lines)


def _server_lines(server: Server) -> list[str]:
    reserved = "" if server.reserved is None else f" - reserved_connections {server.reserved}"
    lines = [
        f"  usable server slots: max_connections {server.max_connections} - "
        f"superuser_reserved_connections {server.superuser_reserved}{reserved} = {server.usable}",
        "",
        f"held on the server now ({server.in_use} client connections, by application_name and "
        "state):",
    ]
    lines += [
        f"  {holder.application_name or '(none)':<32} {holder.state:<30} {holder.connections:>5}"
        for holder in server.holders
    ] or ["  none"]
    return lines


def _number(value: float | None, unit: str = "", scale: float = 1.0) -> str:
    return "-" if value is None else f"{value * scale:.2f}{unit}"


def _pool_lines(pools: list[ObservedPool], window: str) -> list[str]:
    lines = [
        "",
        f"observed pools (Prometheus, over {window}):",
        f"  {'service/pool':<36}{'procs':>6}{'max':>6}{'peak':>6}{'wait':>11}{'use':>11}"
        f"{'checkouts/s':>13}{'busy (L)':>10}{'needed':>8}",
    ]
    for pool in pools:
        lines.append(
            f"  {pool.service + '/' + pool.pool:<36}{pool.processes:>6}{pool.max:>6g}"
            f"{'-' if pool.peak_used is None else f'{pool.peak_used:g}':>6}"
            f"{_number(pool.mean_wait, 'ms', 1000):>11}"
            f"{_number(pool.mean_use, 'ms', 1000):>11}{_number(pool.checkouts_per_second):>13}"
            f"{_number(pool.littles_law):>10}{pool.needed if pool.needed is not None else '-':>8}"
        )
    lines.append("  busy (L) = checkouts/s x mean use time (Little's law); needed = L rounded up")
    return lines
