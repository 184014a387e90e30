"""The exit statuses every ``poolwatch`` command shares, and the error that carries one."""

from __future__ import annotations

EXIT_OK = 0
#: The command failed: a write, a request or an export did not succeed.
EXIT_FAILED = 1
#: Bad usage: an invalid value or configuration, an unusable path, a missing extra (as argparse).
EXIT_USAGE = 2
#: Ended by Ctrl-C, as a shell reports a process ended by SIGINT.
EXIT_INTERRUPTED = 130


class CommandError(Exception):
    """A failure to report as one line (no traceback) with exit status ``status``."""

    def __init__(self, message: str, status: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.status = status
