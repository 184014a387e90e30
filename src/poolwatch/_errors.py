"""What a database error says about itself: its type, its code, and a message safe to export."""

from __future__ import annotations

import re

#: ``password=...`` in a conninfo string, and ``user:password@`` in a URL.
_SECRETS = (
    (re.compile(r"(password\s*=\s*)(?:'[^']*'|\S+)", re.IGNORECASE), r"\1***"),
    (re.compile(r"(://[^:/@\s]*:)[^@\s]*@"), r"\1***@"),
)


def error_type(error: BaseException) -> str:
    """The ``error.type`` of ``error``: its class's qualified name."""
    return type(error).__qualname__


def status_code(error: BaseException) -> str | None:
    """The database's code for ``error`` (SQLSTATE, or a MySQL error number), if it has one.

    SQLAlchemy's wrapped errors are read through ``orig``.
    """
    for candidate in (error, getattr(error, "orig", None)):
        if candidate is None:
            continue
        sqlstate = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
        if isinstance(sqlstate, str) and sqlstate:
            return sqlstate
        args = getattr(candidate, "args", ())
        if args and isinstance(args[0], int) and not isinstance(args[0], bool):
            return str(args[0])
    return None


def message(error: BaseException, limit: int = 500) -> str:
    """The server's message for ``error``: its meaningful lines, no password, at most ``limit``."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = " ".join(lines) or type(error).__name__
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text[:limit]
