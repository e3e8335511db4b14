"""The journey engine's reads and writes over ``journey_runs`` and ``journey_sends``.

Run states: ``waiting`` until due, ``sending`` while its pushes are with the sender, ``done``
with an outcome. Outcomes: ``exited``, ``no_device``, ``no_permission``, ``capped``, ``sent``
(at least one push accepted) and ``failed`` (no push accepted). Every function takes a
connection from ``Store.read`` or ``Store.write``. Times in the tables are wall Unix seconds.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from dataclasses import dataclass, field

from sim.backend import devices
from sim.backend.journey_rules import (
    activity_event,
    draw_delay,
    has_permission,
    journey_link,
    match_value,
    quiet_hours_end,
    timezone_of,
)
from sim.backend.push import ACCEPTED, SERVICE_BY_PLATFORM, PruneRequest, PushJob, PushOutcome
from sim.backend.queries import devices_of, get_profile
from sim.formats.epoch import Epoch
from sim.scenario.schema import Journey, Match

WAITING = "waiting"
SENDING = "sending"
DONE = "done"

EXITED = "exited"
NO_DEVICE = "no_device"
NO_PERMISSION = "no_permission"
CAPPED = "capped"
SENT = "sent"
FAILED = "failed"

# Decisions on a due run; HOLD keeps it waiting until quiet hours end.
SEND = "send"
HOLD = "hold"

BROADCAST_KEY = "broadcast"


@dataclass
class Decision:
    """The action for one due run, decided from one snapshot of the store."""

    run: dict
    action: str
    due_at: float | None = None
    link: str = ""
    devices: list[dict] = field(default_factory=list)


def _json(value: object) -> str:
    return json.dumps(value, sort_keys=True)


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
        (journey.name, profile_id, trigger_event_id, key, WAITING, due_at, _json(detail), now, now),
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
    profile = _live_profile(connection, event["profile_id"])
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
    connection: sqlite3.Connection, journey: Journey, due_at: float, now: float
) -> int:
    """Create a waiting run per profile of the segment; return their number, 0 if done before."""
    flag = f"journeys.broadcast_started.{journey.name}"
    if connection.execute("SELECT 1 FROM meta WHERE key = ?", (flag,)).fetchone():
        return 0
    connection.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (flag, str(now)))

    sql = "SELECT id FROM profiles WHERE merged_into IS NULL"
    if journey.segment == "known":
        sql += " AND customer_id IS NOT NULL"
    elif journey.segment == "purchasers":
        sql += " AND id IN (SELECT profile_id FROM events WHERE name = 'order_completed')"
    profile_ids = [row[0] for row in connection.execute(sql + " ORDER BY id")]
    detail = _json({"data": {}, "trigger_at": due_at, "delay": 0.0})
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


def _live_profile(connection: sqlite3.Connection, profile_id: int) -> dict | None:
    # A merge repoints runs, but a run read just before the merge may still name the old profile.
    seen = set()
    profile = get_profile(connection, profile_id)
    while profile is not None and profile["merged_into"] is not None and profile["id"] not in seen:
        seen.add(profile["id"])
        profile = get_profile(connection, profile["merged_into"])
    return profile


def _matching_event_exists(
    connection: sqlite3.Connection, profile_id: int, run: dict, match: Match
) -> bool:
    """Return True when ``match.event`` followed the trigger with the trigger's match value."""
    trigger_data = run["detail"].get("data", {})
    expected = trigger_data.get(match.match) if match.match else None
    if match.match and expected is None:
        return False
    trigger_id = run["trigger_event_id"] or 0
    rows = connection.execute(
        "SELECT data FROM events WHERE profile_id = ? AND name = ? AND id != ? "
        "AND (timestamp >= ? OR id > ?)",
        (profile_id, match.event, trigger_id, run["detail"].get("trigger_at", 0.0), trigger_id),
    )
    for row in rows:
        if not match.match:
            return True
        if str(json.loads(row["data"]).get(match.match)) == str(expected):
            return True
    return False


