"""What a forked child must redo: every reset of process-global state, run once after ``fork()``.

A child inherits the parent's memory as it was at the fork: locks possibly held by threads that
do not exist in the child, no thread but the forking one, and the parent's books (loans, counts,
histograms). Modules register a reset here; the child runs each right after the fork, and the
threads poolwatch needs start again lazily, on first use in the child. The list of resets and
the fork count live in :mod:`poolwatch._state`.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from poolwatch import _guard, _state


def on_fork(name: str, reset: Callable[[], None]) -> None:
    """Run ``reset`` in every child forked from now on (named in the error count if it fails)."""
    _state.fork_resets.append((name, reset))


def generation() -> int:
    """How many forks this process descends from: a change means "in a new child"."""
    return _state.generation


def _in_child() -> None:
    _state.after_fork()
    for name, reset in list(_state.fork_resets):
        try:
            reset()
        except Exception as exc:  # noqa: BLE001 - a fork handler must not raise
            _guard.internal_error(f"fork.{name}", exc)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_in_child)
