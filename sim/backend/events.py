"""Tracked events, push delivery metrics and CDP message deduplication.

Every function here runs inside a write on the store's writer thread.
"""

from __future__ import annotations

import json
import sqlite3

TRACK = "track"
CDP = "cdp"

DELIVERY_METRICS = ("delivered", "opened", "converted")


# json.dumps with these options would build a new encoder for every call.
_DATA_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def encode_data(data: dict) -> str:
    """Encode event data as the ``events.data`` column stores it: compact JSON, sorted keys.

    Its UTF-8 size is also the size that the intake limits measure.
    """
    return _DATA_ENCODER.encode(data)


def insert_event(
    connection: sqlite3.Connection,
    *,
    profile_id: int | None,
    anonymous_id: str | None,
    name: str,
    data: dict | str,
    timestamp: float,
    source: str,
    dedupe_id: str | None,
    now: float,
) -> int | None:
    """Store an event and return its id, or None when ``dedupe_id`` was already stored.

    ``data`` is the event's data, or its text from ``encode_data``.
    """
    cursor = connection.execute(
        "INSERT OR IGNORE INTO events (profile_id, anonymous_id, name, data, timestamp, "
        "received_at, source, dedupe_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            profile_id,
            anonymous_id,
            name,
            data if isinstance(data, str) else encode_data(data),
            timestamp,
            now,
            source,
            dedupe_id,
        ),
    )
    return cursor.lastrowid if cursor.rowcount == 1 else None


def is_duplicate_event(connection: sqlite3.Connection, source: str, dedupe_id: str) -> bool:
    """Return True when an event with ``dedupe_id`` from ``source`` is already stored."""
    row = connection.execute(
        "SELECT 1 FROM events WHERE source = ? AND dedupe_id = ?", (source, dedupe_id)
    ).fetchone()
    return row is not None


def insert_delivery_metric(
    connection: sqlite3.Connection,
    *,
    delivery_id: str,
    metric: str,
    device_token: str | None,
    timestamp: float,
    source: str,
    now: float,
) -> bool:
    """Store one metric of a delivery; False when that metric was already stored for it."""
    cursor = connection.execute(
        "INSERT OR IGNORE INTO delivery_metrics (delivery_id, metric, device_token, timestamp, "
        "received_at, source) VALUES (?, ?, ?, ?, ?, ?)",
        (delivery_id, metric, device_token, timestamp, now, source),
    )
    return cursor.rowcount == 1


def claim_message(
    connection: sqlite3.Connection, message_id: str, message_type: str, now: float
) -> bool:
    """Record a CDP messageId; False when it was processed before and must be skipped."""
    cursor = connection.execute(
        "INSERT OR IGNORE INTO cdp_messages (message_id, type, received_at) VALUES (?, ?, ?)",
        (message_id, message_type, now),
    )
    return cursor.rowcount == 1
