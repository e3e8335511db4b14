"""Rules that look across fields of a built scenario: shares, funnel rows, journeys and gates."""

from __future__ import annotations

import math
import zoneinfo
from urllib.parse import urlparse

from sim import catalogue
from sim.gates import GATE_METRICS, parse_gate
from sim.scenario.links import TRIGGERED_KINDS, check_link, check_overlaps
from sim.scenario.schema import FUNNEL_STATES, PLATFORMS, Journey, Scenario, Spike
from sim.scenario.source import Path
from sim.scenario.types import format_duration
from sim.scenario.validate import Collector, suggest

SHARE_TOLERANCE = 1e-3
# A fault window shorter than this in wall time is over before anyone can watch it.
MIN_WALL_WINDOW = 5.0


def check(scenario: Scenario, collector: Collector) -> None:
    """Record every cross-field problem of ``scenario`` in ``collector``."""
    _check_clock(scenario, collector)
    _check_population(scenario, collector)
    _check_permission(scenario, collector)
    _check_funnel(scenario, collector)
    _check_journeys(scenario, collector)
    _check_reached(scenario, collector)
    _check_target(scenario, collector)
    _check_faults(scenario, collector)
    _check_sdk_faults(scenario, collector)
    _check_gates(scenario, collector)


def _check_shares(shares: dict, path: Path, collector: Collector, hint: str = "") -> None:
    total = sum(v for v in shares.values() if isinstance(v, int | float))
    if shares and abs(total - 1.0) > SHARE_TOLERANCE:
        listed = ", ".join(f"{key} {value:g}" for key, value in shares.items())
        collector.error(path, f"shares sum to {total:g} ({listed}); they must sum to 1{hint}")


def _check_clock(scenario: Scenario, collector: Collector) -> None:
    clock = scenario.clock
    if clock.duration <= 0:
        collector.error(("clock", "duration"), "invalid duration: the run must last longer than 0")
    elif clock.duration <= clock.drain:
        # The report judges only the triggers due before the drain, so none would count.
        collector.warning(
            ("clock", "duration"),
            f"the run lasts {format_duration(clock.duration)} and clock.drain is "
            f"{format_duration(clock.drain)}, so the report judges no trigger: make "
            "clock.duration longer than clock.drain",
        )


