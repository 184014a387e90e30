"""The documentation's runnable examples run: every fenced Python block after `<!-- runnable -->`.

Each runs as a script in a fresh interpreter (examples instrument libraries and configure Django,
which a shared process would carry from one to the next), in a scratch directory, and must exit 0.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
MARKER = "<!-- runnable -->"
_BLOCK = re.compile(r"^<!-- runnable -->\n```python\n(.*?)^```$", re.MULTILINE | re.DOTALL)
_ANY_BLOCK = re.compile(r"^```python\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def runnable_examples() -> list[tuple[str, str]]:
    """(page:line, code) of every runnable block in docs/, in page order."""
    found = []
    for page in sorted(DOCS.rglob("*.md")):
        text = page.read_text(encoding="utf-8")
        for match in _BLOCK.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            found.append((f"{page.relative_to(DOCS).as_posix()}:{line}", match.group(1)))
    return found


def test_every_marker_is_followed_by_a_python_block() -> None:
    """A `<!-- runnable -->` line not directly above a ```python fence would silently run nothing."""
    markers = sum(
        line == MARKER
        for page in DOCS.rglob("*.md")
        for line in page.read_text(encoding="utf-8").splitlines()
    )

    assert markers == len(runnable_examples())
    assert markers >= 5


def test_every_python_block_compiles() -> None:
    """Snippets that cannot run alone (they use an app's `engine`) are still valid Python."""
    blocks = 0
    for page in sorted(DOCS.rglob("*.md")):
        for match in _ANY_BLOCK.finditer(page.read_text(encoding="utf-8")):
            compile(match.group(1), str(page.relative_to(DOCS)), "exec")
            blocks += 1

    assert blocks > len(runnable_examples())


@pytest.mark.parametrize(("where", "code"), runnable_examples(), ids=lambda v: v.split("\n")[0])
def test_example_runs(where: str, code: str, tmp_path: Path) -> None:
    """The example, saved as a script, exits 0 in a fresh interpreter; else its output is shown."""
    script = tmp_path / "example.py"
    script.write_text(code, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 0, f"{where}\n{done.stdout}\n{done.stderr}"


@pytest.mark.parametrize("adapter", ["sqlalchemy", "psycopg_pool", "django"])
def test_every_declared_private_hook_is_documented(adapter: str) -> None:
    """Each hook of an adapter's compatibility table is named on the maintainers' hooks page."""
    module = pytest.importorskip(f"poolwatch._integrations.{adapter}")
    page = (DOCS / "maintainers" / "private-hooks.md").read_text(encoding="utf-8")
    missing = [
        f"{hook.module}.{hook.name}"
        for hook in module.COMPATIBILITY.hooks
        if f"`{hook.module}.{hook.name}`" not in page
    ]
    assert module.COMPATIBILITY.hooks
    assert missing == []
