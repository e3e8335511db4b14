"""Expected audiences of inactivity and broadcast journeys, checked against the truth ledger."""

from __future__ import annotations

from collections import Counter, defaultdict

import pytest
from model_support import scenario_from

from sim.formats.truth import TruthView, read_records
from sim.model.plan import run_plan

SCENARIO = """
seed: 31
clock: {start: 2026-11-26T00:00:00Z, duration: 2d}
population: {installs: 1500, multi_device: 0.2}
sessions: {per_day: 2.0}
identity: {signup: 0.3}
journeys:
  - {name: winback, kind: inactivity, inactivity: 8h, link: shop://home}
  - {name: everyone, kind: broadcast, at: 2026-11-27T12:00:00Z, segment: all, link: shop://deals}
  - {name: members, kind: broadcast, at: 2026-11-27T12:00:00Z, segment: known, link: shop://deals}
  - name: browsed_thrice
    kind: repeated_event
    trigger: {event: product_viewed, count: 2, window: 1h, same: sku}
    delay: 30m
    link: shop://product/{sku}
    absence: {event: added_to_cart, match: sku}
"""
BROADCAST_AT = 36 * 3600.0


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    path = tmp_path_factory.mktemp("audience") / "truth.jsonl.gz"
    result = run_plan(scenario_from(SCENARIO), truth_path=path)
    records = sorted(read_records(path), key=lambda r: (r["at"], r["group"], r["seq"]))
    journeys = {journey["name"]: journey for journey in result.summary["journeys"]}
    return result, records, journeys


def test_inactivity_triggers_match_truth(run):
    result, records, journeys = run
    inactivity = result.world.scenario.journeys[0].inactivity
    horizon = result.world.horizon
    opens = defaultdict(list)
    for record in records:
        if (
            record["kind"] == "sdk_call"
            and record["event"] == "Application Opened"
            and record["fault"] is None
        ):
            opens[record["device"]].append(record["at"])
    expected = 0
    for times in opens.values():
        for at, following in zip(times, times[1:] + [float("inf")], strict=True):
            if at + inactivity < horizon and following - at > inactivity:
                expected += 1

    winback = journeys["winback"]
    assert winback["triggers"] == expected
    assert winback["triggers"] > 100
    assert (
        winback["triggers"] == winback["no_device"] + winback["no_permission"] + winback["audience"]
    )


def test_broadcast_counts_every_device(run):
    result, records, journeys = run
    devices = {r["device"] for r in records if r["kind"] == "device_user"}
    arrived = {
        device
        for device in devices
        if int(device[1:].split("-")[0]) in result.world.groups
        and _group_started_before(records, device, BROADCAST_AT)
    }
    everyone = journeys["everyone"]

    assert everyone["segment"] == len(arrived)
    assert (
        everyone["segment"]
        == everyone["no_device"] + everyone["no_permission"] + everyone["audience"]
    )


def _group_started_before(records, device: str, at: float) -> bool:
    group = int(device[1:].split("-")[0])
    return any(r["kind"] == "device_user" and r["group"] == group and r["at"] < at for r in records)


def test_known_segment_is_a_subset(run):
    _, _, journeys = run
    members = journeys["members"]
    everyone = journeys["everyone"]

    assert 0 < members["segment"] < everyone["segment"]
    assert members["audience"] <= everyone["audience"]


def test_repeated_event_matches_truth(run):
    result, records, journeys = run
    journey = result.world.scenario.journeys[3]
    horizon = result.world.horizon
    view = TruthView()
    for record in records:
        if record["kind"] != "sdk_call":
            view.add(record)
    calls = [r for r in records if r["kind"] == "sdk_call" and r["event"]]
    adds = defaultdict(list)
    for call in calls:
        if call["event"] == "added_to_cart":
            adds[(call["device"], call["properties"]["sku"])].append(call["at"])

    recent: dict[tuple, list[float]] = {}
    counts = Counter()
    for call in calls:
        if call["event"] != "product_viewed":
            continue
        at, key = call["at"], (call["device"], call["properties"]["sku"])
        times = [t for t in recent.get(key, []) if t > at - journey.trigger.window] + [at]
        if len(times) < journey.trigger.count:
            recent[key] = times
            continue
        recent.pop(key, None)
        counts["triggers"] += 1
        due = at + journey.delay
        if due >= horizon:
            counts["excluded_near_end"] += 1
        elif any(at <= t <= due for t in adds[key]):
            counts["exited_before_delay"] += 1
        elif not view.installed(key[0], due) or not _has_token(view, key[0], due):
            counts["no_device"] += 1
        elif not view.permission_granted(key[0], due):
            counts["no_permission"] += 1
        else:
            counts["audience"] += 1

    estimate = journeys["browsed_thrice"]
    assert counts["triggers"] > 100
    for key in ("triggers", "excluded_near_end", "exited_before_delay", "no_device"):
        assert estimate[key] == counts[key], key
    assert estimate["no_permission"] == counts["no_permission"]
    assert estimate["audience"] == counts["audience"]


def _has_token(view: TruthView, device: str, at: float) -> bool:
    return any(
        owner == device and life.contains(at)
        for lives in view.token_lives.values()
        for owner, life in lives
    )
