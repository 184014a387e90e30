"""The in-process histogram and the quantile estimate read from it."""

from __future__ import annotations

import math
import random

import pytest

from poolwatch._histogram import Buckets, ExponentialBuckets, quantile


def test_a_value_equal_to_a_bound_lands_in_that_bucket() -> None:
    """Buckets are upper-inclusive (``le``), as in Prometheus and OpenTelemetry."""
    buckets = Buckets((0.1, 1.0))
    for value in (0.1, 0.5, 1.0, 2.0):
        buckets.observe(value)
    assert buckets.counts == [1, 2, 1]
    assert buckets.count == 4
    assert buckets.total == 3.6
    assert list(buckets.cumulative()) == [("0.1", 1), ("1.0", 3), ("+Inf", 4)]


def test_quantile_interpolates_inside_the_bucket() -> None:
    """Half of ten values at or below 1.0 and all at or below 2.0: the 75th percentile is 1.5."""
    assert quantile(0.75, [("1.0", 5), ("2.0", 10), ("+Inf", 10)]) == 1.5
    assert quantile(0.5, [("1.0", 5), ("2.0", 10), ("+Inf", 10)]) == 1.0


def test_quantile_of_nothing_is_none_and_overflow_is_the_top_bound() -> None:
    """No data gives None; a rank in +Inf gives the highest finite bound."""
    assert quantile(0.99, [("1.0", 0), ("+Inf", 0)]) is None
    assert quantile(0.99, [("1.0", 0), ("30.0", 1), ("+Inf", 10)]) == 30.0


def test_observing_many_values_at_once_counts_exactly_like_one_at_a_time() -> None:
    """Bounds, values between them and past the last: the same counts and sum either way."""
    values = [0.0, 0.001, 0.0015, 0.01, 0.5, 1.0, 7.0, 0.001]
    one_by_one, batched = Buckets((0.001, 0.01, 1.0)), Buckets((0.001, 0.01, 1.0))
    for value in values:
        one_by_one.observe(value)
    batched.observe_many(list(values))
    assert batched.counts == one_by_one.counts == [3, 2, 2, 1]
    assert batched.total == pytest.approx(one_by_one.total, rel=1e-12)
    assert batched.total == math.fsum(values)


def test_observing_many_agrees_with_one_at_a_time_on_random_batches() -> None:
    """Unsorted batches of every size, with values on the bounds, across repeated folds."""
    rng = random.Random(7)
    bounds = (0.0001, 0.001, 0.01, 0.1, 1.0, 30.0)
    one_by_one, batched = Buckets(bounds), Buckets(bounds)
    for size in range(0, 300, 7):
        values = [rng.choice((rng.choice(bounds), rng.expovariate(20.0))) for _ in range(size)]
        for value in values:
            one_by_one.observe(value)
        batched.observe_many(values)
    assert batched.counts == one_by_one.counts
    assert sum(batched.counts) == sum(range(0, 300, 7))
    assert batched.total == pytest.approx(one_by_one.total, rel=1e-12)


def test_exponential_batches_count_exactly_like_one_value_at_a_time() -> None:
    """Random values, powers of two and their neighbours, zero: the same buckets either way."""
    rng = random.Random(11)
    edges = [math.ldexp(1.0, e) for e in range(-12, 8)]
    values = [rng.lognormvariate(-5, 3) for _ in range(3000)] + edges + [0.0]
    values += [math.nextafter(edge, math.inf) for edge in edges]
    values += [math.nextafter(edge, 0.0) for edge in edges]
    for scale in (0, 3, 8):
        one_by_one, batched = ExponentialBuckets(scale), ExponentialBuckets(scale)
        for value in values:
            one_by_one.observe(value)
        batched.observe_many(list(values))
        assert batched.by_index == one_by_one.by_index
        assert batched.zero == one_by_one.zero == 1
        assert batched.count == len(values)
        assert (batched.low, batched.high) == (0.0, max(values))


def test_exponential_bucket_bounds_are_upper_inclusive() -> None:
    """At scale 3 a power of two closes its bucket; the next float opens the next one."""
    buckets = ExponentialBuckets(3)
    assert buckets.index(1.0) == -1
    assert buckets.index(math.nextafter(1.0, 2.0)) == 0
    assert buckets.index(2.0) == 7
    assert buckets.index(0.001) == -80
    assert 2 ** (-80 / 8) < 0.001 <= 2 ** (-79 / 8)
