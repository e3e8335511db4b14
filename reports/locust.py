"""Read Locust's CSV files: each SDK request kind's load and latency, and percentiles over time.

``*_stats.csv`` has one row per request name and a last ``Aggregated`` row, with response times
in wall milliseconds over the whole run. ``*_stats_history.csv`` samples the Aggregated
percentiles every few seconds.
"""

from __future__ import annotations

import csv
import math
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


@dataclass(frozen=True)
class EndpointLoad:
    """One row of ``*_stats.csv``: a request name's count, failures, rate and latency in ms.

    A percentile Locust printed as N/A, for a name with no successful response, is None.
    """

    method: str
    name: str
    requests: int
    failures: int
    requests_per_s: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None


def _optional(text: str | None) -> float | None:
    value = _number(text)
    return None if math.isnan(value) else value


def read_stats(path: str | Path) -> list[EndpointLoad]:
    """Return every row of a ``*_stats.csv`` file in its order, the Aggregated row last."""
    rows = []
    with open(path, newline="", encoding="utf-8") as stream:
        for row in csv.DictReader(stream):
            rows.append(
                EndpointLoad(
                    method=row.get("Type") or "",
                    name=row.get("Name") or "",
                    requests=int(_optional(row.get("Request Count")) or 0),
                    failures=int(_optional(row.get("Failure Count")) or 0),
                    requests_per_s=_optional(row.get("Requests/s")) or 0.0,
                    p50_ms=_optional(row.get("50%")),
                    p95_ms=_optional(row.get("95%")),
                    p99_ms=_optional(row.get("99%")),
                    max_ms=_optional(row.get("Max Response Time")),
                )
            )
    return rows


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
