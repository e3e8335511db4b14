"""Latency series for the generator's own health: schedule lag, drops, and trigger-to-gateway.

Locust's request statistics describe the backend. These series describe the load generator and
the end-to-end path, so they live in their own table. A series is a histogram of wall
milliseconds, rounded as Locust rounds response times, so it merges across workers by adding
counts and stays small however long the run.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field


def round_ms(value_ms: float) -> int:
    """Round to two significant digits above 100 ms and to whole ms below, as Locust does."""
    value = max(0, int(round(value_ms)))
    if value < 100:
        return value
    digits = int(math.log10(value)) - 1
    return int(round(value, -digits))


@dataclass
class Series:
    """Counts of rounded wall-millisecond values, plus how many actions were dropped."""

    histogram: Counter = field(default_factory=Counter)
    count: int = 0
    drops: int = 0
    max_ms: float = 0.0

    def add(self, value_ms: float) -> None:
        self.histogram[round_ms(value_ms)] += 1
        self.count += 1
        self.max_ms = max(self.max_ms, value_ms)

    def add_drop(self, value_ms: float) -> None:
        self.add(value_ms)
        self.drops += 1

    def percentile(self, fraction: float) -> float:
        """Return the value below which ``fraction`` of the samples fall, or 0 when empty."""
        if self.count == 0:
            return 0.0
        rank = fraction * self.count
        seen = 0
        for value in sorted(self.histogram):
            seen += self.histogram[value]
            if seen >= rank:
                return float(value)
        return float(max(self.histogram))

    def merge(self, other: Series) -> None:
        self.histogram.update(other.histogram)
        self.count += other.count
        self.drops += other.drops
        self.max_ms = max(self.max_ms, other.max_ms)

    def to_dict(self) -> dict:
        return {
            "histogram": {str(k): v for k, v in self.histogram.items()},
            "count": self.count,
            "drops": self.drops,
            "max_ms": self.max_ms,
        }

    @classmethod
    def from_dict(cls, data: dict) -> Series:
        series = cls(
            histogram=Counter({int(k): int(v) for k, v in data.get("histogram", {}).items()}),
            count=int(data.get("count", 0)),
            drops=int(data.get("drops", 0)),
            max_ms=float(data.get("max_ms", 0.0)),
        )
        return series


SCHEDULE_LAG = "schedule_lag"
TRIGGER_TO_GATEWAY = "trigger_to_gateway"
CSV_HEADER = ("Name", "Count", "Dropped", "Drop %", "p50 ms", "p95 ms", "p99 ms", "Max ms")


class TimingTable:
    """Named series, one row each in the web UI tab, the headless summary and the CSV."""

    def __init__(self) -> None:
        self.series: dict[str, Series] = {}

    def get(self, name: str) -> Series:
        if name not in self.series:
            self.series[name] = Series()
        return self.series[name]

    def merge_dict(self, data: dict) -> None:
        for name, values in data.items():
            self.get(name).merge(Series.from_dict(values))

    def to_dict(self) -> dict:
        return {name: series.to_dict() for name, series in self.series.items()}

    def reset(self) -> None:
        self.series.clear()

    def rows(self) -> list[dict]:
        """Return one plain row per series, sorted by name, for tables and CSV."""
        rows = []
        for name in sorted(self.series):
            s = self.series[name]
            rows.append(
                {
                    "name": name,
                    "count": s.count,
                    "drops": s.drops,
                    "drop_percent": round(100.0 * s.drops / s.count, 2) if s.count else 0.0,
                    "p50": s.percentile(0.50),
                    "p95": s.percentile(0.95),
                    "p99": s.percentile(0.99),
                    "max": round(s.max_ms, 1),
                }
            )
        return rows

    def csv_lines(self) -> list[list]:
        lines: list[list] = [list(CSV_HEADER)]
        for row in self.rows():
            lines.append(
                [
                    row["name"],
                    row["count"],
                    row["drops"],
                    row["drop_percent"],
                    row["p50"],
                    row["p95"],
                    row["p99"],
                    row["max"],
                ]  # fmt: skip
            )
        return lines

    def summary(self) -> str:
        """Return the table as text, for the headless summary."""
        lines = [
            f"{'pushsim timing':<24}{'count':>10}{'dropped':>10}{'p50 ms':>10}{'p95 ms':>10}"
            f"{'p99 ms':>10}{'max ms':>10}"
        ]
        for row in self.rows():
            lines.append(
                f"{row['name']:<24}{row['count']:>10}{row['drops']:>10}{row['p50']:>10.0f}"
                f"{row['p95']:>10.0f}{row['p99']:>10.0f}{row['max']:>10.0f}"
            )
        return "\n".join(lines)
