"""Borrow sites: where in the application a connection was taken, as code locations.

A site is a tuple of ``(code object, line number)`` pairs for the application's own frames,
innermost first. Library frames (the standard library, SQLAlchemy, Django, psycopg, greenlet,
OpenTelemetry, poolwatch itself) are skipped. No frame object is kept, so no local variable and
no SQL parameter outlives the call; code objects are shared and cheap to hold.
"""

from __future__ import annotations

import os
import sys
import sysconfig
import threading
from collections.abc import Iterable
from types import CodeType, FrameType
from typing import Final

Site = tuple[tuple[CodeType, int], ...]

#: Packages whose frames are never the application's.
LIBRARY_PACKAGES: Final = (
    "poolwatch",
    "sqlalchemy",
    "django",
    "psycopg",
    "psycopg_pool",
    "psycopg2",
    "asgiref",
    "greenlet",
    "opentelemetry",
    "wrapt",
    "uvicorn",
    "gunicorn",
    "starlette",
    "anyio",
    "aiosqlite",
    "asyncpg",
)

_MAX_CACHED_CODES: Final = 65_536


_INSTALLED = (os.sep + "site-packages" + os.sep, os.sep + "dist-packages" + os.sep)


def _library_prefixes(packages: Iterable[str]) -> tuple[str, ...]:
    prefixes: set[str] = set()
    for name in packages:
        module = sys.modules.get(name)
        origin = getattr(module, "__file__", None) if module else None
        if origin:
            prefixes.add(os.path.dirname(origin) + os.sep)
        else:
            for base in {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}:
                prefixes.add(os.path.join(base, name) + os.sep)
    return tuple(sorted(prefixes))


class SiteCapture:
    """Captures application frames from the current stack, remembering which code is library code."""

    def __init__(self, limit: int, extra_library_paths: Iterable[str] = ()) -> None:
        self.limit = limit
        self._prefixes = _library_prefixes(LIBRARY_PACKAGES) + tuple(extra_library_paths)
        self._stdlib = sysconfig.get_paths()["stdlib"] + os.sep
        self._library: dict[CodeType, bool] = {}
        self._lock = threading.Lock()

    def is_library(self, code: CodeType) -> bool:
        """Whether ``code`` belongs to a library rather than the application (cached per code)."""
        known = self._library.get(code)
        if known is None:
            filename = code.co_filename
            known = (
                filename.startswith(self._prefixes)
                or filename.startswith("<frozen")
                # the standard library, but not applications installed into site-packages
                or (
                    filename.startswith(self._stdlib) and not any(p in filename for p in _INSTALLED)
                )
            )
            if len(self._library) < _MAX_CACHED_CODES:
                self._library[code] = known
        return known

    def capture(self, depth: int = 2) -> Site:
        """Up to ``limit`` application frames of the caller's stack, innermost first."""
        frame: FrameType | None = sys._getframe(depth)
        found: list[tuple[CodeType, int]] = []
        library = self._library
        while frame is not None:
            code = frame.f_code
            known = library.get(code)
            if known is None:
                known = self.is_library(code)
            if not known:
                found.append((code, frame.f_lineno))
                if len(found) >= self.limit:
                    break
            frame = frame.f_back
        return tuple(found)

    def from_frame(self, frame: FrameType | None) -> Site:
        """Application frames of another thread's stack (for a holder that is still running)."""
        found: list[tuple[CodeType, int]] = []
        while frame is not None and len(found) < self.limit:
            if not self.is_library(frame.f_code):
                found.append((frame.f_code, frame.f_lineno))
            frame = frame.f_back
        return tuple(found)


def describe(site: Site) -> str:
    """``path:line in function`` of the innermost application frame, or ``unknown``."""
    if not site:
        return "unknown"
    code, line = site[0]
    return f"{_short_path(code.co_filename)}:{line} in {code.co_qualname}"


def stacktrace(site: Site) -> str:
    """The whole site as text, innermost frame first, one ``File "...", line N, in f`` per line."""
    return "\n".join(
        f'  File "{code.co_filename}", line {line}, in {code.co_qualname}' for code, line in site
    )


def _short_path(filename: str) -> str:
    cwd = os.getcwd() + os.sep
    return filename[len(cwd) :] if filename.startswith(cwd) else filename
