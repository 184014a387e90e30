"""What the doctor concludes: findings with a level, and the exit status they add up to."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Level(enum.IntEnum):
    """How bad a finding is; the worst one is the exit status."""

    OK = 0
    WARNING = 1
    PROBLEM = 2
    UNCHECKED = 3


#: Exit statuses: 0 nothing wrong, 1 warnings, 2 problems (the pools will exhaust something),
#: 3 a source (PostgreSQL or Prometheus) could not be read, so the check is incomplete.
EXIT_OK, EXIT_WARNINGS, EXIT_PROBLEMS, EXIT_UNCHECKED = (level.value for level in Level)


@dataclass(frozen=True)
class Finding:
    """One conclusion: its level, a stable code for scripts, and plain words for people."""

    level: Level
    code: str
    message: str

    def as_json(self) -> dict[str, str]:
        """The finding for ``--json``."""
        return {"level": self.level.name.lower(), "code": self.code, "message": self.message}


def exit_status(findings: list[Finding]) -> int:
    """The worst level among ``findings`` (0 when there are none)."""
    return max((finding.level.value for finding in findings), default=EXIT_OK)
