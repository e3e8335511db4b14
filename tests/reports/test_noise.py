"""The z statistics of two runs' counts, and of their percentiles from confidence intervals."""

from __future__ import annotations

import math
from statistics import NormalDist

import pytest

from reports.noise import EXACT_COUNT_LIMIT, PercentileInterval, count_z, percentile_z


def test_percentile_z_adds_errors_in_quadrature():
    # Each interval spans 2 standard errors of 0.5 on each side.
    a = PercentileInterval(9.0, 11.0, 2.0)
    b = PercentileInterval(10.0, 12.0, 2.0)

    assert percentile_z(10.0, a, 11.0, b) == pytest.approx(1.0 / math.sqrt(0.5))
    assert percentile_z(11.0, b, 10.0, a) == pytest.approx(-1.0 / math.sqrt(0.5))


def test_percentile_z_uses_facing_sides():
    # A spreads far above (standard error 2) and little below (0.25), as a skewed tail does.
    a = PercentileInterval(9.5, 14.0, 2.0)
    b_higher = PercentileInterval(11.0, 13.0, 2.0)
    b_lower = PercentileInterval(7.0, 9.0, 2.0)

    # B above A: A's upper side and B's lower side, standard errors 2 and 0.5.
    assert percentile_z(10.0, a, 12.0, b_higher) == pytest.approx(2.0 / math.sqrt(4.25))
    # B below A: A's lower side and B's upper side, standard errors 0.25 and 0.5.
    assert percentile_z(10.0, a, 8.0, b_lower) == pytest.approx(-2.0 / math.sqrt(0.3125))


def test_percentile_z_value_alone_counts_as_exact():
    b = PercentileInterval(10.0, 12.0, 2.0)

    # B's lower side alone: standard error 0.5, so 2 apart is 4 standard errors.
    assert percentile_z(9.0, None, 11.0, b) == pytest.approx(4.0)
    assert percentile_z(11.0, b, 9.0, None) == pytest.approx(-4.0)


def test_percentile_z_without_any_interval():
    assert percentile_z(9.0, None, 11.0, None) is None


def test_percentile_z_unset_facing_bound():
    few_samples = PercentileInterval(9.0, None, 2.0)
    b = PercentileInterval(10.0, 12.0, 2.0)

    # B above A needs A's upper bound, which the samples were too few to set.
    assert percentile_z(10.0, few_samples, 11.0, b) is None
    # B below A needs only A's lower bound.
    assert percentile_z(10.0, few_samples, 8.0, PercentileInterval(7.0, 9.0, 2.0)) is not None


def test_percentile_z_ties_without_spread():
    a = PercentileInterval(0.0, 0.0, 2.0)
    b = PercentileInterval(5.0, 5.0, 2.0)

    assert percentile_z(0.0, a, 5.0, b) == math.inf
    assert percentile_z(5.0, b, 0.0, a) == -math.inf
    assert percentile_z(0.0, a, 0.0, a) == 0.0


def test_percentile_z_bound_past_estimate():
    # The lower bound of p99 of 2 samples is the larger sample, above the interpolated p99,
    # so B's lower side adds no error and A's upper side (standard error 0.5) is all.
    a = PercentileInterval(0.0, 2.0, 2.0)
    b = PercentileInterval(2.0, None, 2.0)

    assert percentile_z(1.0, a, 1.99, b) == pytest.approx(0.99 / 0.5)


@pytest.mark.parametrize(
    ("count_a", "count_b", "tail"),
    [(0, 4, 1 / 16), (0, 6, 1 / 64), (2, 8, 56 / 1024)],
)
def test_count_z_matches_exact_binomial_tail(count_a, count_b, tail):
    # 2 against 8: P(X >= 8) for X ~ Binomial(10, 1/2) is (45 + 10 + 1) / 1024.
    z = count_z(count_a, count_b)

    assert 1.0 - NormalDist().cdf(z) == pytest.approx(tail)
    assert count_z(count_b, count_a) == pytest.approx(-z)


def test_count_z_continues_past_exact_limit():
    # Just below and above the limit, the exact tail and the corrected normal agree closely.
    half = EXACT_COUNT_LIMIT // 2
    below = count_z(half - 50, half + 49)
    above = count_z(half - 50, half + 51)

    assert below == pytest.approx(above, abs=0.05)
    assert count_z(3, 3) == 0.0
    assert count_z(0, 0) == 0.0
