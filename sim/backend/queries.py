"""Read queries over the store for the journey engine, the sender and the oracle.

Each function takes a connection from ``Store.read`` and returns plain dicts with JSON columns
decoded, so callers never depend on sqlite3.Row.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable

from sim.backend.identity import ANONYMOUS_ID, EMAIL, ID

_JSON_COLUMNS = ("attributes", "data", "detail")


def _as_dict(row: sqlite3.Row) -> dict:
    record = dict(row)
    for column in _JSON_COLUMNS:
        if column in record and isinstance(record[column], str):
            record[column] = json.loads(record[column])
    return record


def find_profile(connection: sqlite3.Connection, kind: str, value: str) -> dict | None:
    """Return the live profile that owns an identifier (``id``, ``email``, ``anonymous_id``)."""
    if kind not in (ID, EMAIL, ANONYMOUS_ID):
        raise ValueError(f"invalid identifier kind {kind!r}: use id, email or anonymous_id")
    row = connection.execute(
        "SELECT p.* FROM identities i JOIN profiles p ON p.id = i.profile_id "
        "WHERE i.kind = ? AND i.value = ?",
        (kind, value),
    ).fetchone()
    return _as_dict(row) if row else None


def get_profile(connection: sqlite3.Connection, profile_id: int) -> dict | None:
    """Return one profile row, merged or not, or None if the id is unknown."""
    row = connection.execute("SELECT * FROM profiles WHERE id = ?", (profile_id,)).fetchone()
    return _as_dict(row) if row else None


def identifiers_of(connection: sqlite3.Connection, profile_id: int) -> list[tuple[str, str]]:
    """Return the ``(kind, value)`` identifiers that resolve to a profile."""
    rows = connection.execute(
        "SELECT kind, value FROM identities WHERE profile_id = ? ORDER BY kind, value",
        (profile_id,),
    )
    return [(row["kind"], row["value"]) for row in rows]


def devices_of(
    connection: sqlite3.Connection, profile_id: int, *, active_only: bool = True
) -> list[dict]:
    """Return the devices of a profile, most recently used first."""
    sql = "SELECT * FROM devices WHERE profile_id = ?"
    if active_only:
        sql += " AND status = 'active'"
    sql += " ORDER BY COALESCE(last_used, registered_at) DESC"
    return [_as_dict(row) for row in connection.execute(sql, (profile_id,))]


def get_device(connection: sqlite3.Connection, token: str) -> dict | None:
    """Return the device row of a token, whatever its status, or None."""
    row = connection.execute("SELECT * FROM devices WHERE token = ?", (token,)).fetchone()
    return _as_dict(row) if row else None


def events_after(
    connection: sqlite3.Connection,
    after_id: int,
    *,
    names: Iterable[str] | None = None,
    limit: int = 1000,
) -> list[dict]:
    """Return up to ``limit`` events with id above ``after_id``, oldest first.

    A journey engine polls with the last id it has seen, so every stored event reaches it once.
    """
    sql = "SELECT * FROM events WHERE id > ?"
    parameters: list = [after_id]
    if names is not None:
        names = list(names)
        sql += f" AND name IN ({', '.join('?' * len(names))})"
        parameters += names
    sql += " ORDER BY id LIMIT ?"
    parameters.append(limit)
    return [_as_dict(row) for row in connection.execute(sql, parameters)]


def events_of(
    connection: sqlite3.Connection,
    profile_id: int,
    *,
    names: Iterable[str] | None = None,
    since: float | None = None,
) -> list[dict]:
    """Return a profile's events, by event timestamp (wall seconds), optionally filtered."""
    sql = "SELECT * FROM events WHERE profile_id = ?"
    parameters: list = [profile_id]
    if names is not None:
        names = list(names)
        sql += f" AND name IN ({', '.join('?' * len(names))})"
        parameters += names
    if since is not None:
        sql += " AND timestamp >= ?"
        parameters.append(since)
    sql += " ORDER BY timestamp, id"
    return [_as_dict(row) for row in connection.execute(sql, parameters)]


def delivery_metrics_of(connection: sqlite3.Connection, delivery_id: str) -> list[dict]:
    """Return the metrics reported for one delivery, oldest first."""
    rows = connection.execute(
        "SELECT * FROM delivery_metrics WHERE delivery_id = ? ORDER BY timestamp, id",
        (delivery_id,),
    )
    return [_as_dict(row) for row in rows]


def due_journey_runs(connection: sqlite3.Connection, state: str, due_by: float) -> list[dict]:
    """Return the journey runs in ``state`` that are due at or before wall time ``due_by``."""
    rows = connection.execute(
        "SELECT * FROM journey_runs WHERE state = ? AND due_at <= ? ORDER BY due_at, id",
        (state, due_by),
    )
    return [_as_dict(row) for row in rows]
