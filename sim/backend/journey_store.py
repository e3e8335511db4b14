"""The journey engine's run table: starting runs, finding due ones, and the run vocabulary.

Run states: ``waiting`` until due, ``sending`` while its pushes are with the sender, ``done``
with an outcome. Outcomes: ``exited``, ``no_device``, ``no_permission``, ``capped``, ``sent``
(at least one push accepted) and ``failed`` (no push accepted). Every function takes a
connection from ``Store.read`` or ``Store.write``. Times in the tables are wall Unix seconds.
"""

from __future__ import annotations

import json
import sqlite3

from sim.backend.journey_rules import activity_event, draw_delay, match_value
from sim.backend.queries import get_profile
from sim.formats.epoch import Epoch
from sim.scenario.schema import Journey

WAITING = "waiting"
SENDING = "sending"
DONE = "done"

EXITED = "exited"
NO_DEVICE = "no_device"
NO_PERMISSION = "no_permission"
CAPPED = "capped"
SENT = "sent"
FAILED = "failed"

BROADCAST_KEY = "broadcast"


def to_json(value: object) -> str:
    """Encode a JSON column value with sorted keys, so equal values store equal text."""
    return json.dumps(value, sort_keys=True)


def live_profile(connection: sqlite3.Connection, profile_id: int) -> dict | None:
    """Return the profile that ``profile_id`` was merged into, or itself; None if unknown."""
    # A merge repoints runs and events, but a row read before the merge names the old profile.
    seen = set()
    profile = get_profile(connection, profile_id)
    while profile is not None and profile["merged_into"] is not None and profile["id"] not in seen:
        seen.add(profile["id"])
        profile = get_profile(connection, profile["merged_into"])
    return profile


def load_cursor(connection: sqlite3.Connection, key: str) -> int:
    """Return the last event id the engine processed, 0 before the first."""
    row = connection.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return int(row["value"]) if row else 0


def _save_cursor(connection: sqlite3.Connection, key: str, value: int) -> None:
    connection.execute(
        "INSERT INTO meta (key, value) VALUES (?, ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (key, str(value)),
    )


def _insert_run(
    connection: sqlite3.Connection,
    journey: Journey,
    profile_id: int,
    trigger_event_id: int | None,
    key: str | None,
    due_at: float,
    detail: dict,
    now: float,
) -> bool:
    cursor = connection.execute(
        "INSERT OR IGNORE INTO journey_runs (journey, profile_id, trigger_event_id, match_value, "
        "state, due_at, detail, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            journey.name,
            profile_id,
            trigger_event_id,
            key,
            WAITING,
            due_at,
            to_json(detail),
            now,
            now,
        ),
    )
    return cursor.rowcount == 1


def _has_run(
    connection: sqlite3.Connection,
    journey: Journey,
    profile_id: int,
    key: str | None,
    *,
    waiting_only: bool,
) -> bool:
    sql = "SELECT 1 FROM journey_runs WHERE journey = ? AND profile_id = ? AND match_value IS ?"
    if waiting_only:
        sql += f" AND state = '{WAITING}'"
    return connection.execute(sql, (journey.name, profile_id, key)).fetchone() is not None


def _repeated_count_reached(
    connection: sqlite3.Connection, journey: Journey, event: dict, key: str | None, epoch: Epoch
) -> bool:
    """Return True when ``event`` completes ``trigger.count`` same-key events in the window.

    Only events after the trigger of the key's previous run count, so one streak starts one run.
    """
    previous = connection.execute(
        "SELECT MAX(trigger_event_id) FROM journey_runs "
        "WHERE journey = ? AND profile_id = ? AND match_value IS ?",
        (journey.name, event["profile_id"], key),
    ).fetchone()[0]
    window_start = event["timestamp"] - epoch.wall_duration(journey.trigger.window)
    rows = connection.execute(
        "SELECT data FROM events WHERE profile_id = ? AND name = ? AND id > ? AND id <= ? "
        "AND timestamp >= ?",
        (event["profile_id"], journey.trigger.event, previous or 0, event["id"], window_start),
    )
    count = sum(1 for row in rows if match_value(journey, json.loads(row["data"])) == key)
    return count >= journey.trigger.count


def start_runs_for_events(
    connection: sqlite3.Connection,
    journeys: list[Journey],
    events: list[dict],
    epoch: Epoch,
    cursor_key: str,
    now: float,
) -> list[str]:
    """Start the runs that ``events`` trigger and advance the cursor; return the journeys started.

    Event names match a journey's trigger exactly, as a real backend matches them, so a drifted
    name such as add_to_cart never triggers an added_to_cart journey.
    """
    started = []
    for event in events:
        if event["profile_id"] is None:
            continue
        for journey in journeys:
            if journey.trigger.event != event["name"]:
                continue
            if _start_run_for_event(connection, journey, event, epoch, now):
                started.append(journey.name)
    if events:
        _save_cursor(connection, cursor_key, events[-1]["id"])
    return started


