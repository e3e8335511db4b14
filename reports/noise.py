"""Whether a difference between two runs exceeds what chance alone gives.

Two runs of one scenario differ even when nothing changed: another seed draws other shoppers,
and a live run's timing moves pushes across a window's edge. A share is compared with the
two-proportion z statistic, and a count with the statistic of two Poisson counts over the same
exposure. A difference of at least ``SIGNIFICANT_Z`` standard errors counts as real, which
chance alone exceeds in about 2.3% of comparisons in the worse direction (normal tail).
"""

from __future__ import annotations

import math

SIGNIFICANT_Z = 2.0


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

    Given the total, count B is binomial with p = 1/2 when the rates are equal, so its standard
    error is the square root of the total.
    """
    total = count_a + count_b
    if total <= 0:
        return 0.0
    return (count_b - count_a) / math.sqrt(total)
