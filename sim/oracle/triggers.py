"""Journey triggers by truth: which SDK calls start a journey, and what each one expects.

- ``event`` and ``delay_range``: the first trigger event per (person, match value), where the
  match value is the property the push's deep link carries (``cart_id`` for cart recovery).
- ``repeated_event``: the moment a person's ``count``-th trigger event with the same ``same``
  property falls within ``window``. Later events with that value start no new trigger.

- ``broadcast``: one trigger per person in the segment at the broadcast's start, by truth.
  ``all`` is everyone who had sent an SDK call by then, so the backend holds a profile of
  theirs; ``known`` who had sent an identify; ``purchasers`` who had tracked an order. Each
  push is due at the start, and is on time until the end of the send window: the segment's
  size over ``send_rate`` wall seconds, on the simulated clock.

- ``inactivity``: the moment a person's last activity event (``trigger.event``, else
  ``Application Opened``) becomes ``inactivity`` old with no newer one, once per quiet spell.
  The push is due then, as the reference backend sends it, and stays on time for a tenth of
  the inactivity period. Any activity before the push ends the journey, like an exit. The match
  value is the person.

A trigger event counts only when its SDK call was sent (or planned, in a virtual run). Dropped
calls are the load generator's fault, so they are counted apart and never judged.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from sim.catalogue import canonical_name
from sim.oracle.ledger import DELIVERED_STATUSES, DROPPED, TruthIndex
from sim.scenario.schema import Journey

JUDGED_KINDS = ("event", "delay_range", "repeated_event", "broadcast", "inactivity")
ORDER_EVENT = "order_completed"
APP_OPENED = "Application Opened"
# Share of the inactivity period a winback push may come after the spell reached it.
INACTIVITY_WINDOW_SHARE = 0.10
# Wall seconds a backend may take to start a broadcast's sends (a poll, the segment's query),
# added to its send window. The window is in wall time, so it does not shrink with the time scale.
BROADCAST_START_WALL_SECONDS = 1.0
TRACK_METHODS = frozenset({"track", "anonymous_track"})
_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


@dataclass
class Trigger:
    """One journey trigger: who, which match value, when, and when its push is due.

    ``window`` is how many simulated seconds after ``due`` the push may come and still be on
    time, besides the usual tolerance: a broadcast's send window.
    """

    journey: str
    trigger_id: str
    person: str
    device: str
    value: str | None
    at: float
    due: float
    call: dict = field(repr=False)
    window: float = 0.0


@dataclass
class TriggerSet:
    """A journey's triggers and the trigger events it did not judge."""

    journey: Journey
    match_field: str
    triggers: list[Trigger]
    dropped: int
    judged: bool = True
    note: str = ""


def match_field(journey: Journey) -> str:
    """Return the property that ties a push's deep link to its trigger, or "" when none does."""
    placeholders = _PLACEHOLDER.findall(journey.link)
    for candidate in (journey.exit.match, journey.trigger.same):
        if candidate and candidate in placeholders:
            return candidate
    for candidate in placeholders:
        if candidate != "person_id":
            return candidate
    return ""


def due_after(journey: Journey) -> float:
    """Return the simulated seconds from a trigger to the latest moment its push is due."""
    if journey.kind == "delay_range":
        return max(journey.delay, journey.delay_max)
    return journey.delay


