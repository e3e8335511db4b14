"""The delivery ledger's schema: one row per push request a gateway answered.

The gateways write it and the oracle reads it, so the table is defined once here. Times are Unix
seconds: ``wall_time`` as received, ``sim_time`` converted with the run's epoch (null before an
epoch arrived). ``delivery_id`` is set only for an accepted push to a live token, and it is the
join key with the truth ledger's push reactions.

``ledger_meta`` holds the schema version, the writer's heartbeat (``last_flush_wall``, Unix
seconds of its last commit), ``clean_shutdown`` ("1" after a clean close, "0" while open), and
``possible_gaps``: a JSON list of wall-time windows whose rows a crash may have lost, each
``{"since": s, "until": s, "backlog": n}``. Readers should treat verdicts inside a gap as
uncertain.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

SCHEMA_VERSION = 2

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
        group_id INTEGER,
        fault TEXT,
        extra TEXT
    )
    """,
    "CREATE INDEX IF NOT EXISTS deliveries_shard ON deliveries (shard, seq)",
    """
    CREATE TABLE IF NOT EXISTS ledger_meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    )
    """,
)

# An index for queries by device token. Nothing reads by token while the gateways run. Keeping
# the index current took a third of the writer's CPU per row (17 against 11 µs in a loop of
# batches of 92), so the ledger drops it while it writes and builds it when it closes cleanly.
TOKEN_INDEX = "deliveries_token"
_CREATE_TOKEN_INDEX = f"CREATE INDEX IF NOT EXISTS {TOKEN_INDEX} ON deliveries (token)"

COLUMNS = (
    "wall_time", "sim_time", "service", "connection_id", "token", "audience", "message_id",
    "collapse_id", "priority", "expiration", "push_type", "payload", "status", "reason",
    "delivery_id", "timestamp_ms", "retry_after", "added_latency", "retry_of", "duplicate_of",
    "shard", "group_id", "fault", "extra",
)  # fmt: skip

# Columns added after version 1, with their types, so an older file can be brought up to date.
ADDED_COLUMNS = {"fault": "TEXT", "extra": "TEXT"}

META_LAST_FLUSH = "last_flush_wall"
META_CLEAN_SHUTDOWN = "clean_shutdown"
META_POSSIBLE_GAPS = "possible_gaps"


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
    fault: str | None = None  # kind of the scripted fault that acted on the push, if any
    extra: str | None = None  # JSON object of service-specific details the server added


def create_schema(connection: sqlite3.Connection) -> None:
    """Create the ledger tables if they are missing, add newer columns, record the version."""
    for statement in CREATE_STATEMENTS:
        connection.execute(statement)

    present = {row[1] for row in connection.execute("PRAGMA table_info(deliveries)")}
    for name, kind in ADDED_COLUMNS.items():
        if name not in present:
            connection.execute(f"ALTER TABLE deliveries ADD COLUMN {name} {kind}")

    connection.execute(
        "INSERT OR REPLACE INTO ledger_meta (key, value) VALUES ('schema_version', ?)",
        (str(SCHEMA_VERSION),),
    )
    connection.commit()


def drop_token_index(connection: sqlite3.Connection) -> None:
    """Drop the index by device token, before a writer starts inserting rows."""
    connection.execute(f"DROP INDEX IF EXISTS {TOKEN_INDEX}")


def create_token_index(connection: sqlite3.Connection) -> None:
    """Build the index by device token, for queries once the gateways have stopped."""
    connection.execute(_CREATE_TOKEN_INDEX)


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
