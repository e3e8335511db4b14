"""One primary outcome per journey trigger, from an ordered list, so the waterfall adds up.

The first outcome that applies wins. Legitimate reasons not to push come first. A trigger with
an on-time push then gets how far that push went, and the failures apply only to the rest. Every
check reads the truth ledger and the delivery ledger, and fault labels never decide an outcome.
"""

from __future__ import annotations

import datetime
import math
import zoneinfo
from dataclasses import dataclass, field

from sim.catalogue import canonical_name
from sim.formats.epoch import Epoch
from sim.oracle.ledger import TruthIndex
from sim.oracle.pushes import Push, rejected_environment
from sim.oracle.triggers import Trigger
from sim.scenario.schema import Journey
from sim.scenario.types import minutes_of_day

LEGITIMATE = ("converted_before_delay", "no_permission", "no_device", "capped", "quiet_hours")
FAILURES = (
    "stranded_anonymous",
    "stale_token",
    "events_without_device",
    "not_sent",
    "sent_early",
    "sent_late",
)
DELIVERED = ("delivered", "displayed", "opened", "converted")
OUTCOMES = LEGITIMATE + FAILURES + DELIVERED

# What each outcome means, in a line for the report; docs/report-format.md gives each in full.
MEANINGS = {
    "converted_before_delay": "the shopper bought before the push was due",
    "no_permission": "no phone that could show the push allows notifications",
    "no_device": "the shopper had no installed app with a live token",
    "capped": "the journey's frequency cap held the push back",
    "quiet_hours": "due in quiet hours, and not sent",
    "stranded_anonymous": "the phone's token stayed on an anonymous profile",
    "stale_token": "every push went to a token that had died",
    "events_without_device": "no token that could show the push is on the trigger's profile",
    "not_sent": "the backend sent no accepted push",
    "sent_early": "pushed only before the due time, by more than its tolerance",
    "sent_late": "pushed after the due time and its tolerance",
    "delivered": "the gateway accepted the push",
    "displayed": "the phone showed it",
    "opened": "the shopper opened it",
    "converted": "the shopper bought from it",
}
EXCLUDED = "excluded_near_end"

# A push may arrive this long after its due time and still count as on time: 60 simulated
# seconds, or a tenth of the time the journey takes, when that is longer. A journey that waits
# a delay takes the delay, and a broadcast takes its send window.
LATE_TOLERANCE_MIN = 60.0
LATE_TOLERANCE_SHARE = 0.10

# The latent split of a conversion, which rests on the model's "would have bought anyway" draw.
INCREMENTAL, PULLED_FORWARD, UNKNOWN = "incremental", "pulled_forward", "unknown"


def late_tolerance(journey: Journey, send_window: float = 0.0) -> float:
    """Return the simulated seconds a push may arrive after its due time and its window.

    ``send_window`` is a broadcast's send window in simulated seconds. Broadcast and inactivity
    journeys do not wait their ``delay``, so its default of 30 minutes does not widen theirs. An
    inactivity trigger's own window is already a tenth of its inactivity period.
    """
    if journey.kind == "broadcast":
        span = send_window
    elif journey.kind == "inactivity":
        span = 0.0
    else:
        span = journey.delay
    return max(LATE_TOLERANCE_MIN, LATE_TOLERANCE_SHARE * span)


@dataclass
class TriggerRow:
    """A judged trigger: the row of the one-row-per-trigger table."""

    journey: str
    trigger_id: str
    person: str
    device: str
    value: str | None
    trigger_at: float
    due_at: float
    deadline_at: float
    outcome: str
    conversion: str = ""
    push_count: int = 0
    accepted_count: int = 0
    first_push_at: float | None = None
    lateness_s: float | None = None
    lateness_wall_ms: float | None = None
    delivery_ids: list[str] = field(default_factory=list)
    detail: str = ""


@dataclass
class JudgeContext:
    """Shared inputs for judging the triggers of one journey."""

    journey: Journey
    index: TruthIndex
    epoch: Epoch
    origin: float
    horizon: float
    drain: float
    exits: dict[str, list[float]]
    timezones: dict[int, str]
    # Accepted pushes to a live token, per person, for the frequency cap: (at, trigger_id).
    sent_to_person: dict[str, list[tuple[float, str]]] = field(default_factory=dict)


def excluded(trigger: Trigger, context: JudgeContext) -> bool:
    """Tell whether the trigger is too close to the run's end (its due time plus drain)."""
    return trigger.due + trigger.window + context.drain > context.horizon


