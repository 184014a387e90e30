"""The benchmark tables in docs/maintainers/benchmarks.md are the scripts' own, with provenance."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PAGE = REPO / "docs" / "maintainers" / "benchmarks.md"
#: Every table a benchmark script writes: ``_docs.write("NAME", ...)`` in benchmarks/*.py.
WRITERS = {
    name: script.name
    for script in sorted((REPO / "benchmarks").glob("*.py"))
    for name in re.findall(r'_docs\.write\(\s*"([\w-]+)"', script.read_text(encoding="utf-8"))
}
PROVENANCE = re.compile(
    r"Run on (?P<date>\d{4}-\d\d-\d\d), on (?P<machine>.+ \d+ cores, \w+ 3\.\d+\.\d+; .+): "
    r"`(?P<command>python benchmarks/(?P<script>\w+\.py)[^`]*)`"
)


def _block(name: str) -> str:
    text = PAGE.read_text(encoding="utf-8")
    found = re.findall(
        rf"<!-- benchmark:{name} -->\n(.*?)<!-- /benchmark:{name} -->", text, re.DOTALL
    )
    assert len(found) == 1, f"expected one {name} block in {PAGE.name}"
    return str(found[0])


def test_some_script_writes_a_table() -> None:
    """The scripts that write tables are found (the check below is not vacuous)."""
    assert {"collection", "checkout_overhead"} <= set(WRITERS)


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_each_table_names_its_date_machine_and_command(name: str) -> None:
    """Each block opens with the line the script writes, naming the script that wrote it."""
    block = _block(name)
    first = block.splitlines()[0]
    match = PROVENANCE.fullmatch(first)
    assert match is not None, first
    assert match["script"] == WRITERS[name]
    assert "sqlalchemy" in match["machine"]
    assert re.search(r"^\| .+ \|$", block, re.MULTILINE), "no table rows"
