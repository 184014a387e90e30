"""The boundary between poolwatch and the application: our own errors stop here.

Every hook catches its own exceptions and hands them to :func:`internal_error`, which counts
them per hook and logs the first one of each hook with its traceback. Nothing is re-raised.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_logger = logging.getLogger("poolwatch")
_lock = threading.Lock()
_counts: Counter[str] = Counter()
_warned: set[str] = set()


def internal_error(hook: str, exc: BaseException) -> None:
    """Count an error raised inside poolwatch's ``hook`` and log it the first time it is seen."""
    try:
        with _lock:
            _counts[hook] += 1
            first = _counts[hook] == 1
        if first:
            _logger.warning(
                "poolwatch: internal error in %s; telemetry for it is degraded, the "
                "application is not affected (further errors here are counted, not logged)",
                hook,
                exc_info=(type(exc), exc, exc.__traceback__),
            )
    except Exception:  # noqa: BLE001  # pragma: no cover - logging itself failed
        pass


def count(hook: str) -> None:
    """Count a problem found inside poolwatch that its caller reports itself."""
    with _lock:
        _counts[hook] += 1


def guarded(hook: str, fn: Callable[..., T], *args: Any) -> T | None:
    """``fn(*args)``, or None after counting and logging an error raised inside poolwatch."""
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001 - the hook boundary
        internal_error(hook, exc)
        return None


def error_counts() -> dict[str, int]:
    """Errors caught so far, per hook."""
    with _lock:
        return dict(_counts)


def after_fork() -> None:
    """A forked child: a fresh lock (the parent's may be held) and counts of its own errors."""
    global _lock  # noqa: PLW0603 - the module's one lock, replaced in a forked child
    _lock = threading.Lock()
    _counts.clear()
    _warned.clear()


def warn_once(key: str, message: str, *args: object) -> bool:
    """Log ``message`` as a warning the first time ``key`` is seen in this process."""
    with _lock:
        if key in _warned:
            return False
        _warned.add(key)
    _logger.warning(message, *args)
    return True


def reset() -> None:
    """Forget counted errors (tests use this between cases)."""
    with _lock:
        _counts.clear()
        _warned.clear()