def quiet_end(trigger: Trigger, context: JudgeContext) -> float | None:
    """Return when the quiet hours around the trigger's due time end, or None if it is not in any.

    Quiet hours are read in the time zone of the shopper's group, or UTC when it is unknown.
    """
    quiet = context.journey.quiet_hours
    if quiet is None:
        return None
    group = context.index.device_group.get(trigger.device)
    zone = zoneinfo.ZoneInfo(context.timezones.get(group, "UTC"))
    local = datetime.datetime.fromtimestamp(context.origin + trigger.due, zone)
    minute = local.hour * 60 + local.minute
    start, end = minutes_of_day(quiet.start), minutes_of_day(quiet.end)
    inside = start <= minute < end if start < end else (minute >= start or minute < end)
    if not inside:
        return None
    wait = (end - minute) % (24 * 60)
    return trigger.due + wait * 60.0 - local.second - local.microsecond / 1e6


def judge(trigger: Trigger, pushes: list[Push], context: JudgeContext) -> TriggerRow:
    """Give one trigger its primary outcome; ``pushes`` are those attributed to it."""
    journey = context.journey
    index = context.index
    held_until = quiet_end(trigger, context)
    due = held_until if held_until is not None else trigger.due
    tolerance = late_tolerance(journey, trigger.window)
    deadline = due + trigger.window + tolerance + _send_lag(trigger, context)
    earliest = _earliest(trigger, due, journey) - tolerance
    row = TriggerRow(
        journey=trigger.journey,
        trigger_id=trigger.trigger_id,
        person=trigger.person,
        device=trigger.device,
        value=trigger.value,
        trigger_at=trigger.at,
        due_at=due,
        deadline_at=deadline,
        outcome="",
        push_count=len(pushes),
        accepted_count=sum(1 for push in pushes if push.accepted),
        # Every push the trigger got that the gateway gave a delivery id, good or not, so each
        # accepted push joins the delivery ledger whatever the outcome.
        delivery_ids=[push.row.delivery_id for push in pushes if push.row.delivery_id],
    )
    if excluded(trigger, context):
        row.outcome = EXCLUDED
        return row

    # The person's devices at the due time; a phone handed over or taken by the other user of a
    # shared phone is not theirs then.
    devices = index.devices_of(trigger.person, due)
    good = [push for push in pushes if _reached_person(push, trigger, devices)]
    on_time = [push for push in good if earliest <= push.at <= deadline]
    if good:
        first = good[0]
        row.first_push_at = first.at
        row.lateness_s = first.at - due
        due_wall = _due_wall(trigger, due, context)
        row.lateness_wall_ms = (first.row.wall_time - due_wall) * 1000.0

    # An exit after the first good push belongs to that push, so the exit window ends there.
    # A winback's window runs on past its due time: a shopper back before the push needs none.
    exit_end = due + trigger.window
    exit_until = min(exit_end, good[0].at) if good else exit_end
    row.outcome, row.detail = _legitimate(
        trigger, pushes, devices, due, exit_until, held_until, context
    )
    if row.outcome:
        return row
    if on_time:
        row.outcome, row.conversion = _reached(trigger, on_time, context)
        return row
    timing = _Timing(due, earliest, held_until)
    row.outcome, row.detail = _failure(trigger, pushes, good, devices, timing, context)
    row.detail = _joined(row.detail, fault_note(trigger)) if row.detail else fault_note(trigger)
    return row


# The effect of each SDK fault on a trigger call, for a failed trigger's detail.
TRIGGER_FAULT_NOTES = {
    "event_name_drift": "the app sent it as {event}, a name the journey's trigger does not match "
    "unless the backend maps it to {canonical}",
    "anonymous_track_after_identify": "the app sent it anonymously right after identify",
    "sku_as_object": "the app sent its sku as an object",
}


def trigger_faults(trigger: Trigger) -> list[str]:
    """Return the SDK faults injected into the trigger's own call."""
    return [name for name in (trigger.call.get("fault") or "").split(",") if name]


def fault_note(trigger: Trigger) -> str:
    """Return what the SDK faults on the trigger's call did to it, or "" for none."""
    event = trigger.call.get("event") or ""
    notes = [
        TRIGGER_FAULT_NOTES.get(name, "the app injected the SDK fault {name}").format(
            event=event, canonical=canonical_name(event), name=name
        )
        for name in trigger_faults(trigger)
    ]
    return f"SDK fault on the trigger call: {'; '.join(notes)}" if notes else ""


@dataclass(frozen=True)
class _Timing:
    """Due time of a trigger's push, the earliest it may come, and the end of a quiet hold."""

    due: float
    earliest: float
    held_until: float | None


