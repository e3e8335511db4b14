"""Browse abandonment, replenishment, winback and broadcasts, over real HTTP intake."""

from __future__ import annotations

import datetime
import logging
import time

from journey_harness import (
    TIME_SCALE,
    add_device,
    identify,
    metrics_text,
    post_epoch,
    runs,
    send_event,
    wait_until,
)

from sim.backend import journeys
from sim.backend.journey_rules import draw_delay
from sim.scenario.schema import FrequencyCap, Journey, Match, Trigger

SIM_START = datetime.datetime(2026, 11, 27, 12, 0, tzinfo=datetime.UTC).timestamp()
NO_CAP = FrequencyCap(count=0)


def browse_abandonment() -> Journey:
    return Journey(
        name="browse_abandonment",
        kind="repeated_event",
        trigger=Trigger(event="product_viewed", count=3, window=3600.0, same="sku"),
        delay=600.0,
        absence=Match(event="added_to_cart", match="sku"),
        frequency_cap=NO_CAP,
        link="shop://product/{sku}",
    )


def test_repeated_views_trigger_one_push(make_journey_backend):
    backend, sender = make_journey_backend([browse_abandonment()])
    post_epoch(backend, SIM_START)
    with backend.track() as track:
        add_device(track, "ann", "ann-iphone", "ios")
        for sku in ("a", "b", "a", "a", "a"):
            send_event(track, "ann", "product_viewed", sku=sku, category="c", price=1.0)

    [push] = wait_until(lambda: sender.submitted)
    time.sleep(0.3)
    assert len(sender.submitted) == 1
    assert push.job.link == "shop://product/a"
    assert [run["match_value"] for run in runs(backend)] == ["a"]


def test_two_views_do_not_trigger(make_journey_backend):
    backend, sender = make_journey_backend([browse_abandonment()])
    post_epoch(backend, SIM_START)
    with backend.track() as track:
        add_device(track, "ann", "ann-iphone", "ios")
        for sku in ("a", "a", "b", "b"):
            send_event(track, "ann", "product_viewed", sku=sku, category="c", price=1.0)
    time.sleep(0.5)
    assert runs(backend) == []


def test_views_outside_window_do_not_count(make_journey_backend):
    journey = browse_abandonment()
    journey.trigger = Trigger(event="product_viewed", count=3, window=600.0, same="sku")
    backend, sender = make_journey_backend([journey])
    post_epoch(backend, SIM_START)
    with backend.track() as track:
        add_device(track, "ann", "ann-iphone", "ios")
        send_event(track, "ann", "product_viewed", sku="a", category="c", price=1.0)
        # 0.25 wall seconds are 15 simulated minutes, beyond the 10-minute window.
        time.sleep(0.25)
        send_event(track, "ann", "product_viewed", sku="a", category="c", price=1.0)
        send_event(track, "ann", "product_viewed", sku="a", category="c", price=1.0)
    time.sleep(0.3)
    assert runs(backend) == []


def test_add_to_cart_is_an_absence_exit(make_journey_backend):
    backend, sender = make_journey_backend([browse_abandonment()])
    post_epoch(backend, SIM_START)
    with backend.track() as track:
        add_device(track, "ann", "ann-iphone", "ios")
        for _ in range(3):
            send_event(track, "ann", "product_viewed", sku="a", category="c", price=1.0)
        send_event(track, "ann", "added_to_cart", sku="a", qty=1, cart_id="c1")

    wait_until(lambda: [run for run in runs(backend) if run["state"] == "done"])
    assert runs(backend)[0]["outcome"] == "exited"
    assert sender.submitted == []


def replenishment() -> Journey:
    return Journey(
        name="replenishment",
        kind="delay_range",
        trigger=Trigger(event="order_completed"),
        delay=1800.0,
        delay_max=3600.0,
        frequency_cap=NO_CAP,
        link="shop://reorder/{order_id}",
    )


