"""The live view, as a person sees it in a real terminal: driven in tmux, read with capture-pane."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from poolwatch import catalog
from tests.demo.conftest import demo_command
from tests.support.fixtures import needed
from tests.support.polling import poll

#: A fixed terminal size, so the table's layout is the one asserted.
COLUMNS, LINES = 150, 40
SCREEN_TIMEOUT_S = 120


class Terminal:
    """A detached tmux session on a private server socket."""

    def __init__(self, socket: str) -> None:
        self.socket = socket

    def tmux(self, *args: str) -> str:
        """Run a tmux command against this terminal's server."""
        result = subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True,
                                text=True, timeout=30, check=True)  # fmt: skip
        return result.stdout

    def screen(self) -> str:
        """What the pane shows right now."""
        return self.tmux("capture-pane", "-p", "-t", "demo")

    def wait_for(self, what: str, seen: Callable[[str], bool]) -> str:
        """Capture the pane until ``seen(screen)`` holds; returns that screen."""
        screens: list[str] = []

        def shown() -> bool:
            screens.append(self.screen())
            return seen(screens[-1])

        assert poll(shown, SCREEN_TIMEOUT_S, 0.2), f"never saw {what}; last screen:\n{screens[-1]}"
        return screens[-1]


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[Terminal]:
    """A tmux server of the test's own, killed at the end."""
    if shutil.which("tmux") is None:
        needed("tmux is not installed")
    term = Terminal(f"poolwatch-demo-{uuid.uuid4().hex[:8]}")
    yield term
    subprocess.run(["tmux", "-L", term.socket, "kill-server"], capture_output=True, check=False)


def pool_row(screen: str, pool: str) -> list[str] | None:
    """The cells of ``pool``'s row in the table (box-drawing separators dropped)."""
    for line in screen.splitlines():
        cells = [cell.strip() for cell in re.split(r"[│┃|]", line) if cell.strip()]
        if cells and cells[0] == pool:
            return cells
    return None


@pytest.mark.slow
def test_the_live_view_shows_pools_phase_and_events(terminal: Terminal, tmp_path: Path) -> None:
    """Phase heading, a row per pool with numbers, event lines with code, then the summary."""
    command = shlex.join(demo_command("--duration", "11", "--output", str(tmp_path / "out")))
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in {
        "PATH": os.environ.get("PATH", ""), "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
        "TERM": "xterm-256color", "COLUMNS": str(COLUMNS), "LINES": str(LINES)}.items())  # fmt: skip
    terminal.tmux("new-session", "-d", "-s", "demo", "-x", str(COLUMNS), "-y", str(LINES),
                  "-c", str(Path.cwd()), f"env {env} {command}; sleep 600")  # fmt: skip

    screen = terminal.wait_for("the timeouts phase", lambda s: "phase 4/7 timeouts" in s)
    assert "poolwatch demo" in screen
    for column in ("pool", "used/idle/max", "pending", "wait p99", "timeouts", "leaks"):
        assert column in screen

    screen = terminal.wait_for(
        "a timeout event", lambda s: f"{catalog.EVENT_POOL_TIMEOUT} [orders]" in s
    )
    row = pool_row(screen, "orders")
    assert row is not None, screen
    used, idle, maximum = (int(n) for n in row[1].split("/"))
    assert maximum == 5 and 0 <= used <= 5 and idle >= 0
    assert re.fullmatch(r"[\d.]+ms|-", row[3])
    neighbour = pool_row(screen, "reports")
    assert neighbour is not None and neighbour[1].endswith("/12")
    assert re.search(r"[\d.]+s timeouts +poolwatch\.pool\.timeout \[orders\] held by", screen)

    screen = terminal.wait_for("the leak with its code", lambda s: "forgetful_report (" in s)
    assert re.search(
        r"[\d.]+s leak +poolwatch\.connection\.leak \[orders\] at forgetful_report", screen
    )

    screen = terminal.wait_for("the summary", lambda s: "written:" in s)
    assert "detected:" in screen
    conflict = re.search(
        r"poolwatch\.session\.conflict +(\d+) x, first at [\d.]+s in conflict", screen
    )
    assert conflict is not None and conflict.group(1) == "2"
