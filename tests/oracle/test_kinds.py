"""Triggers of repeated_event, delay_range, broadcast and inactivity journeys."""

from __future__ import annotations

import json
import shutil

import pytest

from reports.build import build_report
from sim.oracle import load_run
from sim.oracle.judge import judge_run
from sim.oracle.outcomes import late_tolerance
from sim.oracle.result import to_summary
from sim.oracle.triggers import broadcast_pushes
from sim.scenario import load_scenario
from tests.oracle.ledgers import (
    SCENARIO,
    TIME_SCALE,
    WALL_T0,
    Story,
    apns_token,
    write_run_dir,
)

BROWSE = """
name: browse
clock: {start: 2026-11-26T00:00:00Z, duration: 1d, time_scale: 1440, drain: 1h}
journeys:
  - name: browse_again
    kind: repeated_event
    trigger: {event: product_viewed, count: 2, window: 1h, same: sku}
    delay: 1h
    absence: {event: added_to_cart, match: sku}
    frequency_cap: {count: 0, per: 1d}
    link: shop://product/{sku}
"""
RANGE = SCENARIO.replace("kind: event", "kind: delay_range\n    delay_max: 2h")


def view(story: Story, at: float, sku: str) -> None:
    story.call("track", at, "d1-0", "p1-0", user_id="p1-0", event="product_viewed",
               properties={"sku": sku, "category": "c", "price": 1.0})  # fmt: skip


def product_push(story: Story, at: float, token: str, sku: str) -> None:
    story.push(at, token, "x")
    payload = {"aps": {"alert": "x"}, "CIO": {"push": {"link": f"shop://product/{sku}"}}}
    story.rows[-1]["payload"] = json.dumps(payload).encode()


def test_repeated_event_second_view_triggers(tmp_path):
    story = Story()
    token = story.shopper()
    view(story, 1000.0, "SKU-1")
    view(story, 1600.0, "SKU-1")
    view(story, 1700.0, "SKU-1")
    view(story, 2000.0, "SKU-2")
    product_push(story, 1600.0 + 3600.0, token, "SKU-1")
    result = judge_run(story.write(tmp_path, BROWSE))
    assert [(row.trigger_id, row.trigger_at) for row in result.rows] == [
        ("browse_again:SKU-1", 1600.0)
    ]
    assert result.rows[0].outcome == "delivered"


def test_repeated_event_outside_window(tmp_path):
    story = Story()
    story.shopper()
    view(story, 1000.0, "SKU-1")
    view(story, 1000.0 + 3601.0, "SKU-1")
    result = judge_run(story.write(tmp_path, BROWSE))
    assert result.rows == []


def test_repeated_event_absence_ends_journey(tmp_path):
    story = Story()
    story.shopper()
    view(story, 1000.0, "SKU-1")
    view(story, 1600.0, "SKU-1")
    story.call("track", 2000.0, "d1-0", "p1-0", user_id="p1-0", event="added_to_cart",
               properties={"sku": "SKU-1", "qty": 1, "cart_id": "c1-1"})  # fmt: skip
    result = judge_run(story.write(tmp_path, BROWSE))
    assert result.rows[0].outcome == "converted_before_delay"


def test_delay_range_push_inside_range(tmp_path):
    story = Story()
    token = story.shopper()
    story.add_to_cart(1000.0)
    story.push(1000.0 + 3600.0, token)
    result = judge_run(story.write(tmp_path, RANGE))
    row = result.rows[0]
    assert row.due_at == 1000.0 + 7200.0
    assert row.outcome == "delivered"


def test_exit_after_early_push_is_push_conversion(tmp_path):
    story = Story()
    token = story.shopper()
    story.add_to_cart(1000.0)
    delivery = story.push(1000.0 + 3600.0, token)
    story.react(1000.0 + 3600.0, delivery, "displayed")
    story.react(1000.0 + 3700.0, delivery, "opened")
    story.order(1000.0 + 3700.0, via="push")
    story.react(1000.0 + 3700.0, delivery, "converted", detail="c1-1")
    result = judge_run(story.write(tmp_path, RANGE))
    assert result.rows[0].outcome == "converted"
    assert result.problems["push_after_conversion"].count == 0