def _has_exited(
    connection: sqlite3.Connection, journey: Journey, profile_id: int, run: dict
) -> bool:
    for match in (journey.exit, journey.absence):
        if match.event and _matching_event_exists(connection, profile_id, run, match):
            return True
    if journey.kind == "inactivity":
        # Any activity since the quiet spell began ends the winback.
        row = connection.execute(
            "SELECT 1 FROM events WHERE profile_id = ? AND name = ? AND id > ? LIMIT 1",
            (profile_id, activity_event(journey), run["trigger_event_id"] or 0),
        ).fetchone()
        return row is not None
    return False


def _sends_in_window(
    connection: sqlite3.Connection, journey: Journey, profile_id: int, since: float
) -> int:
    row = connection.execute(
        "SELECT COUNT(*) FROM journey_runs WHERE journey = ? AND profile_id = ? "
        "AND sent_at IS NOT NULL AND sent_at > ?",
        (journey.name, profile_id, since),
    ).fetchone()
    return row[0]


def decide_runs(
    connection: sqlite3.Connection,
    journey: Journey,
    runs: list[dict],
    epoch: Epoch,
    now: float,
    *,
    check_exit: bool = True,
) -> list[Decision]:
    """Decide each due run in order: exit, eligibility, frequency cap, quiet hours, then send."""
    decisions = []
    sends_in_batch: dict[int, int] = {}
    sim_now = epoch.sim_at(now)

    for run in runs:
        profile = _live_profile(connection, run["profile_id"])
        if profile is None:
            decisions.append(Decision(run, NO_DEVICE))
            continue
        profile_id = profile["id"]
        run["profile_id"] = profile_id

        if check_exit and _has_exited(connection, journey, profile_id, run):
            decisions.append(Decision(run, EXITED))
            continue

        targets = devices_of(connection, profile_id)
        if journey.eligibility.push_permission:
            permitted = [device for device in targets if has_permission(device)]
        else:
            permitted = targets
        if not targets:
            decisions.append(Decision(run, NO_DEVICE))
            continue
        if not permitted:
            decisions.append(Decision(run, NO_PERMISSION))
            continue

        cap = journey.frequency_cap
        if cap.count > 0:
            since = epoch.wall_at(sim_now - cap.per)
            sent = _sends_in_window(connection, journey, profile_id, since)
            if sent + sends_in_batch.get(profile_id, 0) >= cap.count:
                decisions.append(Decision(run, CAPPED))
                continue

        zone = timezone_of(profile["attributes"])
        quiet_end = quiet_hours_end(journey.quiet_hours, sim_now, zone)
        if quiet_end is not None:
            decisions.append(Decision(run, HOLD, due_at=epoch.wall_at(quiet_end)))
            continue

        link = journey_link(journey, run["detail"].get("data", {}), profile["customer_id"])
        sends_in_batch[profile_id] = sends_in_batch.get(profile_id, 0) + 1
        decisions.append(Decision(run, SEND, link=link, devices=permitted))
    return decisions


def apply_decisions(
    connection: sqlite3.Connection, journey: Journey, decisions: list[Decision], now: float
) -> list[PushJob]:
    """Write each decision to its run and return the push jobs to submit, one per device."""
    jobs = []
    for decision in decisions:
        run = decision.run
        if decision.action == HOLD:
            detail = dict(run["detail"], quiet_held=True)
            connection.execute(
                "UPDATE journey_runs SET due_at = ?, detail = ?, updated_at = ? WHERE id = ?",
                (decision.due_at, _json(detail), now, run["id"]),
            )
        elif decision.action == SEND:
            detail = dict(run["detail"], link=decision.link)
            connection.execute(
                "UPDATE journey_runs SET state = ?, sent_at = ?, profile_id = ?, detail = ?, "
                "updated_at = ? WHERE id = ?",
                (SENDING, now, run["profile_id"], _json(detail), now, run["id"]),
            )
            for device in decision.devices:
                job = _job_for(journey, run, device, decision.link, uuid.uuid4().hex)
                connection.execute(
                    "INSERT INTO journey_sends (delivery_id, run_id, token, service, link, "
                    "submitted_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (job.delivery_id, run["id"], job.token, job.service, job.link, now),
                )
                jobs.append(job)
        else:
            connection.execute(
                "UPDATE journey_runs SET state = ?, outcome = ?, updated_at = ? WHERE id = ?",
                (DONE, decision.action, now, run["id"]),
            )
    return jobs