def find_triggers(
    journey: Journey,
    index: TruthIndex,
    origin: float = 0.0,
    time_scale: float = 1.0,
    horizon: float = math.inf,
) -> TriggerSet:
    """Return the journey's triggers in time order, with its dropped trigger calls counted.

    Only broadcast and inactivity journeys use the clock arguments. ``origin`` is the Unix time
    of simulated second 0, ``time_scale`` the run's simulated seconds per wall second, and
    ``horizon`` the run's duration in simulated seconds.
    """
    field_name = match_field(journey)
    if journey.kind == "broadcast":
        return _broadcast_triggers(journey, index, origin, time_scale)
    if journey.kind == "inactivity":
        return _inactivity_triggers(journey, index, horizon)
    if journey.kind not in JUDGED_KINDS:
        note = f"journeys of kind {journey.kind!r} are not judged yet"
        return TriggerSet(journey, field_name, [], 0, judged=False, note=note)

    wanted = canonical_name(journey.trigger.event)
    triggers: list[Trigger] = []
    dropped = 0
    seen: set[tuple[str, str | None]] = set()
    # For repeated_event: recent trigger times per (person, value).
    recent: dict[tuple[str, str | None], list[float]] = {}

    for call in index.calls:
        if call["method"] not in TRACK_METHODS or canonical_name(call.get("event") or "") != wanted:
            continue
        if call.get("status") == DROPPED:
            dropped += 1
            continue
        if call.get("status", "planned") not in DELIVERED_STATUSES:
            continue

        value = _value(call, field_name)
        key = (call["person"], value)
        if key in seen and field_name:
            continue
        if journey.kind == "repeated_event":
            times = [t for t in recent.get(key, []) if call["at"] - t <= journey.trigger.window]
            times.append(call["at"])
            recent[key] = times
            if len(times) < max(1, journey.trigger.count):
                continue
        seen.add(key)

        trigger_id = f"{journey.name}:{value}" if field_name else f"{journey.name}:{len(triggers)}"
        if field_name and value is None:
            trigger_id = f"{journey.name}:{call['group']}-{call['seq']}"
        triggers.append(
            Trigger(
                journey=journey.name,
                trigger_id=trigger_id,
                person=call["person"],
                device=call["device"],
                value=value,
                at=call["at"],
                due=call["at"] + due_after(journey),
                call=call,
            )
        )
    return TriggerSet(journey, field_name, triggers, dropped)


def broadcast_start(journey: Journey, origin: float) -> float:
    """Return the simulated second at which a broadcast starts."""
    return journey.at.timestamp() - origin if journey.at is not None else 0.0


def broadcast_pushes(
    journey: Journey, members: set[str], registrations: dict[str, dict | None]
) -> int:
    """Estimate the pushes of a broadcast: one per registered device of a member.

    The backend paces pushes, not people, and a member without a registered device gets none.
    A device counts when its last registration before the start came from a member and, when
    the journey needs push permission, carried ``push_enabled``. A token that died since still
    counts, because the backend sends to it until the push service reports it unregistered.
    """
    pushes = 0
    for call in registrations.values():
        if call is None or call["person"] not in members:
            continue
        attributes = call.get("attributes") or {}
        if journey.eligibility.push_permission and not attributes.get("push_enabled"):
            continue
        pushes += 1
    return pushes


def _broadcast_triggers(
    journey: Journey, index: TruthIndex, origin: float, time_scale: float
) -> TriggerSet:
    start = broadcast_start(journey, origin)
    latest: dict[str, dict] = {}
    known: set[str] = set()
    purchasers: set[str] = set()
    # Each device's last token registration before the start, or None after a deletion.
    registrations: dict[str, dict | None] = {}
    for call in index.calls:
        if call["at"] > start:
            break  # calls are in time order
        if call.get("status", "planned") not in DELIVERED_STATUSES:
            continue
        person = call["person"]
        latest[person] = call
        method = call["method"]
        if method == "identify":
            known.add(person)
        elif method == "register_token":
            registrations[call["device"]] = call
        elif method == "delete_token":
            registrations[call["device"]] = None
        is_track = method in TRACK_METHODS
        if is_track and canonical_name(call.get("event") or "") == ORDER_EVENT:
            purchasers.add(person)

    members = {"all": set(latest), "known": known, "purchasers": purchasers}[journey.segment]
    sending = broadcast_pushes(journey, members, registrations) / journey.send_rate
    window = (BROADCAST_START_WALL_SECONDS + sending) * time_scale
    triggers = []
    for person in sorted(members):
        # The person's last call before the start shows which profile the backend files them
        # under. Its send time is not the due time, so the judge converts the due time instead.
        call = {key: value for key, value in latest[person].items() if key != "sent_wall"}
        triggers.append(
            Trigger(
                journey=journey.name,
                trigger_id=f"{journey.name}:{person}",
                person=person,
                device=call["device"],
                value=None,
                at=start,
                due=start,
                call=call,
                window=window,
            )
        )
    return TriggerSet(journey, "", triggers, 0)


