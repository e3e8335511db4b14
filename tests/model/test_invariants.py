"""Invariants over a large run, with made-up pushes fed through the inbox on the virtual clock."""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np
import pytest
from model_support import scenario_from

from sim.formats.shards import shard_of
from sim.formats.tokens import issue_token, parse_token
from sim.formats.truth import TruthView, read_records
from sim.model.plan import run_plan
from sim.model.ports import Delivery
from sim.oracle.inputs import group_timezones

SCENARIO = """
seed: 99
clock: {duration: 3d}
population: {installs: 4000, multi_device: 0.3, shared_device: 0.3, ios_development_builds: 0.2}
sessions: {per_day: 2.0}
tokens:
  rotation: {fcm_refresh: 10, os_update: 5, restore: 2}
  reinstall_keeps_token: {ios: 0.5, android: 0.2}
uninstall: {reinstall: 0.5, reinstall_delay: {median: 3h, sigma: 1.0}}
reactions:
  open: {ios: 0.6, android: 0.6}
  time_to_open: {ios: {median: 5m, sigma: 1.0}, android: {median: 5m, sigma: 1.0}}
  convert_after_open: 0.5
sdk_faults:
  handover_reinstall: 0.3
  logout_keeps_device: 0.3
  late_background_rotation: 0.3
"""

# Simulated seconds between made-up pushes, and between refreshes of the token pool.
PUSH_EVERY = 60.0
POOL_EVERY = 1800.0


def _push_sender(world):
    """Send pushes to every token seen so far, dead or alive, and to a token never issued."""
    rng = np.random.default_rng(7)
    pool: list[str] = []
    seen: set[str] = set()
    sent = Counter()

    def refresh() -> None:
        for group in world.groups.values():
            for device in group.devices:
                if device.token and device.token not in seen:
                    seen.add(device.token)
                    pool.append(device.token)

    def run():
        number = 0
        next_refresh = 0.0
        while True:
            yield world.env.timeout(PUSH_EVERY)
            if world.env.now >= next_refresh:
                refresh()
                next_refresh = world.env.now + POOL_EVERY
            if not pool:
                continue
            number += 1
            if number % 10 == 0:
                token = "ab" * 32  # well formed, never issued
            else:
                token = pool[int(rng.integers(len(pool)))]
            info = parse_token(world.run_key, token)
            group = world.groups.get(info.group_id) if info else None
            carts = list(group.abandoned) if group else []
            cart_id = carts[int(rng.integers(len(carts)))] if carts else "none"
            payload = {"aps": {"alert": "Still thinking?"}, "link": f"shop://cart/{cart_id}"}
            if number % 7 == 0:
                # A link to no cart, as a broadcast sends, opens a push visit.
                payload = {"aps": {"alert": "Deals are live"}, "link": "shop://deals"}
            sent[world.deliver(Delivery(f"del-{number}", token, payload))] += 1

    world.env.process(run())
    world.pushes_sent = sent


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    truth_path = tmp_path_factory.mktemp("invariants") / "truth.jsonl.gz"
    holder = {}

    def before_run(world):
        _push_sender(world)
        holder["world"] = world

    result = run_plan(scenario_from(SCENARIO), truth_path=truth_path, before_run=before_run)
    records = list(read_records(truth_path))
    return result, records, TruthView.load([truth_path]), holder["world"].pushes_sent


def test_pushes_reach_every_outcome(run):
    _, _, _, sent = run

    assert sent["displayed"] > 100
    assert sent["suppressed"] > 100
    assert sent["unknown_token"] > 100


def test_no_order_without_cart(run):
    _, records, _, _ = run
    carts: dict[str, float] = {}
    orders = 0
    for record in sorted(records, key=lambda r: (r["at"], r["group"], r["seq"])):
        if record["kind"] == "cart":
            carts[record["cart_id"]] = record["at"]
        elif record["kind"] == "order":
            orders += 1
            assert record["cart_id"] in carts, record
        elif record["kind"] == "sdk_call" and record["event"] == "order_completed":
            assert record["properties"]["cart_id"] in carts, record

    assert orders > 500


def test_each_cart_ordered_at_most_once(run):
    _, records, _, _ = run
    orders = Counter(r["cart_id"] for r in records if r["kind"] == "order")

    assert max(orders.values()) == 1


def test_orders_by_push_and_anyway_happen(run):
    result, _, _, _ = run
    orders = result.summary["funnel"]["orders"]
    carts = result.summary["funnel"]["carts"]

    assert orders["push"] > 0
    assert orders["buy_anyway"] > 0
    assert carts["push_visit"] > 0


def test_display_needs_app_token_and_permission(run):
    _, records, view, _ = run
    displayed = [r for r in records if r["kind"] == "reaction" and r["step"] == "displayed"]

    assert len(displayed) > 100
    for record in displayed:
        at, device = record["at"], record["device"]
        owner = view.token_owner(record["token"], at)
        assert owner is not None and owner.device == device, record
        assert view.installed(device, at), record
        assert view.permission_granted(device, at), record


