"""The driver's trigger clock: push lateness against the trigger call, early pushes apart."""

from __future__ import annotations

from sim.driver.live import TriggerClock
from sim.model.ports import SdkCall
from sim.scenario import load_scenario

# A 30-minute delay at 1,440 simulated seconds per wall second waits 1.25 wall seconds, and
# its late tolerance (a tenth of the delay, 180 s) is 125 wall ms.
SCENARIO = """
clock: {time_scale: 1440}
journeys:
  - name: cart
    trigger: {event: added_to_cart}
    delay: 30m
    exit: {event: order_completed, match: cart_id}
    link: shop://cart/{cart_id}
"""
SENT_WALL = 1_800_000_000.0


def clock_with_trigger() -> TriggerClock:
    clock = TriggerClock(load_scenario(text=SCENARIO).scenario)
    call = SdkCall(
        0.0, 1, 1, "track", "d1-0", "p1-0", "anon", "p1-0",
        event="added_to_cart", properties={"sku": "s1", "qty": 1, "cart_id": "c1-1"},
    )  # fmt: skip
    clock.note(call, SENT_WALL)
    return clock


def payload(cart_id: str) -> dict:
    return {"aps": {"alert": "x"}, "CIO": {"push": {"link": f"shop://cart/{cart_id}"}}}


def test_on_time_push_lateness():
    clock = clock_with_trigger()

    lateness, early = clock.lateness_ms(payload("c1-1"), SENT_WALL + 1.25 + 0.2)

    assert round(lateness) == 200
    assert early is False


def test_push_before_tolerance_is_early():
    clock = clock_with_trigger()

    lateness, early = clock.lateness_ms(payload("c1-1"), SENT_WALL + 0.5)

    assert round(lateness) == -750
    assert early is True


def test_push_early_within_tolerance_is_not_early():
    clock = clock_with_trigger()

    _, early = clock.lateness_ms(payload("c1-1"), SENT_WALL + 1.25 - 0.1)

    assert early is False


def test_push_for_unknown_cart_has_no_lateness():
    assert clock_with_trigger().lateness_ms(payload("c9-9"), SENT_WALL) is None
