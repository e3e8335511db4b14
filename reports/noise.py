"""Whether a difference between two runs exceeds what chance alone gives.

Two runs of one scenario differ even when nothing changed: another seed draws other shoppers,
and a live run's timing moves pushes across a window's edge. A share is compared with the
two-proportion z statistic, and a count with the exact test of two Poisson counts over the same
exposure, expressed as a z. A difference of at least ``SIGNIFICANT_Z`` standard errors counts
as real, which chance alone exceeds in about 2.3% of comparisons in the worse direction (normal
tail).

A percentile, such as the p99 of trigger lateness, is compared through the confidence interval
that the oracle stores beside it in summary.json (``sim.oracle.stats.percentile_interval``). For
many samples a sample percentile is normal around the true one, and each bound of the interval
lies about z standard errors from the estimate. So a bound's distance from the estimate,
divided by the interval's z, estimates the percentile's standard error without estimating the
density at it. The tail of a p99 is skewed, so the upper distance usually exceeds the lower one,
and each run contributes the side that faces the other run. The two standard errors add in
quadrature, as for any difference of independent estimates, and the difference is real at the
same ``SIGNIFICANT_Z`` as a share's. Asking only whether the two intervals overlap would be a
stricter test. Two intervals of equal width at z = 2 stop overlapping when the estimates lie 4
standard errors of one run apart, which is 2·sqrt(2), about 2.8, standard errors of their
difference.

A run whose summary.json predates the intervals gives its percentile alone. Combined with the
other run's interval it counts as exact, so the test rests on that interval alone. Ignoring one
run's noise makes the test flag a difference up to sqrt(2) times smaller than with both
intervals at equal sample counts. It errs towards WORSE, as compare did before the intervals.
With no interval on either side, or a facing bound that the samples were too few to set, there
is no estimate, and compare flags any move the wrong way.

NOTE: the interval assumes independent samples. Lateness comes in bursts when a backlog delays
many triggers at once. Then the real run-to-run spread is wider than the interval, so a move
just beyond ``SIGNIFICANT_Z`` may still come from chance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

SIGNIFICANT_Z = 2.0
# Counts whose sum is at most this get the exact binomial tail; the sum costs about 1 ms there.
EXACT_COUNT_LIMIT = 5000


def share_z(part_a: int, whole_a: int, part_b: int, whole_b: int) -> float | None:
    """Return the z statistic of share B minus share A, or None when a run has no whole.

    The standard error comes from the pooled share, as the test of equal shares uses. Two
    shares that are both 0 or both 1 give 0.
    """
    if whole_a <= 0 or whole_b <= 0:
        return None
    pooled = (part_a + part_b) / (whole_a + whole_b)
    variance = pooled * (1.0 - pooled) * (1.0 / whole_a + 1.0 / whole_b)
    difference = part_b / whole_b - part_a / whole_a
    if variance <= 0.0:
        return 0.0
    return difference / math.sqrt(variance)


def count_z(count_a: int | float, count_b: int | float) -> float:
    """Return the z statistic of count B minus count A, both Poisson over the same exposure.

    Given the total n, count B is binomial with p = 1/2 when the rates are equal. The tail of
    that binomial beyond the larger count is summed exactly up to ``EXACT_COUNT_LIMIT`` and
    turned into the normal z with the same tail, so that a small count is not overstated: 4
    against 0 has a tail of 1/16 (z 1.53), where the normal approximation gives z 2. Above the
    limit the normal approximation with a continuity correction serves.
    """
    low, high = sorted((round(count_a), round(count_b)))
    total = low + high
    if total <= 0 or low == high:
        return 0.0
    sign = 1.0 if count_b > count_a else -1.0
    if total > EXACT_COUNT_LIMIT:
        return sign * (high - low - 1) / math.sqrt(total)

    log_half = total * math.log(0.5)
    tail = sum(
        math.exp(
            math.lgamma(total + 1) - math.lgamma(k + 1) - math.lgamma(total - k + 1) + log_half
        )
        for k in range(high, total + 1)
    )
    # The tail is at most 1/2, as high is above total / 2, and at least 2^-total.
    return sign * NormalDist().inv_cdf(1.0 - max(tail, 1e-300))


@dataclass(frozen=True)
class PercentileInterval:
    """A percentile's confidence interval as summary.json stores it, in the percentile's unit."""

    lower: float | None  # None when the samples were too few to set this bound
    upper: float | None
    z: float  # standard errors from the estimate to each bound


def percentile_z(
    value_a: float,
    interval_a: PercentileInterval | None,
    value_b: float,
    interval_b: PercentileInterval | None,
) -> float | None:
    """Return the z statistic of percentile B minus percentile A, or None without an estimate.

    An interval of None marks a value alone (a summary from before the intervals), taken as
    exact. A difference of 0 gives 0. A nonzero difference with no spread on either facing
    side, as when the samples near each percentile all tie, gives an infinite z.
    """
    if interval_a is None and interval_b is None:
        return None
    difference = value_b - value_a
    if difference == 0:
        return 0.0

    # The side of each run's interval that faces the other run's value.
    rising = difference > 0
    error_a = _standard_error(value_a, interval_a, above=rising)
    error_b = _standard_error(value_b, interval_b, above=not rising)
    if error_a is None or error_b is None:
        return None

    variance = error_a**2 + error_b**2
    if variance == 0.0:
        return math.copysign(math.inf, difference)
    return difference / math.sqrt(variance)


def _standard_error(value: float, interval: PercentileInterval | None, above: bool) -> float | None:
    """Return the standard error on one side of a percentile, 0 for a value alone.

    None means the interval has no bound on that side.
    """
    if interval is None:
        return 0.0
    bound = interval.upper if above else interval.lower
    if bound is None:
        return None
    # A bound is a sample, while the estimate interpolates between two, so with very few
    # samples a bound can pass the estimate (the lower bound of p99 of 2 samples is the larger
    # one). That side then has no spread.
    distance = bound - value if above else value - bound
    return max(distance, 0.0) / interval.z
