"""Benchmark results written into docs/maintainers/benchmarks.md, between marker comments.

A script given ``--write-docs`` replaces the block between ``<!-- benchmark:NAME -->`` and
``<!-- /benchmark:NAME -->`` with its markdown table, preceded by a line naming the date, the
machine (CPU model, cores, Python, library versions), its load average when the run started
and the exact command that produced it.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import shlex
import sys
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PAGE = REPO / "docs" / "maintainers" / "benchmarks.md"
#: The libraries whose versions every table names.
LIBRARIES = ("poolwatch", "sqlalchemy", "opentelemetry-sdk", "psycopg", "psycopg-pool", "django")


def add_flag(parser: argparse.ArgumentParser) -> None:
    """The ``--write-docs`` option every benchmark script takes."""
    parser.add_argument(
        "--write-docs",
        action="store_true",
        help=f"also write the result table into {PAGE.relative_to(REPO)}",
    )


def start(name: str) -> str:
    return f"<!-- benchmark:{name} -->"


def end(name: str) -> str:
    return f"<!-- /benchmark:{name} -->"


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux, else the platform's word)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions() -> str:
    """``name version`` of each installed library in :data:`LIBRARIES`."""
    found = []
    for library in LIBRARIES:
        try:
            found.append(f"{library} {metadata.version(library)}")
        except metadata.PackageNotFoundError:
            continue
    return ", ".join(found)


def command(argv: list[str] | None = None) -> str:
    """The command that ran this script, repository-relative, without ``--write-docs``."""
    args = [arg for arg in (sys.argv if argv is None else argv) if arg != "--write-docs"]
    script = Path(args[0]).resolve()
    with_script = [str(script.relative_to(REPO)) if script.is_relative_to(REPO) else args[0]]
    return shlex.join(["python", *with_script, *args[1:]])


def provenance(today: datetime.date | None = None) -> str:
    """One line: date, machine and command."""
    day = (today or datetime.datetime.now(datetime.UTC).date()).isoformat()
    machine = (
        f"{cpu_model()}, {os.cpu_count()} cores, {platform.python_implementation()} "
        f"{platform.python_version()}; {versions()}"
    )
    return f"Run on {day}, on {machine}; {load()}: `{command()}`"


def _load_average() -> tuple[float, float] | None:
    try:
        one, five, _ = os.getloadavg()
    except OSError:
        return None
    return one, five


#: The load when the script imported this module, before its own work; read at the end of a
#: long run, the load average would count the run itself.
STARTED = _load_average()


def load() -> str:
    """The machine's load when the run started: figures from a busy machine say so."""
    if STARTED is None:
        return "load average unknown"
    one, five = STARTED
    return f"load average {one:.1f} (1 min), {five:.1f} (5 min) at the start"


def write(name: str, table: str, page: Path = PAGE) -> None:
    """Replace the block ``name`` of ``page`` with ``table`` and its provenance line."""
    text = page.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(start(name)) + r"\n.*?" + re.escape(end(name)), re.DOTALL)
    if not pattern.search(text):
        raise SystemExit(f"{page}: no {start(name)} ... {end(name)} block to write into")
    block = f"{start(name)}\n{provenance()}\n\n{table.strip()}\n{end(name)}"
    page.write_text(pattern.sub(lambda _: block, text), encoding="utf-8")
    print(f"wrote the {name} table into {page}")