def activity_event(journey: Journey) -> str:
    """Return the catalogue name of the event that counts as activity for an inactivity journey."""
    name = journey.trigger.event or APP_OPENED
    return canonical_name(name) or name


def activity_calls(journey: Journey, index: TruthIndex) -> dict[str, list[dict]]:
    """Return, per person, their sent activity calls of an inactivity journey, in time order."""
    wanted = activity_event(journey)
    calls: dict[str, list[dict]] = {}
    for call in index.calls:
        if call["method"] not in TRACK_METHODS:
            continue
        if call.get("status", "planned") not in DELIVERED_STATUSES:
            continue
        if canonical_name(call.get("event") or "") == wanted:
            calls.setdefault(call["person"], []).append(call)
    return calls


def activity_times(journey: Journey, index: TruthIndex) -> dict[str, list[float]]:
    """Return, per person, when they were active, as exits of an inactivity journey."""
    return {
        person: [call["at"] for call in calls]
        for person, calls in activity_calls(journey, index).items()
    }


def _inactivity_triggers(journey: Journey, index: TruthIndex, horizon: float) -> TriggerSet:
    triggers = []
    for person, calls in sorted(activity_calls(journey, index).items()):
        # Each gap longer than the inactivity period, and the quiet spell after the last
        # activity, starts one trigger once the period has passed within the run.
        following = [call["at"] for call in calls[1:]] + [math.inf]
        for call, next_at in zip(calls, following, strict=True):
            inactive_at = call["at"] + journey.inactivity
            if next_at <= inactive_at or inactive_at > horizon:
                continue
            triggers.append(
                Trigger(
                    journey=journey.name,
                    trigger_id=f"{journey.name}:{person}:{call['at']:.0f}",
                    person=person,
                    device=call["device"],
                    value=person,
                    at=inactive_at,
                    due=inactive_at,
                    call={key: value for key, value in call.items() if key != "sent_wall"},
                    window=INACTIVITY_WINDOW_SHARE * journey.inactivity,
                )
            )
    triggers.sort(key=lambda trigger: trigger.at)
    return TriggerSet(journey, "", triggers, 0)


def _value(call: dict, field_name: str) -> str | None:
    if not field_name:
        return None
    value = (call.get("properties") or {}).get(field_name)
    if isinstance(value, dict):
        # The sku_as_object fault wraps the value; the truth is still the id inside.
        value = value.get("id")
    return None if value is None else str(value)


def exit_times(
    journey: Journey, index: TruthIndex, field_name: str
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Return when each match value's exit event happened, by truth and as the backend saw it.

    The first map contains every exit call, whatever its status: the shopper bought whether or
    not the backend heard of it. The second leaves out the calls the driver dropped, since a
    backend that was never sent the exit cannot be blamed for pushing after it. A
    repeated_event journey's ``absence`` event ends it the same way as an exit.
    """
    exits: dict[str, list[float]] = {}
    sent_exits: dict[str, list[float]] = {}
    ends = {
        canonical_name(match.event): match.match or field_name
        for match in (journey.exit, journey.absence)
        if match.event
    }
    if not ends:
        return exits, sent_exits
    for call in index.calls:
        name = canonical_name(call.get("event") or "")
        if call["method"] not in TRACK_METHODS or name not in ends:
            continue
        value = _value(call, ends[name])
        if value is None:
            continue
        exits.setdefault(value, []).append(call["at"])
        if call.get("status") != DROPPED:
            sent_exits.setdefault(value, []).append(call["at"])
    for times in (*exits.values(), *sent_exits.values()):
        times.sort()
    return exits, sent_exits
