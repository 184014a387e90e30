"""Exact histograms kept in process, cheap enough for every checkout: fixed or exponential buckets.

Both kinds count every value exactly and keep the sum, the lowest and highest value, and a low and
high per reading window (one per exporter that reads them as deltas). Callers hold their own lock
around the ``observe`` methods.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from math import fsum, inf


class _Extremes:
    """The lowest and highest value seen overall, and per reading window."""

    __slots__ = ("high", "low", "windows")

    def __init__(self) -> None:
        self.low = inf
        self.high = -inf
        #: ``[low, high]`` since each reader's last look (see :meth:`window`).
        self.windows: list[list[float]] = []

    def window(self) -> list[float]:
        """A new ``[low, high]`` window, widened by every later value until its reader resets it.

        It starts from everything seen so far: a reader's first interval covers all of it.
        """
        window = [self.low, self.high]
        self.windows.append(window)
        return window

    def _widen(self, low: float, high: float) -> None:
        self.low = min(self.low, low)
        self.high = max(self.high, high)
        for window in self.windows:
            window[0] = min(window[0], low)
            window[1] = max(window[1], high)


class Buckets(_Extremes):
    """Counts per explicit bucket plus the sum (``le`` buckets: upper bounds are inclusive)."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        super().__init__()
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def index(self, value: float) -> int:
        """The bucket ``value`` falls in."""
        return bisect_left(self.bounds, value)

    def observe(self, value: float) -> None:
        """Add one value; a value equal to a bound lands in that bound's bucket (``le``)."""
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value
        self._widen(value, value)

    def observe_many(self, values: list[float]) -> None:
        """Add every value of ``values`` (sorting the list): what :meth:`observe` does to each.

        The values are sorted and each bound is found among them by bisection. Sorting runs in C
        and costs about a third of bisecting the bounds once per value.
        """
        if not values:
            return
        values.sort()
        counts = self.counts
        below = 0
        for index, bound in enumerate(self.bounds):
            upto = bisect_right(values, bound, below)
            counts[index] += upto - below
            below = upto
        counts[-1] += len(values) - below
        self.total += fsum(values)
        self._widen(values[0], values[-1])

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


#: The index :meth:`ExponentialBuckets.index` gives values of zero or less (the zero bucket).
ZERO_INDEX = -(1 << 62)


class ExponentialBuckets(_Extremes):
    """Counts per base-2 exponential bucket at a fixed ``scale``, as OpenTelemetry lays them out.

    Bucket ``i`` holds values in ``(base**i, base**(i+1)]`` with ``base = 2**(2**-scale)``; values
    of zero or less are counted in the zero bucket. Counts live in a dict by index: only buckets
    that saw a value cost anything.
    """

    __slots__ = ("by_index", "scale", "total", "zero")

    def __init__(self, scale: int) -> None:
        if not 0 <= scale <= 20:
            raise ValueError(f"scale must be between 0 and 20, not {scale}")
        super().__init__()
        self.scale = scale
        self.by_index: dict[int, int] = {}
        self.zero = 0
        self.total = 0.0

    def index(self, value: float) -> int:
        """The bucket ``value`` falls in (:data:`ZERO_INDEX` for values of zero or less)."""
        if value <= 0:
            return ZERO_INDEX
        mantissa, exponent = math.frexp(value)
        if mantissa == 0.5:  # an exact power of two is the upper bound of its bucket
            return ((exponent - 1) << self.scale) - 1
        # log2 is exact at powers of two, handled above; elsewhere its rounding can move a value
        # lying within one ulp of a bound across it, which only the last bit of a value can do
        return math.ceil(math.log2(value) * (1 << self.scale)) - 1

    def observe(self, value: float) -> None:
        """Add one value."""
        if value <= 0:
            self.zero += 1
        else:
            index = self.index(value)
            self.by_index[index] = self.by_index.get(index, 0) + 1
        self.total += value
        self._widen(value, value)

    def observe_many(self, values: list[float]) -> None:
        """Add every value of ``values`` (sorting the list): what :meth:`observe` does to each.

        Sorted, the values of one bucket form a run: its end is found by bisecting at the
        bucket's upper bound and confirmed with :meth:`index`, so ``index`` runs about three
        times per bucket that holds values rather than once per value.
        """
        if not values:
            return
        values.sort()
        by_index, index = self.by_index, self.index
        size = len(values)
        start = bisect_right(values, 0.0)
        self.zero += start
        step = 1 << self.scale
        while start < size:
            at = index(values[start])
            end = bisect_right(values, 2.0 ** ((at + 1) / step), start + 1)
            # the computed bound may sit an ulp off index()'s: index() has the last word
            while end > start + 1 and index(values[end - 1]) != at:
                end -= 1
            while end < size and index(values[end]) == at:
                end += 1
            by_index[at] = by_index.get(at, 0) + end - start
            start = end
        self.total += fsum(values)
        self._widen(values[0], values[-1])

    @property
    def count(self) -> int:
        """How many values were observed."""
        return self.zero + sum(self.by_index.values())

    def dense(self) -> tuple[int, list[int]]:
        """``(offset, counts)``: the positive buckets from the lowest seen to the highest."""
        if not self.by_index:
            return 0, []
        low, high = min(self.by_index), max(self.by_index)
        get = self.by_index.get
        return low, [get(i, 0) for i in range(low, high + 1)]


#: Either kind of in-process histogram.
Histogram = Buckets | ExponentialBuckets


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