def test_delay_range_draw_is_seeded():
    journey = replenishment()
    draws = [draw_delay(journey, event_id) for event_id in range(1, 200)]
    assert draws == [draw_delay(journey, event_id) for event_id in range(1, 200)]
    assert all(1800.0 <= draw <= 3600.0 for draw in draws)
    assert min(draws) < 2000.0
    assert max(draws) > 3400.0


def test_delay_range_sends_within_range(make_journey_backend):
    backend, sender = make_journey_backend([replenishment()])
    post_epoch(backend, SIM_START)
    with backend.track() as track:
        add_device(track, "ann", "ann-iphone", "ios")
        ordered_at = send_event(
            track, "ann", "order_completed", order_id="o1", cart_id="c1", order_value=9.0, items=1
        )

    [push] = wait_until(lambda: sender.submitted)
    [run] = runs(backend)
    expected = draw_delay(replenishment(), run["trigger_event_id"]) / TIME_SCALE
    assert push.at >= ordered_at + expected - 0.05
    assert push.at <= ordered_at + 3600.0 / TIME_SCALE + 0.3
    assert push.job.link == "shop://reorder/o1"


def winback() -> Journey:
    return Journey(
        name="winback",
        kind="inactivity",
        inactivity=7 * 86400.0,
        frequency_cap=NO_CAP,
        title="We miss you",
        link="shop://home/{person_id}",
    )


def test_inactivity_sweep_sends_winback(make_journey_backend):
    backend, sender = make_journey_backend([winback()], inactivity_sweep_seconds=0.05)
    # Seven simulated days at scale 604800 pass in one wall second.
    post_epoch(backend, SIM_START, time_scale=604800.0)
    with backend.track() as track:
        add_device(track, "ann", "ann-iphone", "ios")
        add_device(track, "bob", "bob-iphone", "ios")
        opened_at = send_event(track, "ann", "Application Opened")
        send_event(track, "bob", "Application Opened")
        time.sleep(0.6)
        # Bob comes back before a week passed, so only Ann is inactive.
        send_event(track, "bob", "Application Opened")

    [push] = wait_until(lambda: sender.submitted)
    assert push.job.token == "ann-iphone"
    assert push.job.link == "shop://home/ann"
    assert push.at >= opened_at + 1.0 - 0.05
    time.sleep(0.3)
    assert [p.job.token for p in sender.submitted] == ["ann-iphone"]
    assert len(runs(backend, "winback")) == 1


def broadcast(at: datetime.datetime, send_rate: float, segment: str = "all") -> Journey:
    return Journey(
        name="launch",
        kind="broadcast",
        at=at,
        segment=segment,
        send_rate=send_rate,
        frequency_cap=NO_CAP,
        title="Black Friday is on",
        link="shop://sale",
    )


def test_broadcast_keeps_send_rate(make_journey_backend):
    people, rate = 20, 40.0
    at = datetime.datetime.fromtimestamp(SIM_START + 1800.0, datetime.UTC)
    backend, sender = make_journey_backend([broadcast(at, rate)])
    post_epoch(backend, SIM_START)
    with backend.track() as track:
        for index in range(people):
            add_device(track, f"p{index}", f"token-{index}", "android")

    wait_until(lambda: len(sender.submitted) == people)
    times = sorted(push.at for push in sender.submitted)
    gaps = [later - earlier for earlier, later in zip(times, times[1:], strict=False)]
    # Lower bound only: a loaded machine may send slower, never faster.
    assert times[-1] - times[0] >= (people - 1) / rate * 0.95
    assert min(gaps) >= 1 / rate * 0.8
    assert 'stage="started"} 20' in metrics_text(backend)


def test_broadcast_waits_for_start(make_journey_backend):
    at = datetime.datetime.fromtimestamp(SIM_START + 1800.0, datetime.UTC)
    backend, sender = make_journey_backend([broadcast(at, 100.0)])
    wall_t0 = post_epoch(backend, SIM_START)
    with backend.track() as track:
        add_device(track, "ann", "ann-iphone", "ios")

    [push] = wait_until(lambda: sender.submitted)
    assert push.at >= wall_t0 + 1800.0 / TIME_SCALE - 0.05


