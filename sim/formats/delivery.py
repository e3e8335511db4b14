"""The delivery ledger's schema: one row per push request a gateway answered.

The gateways write it and the oracle reads it, so the table is defined once here. Times are Unix
seconds: ``wall_time`` as received, ``sim_time`` converted with the run's epoch (null before an
epoch arrived). ``delivery_id`` is set only for an accepted push to a live token, and it is the
join key with the truth ledger's push reactions.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

SCHEMA_VERSION = 1

CREATE_STATEMENTS = (
    """
    CREATE TABLE IF NOT EXISTS deliveries (
        seq INTEGER PRIMARY KEY,
        wall_time REAL NOT NULL,
        sim_time REAL,
        service TEXT NOT NULL,
        connection_id TEXT NOT NULL,
        token TEXT NOT NULL,
        audience TEXT NOT NULL,
        message_id TEXT NOT NULL,
        collapse_id TEXT,
        priority TEXT,
        expiration TEXT,
        push_type TEXT,
        payload BLOB,
        status INTEGER NOT NULL,
        reason TEXT,
        delivery_id TEXT UNIQUE,
        timestamp_ms INTEGER,
        retry_after INTEGER,
        added_latency REAL NOT NULL DEFAULT 0,
        retry_of INTEGER,
        duplicate_of INTEGER,
        shard INTEGER,
        group_id INTEGER
    )
    """,
    "CREATE INDEX IF NOT EXISTS deliveries_shard ON deliveries (shard, seq)",
    "CREATE INDEX IF NOT EXISTS deliveries_token ON deliveries (token)",
    """
    CREATE TABLE IF NOT EXISTS ledger_meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    )
    """,
)

COLUMNS = (
    "wall_time", "sim_time", "service", "connection_id", "token", "audience", "message_id",
    "collapse_id", "priority", "expiration", "push_type", "payload", "status", "reason",
    "delivery_id", "timestamp_ms", "retry_after", "added_latency", "retry_of", "duplicate_of",
    "shard", "group_id",
)  # fmt: skip


@dataclass
class DeliveryRow:
    """One ledger row, as the oracle reads it."""

    seq: int
    wall_time: float
    sim_time: float | None
    service: str
    connection_id: str
    token: str
    audience: str
    message_id: str
    collapse_id: str | None
    priority: str | None
    expiration: str | None
    push_type: str | None
    payload: bytes | None
    status: int
    reason: str | None
    delivery_id: str | None
    timestamp_ms: int | None
    retry_after: int | None
    added_latency: float
    retry_of: int | None
    duplicate_of: int | None
    shard: int | None
    group_id: int | None


def create_schema(connection: sqlite3.Connection) -> None:
    """Create the ledger tables if they are missing and record the schema version."""
    for statement in CREATE_STATEMENTS:
        connection.execute(statement)
    connection.execute(
        "INSERT OR IGNORE INTO ledger_meta (key, value) VALUES ('schema_version', ?)",
        (str(SCHEMA_VERSION),),
    )
    connection.commit()


def read_rows(path: str, *, after_seq: int = 0):
    """Yield the ledger's rows in order, without holding them all in memory."""
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        cursor = connection.execute(
            f"SELECT seq, {', '.join(COLUMNS)} FROM deliveries WHERE seq > ? ORDER BY seq",
            (after_seq,),
        )
        for row in cursor:
            yield DeliveryRow(*row)
    finally:
        connection.close()