def _earliest(trigger: Trigger, due: float, journey: Journey) -> float:
    """Return the earliest moment the trigger's push may be sent, before any tolerance.

    A delay_range journey may send from its shorter delay on, so only that bound is checked
    for it, quiet hours or not. An inactivity journey has no bound: the backend measures
    inactivity per profile, and a person's activity may be split across profiles.
    """
    if journey.kind == "delay_range":
        return trigger.at + min(journey.delay, journey.delay_max)
    if journey.kind == "inactivity":
        return -math.inf
    return due


def _early_detail(first: Push, timing: _Timing) -> str:
    detail = f"first push {timing.due - first.at:.0f} s before due"
    if timing.held_until is not None and first.at < timing.held_until:
        detail += ", inside the shopper's quiet hours"
    return detail


def _reached_person(push: Push, trigger: Trigger, devices: list[str]) -> bool:
    """Tell whether an accepted push reached a live token on a phone the person was using."""
    if not push.accepted or push.owner_device is None:
        return False
    if push.owner_person is not None:
        return push.owner_person == trigger.person
    return push.owner_device in devices


def _send_lag(trigger: Trigger, context: JudgeContext) -> float:
    """Return how late the driver sent the trigger call, in simulated seconds, or 0.

    A backend that times its push from the call's arrival is late by that much through no
    fault of its own, so the deadline moves with it, as the wall lateness does.
    """
    lag_ms = trigger.call.get("lag_ms")
    if not lag_ms:
        return 0.0
    return float(lag_ms) / 1000.0 * context.epoch.time_scale


def _due_wall(trigger: Trigger, due: float, context: JudgeContext) -> float:
    """Return the wall time the push was due, from when the trigger call was really sent.

    A live run's driver stamps ``sent_wall``, so a generator that sent the trigger late does
    not count against the backend. A virtual run converts the simulated due time instead.
    """
    sent_wall = trigger.call.get("sent_wall")
    if sent_wall is None:
        return context.epoch.wall_at(context.origin + due)
    return float(sent_wall) + context.epoch.wall_duration(due - trigger.at)


def _legitimate(
    trigger: Trigger,
    pushes: list[Push],
    devices: list[str],
    due: float,
    exit_until: float,
    held_until: float | None,
    context: JudgeContext,
) -> tuple[str, str]:
    journey = context.journey
    index = context.index

    exits = context.exits.get(trigger.value or "", [])
    exits = [at for at in exits if trigger.at <= at <= exit_until]
    if exits:
        return "converted_before_delay", f"exit at {exits[0]:.0f} s"

    reachable = [
        device
        for device in devices
        if index.view.installed(device, due) and index.live_token(device, due) is not None
    ]
    permitted = [d for d in reachable if index.view.permission_granted(d, due)]
    if journey.eligibility.push_permission and reachable and not permitted:
        return "no_permission", ""
    if journey.eligibility.device and not reachable:
        # A backend may still push to a token that died before the push service reports it.
        sent = (
            f"{len(pushes)} push(es) sent anyway, to tokens no installed app held" if pushes else ""
        )
        return "no_device", sent

    cap = journey.frequency_cap
    if cap.count > 0 and not any(push.accepted for push in pushes):
        earlier = [
            at
            for at, trigger_id in context.sent_to_person.get(trigger.person, [])
            if trigger_id != trigger.trigger_id and due - cap.per <= at <= due
        ]
        if len(earlier) >= cap.count:
            return "capped", f"{len(earlier)} push(es) in the last {cap.per:g} s"

    if held_until is not None and not pushes:
        return "quiet_hours", f"held until {held_until:.0f} s"
    return "", ""


def _reached(trigger: Trigger, on_time: list[Push], context: JudgeContext) -> tuple[str, str]:
    """Return how far the furthest on-time push went, and the conversion's latent split."""
    steps: set[str] = set()
    for push in on_time:
        for reaction in context.index.reactions.get(push.row.delivery_id or "", []):
            steps.add(reaction["step"])
    if "converted" in steps:
        return "converted", _conversion_split(trigger, context)
    for outcome in ("opened", "displayed"):
        if outcome in steps:
            return outcome, ""
    return "delivered", ""


def _conversion_split(trigger: Trigger, context: JudgeContext) -> str:
    latent = context.index.latent
    if trigger.value not in latent:
        return UNKNOWN
    return PULLED_FORWARD if latent[trigger.value] is not None else INCREMENTAL


