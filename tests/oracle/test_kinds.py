"""Triggers of repeated_event and delay_range journeys, and kinds the oracle does not judge."""

from __future__ import annotations

import json

from sim.oracle.judge import judge_run
from tests.oracle.ledgers import SCENARIO, Story

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


def test_broadcast_not_judged(tmp_path):
    text = SCENARIO.replace("kind: event", "kind: broadcast\n    at: 2026-11-26T10:00:00Z")
    story = Story()
    story.shopper()
    story.add_to_cart(1000.0)
    result = judge_run(story.write(tmp_path, text))
    journey = result.journeys[0]
    assert not journey.judged
    assert "not judged" in journey.note
    assert result.rows == []