def _check_population(scenario: Scenario, collector: Collector) -> None:
    population = scenario.population
    # Platforms are a fixed pair, merged with the defaults, so a file naming one platform
    # still has the other at its default share.
    _check_shares(
        population.platforms,
        ("population", "platforms"),
        collector,
        "; a platform left out keeps its default share, so give it 0 to leave it out",
    )
    _check_shares(population.timezones, ("population", "timezones"), collector)
    for name in population.timezones:
        try:
            zoneinfo.ZoneInfo(name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            collector.error(
                ("population", "timezones", name),
                f"unknown time zone {name!r}: use an IANA name such as Europe/Berlin",
            )

    for index, spike in enumerate(population.arrival.spikes):
        if spike is None or collector.failed(("clock",)):
            continue
        if not _spike_in_run(spike, scenario):
            collector.warning(
                ("population", "arrival", "spikes", index, "at"),
                f"the spike at {spike.at:%Y-%m-%d %H:%M} local time falls outside the run "
                f"(clock.start {scenario.clock.start:%Y-%m-%d %H:%M} UTC for "
                f"{format_duration(scenario.clock.duration)}) in every time zone of the "
                "population, so it adds no installs: move at into the run",
            )

    for key, length in (("hourly", 24), ("weekday", 7)):
        weights = getattr(population.arrival, key)
        path = ("population", "arrival", key)
        if len(weights) != length:
            collector.error(path, f"expected {length} weights, got {len(weights)}")
        elif not any(w for w in weights if w):
            collector.error(path, "at least one weight must be greater than 0")


def _spike_in_run(spike: Spike, scenario: Scenario) -> bool:
    """Return True when the spike overlaps the run in at least one of the population's zones."""
    clock = scenario.clock
    for name in scenario.population.timezones:
        try:
            zone = zoneinfo.ZoneInfo(name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            continue
        # The spike's reading is local time in each zone, as the install schedule takes it.
        start = (spike.at.replace(tzinfo=zone) - clock.start).total_seconds()
        if start < clock.duration and start + spike.duration > 0:
            return True
    return False


def _check_permission(scenario: Scenario, collector: Collector) -> None:
    permission = scenario.permission
    if catalogue.canonical_name(permission.value_moment) not in catalogue.TRACKABLE_EVENTS:
        collector.error(
            ("permission", "value_moment"),
            _unknown_event(permission.value_moment),
        )
    for platform in PLATFORMS:
        granted = permission.opt_in.get(platform, 0.0)
        undecided = permission.not_determined.get(platform, 0.0)
        if granted + undecided > 1 + SHARE_TOLERANCE:
            collector.error(
                ("permission", "not_determined", platform),
                f"opt_in ({granted:g}) plus not_determined ({undecided:g}) is above 1; lower "
                "either, since what is left of 1 is the share that denies",
            )


def _unknown_event(name: str) -> str:
    return (
        f"unknown event {name!r}{suggest(name, catalogue.TRACKABLE_EVENTS)} "
        f"Catalogue events: {', '.join(catalogue.TRACKABLE_EVENTS)}"
    )


def _check_funnel(scenario: Scenario, collector: Collector) -> None:
    transitions = scenario.funnel.transitions
    for state, row in transitions.items():
        row_path: Path = ("funnel", "transitions", state)
        if state not in FUNNEL_STATES:
            collector.error(
                row_path,
                f"unknown funnel state {state!r}{suggest(state, FUNNEL_STATES)} "
                f"States: {', '.join(FUNNEL_STATES)}",
            )
            continue
        if not isinstance(row, dict):
            continue
        for event in row:
            if event not in catalogue.RETENTION_EVENTS:
                collector.error(
                    (*row_path, event),
                    f"unknown retention event {event!r}{suggest(event, catalogue.RETENTION_EVENTS)}"
                    f" Retention events: {', '.join(catalogue.RETENTION_EVENTS)}",
                )
        total = sum(v for v in row.values() if isinstance(v, int | float))
        if total > 1 + SHARE_TOLERANCE:
            collector.error(
                row_path,
                f"transition probabilities sum to {total:g}; a row may sum to at most 1, "
                "and what it leaves over ends the session",
            )


def _reachable_events(transitions: dict) -> set[str]:
    """Return the funnel events that a session can reach from its start with some probability."""
    reached: set[str] = set()
    frontier = ["session_start"]
    while frontier:
        row = transitions.get(frontier.pop())
        if not isinstance(row, dict):
            continue
        for event, probability in row.items():
            if isinstance(probability, int | float) and probability > 0 and event not in reached:
                reached.add(event)
                frontier.append(event)
    return reached


def _check_reached(scenario: Scenario, collector: Collector) -> None:
    """Warn about journeys triggered by a funnel event that no session reaches."""
    reached = _reachable_events(scenario.funnel.transitions)
    for index, journey in enumerate(scenario.journeys):
        if journey is None or journey.kind not in TRIGGERED_KINDS:
            continue
        event = journey.trigger.event
        if event in catalogue.RETENTION_EVENTS and event not in reached:
            collector.warning(
                ("journeys", index, "trigger", "event"),
                f"no session reaches {event} through funnel.transitions, so this journey gets "
                "no trigger; a transitions table in a file replaces the default table whole, "
                "so give every row (pushsim validate --print shows the defaults)",
            )


def _check_event(name: str, path: Path, collector: Collector, required: bool) -> bool:
    if not name:
        if required:
            collector.error(path, "missing event: name a catalogue event")
        return False
    if name not in catalogue.TRACKABLE_EVENTS:
        canonical = catalogue.canonical_name(name)
        if canonical in catalogue.PUSH_METRICS:
            collector.error(
                path,
                f"{name!r} is a push metric that the phone reports about a push, not an event "
                f"the app tracks; name a tracked event: {', '.join(catalogue.TRACKABLE_EVENTS)}",
            )
        elif canonical:
            collector.error(path, f"{name!r} is an alias; name the catalogue event {canonical!r}")
        else:
            collector.error(path, _unknown_event(name))
        return False
    return True


def _check_property(event: str, prop: str, path: Path, collector: Collector) -> None:
    spec = catalogue.BY_NAME[event]
    if prop and prop not in spec.required:
        carried = ", ".join(spec.required) or "no properties"
        collector.error(path, f"property {prop!r} is not carried by {event} (it carries {carried})")


def _check_journey(journey: Journey, path: Path, collector: Collector) -> None:
    kind = journey.kind
    if not journey.name:
        collector.error((*path, "name"), "missing name: give each journey a unique name")

    if kind in TRIGGERED_KINDS:
        trigger_ok = _check_event(
            journey.trigger.event, (*path, "trigger", "event"), collector, required=True
        )
        if trigger_ok and journey.trigger.same:
            _check_property(
                journey.trigger.event, journey.trigger.same, (*path, "trigger", "same"), collector
            )
        for part in ("exit", "absence"):
            match = getattr(journey, part)
            if _check_event(match.event, (*path, part, "event"), collector, required=False):
                _check_property(match.event, match.match, (*path, part, "match"), collector)
                if trigger_ok:
                    _check_property(
                        journey.trigger.event, match.match, (*path, part, "match"), collector
                    )

    if kind == "repeated_event" and journey.trigger.count < 2:
        collector.error(
            (*path, "trigger", "count"), "a repeated_event journey needs a count of at least 2"
        )
    if kind == "delay_range" and journey.delay_max <= journey.delay:
        collector.error(
            (*path, "delay_max"), "delay_max must be longer than delay for a delay_range journey"
        )
    if kind == "broadcast" and journey.at is None and not collector.failed((*path, "at")):
        collector.error((*path, "at"), "missing start time: a broadcast needs at")

    check_link(journey, path, collector)

    quiet = journey.quiet_hours
    if quiet is not None and quiet.start == quiet.end:
        collector.error(
            (*path, "quiet_hours"),
            f"quiet hours start and end at the same time, {quiet.start}, which gives a window "
            "of no length: remove quiet_hours, or give an end other than the start",
        )


def _check_journeys(scenario: Scenario, collector: Collector) -> None:
    seen: set[str] = set()
    # Times within the run mean nothing against a clock that fell back to its defaults.
    timed = not collector.failed(("clock",))
    for index, journey in enumerate(scenario.journeys):
        if journey is None:
            continue
        path: Path = ("journeys", index)
        _check_journey(journey, path, collector)
        if timed and journey.kind == "broadcast" and journey.at is not None:
            _check_broadcast_time(journey, scenario, (*path, "at"), collector)
        elif timed and journey.kind in TRIGGERED_KINDS:
            _check_delay_judged(journey, scenario, (*path, "delay"), collector)
        if journey.name in seen:
            collector.error((*path, "name"), f"duplicate journey name {journey.name!r}")
        seen.add(journey.name)
    check_overlaps(scenario, collector)


def _check_delay_judged(
    journey: Journey, scenario: Scenario, path: Path, collector: Collector
) -> None:
    """Warn when a journey's delay leaves no trigger in the part of the run that is judged."""
    clock = scenario.clock
    judged_until = clock.duration - clock.drain
    # A run no longer than its drain has its own warning at clock.duration.
    if judged_until > 0 and journey.delay >= judged_until:
        collector.warning(
            path,
            f"the delay of {format_duration(journey.delay)} is not shorter than the "
            f"{format_duration(judged_until)} the report judges (clock.duration less "
            "clock.drain), so no trigger of this journey is judged: make clock.duration at "
            f"least {format_duration(journey.delay + clock.drain)} plus the time triggers need",
        )


def _check_broadcast_time(
    journey: Journey, scenario: Scenario, path: Path, collector: Collector
) -> None:
    """Warn when a broadcast falls outside the part of the run that the report judges."""
    assert journey.at is not None
    clock = scenario.clock
    offset = (journey.at - clock.start).total_seconds()
    judged_until = clock.duration - clock.drain
    if offset < 0:
        collector.warning(
            path,
            f"the broadcast starts {format_duration(-offset)} before clock.start, when no "
            "shopper has installed yet, so its segment is empty: move at into the run",
        )
    elif offset >= judged_until:
        where = (
            "after the run ends" if offset >= clock.duration else "within clock.drain of the end"
        )
        collector.warning(
            path,
            f"the broadcast starts {format_duration(offset)} into the run, {where}, so the "
            f"report never judges it: set clock.duration to at least "
            f"{format_duration(offset + clock.drain)} plus the send window, or move at earlier",
        )


def _check_target(scenario: Scenario, collector: Collector) -> None:
    target = scenario.target
    if target.backend == "external":
        parsed = urlparse(target.url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            collector.error(
                ("target", "url"),
                f"invalid URL {target.url!r}: an external backend needs an http or https URL, "
                "such as http://127.0.0.1:8080",
            )


def _check_faults(scenario: Scenario, collector: Collector) -> None:
    scale = scenario.clock.time_scale
    for index, fault in enumerate(scenario.gateways.faults):
        if fault is None:
            continue
        path: Path = ("gateways", "faults", index)
        if fault.start >= scenario.clock.duration and not collector.failed(("clock",)):
            collector.warning(
                (*path, "start"),
                f"the window starts {format_duration(fault.start)} into a run of "
                f"{format_duration(scenario.clock.duration)}, so it never applies: make start "
                "shorter than clock.duration",
            )
        wall = fault.duration / scale if scale > 0 else 0.0
        if wall < MIN_WALL_WINDOW:
            shortest = format_duration(MIN_WALL_WINDOW * scale)
            collector.warning(
                (*path, "duration"),
                f"the window lasts {wall:.2g} wall seconds at time_scale {scale:g}, too short to "
                f"rehearse; make it at least {shortest} of simulated time",
            )
        if fault.kind == "errors" and not fault.reason:
            collector.error((*path, "reason"), "missing reason: an errors fault needs a reason")
        if fault.kind == "errors" and fault.rate == 0:
            collector.warning((*path, "rate"), "rate is 0, so this errors fault does nothing")
        if fault.kind in ("quota", "stream_limit") and fault.limit == 0:
            collector.error((*path, "limit"), f"a {fault.kind} fault needs a limit above 0")
        if fault.kind == "quota" and fault.service == "apns":
            collector.error((*path, "service"), "quota faults exist only on FCM: use fcm")


def _check_sdk_faults(scenario: Scenario, collector: Collector) -> None:
    """Warn about an SDK fault rate that the population gives no chance to happen."""
    faults = scenario.sdk_faults
    platforms = scenario.population.platforms
    fcm_refresh = scenario.tokens.rotation.fcm_refresh
    changes_hands = scenario.identity.logout > 0 or scenario.population.shared_device > 0
    # Each fault with the condition it needs and what to change when the run lacks it.
    needs = (
        ("event_name_drift", bool(platforms.get("ios")),
         "only the iOS app drifts, and population.platforms has no iOS share"),
        ("late_background_rotation", bool(platforms.get("android")) and fcm_refresh > 0,
         "it delays FCM refreshes, and the run has none: give population.platforms an Android "
         "share and tokens.rotation.fcm_refresh a rate above 0"),
        ("logout_keeps_device", changes_hands,
         "no one logs out or switches accounts: give identity.logout or "
         "population.shared_device a value above 0"),
    )  # fmt: skip
    for name, possible, reason in needs:
        if getattr(faults, name) > 0 and not possible:
            collector.warning(
                ("sdk_faults", name), f"this fault never happens in this run: {reason}"
            )


def _check_gates(scenario: Scenario, collector: Collector) -> None:
    for index, text in enumerate(scenario.gates):
        if text is None:
            continue
        try:
            gate = parse_gate(text)
        except ValueError as error:
            message = str(error)
            if message.startswith("unknown gate metric"):
                metric = text.split()[0]
                message += f"{suggest(metric, GATE_METRICS)} Metrics: {', '.join(GATE_METRICS)}"
            collector.error(("gates", index), message)
            continue
        # A lateness may be negative, so only ratios and counts have bounds.
        unit = GATE_METRICS[gate.metric].unit
        bounds = {
            "ratio 0..1": (0.0, 1.0, "between 0 and 1"),
            "count": (0.0, math.inf, "of 0 or more"),
        }
        if unit not in bounds:
            continue
        low, high, wording = bounds[unit]
        if not low <= gate.threshold <= high:
            collector.error(
                ("gates", index),
                f"threshold {gate.threshold:g} of {gate.metric} is out of range, since the "
                f"metric is a {unit}: give a threshold {wording}",
            )