def _failure(
    trigger: Trigger,
    pushes: list[Push],
    good: list[Push],
    devices: list[str],
    timing: _Timing,
    context: JudgeContext,
) -> tuple[str, str]:
    index = context.index
    due = timing.due
    # The tokens of the devices that could have shown the push: the app installed and, when the
    # journey needs it, permission granted. A device with push turned off cannot show it, so
    # its token being on the right profile does not make the push reachable.
    showing = [device for device in devices if index.view.installed(device, due)]
    if context.journey.eligibility.push_permission:
        showing = [device for device in showing if index.view.permission_granted(device, due)]
    live_tokens = [
        token for token in (index.live_token(device, due) for device in showing) if token
    ]
    trigger_profile = index.profile_at(trigger.call, due)

    # The trigger reached an identified profile, but the app registered the device tokens only
    # on anonymous profiles. A token the app deleted is on no profile, stranded or not.
    if trigger_profile.startswith("user:") and live_tokens:
        anonymous_only = [
            token in index.registrations
            and index.token_profile(token, due) is not None
            and not index.registrations[token].identified_before(due)
            for token in live_tokens
        ]
        if all(anonymous_only):
            return "stranded_anonymous", f"token {live_tokens[0][:12]}… never left anonymous"

    if pushes and all(not push.token_alive for push in pushes):
        return "stale_token", f"{len(pushes)} push(es) to dead tokens"

    profiles = {index.token_profile(token, due) for token in live_tokens}
    if live_tokens and trigger_profile not in profiles:
        return "events_without_device", _without_device_detail(
            trigger_profile, live_tokens, due, index
        )

    merged_before = merged_anonymous(trigger, index, due, context.journey)
    merged = _merge_note(trigger, trigger_profile, merged_before)
    if not good:
        others = sorted({p.owner_person for p in pushes if p.accepted and p.owner_person})
        if others:
            return "not_sent", _joined(f"accepted for a phone used by {', '.join(others)}", merged)
        statuses = sorted({_response(push, index) for push in pushes})
        responses = (
            ("responses: " + ", ".join(statuses)) if statuses else "no push for this trigger"
        )
        return "not_sent", _joined(responses, merged)
    # Every push that reached the person came too early or too late. Any push at or after the
    # earliest moment makes it late, since a timely one would have counted as reached.
    timely = [push for push in good if push.at >= timing.earliest]
    if not timely:
        return "sent_early", _joined(_early_detail(good[0], timing), merged)
    return "sent_late", _joined(f"first push {timely[0].at - due:.0f} s after due", merged)


def _without_device_detail(
    profile: str, live_tokens: list[str], due: float, index: TruthIndex
) -> str:
    """Return where a trigger went, noting a token the app deleted from its profile before due."""
    detail = f"trigger on {profile}"
    for token in live_tokens:
        registrations = index.registrations.get(token)
        if registrations is None or registrations.profile_at(due) is not None:
            continue
        deleted_at = registrations.deleted_at(due)
        if deleted_at is not None:
            return (
                f"{detail}; the app deleted token {token[:12]}… from its profile at "
                f"{deleted_at:.0f} s, as a logout does, and did not register it again"
            )
    return detail


def _response(push: Push, index: TruthIndex) -> str:
    """Return a push's status and reason, naming the host's environment for BadDeviceToken."""
    row = push.row
    text = f"{row.status} {row.reason or ''}".strip()
    environment = rejected_environment(push, index)
    if environment is not None:
        other = "sandbox" if environment == "production" else "production"
        text += f" ({environment} token sent to the {other} host)"
    return text


def merged_anonymous(trigger: Trigger, index: TruthIndex, due: float, journey: Journey) -> bool:
    """Tell whether an anonymous trigger belongs to an identified profile by a merge before due.

    A backend that does not merge anonymous activity into the profile that identifies keeps
    such a trigger on an anonymous profile without a device. It then sends nothing, or sends
    late from a later event of the identified profile that starts the journey again. The
    identify must come at least the journey's late tolerance before the due time, so that a
    backend that merges but reads the profile a moment before the identify arrives is not
    blamed.
    """
    if trigger.call.get("user_id"):
        return False
    before = due - late_tolerance(journey, trigger.window)
    return index.profile_at(trigger.call, before).startswith("user:")


def _merge_note(trigger: Trigger, trigger_profile: str, merged: bool) -> str:
    if not merged:
        return ""
    return (
        f"made anonymously as {trigger.call.get('anonymous_id')}, which identified as "
        f"{trigger_profile} well before the due time: anonymous activity must merge into that "
        "profile"
    )


def _joined(detail: str, note: str) -> str:
    return f"{detail}; {note}" if note else detail
