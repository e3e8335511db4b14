"""Percentile summaries used across the oracle's figures, and confidence intervals of percentiles.

The interval of a percentile comes from order statistics and needs no assumption about the
distribution. Of n independent samples, the number that fall at or below the true p-th quantile
q is binomial with n and p. So the sorted samples' ranks l and u can be chosen such that the
l-th sample lies above q, or the u-th below it, each with probability at most the normal tail
beyond ``INTERVAL_Z``. For large n these ranks approach n·p ± z·sqrt(n·p·(1−p)). They are taken
here from the exact binomial distribution instead, so each bound keeps its level with the few
samples that lie beyond a p99. A bound whose rank falls outside 1..n does not exist: the sample
is too small to set it, and it is None.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

PERCENTILES = (50, 95, 99)

# Standard errors on each side of a percentile's confidence interval. Each bound misses the
# true percentile with probability at most 2.3% (the normal tail beyond 2), the level at which
# reports.noise.SIGNIFICANT_Z calls a difference between two runs real.
INTERVAL_Z = 2.0


def summarise(
    values: Sequence[float], intervals: Sequence[int] = ()
) -> dict[str, float | int | dict | None]:
    """Return count, p50, p95, p99 and max of ``values``; the statistics are None when empty.

    Each percentile in ``intervals`` also gets its confidence interval under ``p{N}_interval``,
    as ``percentile_interval`` returns it.
    """
    summary: dict[str, float | int | dict | None] = {"count": len(values)}
    data = np.asarray(values, dtype=float)
    for percentile in PERCENTILES:
        summary[f"p{percentile}"] = float(np.percentile(data, percentile)) if len(data) else None
    summary["max"] = float(data.max()) if len(data) else None
    for percentile in intervals:
        summary[f"p{percentile}_interval"] = percentile_interval(data, percentile)
    return summary


def percentile_interval(
    values: Sequence[float], percentile: float, z: float = INTERVAL_Z
) -> dict[str, float | None]:
    """Return the confidence interval of the ``percentile``-th percentile of ``values``.

    The result is ``{lower, upper, z}``: each bound is a sample, and either is None when the
    samples are too few to set it (both are None for no samples). The samples must be
    independent draws of one distribution. With ties the interval still covers the true
    percentile at least as often as stated.
    """
    if not 0 < percentile < 100:
        raise ValueError(f"percentile must lie strictly between 0 and 100, got {percentile}")
    ordered = np.sort(np.asarray(values, dtype=float))
    count = len(ordered)
    if count == 0:
        return {"lower": None, "upper": None, "z": z}

    # cdf[k] is the probability that at most k samples fall at or below the true percentile.
    cdf = _binomial_cdf(count, percentile / 100.0)
    tail = _normal_tail(z)

    # The l-th smallest sample lies above the percentile when at most l - 1 samples fall at or
    # below it, so l is the largest rank with cdf[l - 1] < tail. Rank 0 means no lower bound.
    lower_rank = int(np.searchsorted(cdf, tail, side="left"))

    # The u-th smallest sample lies below the percentile when at least u samples fall below it,
    # so u is the smallest rank with cdf[u - 1] >= 1 - tail. Rank count + 1 means no upper bound.
    upper_rank = int(np.searchsorted(cdf, 1.0 - tail, side="left")) + 1

    lower = float(ordered[lower_rank - 1]) if lower_rank >= 1 else None
    upper = float(ordered[upper_rank - 1]) if upper_rank <= count else None
    return {"lower": lower, "upper": upper, "z": z}


def fewest_samples_for_upper_bound(percentile: float, z: float = INTERVAL_Z) -> int:
    """Return the fewest samples whose largest one bounds the ``percentile``-th percentile.

    The largest of n samples lies below the percentile with probability p^n, which must not
    exceed the normal tail beyond ``z``: 377 samples for p99 at z = 2.
    """
    return math.ceil(math.log(_normal_tail(z)) / math.log(percentile / 100.0))


def _normal_tail(z: float) -> float:
    """Return the probability that a standard normal variable exceeds ``z``."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def _binomial_cdf(trials: int, probability: float) -> np.ndarray:
    """Return P(X <= k) for k = 0..trials of a binomial X, computed in log space.

    Adjacent probabilities have the ratio (n - k) / (k + 1) · p / (1 - p), so their logarithms
    are a cumulative sum. Shifting that sum to a maximum of 0 before exponentiating keeps the
    mode's mass at 1, while the mass at k = 0, (1 - p)^n, underflows to 0 for a p99 of more
    than about 160 samples.
    """
    k = np.arange(trials, dtype=float)
    log_ratios = np.log((trials - k) / (k + 1.0)) + math.log(probability / (1.0 - probability))
    log_mass = np.concatenate(([0.0], np.cumsum(log_ratios)))
    mass = np.exp(log_mass - log_mass.max())
    cdf = np.cumsum(mass)
    return cdf / cdf[-1]