def test_suppressed_pushes_lack_a_condition(run):
    _, records, view, _ = run
    suppressed = [
        r
        for r in records
        if r["kind"] == "reaction"
        and r["step"] == "suppressed"
        and r["detail"] != "gone_before_open"
    ]
    reasons = Counter(r["detail"] for r in suppressed)

    assert reasons["token_not_current"] > 0
    assert reasons["no_permission"] > 0
    assert reasons["not_installed"] > 0
    for record in suppressed:
        at = record["at"]
        owner = view.token_owner(record["token"], at)
        reachable = (
            owner is not None
            and view.installed(owner.device, at)
            and view.permission_granted(owner.device, at)
        )
        assert not reachable, record


def test_token_has_one_owner_at_each_instant(run):
    _, records, view, _ = run
    issued = Counter(r["token"] for r in records if r["kind"] == "token_issued")
    died = Counter(r["token"] for r in records if r["kind"] == "token_died")

    assert max(issued.values()) == 1
    assert not died or max(died.values()) == 1
    assert set(died) <= set(issued)

    # A device has one token at a time, so its token lifetimes never overlap.
    lives = defaultdict(list)
    for token, spans in view.token_lives.items():
        for device, life in spans:
            lives[device].append((life.start, life.end if life.end is not None else 1e18, token))
    for device, spans in lives.items():
        spans.sort()
        for (_, end, token), (start, _, following) in zip(spans, spans[1:], strict=False):
            assert end <= start, (device, token, following)


def test_tokens_parse_back_to_their_group(run):
    result, records, _, _ = run
    run_key = result.world.run_key
    tokens = [r for r in records if r["kind"] == "token_issued"]

    assert len(tokens) > 1000
    for record in tokens:
        info = parse_token(run_key, record["token"])
        assert info is not None, record
        assert info.group_id == record["group"]
        assert info.platform == record["platform"]
        # Only iOS tokens name an environment, and the token's bytes carry the same one.
        assert info.environment == record.get("environment", "production")
        assert ("environment" in record) == (record["platform"] == "ios")
    environments = {r["environment"] for r in tokens if r["platform"] == "ios"}
    assert environments == {"production", "sandbox"}


def test_timezones_match_the_report(run):
    # The backend delays pushes in quiet hours by this attribute, and the report judges them by
    # the group's zone, so the two must agree.
    _, records, _, _ = run
    zones = group_timezones(scenario_from(SCENARIO))
    registrations = [
        r for r in records if r["kind"] == "sdk_call" and r["method"] == "register_token"
    ]

    assert len(registrations) > 1000
    for call in registrations:
        assert call["attributes"]["timezone"] == zones[call["group"]], call
    installs = [r for r in records if r["kind"] == "install"]
    for install in installs:
        assert install["timezone"] == zones[install["group"]], install


def test_delivered_metrics_follow_displays(run):
    _, records, _, _ = run
    displayed = {
        r["delivery_id"] for r in records if r["kind"] == "reaction" and r["step"] == "displayed"
    }
    metrics = [r for r in records if r["kind"] == "sdk_call" and r["method"] == "push_metric"]
    delivered = {r["properties"]["delivery_id"] for r in metrics if r["event"] == "delivered"}

    assert delivered == displayed


def test_journey_audience_matches_truth(run):
    result, records, view, _ = run
    journey = result.world.scenario.journeys[0]
    horizon = result.world.horizon
    ordered_at = {r["cart_id"]: r["at"] for r in records if r["kind"] == "order"}
    device_tokens = defaultdict(list)
    for lives in view.token_lives.values():
        for device, life in lives:
            device_tokens[device].append(life)

    drain = result.world.scenario.clock.drain
    counts = Counter()
    seen = set()
    for call in records:
        if call["kind"] != "sdk_call" or call["event"] != "added_to_cart":
            continue
        # The oracle's trigger: the first added_to_cart per person and cart.
        key = (call["person"], call["properties"]["cart_id"])
        if key in seen:
            continue
        seen.add(key)
        counts["triggers"] += 1
        at, device = call["at"], call["device"]
        due = at + journey.delay
        if due + drain > horizon:
            counts["excluded_near_end"] += 1
        elif at <= ordered_at.get(call["properties"]["cart_id"], -1.0) <= due:
            counts["exited_before_delay"] += 1
        elif not view.installed(device, due) or not any(
            life.contains(due) for life in device_tokens[device]
        ):
            counts["no_device"] += 1
        elif not view.permission_granted(device, due):
            counts["no_permission"] += 1
        else:
            counts["audience"] += 1

    estimate = result.summary["journeys"][0]
    for key in ("triggers", "excluded_near_end", "exited_before_delay", "no_device",
                "no_permission"):  # fmt: skip
        assert counts[key] == estimate[key], key
    assert counts["audience"] == estimate["audience"]
    assert counts["audience"] > 500


def test_push_to_other_shard_is_named(tmp_path):
    holder = {}

    def before_run(world):
        holder["world"] = world

    result = run_plan(
        scenario_from("seed: 3\nclock: {duration: 2h}"), shard=(0, 2), before_run=before_run
    )
    world = holder["world"]
    foreign = next(g for g in range(1, 1000) if g not in world.groups and shard_of(g, 2) == 1)
    token = issue_token(world.run_key, "ios", foreign, 1)

    assert result.summary["population"]["groups"] > 0
    assert world.deliver(Delivery("d-1", token, {})) == "other_shard"
    assert world.deliver(Delivery("d-2", "ab" * 32, {})) == "unknown_token"
