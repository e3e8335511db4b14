"""Push outcomes and prune requests from the sender, and pushes to submit again after a stop."""

from __future__ import annotations

import sqlite3

from sim.backend import devices
from sim.backend.journey_store import DONE, FAILED, SENT
from sim.backend.push import ACCEPTED, PruneRequest, PushJob, PushOutcome
from sim.scenario.schema import Journey


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
