"""Decisions on due journey runs: exit, eligibility, frequency cap, quiet hours, then send.

``decide_runs`` reads one snapshot of the store and ``apply_decisions`` writes the result, so a
batch of runs costs one read and one write.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from dataclasses import dataclass, field

from sim.backend.journey_rules import (
    activity_event,
    has_permission,
    journey_link,
    quiet_hours_end,
    timezone_of,
)
from sim.backend.journey_store import (
    CAPPED,
    DONE,
    EXITED,
    NO_DEVICE,
    NO_PERMISSION,
    SENDING,
    live_profile,
    to_json,
)
from sim.backend.push import SERVICE_BY_PLATFORM, PushJob
from sim.backend.queries import devices_of
from sim.formats.epoch import Epoch
from sim.scenario.schema import Journey, Match

# Decisions on a due run; HOLD keeps it waiting until quiet hours end.
SEND = "send"
HOLD = "hold"


@dataclass
class Decision:
    """The action for one due run, decided from one snapshot of the store."""

    run: dict
    action: str
    due_at: float | None = None
    link: str = ""
    devices: list[dict] = field(default_factory=list)


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
        profile = live_profile(connection, run["profile_id"])
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

        zone = timezone_of(profile["attributes"], permitted)
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
                (decision.due_at, to_json(detail), now, run["id"]),
            )
        elif decision.action == SEND:
            detail = dict(run["detail"], link=decision.link)
            connection.execute(
                "UPDATE journey_runs SET state = ?, sent_at = ?, profile_id = ?, detail = ?, "
                "updated_at = ? WHERE id = ?",
                (SENDING, now, run["profile_id"], to_json(detail), now, run["id"]),
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