BROADCAST = SCENARIO.replace(
    "kind: event",
    "kind: broadcast\n    at: 2026-11-26T10:00:00Z\n    send_rate: 1\n    segment: SEGMENT",
).replace("link: shop://cart/{cart_id}", "link: shop://deals")
START = 36000.0  # 10:00 on the clock's day, in simulated seconds


def first_journey(text: str):
    return load_scenario(text=text.replace("SEGMENT", "all")).scenario.journeys[0]


def broadcast_push(story: Story, at: float, token: str) -> str | None:
    delivery_id = story.push(at, token)
    payload = {"aps": {"alert": "Deals"}, "CIO": {"push": {"link": "shop://deals"}}}
    story.rows[-1]["payload"] = json.dumps(payload).encode()
    return delivery_id


def broadcast_story() -> tuple[Story, str]:
    story = Story()
    token = story.shopper()
    story.shopper(device="d2-0", person="p2-0", token=2, user_id="p2-0", permission="denied",
                  anonymous_id="anon-2")  # fmt: skip
    story.shopper(device="d3-0", person="p3-0", token=3, user_id=None, anonymous_id="anon-3")
    story.shopper(START + 60.0, device="d4-0", person="p4-0", token=4, user_id="p4-0",
                  anonymous_id="anon-4")  # fmt: skip
    return story, token


def test_broadcast_judges_segment_at_start(tmp_path):
    story, token = broadcast_story()
    delivery = broadcast_push(story, START + 100.0, token)
    story.react(START + 100.0, delivery, "displayed")
    result = judge_run(story.write(tmp_path, BROADCAST.replace("SEGMENT", "all")))

    rows = {row.person: row for row in result.rows}
    # p4 installed after the start, so the broadcast is not about them.
    assert sorted(rows) == ["p1-0", "p2-0", "p3-0"]
    assert rows["p1-0"].outcome == "displayed"
    assert rows["p2-0"].outcome == "no_permission"
    assert rows["p3-0"].outcome == "not_sent"
    # One wall second to start, then two pushes (p2's device has no permission) at one push
    # per wall second, at 1440 simulated seconds per wall second, then a tenth of that window.
    assert rows["p1-0"].due_at == START
    assert rows["p1-0"].deadline_at == START + 3 * 1440.0 + 432.0
    assert result.journeys[0].judged


def test_broadcast_conversion_is_unsplit(tmp_path):
    story, token = broadcast_story()
    delivery = broadcast_push(story, START + 100.0, token)
    for step in ("displayed", "opened", "converted"):
        story.react(START + 400.0, delivery, step)
    inputs, run_dir = write_run_dir(story, tmp_path, BROADCAST.replace("SEGMENT", "all"))
    shutil.copy(inputs.truth_paths[0], run_dir / "truth-0.jsonl")

    result = judge_run(load_run(run_dir))
    html = build_report(run_dir).read_text(encoding="utf-8")

    # The order came from the visit the push opened: no cart's latent draw splits it.
    row = next(row for row in result.rows if row.person == "p1-0")
    assert (row.outcome, row.conversion) == ("converted", "unknown")
    assert result.journeys[0].conversions == {"incremental": 0, "pulled_forward": 0, "unknown": 1}
    assert "1 from triggers that name no cart, such as a broadcast's" in html


def test_broadcast_lateness_left_out_of_summary(tmp_path):
    story, token = broadcast_story()
    delivery = broadcast_push(story, START + 2000.0, token)
    story.react(START + 2000.0, delivery, "displayed")
    result = judge_run(story.write(tmp_path, BROADCAST.replace("SEGMENT", "all")))

    row = next(row for row in result.rows if row.person == "p1-0")
    # The row keeps the push's place in the send window, and the run's lateness leaves it out.
    assert row.outcome == "displayed"
    assert row.lateness_s == 2000.0
    assert result.lateness_s["count"] == 0
    assert result.metrics["trigger_lateness_p99"] is None


