"""Percentile summaries used across the oracle's figures."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

PERCENTILES = (50, 95, 99)


def summarise(values: Sequence[float]) -> dict[str, float | int | None]:
    """Return count, p50, p95, p99 and max of ``values``; the statistics are None when empty."""
    summary: dict[str, float | int | None] = {"count": len(values)}
    data = np.asarray(values, dtype=float)
    for percentile in PERCENTILES:
        summary[f"p{percentile}"] = float(np.percentile(data, percentile)) if len(data) else None
    summary["max"] = float(data.max()) if len(data) else None
    return summary
