"""Class-level replacements of library methods, marked so they can be told apart and undone."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


def mark(replacement: F, original: Callable[..., Any]) -> F:
    """Give ``replacement`` the name, docstring and ``__wrapped__`` of ``original``, and the mark
    :func:`is_replacement` reads."""
    functools.update_wrapper(replacement, original)
    replacement._poolwatch = True  # type: ignore[attr-defined]
    return replacement


def is_replacement(function: object) -> bool:
    """Whether ``function`` is one of poolwatch's replacements."""
    return getattr(function, "_poolwatch", False) is True
