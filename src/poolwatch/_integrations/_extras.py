"""The install hint when a library an adapter needs is missing: the extra that brings it."""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator


def hint(library: str, extra: str, missing: str | None = None) -> str:
    """What to install for the integration of ``library`` (an extra of pyproject.toml) when
    ``missing`` (default: the library itself) cannot be imported."""
    return (
        f"{missing or library} is not installed, and poolwatch's {library} integration needs "
        f"it: pip install 'poolwatch[{extra}]'"
    )


@contextlib.contextmanager
def requires(library: str, extra: str, *modules: str) -> Iterator[None]:
    """Around an adapter's imports of its library: one of ``modules`` (top-level packages)
    missing raises ModuleNotFoundError with the install hint; any other import error (a module
    missing inside an installed library, say) passes unchanged."""
    try:
        yield
    except ModuleNotFoundError as missing:
        if missing.name not in modules:
            raise
        raise ModuleNotFoundError(
            hint(library, extra, missing.name), name=missing.name
        ) from missing


def check_installed(library: str, extra: str, module: str) -> None:
    """Raise ModuleNotFoundError with the install hint unless ``module`` can be imported
    (without importing it: for adapters that hook a library only once the app imports it)."""
    try:
        spec = importlib.util.find_spec(module)
    except ImportError:  # an import hook may refuse rather than answer None
        spec = None
    if spec is None:
        raise ModuleNotFoundError(hint(library, extra), name=module)
