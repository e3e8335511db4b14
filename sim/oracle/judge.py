"""Join truth, deliveries and the scenario into one ``OracleResult``.

Example::

    result = judge_run(load_run("runs/cart_recovery-1"))
    print(result.metrics["delivery_rate"], result.gates_passed)
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from typing import Any

from sim.catalogue import canonical_name
from sim.formats.delivery import read_rows
from sim.formats.payload import link_pattern
from sim.oracle.conduct import judge_conduct
from sim.oracle.gating import evaluate_gates, gate_metrics
from sim.oracle.generator import judge_generator
from sim.oracle.inputs import RunInputs
from sim.oracle.ledger import TruthIndex
from sim.oracle.outcomes import (
    DELIVERED,
    EXCLUDED,
    FAILURES,
    OUTCOMES,
    JudgeContext,
    TriggerRow,
    judge,
    merged_anonymous,
    trigger_faults,
)
from sim.oracle.pacing import broadcast_pacing
from sim.oracle.problems import PROBLEM_KINDS, find_problems
from sim.oracle.pushes import Push, link_value, place_pushes, rejected_environment
from sim.oracle.reach import reach_over_time, sample_times
from sim.oracle.result import JourneyResult, OracleResult
from sim.oracle.sdk_errors import judge_sdk_errors
from sim.oracle.stats import summarise
from sim.oracle.triggers import (
    Trigger,
    TriggerSet,
    activity_event,
    activity_times,
    broadcast_start,
    exit_times,
    find_triggers,
)
from sim.scenario.schema import Journey

LATENESS_OUTCOMES = frozenset(DELIVERED) | {"sent_late"}
# Failure outcomes drawn as stitching problems over time.
STITCHING_OUTCOMES = ("stranded_anonymous", "events_without_device", "stale_token")


def judge_run(inputs: RunInputs, index: TruthIndex | None = None) -> OracleResult:
    """Judge one run; pass ``index`` to reuse a truth index already built from its ledgers."""
    scenario = inputs.scenario
    clock = scenario.clock
    origin = clock.start.timestamp()
    index = index or TruthIndex.load(inputs.truth_paths, journey_events(scenario.journeys))
    rows = list(read_rows(str(inputs.delivery_path))) if inputs.delivery_path else []
    pushes = place_pushes(rows, index, inputs.epoch, origin)

    attributed_all: list[tuple[Trigger, list[Push]]] = []
    journey_results: list[JourneyResult] = []
    trigger_rows: list[TriggerRow] = []
    exits_by_journey: dict[str, dict[str, list[float]]] = {}
    claimed: set[int] = set()
    # Triggers made anonymously and identified well before their due time (see
    # merged_anonymous) that got no push at all.
    unsent_after_identify = 0
    # Failed triggers whose own call carried an injected SDK fault, by fault.
    failures_by_fault: Counter[str] = Counter()
    next_broadcast = next_broadcast_starts(scenario.journeys, origin)
    # A trigger is judged when its due time plus the drain fits before the end. A partial run
    # ends where its models stopped, so a trigger due after that is excluded, not a failure.
    horizon = clock.duration
    model_reached = None
    if inputs.partial and index.reached is not None:
        model_reached = min(horizon, index.reached)
        horizon = model_reached

    for journey in scenario.journeys:
        triggers = find_triggers(journey, index, origin, inputs.epoch.time_scale, clock.duration)
        if journey.kind == "inactivity":
            exits = sent_exits = activity_times(journey, index)
        else:
            exits, sent_exits = exit_times(journey, index, triggers.match_field)
        # A push after an exit is the backend's fault only when the driver sent the exit.
        exits_by_journey[journey.name] = sent_exits
        attributed = attribute(
            triggers, pushes, journey, next_broadcast.get(journey.name, math.inf)
        )
        for attempts in attributed.values():
            claimed.update(push.row.seq for push in attempts)

        context = JudgeContext(
            journey=journey,
            index=index,
            epoch=inputs.epoch,
            origin=origin,
            horizon=horizon,
            drain=clock.drain,
            exits=exits,
            timezones=inputs.timezones,
        )
        for trigger in triggers.triggers:
            for push in attributed.get(trigger.trigger_id, []):
                if push.accepted and push.token_alive:
                    context.sent_to_person.setdefault(trigger.person, []).append(
                        (push.at, trigger.trigger_id)
                    )
        judged = [
            judge(trigger, attributed.get(trigger.trigger_id, []), context)
            for trigger in triggers.triggers
        ]
        trigger_rows.extend(judged)
        for trigger, row in zip(triggers.triggers, judged, strict=True):
            faults = trigger_faults(trigger)
            if row.outcome in FAILURES:
                failures_by_fault.update(faults)
            # A trigger sent under a drifted event name never reached the journey, whatever
            # the backend does with anonymous activity.
            unsent_after_identify += (
                row.outcome == "not_sent"
                and not row.push_count
                and "event_name_drift" not in faults
                and merged_anonymous(trigger, index, row.due_at, journey)
            )
        attributed_all.extend(
            (trigger, attributed.get(trigger.trigger_id, [])) for trigger in triggers.triggers
        )
        journey_result = _journey_result(triggers, judged)
        if journey.kind == "broadcast":
            until = next_broadcast.get(journey.name, math.inf)
            sent = _broadcast_sends(journey, pushes, origin, until)
            journey_result.pacing = broadcast_pacing(journey.send_rate, sent)
        journey_results.append(journey_result)

    problems = find_problems(attributed_all, pushes, exits_by_journey, index)
    # Lateness is measured where a push reached the person: delivered outcomes and sent_late.
    # A broadcast's pushes are paced across its send window by design, so their lateness would
    # be each push's place in the queue. The sent_late outcome and the pacing figures judge them.
    broadcasts = {journey.name for journey in scenario.journeys if journey.kind == "broadcast"}
    reached = [
        row
        for row in trigger_rows
        if row.outcome in LATENESS_OUTCOMES and row.journey not in broadcasts
    ]
    result = OracleResult(
        scenario=scenario.name,
        duration=clock.duration,
        drain=clock.drain,
        time_scale=inputs.epoch.time_scale,
        origin=origin,
        journeys=journey_results,
        rows=trigger_rows,
        problems=problems,
        # p99 gets its confidence interval, so that compare can tell a move from chance.
        lateness_s=summarise([row.lateness_s for row in reached], intervals=(99,)),
        lateness_wall_ms=summarise([row.lateness_wall_ms for row in reached], intervals=(99,)),
        conduct=judge_conduct(
            pushes,
            index,
            inputs.epoch,
            origin,
            store_path=inputs.store_path,
            truth_paths=inputs.truth_paths,
        ),
        generator=judge_generator(index),
        sdk_errors=judge_sdk_errors(index),
        reach=reach_over_time(index, clock.duration),
        series=time_series(pushes, trigger_rows, problems, index, clock.duration, clock.drain),
        unattributed_pushes=sum(1 for push in pushes if push.row.seq not in claimed),
        push_requests=len(pushes),
        unknown_token_pushes=sum(1 for push in pushes if push.holder_person is None),
        wrong_environment=wrong_environment(pushes, index),
        unsent_after_identify=unsent_after_identify,
        failures_by_fault=dict(sorted(failures_by_fault.items())),
        reached=model_reached,
        protocol=scenario.target.protocol,
    )
    result.metrics = gate_metrics(result)
    result.gates = evaluate_gates(scenario.gates, result.metrics)
    return result


def wrong_environment(pushes: list[Push], index: TruthIndex) -> dict[str, int]:
    """Count APNs pushes rejected for going to the environment their token is not for.

    The counts are keyed by the token's environment.
    """
    return dict(Counter(filter(None, (rejected_environment(push, index) for push in pushes))))


def next_broadcast_starts(journeys: list[Journey], origin: float) -> dict[str, float]:
    """Return, per broadcast, when the next broadcast with the same deep link starts."""
    broadcasts = sorted(
        (broadcast_start(journey, origin), journey.name, journey.link)
        for journey in journeys
        if journey.kind == "broadcast"
    )
    ends = {}
    for position, (_, name, link) in enumerate(broadcasts):
        later = [start for start, _, other in broadcasts[position + 1 :] if other == link]
        if later:
            ends[name] = later[0]
    return ends


def journey_events(journeys: list[Journey]) -> set[str] | None:
    """Return the catalogue names of the events the journeys need to be judged.

    These are every trigger, exit and absence event, and each inactivity journey's activity.

    Returns None, so every track call is kept, when a journey is a broadcast: its segment is
    everyone who sent any call before it.
    """
    if any(journey.kind == "broadcast" for journey in journeys):
        return None
    names = set()
    for journey in journeys:
        if journey.kind == "inactivity":
            names.add(activity_event(journey))
        for event in (journey.trigger.event, journey.exit.event, journey.absence.event):
            if event:
                names.add(canonical_name(event))
    return names


def attribute(
    triggers: TriggerSet, pushes: list[Push], journey: Journey, until: float = math.inf
) -> dict[str, list[Push]]:
    """Assign each push whose deep link carries a trigger's match value to that trigger.

    A broadcast's pushes are attributed up to ``until``, the start of the next broadcast with
    the same deep link.

    When several triggers share the value (a sku, say), the push goes to the latest one before
    it on the device that owns the token, else the latest one before it of any person.
    """
    # Validation rejects two journeys whose links fit each other's template, so a push fits
    # one journey. Broadcasts that share a link are separated by ``until``.
    if journey.kind in ("broadcast", "inactivity"):
        return _attribute_by_owner(triggers, pushes, journey, until)
    by_value: dict[str | None, list[Trigger]] = defaultdict(list)
    for trigger in triggers.triggers:
        by_value[trigger.value].append(trigger)
    attributed: dict[str, list[Push]] = defaultdict(list)
    if not triggers.match_field:
        return attributed

    for push in pushes:
        value = link_value(push, journey, triggers.match_field)
        candidates = by_value.get(value)
        if not candidates:
            continue
        chosen = candidates[0]
        if len(candidates) > 1:
            before = [t for t in candidates if t.at <= push.at] or candidates[:1]
            same_device = [t for t in before if t.device == push.owner_device]
            chosen = (same_device or before)[-1]
        attributed[chosen.trigger_id].append(push)
    return attributed


def _broadcast_sends(
    journey: Journey, pushes: list[Push], origin: float, until: float
) -> list[Push]:
    """Return the push requests with the broadcast's link, from its start until ``until``.

    The send rate paces every push the backend sends for the broadcast, so the pushes that no
    trigger claims count too, such as those to an earlier run's profiles kept in its store.
    """
    start = broadcast_start(journey, origin)
    pattern = link_pattern(journey.link)
    return [
        push
        for push in pushes
        if start <= push.at < until and push.link and pattern.match(push.link)
    ]


def _attribute_by_owner(
    triggers: TriggerSet, pushes: list[Push], journey: Journey, until: float
) -> dict[str, list[Push]]:
    """Assign each push with the journey's deep link to the latest trigger of the token's owner.

    Broadcast and winback pushes name no trigger, so a push goes to the person whose phone
    owned the token, from their trigger on and before ``until``. A push shown to the other
    user of a shared phone therefore cannot count as wrong person for these journeys. A push
    to a dead token goes to the person on the phone that held it last, so that it counts as
    that trigger's stale-token push.
    """
    attributed: dict[str, list[Push]] = defaultdict(list)
    by_person: dict[str, list[Trigger]] = defaultdict(list)
    for trigger in triggers.triggers:
        by_person[trigger.person].append(trigger)
    pattern = link_pattern(journey.link)
    for push in pushes:
        person = push.holder_person
        if push.at >= until or person not in by_person:
            continue
        if not push.link or not pattern.match(push.link):
            continue
        started = [t for t in by_person[person] if t.at <= push.at]
        if started:
            attributed[started[-1].trigger_id].append(push)
    return attributed


def _journey_result(triggers: TriggerSet, rows: list[TriggerRow]) -> JourneyResult:
    counts = Counter(row.outcome for row in rows)
    conversions = Counter(row.conversion for row in rows if row.outcome == "converted")
    return JourneyResult(
        name=triggers.journey.name,
        kind=triggers.journey.kind,
        judged=triggers.judged,
        note=triggers.note,
        match_field=triggers.match_field,
        trigger_events_dropped=triggers.dropped,
        triggers=len(rows),
        excluded=counts[EXCLUDED],
        outcomes={outcome: counts[outcome] for outcome in OUTCOMES},
        conversions={
            split: conversions[split] for split in ("incremental", "pulled_forward", "unknown")
        },
    )


def time_series(
    pushes: list[Push],
    rows: list[TriggerRow],
    problems: dict,
    index: TruthIndex,
    duration: float,
    drain: float = 0.0,
) -> dict[str, Any]:
    """Bin pushes, reactions, problems, gateway responses and connections by simulated time.

    The bins cover the run's duration and its drain, in which late pushes still arrive. The
    last bin also takes anything later, such as a push the backend sent after the drain.
    """
    edges = sample_times(duration)
    width = edges[1] - edges[0] if len(edges) > 1 else max(duration, 1.0)
    bins = max(len(edges), math.ceil((duration + drain) / width))

    def slot(at: float) -> int:
        return min(bins - 1, max(0, int(at // width)))

    accepted, rejected = [0] * bins, [0] * bins
    status_mix: dict[str, list[int]] = {}
    new_connections = [0] * bins
    seen_connections: set[str] = set()
    for push in pushes:
        position = slot(push.at)
        (accepted if push.accepted else rejected)[position] += 1
        label = f"{push.row.service} {push.row.status} {push.row.reason or ''}".strip()
        status_mix.setdefault(label, [0] * bins)[position] += 1
        if push.row.connection_id not in seen_connections:
            seen_connections.add(push.row.connection_id)
            new_connections[position] += 1

    reactions = {"displayed": [0] * bins, "opened": [0] * bins, "converted": [0] * bins}
    for records in index.reactions.values():
        for record in records:
            if record["step"] in reactions and not record.get("detail") == "broken_link":
                reactions[record["step"]][slot(record["at"])] += 1

    stitching = {kind: [0] * bins for kind in STITCHING_OUTCOMES + PROBLEM_KINDS}
    for row in rows:
        if row.outcome in STITCHING_OUTCOMES:
            stitching[row.outcome][slot(row.due_at)] += 1
    for kind, problem in problems.items():
        for at in problem.times:
            stitching[kind][slot(at)] += 1

    return {
        "bin_start_s": [i * width for i in range(bins)],
        "bin_width_s": width,
        "pushes_accepted": accepted,
        "pushes_rejected": rejected,
        "reactions": reactions,
        "stitching": stitching,
        "status_mix": dict(sorted(status_mix.items())),
        "new_connections": new_connections,
    }