def _start_run_for_event(
    connection: sqlite3.Connection, journey: Journey, event: dict, epoch: Epoch, now: float
) -> bool:
    data = event["data"] if isinstance(event["data"], dict) else {}
    key = match_value(journey, data)
    # The event was read before this write, and a merge since then may have moved it.
    profile = live_profile(connection, event["profile_id"])
    if profile is None:
        return False
    profile_id = profile["id"]
    event = dict(event, profile_id=profile_id)

    if journey.kind == "event":
        # One run per cart: later triggers for the same cart start nothing. Without a match
        # value, one waiting run per person.
        if _has_run(connection, journey, profile_id, key, waiting_only=key is None):
            return False
    elif journey.kind == "repeated_event":
        if journey.trigger.same and key is None:
            return False
        if _has_run(connection, journey, profile_id, key, waiting_only=True):
            return False
        if not _repeated_count_reached(connection, journey, event, key, epoch):
            return False

    delay = draw_delay(journey, event["id"])
    due_at = event["timestamp"] + epoch.wall_duration(delay)
    detail = {"data": data, "trigger_at": event["timestamp"], "delay": delay}
    return _insert_run(connection, journey, profile_id, event["id"], key, due_at, detail, now)


def sweep_inactive(
    connection: sqlite3.Connection, journey: Journey, epoch: Epoch, now: float
) -> int:
    """Start a run for each person whose last activity event is older than the inactivity period.

    The run's trigger is that last activity event, so one quiet spell starts one run. A person
    with no activity event at all is left out, because the backend cannot date their last visit.
    """
    cutoff = now - epoch.wall_duration(journey.inactivity)
    # NOTE: each sweep groups every activity event of the store, so its cost grows with the
    # event count; a store with millions of events would need a per-person last-seen table.
    rows = connection.execute(
        "SELECT * FROM (SELECT e.profile_id, MAX(e.id) AS event_id, MAX(e.timestamp) AS last_at "
        "FROM events e JOIN profiles p ON p.id = e.profile_id "
        "WHERE e.name = ? AND p.merged_into IS NULL GROUP BY e.profile_id HAVING last_at <= ?) "
        "WHERE event_id NOT IN (SELECT trigger_event_id FROM journey_runs WHERE journey = ? "
        "AND trigger_event_id IS NOT NULL)",
        (activity_event(journey), cutoff, journey.name),
    ).fetchall()
    started = 0
    for row in rows:
        detail = {"data": {}, "trigger_at": row["last_at"], "delay": 0.0}
        if _insert_run(
            connection, journey, row["profile_id"], row["event_id"], None, now, detail, now
        ):
            started += 1
    return started


def start_broadcast(
    connection: sqlite3.Connection, journey: Journey, epoch: Epoch, due_at: float, now: float
) -> int:
    """Create a waiting run per profile of the segment; return their number, 0 if done before.

    A broadcast starts once per epoch, so each run that a backend serves gets its own, and a
    restart under the same epoch does not send it twice.
    """
    flag = f"journeys.broadcast_started.{journey.name}.{epoch.wall_t0!r}.{epoch.time_scale!r}"
    if connection.execute("SELECT 1 FROM meta WHERE key = ?", (flag,)).fetchone():
        return 0
    connection.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (flag, str(now)))

    sql = "SELECT id FROM profiles WHERE merged_into IS NULL"
    if journey.segment == "known":
        sql += " AND customer_id IS NOT NULL"
    elif journey.segment == "purchasers":
        sql += " AND id IN (SELECT profile_id FROM events WHERE name = 'order_completed')"
    profile_ids = [row[0] for row in connection.execute(sql + " ORDER BY id")]
    detail = to_json({"data": {}, "trigger_at": due_at, "delay": 0.0})
    connection.executemany(
        "INSERT INTO journey_runs (journey, profile_id, trigger_event_id, match_value, state, "
        "due_at, detail, created_at, updated_at) VALUES (?, ?, NULL, ?, ?, ?, ?, ?, ?)",
        [
            (journey.name, pid, BROADCAST_KEY, WAITING, due_at, detail, now, now)
            for pid in profile_ids
        ],
    )
    return len(profile_ids)


def due_runs(connection: sqlite3.Connection, journey: str, due_by: float, limit: int) -> list[dict]:
    """Return up to ``limit`` waiting runs of a journey due at or before wall time ``due_by``."""
    rows = connection.execute(
        "SELECT * FROM journey_runs WHERE journey = ? AND state = ? AND due_at <= ? "
        "ORDER BY due_at, id LIMIT ?",
        (journey, WAITING, due_by, limit),
    )
    runs = []
    for row in rows:
        run = dict(row)
        run["detail"] = json.loads(run["detail"])
        runs.append(run)
    return runs


def next_due_at(connection: sqlite3.Connection, journey: str) -> float | None:
    """Return the earliest due time of a journey's waiting runs, or None when none waits."""
    row = connection.execute(
        "SELECT MIN(due_at) FROM journey_runs WHERE journey = ? AND state = ?",
        (journey, WAITING),
    ).fetchone()
    return row[0]
