"""The run's epochs as the control endpoint stores them, one row per post."""

from __future__ import annotations

import sqlite3

from sim.formats.epoch import Epoch


def save_epoch(
    connection: sqlite3.Connection,
    *,
    epoch: Epoch,
    run_key: str | None,
    shard_count: int | None,
    posted_at: float,
) -> None:
    """Insert a posted epoch. The latest row is the run's epoch from then on."""
    connection.execute(
        "INSERT INTO epochs (wall_t0, sim_t0, time_scale, run_key, shard_count, posted_at) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (epoch.wall_t0, epoch.sim_t0, epoch.time_scale, run_key, shard_count, posted_at),
    )
