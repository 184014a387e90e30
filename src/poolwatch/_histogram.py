"""An exact fixed-bucket histogram kept in process, cheap enough for every checkout."""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from math import fsum


class Buckets:
    """Counts per bucket plus the sum; callers hold their own lock around :meth:`observe`."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        """Add one value; a value equal to a bound lands in that bound's bucket (``le``)."""
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def observe_many(self, values: list[float]) -> None:
        """Add every value of ``values`` (sorting the list): what :meth:`observe` does to each.

        The values are sorted and each bound is found among them by bisection. Sorting runs in C
        and costs about a third of bisecting the bounds once per value.
        """
        values.sort()
        counts = self.counts
        below = 0
        for index, bound in enumerate(self.bounds):
            upto = bisect_right(values, bound, below)
            counts[index] += upto - below
            below = upto
        counts[-1] += len(values) - below
        self.total += fsum(values)

    @property
    def count(self) -> int:
        """How many values were observed."""
        return sum(self.counts)

    def cumulative(self) -> Iterator[tuple[str, int]]:
        """``(le, count at or below le)`` pairs ending with ``+Inf``, as Prometheus lays them out."""
        running = 0
        for bound, count in zip(self.bounds, self.counts, strict=False):
            running += count
            yield format_bound(bound), running
        yield "+Inf", running + self.counts[-1]


def format_bound(bound: float) -> str:
    """Render a bucket bound the way Prometheus clients do (``0.005``, ``1.0``, ``30.0``)."""
    return repr(float(bound))


def quantile(q: float, cumulative: list[tuple[str, int]]) -> float | None:
    """Estimate the ``q`` quantile from ``(le, cumulative count)`` pairs, as PromQL does.

    Linear interpolation inside the bucket that holds the rank; None when there is no data. A
    rank in the ``+Inf`` bucket returns the highest finite bound.
    """
    if not cumulative or cumulative[-1][1] == 0:
        return None
    rank = q * cumulative[-1][1]
    lower_bound, lower_count = 0.0, 0
    for le, count in cumulative:
        if count >= rank:
            if le == "+Inf":
                return lower_bound
            upper = float(le)
            if count == lower_count:
                return upper
            return lower_bound + (upper - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = (float(le) if le != "+Inf" else lower_bound), count
    return lower_bound  # pragma: no cover - the +Inf bucket always reaches the rank
