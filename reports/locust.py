"""Read Locust's ``*_stats_history.csv``: aggregated response-time percentiles over wall time."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

AGGREGATED = "Aggregated"
COLUMNS = ("50%", "95%", "99%")


@dataclass
class LatencyHistory:
    """Percentile series in ms, sampled at wall seconds since the first sample."""

    seconds: list[float] = field(default_factory=list)
    percentiles: dict[str, list[float]] = field(default_factory=dict)


def _number(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "", "N/A") else float("nan")
    except ValueError:
        return float("nan")


def read_history(path: str | Path) -> LatencyHistory | None:
    """Return the Aggregated rows' p50, p95 and p99, or None when the file has none."""
    history = LatencyHistory(percentiles={f"p{c.rstrip('%')}": [] for c in COLUMNS})
    start = None
    with open(path, newline="", encoding="utf-8") as stream:
        for row in csv.DictReader(stream):
            if row.get("Name") != AGGREGATED:
                continue
            stamp = _number(row.get("Timestamp"))
            start = stamp if start is None else start
            history.seconds.append(stamp - start)
            for column in COLUMNS:
                history.percentiles[f"p{column.rstrip('%')}"].append(_number(row.get(column)))
    return history if history.seconds else None
