"""Percentile summaries and the order-statistics confidence interval of a percentile."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sim.oracle.stats import fewest_samples_for_upper_bound, percentile_interval, summarise

# The p99 of the exponential distribution with mean 1 is ln(100).
EXPONENTIAL_P99 = math.log(100.0)


def test_interval_covers_true_p99():
    rng = np.random.default_rng(20261205)
    for count in (500, 5_000, 50_000):
        interval = percentile_interval(rng.exponential(size=count), 99)

        assert interval["lower"] <= EXPONENTIAL_P99, count
        assert interval["upper"] >= EXPONENTIAL_P99, count
        assert interval["z"] == 2.0


def test_interval_narrows_with_count():
    rng = np.random.default_rng(7)
    widths = []
    for count in (500, 5_000, 50_000):
        interval = percentile_interval(rng.exponential(size=count), 99)
        widths.append(interval["upper"] - interval["lower"])

    assert widths[0] > widths[1] > widths[2]
    # The width shrinks as 1 / sqrt(count): each step of 10 narrows it about 3.2 times.
    assert widths[0] / widths[2] > 5.0


def test_interval_coverage_near_stated_level():
    # Each bound misses with probability at most 2.3%, so both together cover at least 95.4%
    # of the time. At 1,000 samples the binomial ranks make the exact coverage 97.6%.
    rng = np.random.default_rng(11)
    draws = 400
    covered = 0
    for _ in range(draws):
        interval = percentile_interval(rng.exponential(size=1_000), 99)
        covered += interval["lower"] <= EXPONENTIAL_P99 <= interval["upper"]

    assert covered / draws >= 0.95


def test_interval_of_median_matches_normal_ranks():
    # For a median of many samples the binomial ranks approach n/2 ± z·sqrt(n)/2.
    ordered = np.arange(1.0, 10_001.0)
    interval = percentile_interval(ordered, 50)

    assert abs(interval["lower"] - (5_000 - 100)) <= 1
    assert abs(interval["upper"] - (5_000 + 100)) <= 2


def test_interval_upper_bound_needs_enough_samples():
    fewest = fewest_samples_for_upper_bound(99)
    assert fewest == 377

    too_few = percentile_interval(np.arange(1.0, fewest), 99)
    enough = percentile_interval(np.arange(1.0, fewest + 1.0), 99)

    assert too_few["upper"] is None
    assert too_few["lower"] is not None
    assert enough["upper"] == float(fewest)


def test_interval_of_ties_is_one_point():
    interval = percentile_interval([0.0] * 1_000, 99)

    assert interval == {"lower": 0.0, "upper": 0.0, "z": 2.0}


def test_interval_without_samples():
    assert percentile_interval([], 99) == {"lower": None, "upper": None, "z": 2.0}


@pytest.mark.parametrize("percentile", [0, 100, -5, 120])
def test_interval_rejects_percentile_outside_range(percentile):
    with pytest.raises(ValueError, match="strictly between 0 and 100"):
        percentile_interval([1.0, 2.0], percentile)


def test_summarise_adds_requested_intervals():
    values = list(np.random.default_rng(3).exponential(size=2_000))

    plain = summarise(values)
    with_interval = summarise(values, intervals=(99,))

    assert "p99_interval" not in plain
    assert with_interval["p99_interval"] == percentile_interval(values, 99)
    lower, upper = with_interval["p99_interval"]["lower"], with_interval["p99_interval"]["upper"]
    assert lower <= with_interval["p99"] <= upper