def test_broadcast_segments(make_journey_backend):
    at = datetime.datetime.fromtimestamp(SIM_START, datetime.UTC)
    known = broadcast(at, 500.0, "known")
    known.name = "known"
    buyers = broadcast(at, 500.0, "purchasers")
    buyers.name = "buyers"
    backend, sender = make_journey_backend([known, buyers])
    with backend.track() as track:
        add_device(track, "ann", "ann-iphone", "ios")
        send_event(
            track, "ann", "order_completed", order_id="o1", cart_id="c", order_value=1.0, items=1
        )
        identify(track, "bob")
        add_device(track, "bob", "bob-iphone", "ios")
        response = track.post(
            "/api/v1/events", json={"name": "product_viewed", "anonymous_id": "anon-1"}
        )
        assert response.status_code == 200
    # The broadcast starts when the epoch arrives, after every profile exists.
    post_epoch(backend, SIM_START + 60.0)

    wait_until(lambda: len(sender.submitted) == 3)
    time.sleep(0.2)
    by_journey = sorted((push.job.journey, push.job.token) for push in sender.submitted)
    assert by_journey == [
        ("buyers", "ann-iphone"),
        ("known", "ann-iphone"),
        ("known", "bob-iphone"),
    ]


def test_broadcast_past_start_warns_late(make_journey_backend, caplog, monkeypatch):
    monkeypatch.setattr(journeys, "EPOCH_WAIT_WARNING_SECONDS", 0.3)
    caplog.set_level(logging.INFO, logger="sim.backend.journeys")
    at = datetime.datetime.fromtimestamp(SIM_START, datetime.UTC)
    backend, sender = make_journey_backend([broadcast(at, 500.0)])

    def records(level: int) -> list[str]:
        return [
            r.getMessage() for r in caplog.records if r.levelno == level and "launch" in r.message
        ]

    # The start passed before the backend started, so it waits for an epoch, first quietly.
    [waiting] = wait_until(lambda: records(logging.INFO))
    assert "waiting for it (POST /control/epoch, or the gateways' run" in waiting
    assert records(logging.WARNING) == []

    [warning] = wait_until(lambda: records(logging.WARNING))
    assert "still waiting after" in warning
    assert "set the journey's at to a future time" in warning
    assert sender.submitted == []


def test_broadcast_once_per_epoch(make_journey_backend):
    # A backend that serves two runs sends the broadcast in each, and once in each.
    at = datetime.datetime.fromtimestamp(SIM_START + 60.0, datetime.UTC)
    backend, sender = make_journey_backend([broadcast(at, 100.0)])
    with backend.track() as track:
        add_device(track, "ann", "ann-iphone", "ios")

    post_epoch(backend, SIM_START)
    wait_until(lambda: len(sender.submitted) == 1)
    time.sleep(0.3)
    assert len(sender.submitted) == 1

    post_epoch(backend, SIM_START)
    wait_until(lambda: len(sender.submitted) == 2)
    time.sleep(0.3)
    assert len(sender.submitted) == 2
    assert 'stage="started"} 2' in metrics_text(backend)


def test_broadcast_skips_stale_epoch(make_journey_backend, caplog):
    caplog.set_level(logging.INFO, logger="sim.backend.journeys")
    at = datetime.datetime.fromtimestamp(SIM_START, datetime.UTC)
    backend, sender = make_journey_backend([broadcast(at, 100.0)])
    with backend.track() as track:
        add_device(track, "ann", "ann-iphone", "ios")

    # An epoch under which the start passed 100 wall seconds ago belongs to a run that is over,
    # such as the last run's epoch that a restarted backend reads from the gateways.
    post_epoch(backend, SIM_START + 100.0 * TIME_SCALE)
    [stale] = wait_until(
        lambda: [r.getMessage() for r in caplog.records if "run is over" in r.getMessage()]
    )
    assert "waiting for the next run's epoch" in stale
    time.sleep(0.3)
    assert sender.submitted == []

    post_epoch(backend, SIM_START)
    wait_until(lambda: len(sender.submitted) == 1)