def test_broadcast_window_counts_devices():
    journey = first_journey(BROADCAST.replace("SEGMENT", "all"))

    def registration(person: str, push_enabled: bool = True) -> dict:
        return {"person": person, "attributes": {"push_enabled": push_enabled}}

    registrations = {
        "d1-0": registration("p1-0"),
        "d1-1": registration("p1-0"),  # a second phone of p1 gets its own push
        "d2-0": registration("p2-0", push_enabled=False),
        "d3-0": None,  # its token was deleted
        "d5-0": registration("p5-0"),  # not in the segment
    }
    members = {"p1-0", "p2-0", "p3-0", "p4-0"}  # p4 never registered a device

    assert journey.eligibility.push_permission
    assert broadcast_pushes(journey, members, registrations) == 2


def test_broadcast_tolerance_ignores_delay():
    journey = first_journey(BROADCAST.replace("delay: 30m", "delay: 10h"))
    assert late_tolerance(journey, send_window=3 * 1440.0) == 432.0
    assert late_tolerance(journey, send_window=10.0) == 60.0


def test_broadcast_to_dead_token_is_stale(tmp_path):
    story, token = broadcast_story()
    story.record("token_died", START + 50.0, device="d1-0", token=token, reason="uninstall",
                 reported_at=START + 60.0)  # fmt: skip
    broadcast_push(story, START + 100.0, token)
    story.rows[-1].update(status=410, reason="Unregistered", delivery_id=None)

    result = judge_run(story.write(tmp_path, BROADCAST.replace("SEGMENT", "all")))

    rows = {row.person: row for row in result.rows}
    assert rows["p1-0"].outcome == "stale_token"
    assert rows["p1-0"].push_count == 1
    assert result.unattributed_pushes == 0


def test_broadcast_known_segment_skips_anonymous(tmp_path):
    story, _ = broadcast_story()
    result = judge_run(story.write(tmp_path, BROADCAST.replace("SEGMENT", "known")))
    assert sorted(row.person for row in result.rows) == ["p1-0", "p2-0"]


def test_broadcast_purchasers_segment(tmp_path):
    story, _ = broadcast_story()
    story.order(1000.0)
    result = judge_run(story.write(tmp_path, BROADCAST.replace("SEGMENT", "purchasers")))
    assert [row.person for row in result.rows] == ["p1-0"]


def test_broadcasts_with_one_link_split_pushes(tmp_path):
    story, token = broadcast_story()
    first = broadcast_push(story, START + 100.0, token)
    second = broadcast_push(story, START + 7200.0 + 100.0, token)
    journeys = BROADCAST.replace("SEGMENT", "all")
    repeat = journeys[journeys.index("  - name: cart_recovery") : journeys.index("gates:")]
    repeat = repeat.replace("cart_recovery", "reminder").replace("10:00:00Z", "12:00:00Z")
    text = journeys.replace("gates:", repeat + "gates:")
    result = judge_run(story.write(tmp_path, text))

    ids = {(row.journey, row.person): row.delivery_ids for row in result.rows}
    assert ids[("cart_recovery", "p1-0")] == [first]
    assert ids[("reminder", "p1-0")] == [second]


WINBACK = (
    SCENARIO.replace("kind: event", "kind: inactivity\n    inactivity: 6h")
    .replace("    trigger: {event: added_to_cart}\n", "")
    .replace("    exit: {event: order_completed, match: cart_id}\n", "")
    .replace("link: shop://cart/{cart_id}", "link: shop://home")
)
QUIET = 6 * 3600.0


def app_open(story: Story, at: float, number: int) -> None:
    story.call("track", at, f"d{number}-0", f"p{number}-0", user_id=f"p{number}-0",
               anonymous_id=f"anon-{number}", event="Application Opened",
               properties={})  # fmt: skip


def winback_push(story: Story, at: float, token: str) -> str | None:
    delivery_id = story.push(at, token)
    payload = {"aps": {"alert": "We miss you"}, "CIO": {"push": {"link": "shop://home"}}}
    story.rows[-1]["payload"] = json.dumps(payload).encode()
    return delivery_id


def winback_story() -> tuple[Story, list[str]]:
    story = Story()
    tokens = [
        story.shopper(
            device=f"d{n}-0", person=f"p{n}-0", token=n, user_id=f"p{n}-0", anonymous_id=f"anon-{n}"
        )  # fmt: skip
        for n in (1, 2, 3)
    ]
    return story, tokens