def _job_for(journey: Journey, run: dict, device: dict, link: str, delivery_id: str) -> PushJob:
    return PushJob(
        delivery_id=delivery_id,
        service=SERVICE_BY_PLATFORM.get(device["platform"], "fcm"),
        token=device["token"],
        title=journey.title,
        body=journey.body,
        link=link,
        journey=journey.name,
        profile_id=run["profile_id"],
        trigger_event_id=run["trigger_event_id"],
        registered_at=device["registered_at"],
        payload_path=journey.payload_path,
    )


def record_outcomes(
    connection: sqlite3.Connection, outcomes: list[PushOutcome], now: float
) -> list[tuple[str, str]]:
    """Store each push outcome and finish runs whose pushes all have one.

    Returns ``(journey, outcome)`` for every run finished, for the metrics.
    """
    run_ids = set()
    for outcome in outcomes:
        cursor = connection.execute(
            "UPDATE journey_sends SET outcome = ?, status_code = ?, reason = ?, attempts = ?, "
            "finished_at = ? WHERE delivery_id = ? AND outcome IS NULL RETURNING run_id",
            (
                outcome.outcome,
                outcome.status_code,
                outcome.reason,
                outcome.attempts,
                outcome.finished_at or now,
                outcome.delivery_id,
            ),
        )
        run_ids.update(row[0] for row in cursor.fetchall())

    finished = []
    for run_id in sorted(run_ids):
        counts = connection.execute(
            "SELECT SUM(outcome IS NULL), SUM(outcome = ?) FROM journey_sends WHERE run_id = ?",
            (ACCEPTED, run_id),
        ).fetchone()
        if counts[0]:
            continue
        result = SENT if counts[1] else FAILED
        row = connection.execute(
            "UPDATE journey_runs SET state = ?, outcome = ?, updated_at = ? WHERE id = ? "
            "RETURNING journey",
            (DONE, result, now, run_id),
        ).fetchone()
        finished.append((row[0], result))
    return finished


def apply_prune(connection: sqlite3.Connection, request: PruneRequest, now: float) -> bool:
    """Prune a token unless it was registered again at or after ``registered_before``."""
    row = connection.execute(
        "SELECT registered_at, status FROM devices WHERE token = ?", (request.token,)
    ).fetchone()
    if row is None or row["status"] == devices.PRUNED:
        return False
    if request.registered_before is not None and row["registered_at"] >= request.registered_before:
        return False
    return devices.prune_device(connection, request.token, request.reason, now)


def pending_jobs(connection: sqlite3.Connection, journeys: dict[str, Journey]) -> list[PushJob]:
    """Return the pushes submitted before a stop that never got an outcome, to submit again."""
    rows = connection.execute(
        "SELECT s.delivery_id, s.token, s.service, s.link, r.journey, r.profile_id, "
        "r.trigger_event_id, COALESCE(d.registered_at, 0) AS registered_at "
        "FROM journey_sends s JOIN journey_runs r ON r.id = s.run_id "
        "LEFT JOIN devices d ON d.token = s.token WHERE s.outcome IS NULL ORDER BY s.submitted_at"
    ).fetchall()
    jobs = []
    for row in rows:
        journey = journeys.get(row["journey"])
        if journey is None:
            continue
        jobs.append(
            PushJob(
                delivery_id=row["delivery_id"],
                service=row["service"],
                token=row["token"],
                title=journey.title,
                body=journey.body,
                link=row["link"],
                journey=journey.name,
                profile_id=row["profile_id"],
                trigger_event_id=row["trigger_event_id"],
                registered_at=row["registered_at"],
                payload_path=journey.payload_path,
            )
        )
    return jobs
