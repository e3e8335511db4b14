"""The oracle's tables as CSV files, one per table, for notebooks."""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Iterable
from pathlib import Path

from sim.oracle.outcomes import OUTCOMES, TriggerRow
from sim.oracle.result import OracleResult

TRIGGER_COLUMNS = tuple(field.name for field in dataclasses.fields(TriggerRow))


def _write(path: Path, header: Iterable[str], rows: Iterable[Iterable]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(list(header))
        for row in rows:
            writer.writerow(["" if value is None else value for value in row])
    return path


def write_tables(result: OracleResult, directory: Path) -> list[Path]:
    """Write every table of ``result`` as a CSV file in ``directory``; return their paths."""
    written = []
    rows = []
    for row in result.rows:
        values = dataclasses.asdict(row)
        values["delivery_ids"] = " ".join(values["delivery_ids"])
        rows.append([values[column] for column in TRIGGER_COLUMNS])
    written.append(_write(directory / "triggers.csv", TRIGGER_COLUMNS, rows))

    written.append(_write(
        directory / "outcomes.csv",
        ("journey", "outcome", "triggers"),
        [(j.name, outcome, j.outcomes[outcome]) for j in result.journeys for outcome in OUTCOMES],
    ))  # fmt: skip
    written.append(_write(
        directory / "waterfall.csv",
        ("journey", "step", "triggers"),
        [(j.name, step, count) for j in result.journeys for step, count in j.waterfall()],
    ))  # fmt: skip
    written.append(_write(
        directory / "problems.csv",
        ("kind", "count", "examples"),
        [(p.kind, p.count, " | ".join(p.examples)) for p in result.problems.values()],
    ))  # fmt: skip
    written.append(_write(
        directory / "gates.csv",
        ("gate", "metric", "op", "threshold", "value", "passed", "note"),
        [(g.gate, g.metric, g.op, g.threshold, g.value, g.passed, g.note) for g in result.gates],
    ))  # fmt: skip
    written.append(_write(directory / "metrics.csv", ("metric", "value"), result.metrics.items()))

    series = result.series
    columns = {
        "pushes_accepted": series["pushes_accepted"],
        "pushes_rejected": series["pushes_rejected"],
        **{f"reaction_{k}": v for k, v in series["reactions"].items()},
        **{f"stitching_{k}": v for k, v in series["stitching"].items()},
        "new_connections": series["new_connections"],
    }
    written.append(_write(
        directory / "series.csv",
        ("bin_start_s", "bin_width_s", *columns),
        [(start, series["bin_width_s"], *values)
         for start, *values in zip(series["bin_start_s"], *columns.values(), strict=True)],
    ))  # fmt: skip
    written.append(_write(
        directory / "status_mix.csv",
        ("bin_start_s", "response", "requests"),
        [(start, label, count)
         for label, counts in series["status_mix"].items()
         for start, count in zip(series["bin_start_s"], counts, strict=True) if count],
    ))  # fmt: skip

    reach = result.reach
    written.append(_write(
        directory / "reach.csv",
        ("at_s", "opted_in", "reachable", "reachable_share", "live_tokens",
         "dead_registered_tokens"),
        [(reach.at[i], reach.opted_in[i], reach.reachable[i], reach.share(i),
          reach.live_tokens[i], reach.dead_registered_tokens[i]) for i in range(len(reach.at))],
    ))  # fmt: skip
    conduct = dataclasses.asdict(result.conduct)
    conduct.pop("examples")
    # One number per row, so the value column loads as numbers: connections.apns, ...
    connections = conduct.pop("connections")
    conduct.update({f"connections.{service}": count for service, count in connections.items()})
    written.append(_write(directory / "conduct.csv", ("figure", "value"), conduct.items()))
    return written