def test_inactivity_quiet_spell_triggers_winback(tmp_path):
    story, tokens = winback_story()
    app_open(story, 1000.0, 1)
    app_open(story, 2000.0, 1)
    delivery = winback_push(story, 2000.0 + QUIET + 300.0, tokens[0])
    story.react(2000.0 + QUIET + 300.0, delivery, "displayed")
    app_open(story, 1000.0, 3)
    result = judge_run(story.write(tmp_path, WINBACK))

    rows = {row.person: row for row in result.rows}
    assert sorted(rows) == ["p1-0", "p3-0"]
    # The spell starts at the last activity, so 1000 s on p1's phone started none.
    assert rows["p1-0"].trigger_at == 2000.0 + QUIET
    assert rows["p1-0"].outcome == "displayed"
    assert rows["p3-0"].outcome == "not_sent"
    # A tenth of the inactivity period, then the 60 s minimum: the unused delay adds nothing.
    assert rows["p3-0"].deadline_at == 1000.0 + QUIET + 0.1 * QUIET + 60.0


def test_inactivity_return_before_push_exits(tmp_path):
    story, _ = winback_story()
    app_open(story, 1000.0, 2)
    app_open(story, 1000.0 + QUIET + 600.0, 2)
    result = judge_run(story.write(tmp_path, WINBACK))
    first = result.rows[0]
    assert first.trigger_at == 1000.0 + QUIET
    assert first.outcome == "converted_before_delay"


def test_inactivity_near_run_end(tmp_path):
    story, _ = winback_story()
    app_open(story, 70000.0, 1)
    app_open(story, 60000.0, 3)
    result = judge_run(story.write(tmp_path, WINBACK))
    # 70000 s + 6 h is past the 1 d clock, so p1's spell never reached the period in the run.
    # p3's did at 81600 s, but its window and the 1 h drain run past the end.
    assert [(row.person, row.outcome) for row in result.rows] == [("p3-0", "excluded_near_end")]


@pytest.mark.parametrize(("spacing", "peak", "kept"), [(0.05, 3, False), (1.5, 1, True)])
def test_broadcast_pacing_busiest_second(tmp_path, spacing, peak, kept):
    story, token = broadcast_story()
    wall = WALL_T0 + (START + 100.0) / TIME_SCALE
    # The scenario's send_rate is 1 push per wall second. p2's token gets a push too, although
    # p2 has no permission, because pacing counts every push the backend sent.
    for number, push_token in enumerate((token, apns_token(2), apns_token(3))):
        broadcast_push(story, START + 100.0, push_token)
        story.rows[-1]["wall_time"] = wall + number * spacing
    retry = dict(story.rows[-1], wall_time=wall + 2 * spacing + 0.01, retry_of=3)
    retry.update(message_id="m-retry", delivery_id=None, status=503, reason="ServiceUnavailable")
    story.rows.append(retry)

    result = judge_run(story.write(tmp_path, BROADCAST.replace("SEGMENT", "all")))
    pacing = result.journeys[0].pacing

    assert pacing is not None
    assert pacing.pushes == 3  # the retry is not paced
    assert pacing.peak_per_second == peak
    assert pacing.within_limit is kept
    summary = to_summary(result)
    assert summary["journeys"][0]["pacing"]["peak_per_second"] == peak


def test_broadcast_pacing_counts_unknown_tokens(tmp_path):
    story, token = broadcast_story()
    wall = WALL_T0 + (START + 100.0) / TIME_SCALE
    # The second push goes to a token no shopper of this run held, as when the backend's store
    # kept an earlier run's profiles: it shares the broadcast's send rate all the same.
    for number, push_token in enumerate((token, apns_token(999))):
        broadcast_push(story, START + 100.0, push_token)
        story.rows[-1]["wall_time"] = wall + number * 0.1

    result = judge_run(story.write(tmp_path, BROADCAST.replace("SEGMENT", "all")))
    pacing = result.journeys[0].pacing

    assert pacing.pushes == 2
    assert pacing.peak_per_second == 2
    assert result.unknown_token_pushes == 1
    assert result.unattributed_pushes == 1
