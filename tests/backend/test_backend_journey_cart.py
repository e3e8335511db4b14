"""Cart recovery over real HTTP intake: delay, exit, eligibility, caps, quiet hours, restarts."""

from __future__ import annotations

import datetime
import time

import pytest
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

from sim.scenario.schema import FrequencyCap, Journey, Match, QuietHours, Trigger

DELAY = 1800.0
DELAY_WALL = DELAY / TIME_SCALE
# Wall seconds of slack for the engine's poll interval and the store's commit.
SLACK = 0.3
SIM_START = datetime.datetime(2026, 11, 27, 12, 0, tzinfo=datetime.UTC).timestamp()


def cart_recovery(**changes) -> Journey:
    journey = Journey(
        name="cart_recovery",
        kind="event",
        trigger=Trigger(event="added_to_cart"),
        delay=DELAY,
        exit=Match(event="order_completed", match="cart_id"),
        frequency_cap=FrequencyCap(count=0),
        title="Still thinking it over?",
        body="Your cart is saved.",
        link="shop://cart/{cart_id}",
    )
    for key, value in changes.items():
        setattr(journey, key, value)
    return journey


def finished_runs(backend) -> list[dict]:
    return [run for run in runs(backend) if run["state"] == "done"]


def test_cart_push_to_each_device_after_delay(make_journey_backend):
    backend, sender = make_journey_backend([cart_recovery()])
    post_epoch(backend, SIM_START)
    with backend.track() as track:
        add_device(track, "ann", "ann-iphone", "ios", push_enabled=True)
        add_device(track, "ann", "ann-pixel", "android", push_enabled="true")
        add_device(track, "bob", "bob-pixel", "android")
        triggered_at = send_event(track, "ann", "added_to_cart", sku="sku-1", qty=1, cart_id="c1")
        send_event(track, "ann", "added_to_cart", sku="sku-2", qty=1, cart_id="c1")

    time.sleep(DELAY_WALL / 2)
    assert sender.submitted == []

    wait_until(lambda: len(sender.submitted) >= 2)
    time.sleep(SLACK)
    pushes = sender.submitted
    assert len(pushes) == 2
    assert {push.job.token for push in pushes} == {"ann-iphone", "ann-pixel"}
    assert {push.job.service for push in pushes} == {"apns", "fcm"}
    assert {push.job.link for push in pushes} == {"shop://cart/c1"}
    assert {push.job.profile_id for push in pushes} == {backend.profile_of("id", "ann")}
    assert len({push.job.delivery_id for push in pushes}) == 2
    assert pushes[0].job.title == "Still thinking it over?"
    for push in pushes:
        assert push.at >= triggered_at + DELAY_WALL - 0.05
        assert push.at <= triggered_at + DELAY_WALL + SLACK

    [run] = wait_until(lambda: finished_runs(backend))
    assert run["outcome"] == "sent"
    assert run["match_value"] == "c1"
    sends = backend.query("SELECT outcome FROM journey_sends WHERE run_id = ?", (run["id"],))
    assert [row["outcome"] for row in sends] == ["accepted", "accepted"]


def test_order_first_sends_nothing(make_journey_backend):
    backend, sender = make_journey_backend([cart_recovery()])
    post_epoch(backend, SIM_START)
    with backend.track() as track:
        add_device(track, "ann", "ann-iphone", "ios")
        send_event(track, "ann", "added_to_cart", sku="s", qty=1, cart_id="c1")
        send_event(track, "ann", "order_completed", order_id="o1", cart_id="c1", items=1)

    [run] = wait_until(lambda: finished_runs(backend))
    assert run["outcome"] == "exited"
    assert sender.submitted == []
    assert 'stage="exited"' in metrics_text(backend)


def test_order_of_other_cart_keeps_run(make_journey_backend):
    backend, sender = make_journey_backend([cart_recovery()])
    post_epoch(backend, SIM_START)
    with backend.track() as track:
        add_device(track, "ann", "ann-iphone", "ios")
        send_event(track, "ann", "added_to_cart", sku="s", qty=1, cart_id="c1")
        send_event(track, "ann", "order_completed", order_id="o1", cart_id="c0", items=1)

    [push] = wait_until(lambda: sender.submitted)
    assert push.job.link == "shop://cart/c1"


def test_no_exit_check_sends_despite_order(make_journey_backend):
    backend, sender = make_journey_backend([cart_recovery()], no_exit_check=True)
    post_epoch(backend, SIM_START)
    with backend.track() as track:
        add_device(track, "ann", "ann-iphone", "ios")
        send_event(track, "ann", "added_to_cart", sku="s", qty=1, cart_id="c1")
        send_event(track, "ann", "order_completed", order_id="o1", cart_id="c1", items=1)

    [push] = wait_until(lambda: sender.submitted)
    assert push.job.link == "shop://cart/c1"


def test_no_permission_or_device_sends_nothing(make_journey_backend):
    backend, sender = make_journey_backend([cart_recovery()])
    post_epoch(backend, SIM_START)
    with backend.track() as track:
        add_device(track, "ann", "ann-iphone", "ios", push_enabled="false")
        add_device(track, "cy", "cy-pixel", "android", push_enabled=None)
        identify(track, "bob", email="bob@example.com")
        for person, cart in (("ann", "c1"), ("bob", "c2"), ("cy", "c3")):
            send_event(track, person, "added_to_cart", sku="s", qty=1, cart_id=cart)

    done = wait_until(lambda: len(finished_runs(backend)) == 3 and finished_runs(backend))
    outcomes = {run["match_value"]: run["outcome"] for run in done}
    assert outcomes == {"c1": "no_permission", "c2": "no_device", "c3": "no_permission"}
    assert sender.submitted == []
    text = metrics_text(backend)
    assert 'pushsim_backend_journey_runs_total{journey="cart_recovery",stage="no_device"} 1' in text
    assert (
        'pushsim_backend_journey_runs_total{journey="cart_recovery",stage="no_permission"} 2'
        in text
    )


def test_deleted_device_gets_nothing(make_journey_backend):
    backend, sender = make_journey_backend([cart_recovery()])
    post_epoch(backend, SIM_START)
    with backend.track() as track:
        add_device(track, "ann", "ann-old", "ios")
        add_device(track, "ann", "ann-new", "ios")
        track.delete("/api/v1/customers/ann/devices/ann-old")
        send_event(track, "ann", "added_to_cart", sku="s", qty=1, cart_id="c1")

    wait_until(lambda: sender.submitted)
    time.sleep(SLACK)
    assert [push.job.token for push in sender.submitted] == ["ann-new"]


def test_drifted_event_name_does_not_trigger(make_journey_backend):
    backend, sender = make_journey_backend([cart_recovery()])
    post_epoch(backend, SIM_START)
    with backend.track() as track:
        add_device(track, "ann", "ann-iphone", "ios")
        send_event(track, "ann", "add_to_cart", sku="s", qty=1, cart_id="c1")
        # A later event proves the engine has read past the drifted one.
        send_event(track, "ann", "added_to_cart", sku="s", qty=1, cart_id="c2")

    [push] = wait_until(lambda: sender.submitted)
    assert push.job.link == "shop://cart/c2"
    assert [run["match_value"] for run in runs(backend)] == ["c2"]


def test_frequency_cap_skips_second_cart(make_journey_backend):
    journey = cart_recovery(frequency_cap=FrequencyCap(count=1, per=86400.0))
    backend, sender = make_journey_backend([journey])
    post_epoch(backend, SIM_START)
    with backend.track() as track:
        add_device(track, "ann", "ann-iphone", "ios")
        send_event(track, "ann", "added_to_cart", sku="s", qty=1, cart_id="c1")
        send_event(track, "ann", "added_to_cart", sku="s", qty=1, cart_id="c2")

    done = wait_until(lambda: len(finished_runs(backend)) == 2 and finished_runs(backend))
    assert sorted(run["outcome"] for run in done) == ["capped", "sent"]
    assert len(sender.submitted) == 1
    assert 'stage="capped"} 1' in metrics_text(backend)


def test_frequency_cap_period_is_simulated(make_journey_backend):
    # One push per 30 simulated minutes: at scale 3600 the period is 0.5 wall seconds.
    journey = cart_recovery(delay=0.0, frequency_cap=FrequencyCap(count=1, per=1800.0))
    backend, sender = make_journey_backend([journey])
    post_epoch(backend, SIM_START)
    with backend.track() as track:
        add_device(track, "ann", "ann-iphone", "ios")
        send_event(track, "ann", "added_to_cart", sku="s", qty=1, cart_id="c1")
        wait_until(lambda: sender.submitted)
        time.sleep(1800.0 / TIME_SCALE + 0.1)
        send_event(track, "ann", "added_to_cart", sku="s", qty=1, cart_id="c2")

    wait_until(lambda: len(sender.submitted) == 2)


@pytest.mark.parametrize("source", ["profile", "device"])
def test_quiet_hours_hold_the_send(make_journey_backend, source):
    # Tokyo is UTC+9: the epoch starts at 21:50 local time, so the push falls due at 22:20,
    # inside quiet hours 22:00-22:40, and must wait for 22:40. The zone comes from the profile,
    # or, without one there, from the phone as SDKs report it.
    tokyo = datetime.timezone(datetime.timedelta(hours=9))
    sim_start = datetime.datetime(2026, 11, 27, 21, 50, tzinfo=tokyo).timestamp()
    quiet_end = datetime.datetime(2026, 11, 27, 22, 40, tzinfo=tokyo).timestamp()
    journey = cart_recovery(quiet_hours=QuietHours(start="22:00", end="22:40"))
    backend, sender = make_journey_backend([journey])
    wall_t0 = post_epoch(backend, sim_start)
    with backend.track() as track:
        if source == "profile":
            identify(track, "ann", timezone="Asia/Tokyo")
            add_device(track, "ann", "ann-iphone", "ios")
        else:
            add_device(track, "ann", "ann-iphone", "ios", timezone="Asia/Tokyo")
        send_event(track, "ann", "added_to_cart", sku="s", qty=1, cart_id="c1")

    [push] = wait_until(lambda: sender.submitted)
    sent_sim = sim_start + (push.at - wall_t0) * TIME_SCALE
    assert sent_sim >= quiet_end - 60
    assert sent_sim <= quiet_end + SLACK * TIME_SCALE
    assert 'stage="quiet_held"} 1' in metrics_text(backend)


def test_quiet_hours_in_utc_without_timezone(make_journey_backend):
    sim_start = datetime.datetime(2026, 11, 27, 21, 50, tzinfo=datetime.UTC).timestamp()
    journey = cart_recovery(quiet_hours=QuietHours(start="22:00", end="22:40"))
    backend, sender = make_journey_backend([journey])
    wall_t0 = post_epoch(backend, sim_start)
    with backend.track() as track:
        add_device(track, "ann", "ann-iphone", "ios")
        send_event(track, "ann", "added_to_cart", sku="s", qty=1, cart_id="c1")

    [push] = wait_until(lambda: sender.submitted)
    sent_sim = sim_start + (push.at - wall_t0) * TIME_SCALE
    assert sent_sim >= sim_start + 50 * 60 - 60


def test_restart_resumes_pending_run(make_journey_backend):
    # A 2-hour delay waits 2 wall seconds, long enough to stop and start the backend in between.
    backend, sender = make_journey_backend([cart_recovery(delay=7200.0)])
    post_epoch(backend, SIM_START)
    with backend.track() as track:
        add_device(track, "ann", "ann-iphone", "ios")
        triggered_at = send_event(track, "ann", "added_to_cart", sku="s", qty=1, cart_id="c1")
    wait_until(lambda: runs(backend))

    backend.restart()
    assert sender.submitted == []
    [push] = wait_until(lambda: sender.submitted)
    assert push.at >= triggered_at + 7200.0 / TIME_SCALE - 0.05
    assert push.job.link == "shop://cart/c1"
    [run] = wait_until(lambda: finished_runs(backend))
    assert run["outcome"] == "sent"


def test_merge_moves_anonymous_cart_to_person(make_journey_backend):
    backend, sender = make_journey_backend([cart_recovery()])
    post_epoch(backend, SIM_START)
    with backend.track() as track:
        response = track.post(
            "/api/v1/events",
            json={"name": "added_to_cart", "anonymous_id": "anon-1",
                  "data": {"sku": "s", "qty": 1, "cart_id": "c9"}},
        )  # fmt: skip
        assert response.status_code == 200
        identify(track, "ann", anonymous_id="anon-1")
        add_device(track, "ann", "ann-iphone", "ios")

    [push] = wait_until(lambda: sender.submitted)
    assert push.job.token == "ann-iphone"
    assert push.job.link == "shop://cart/c9"


def test_cart_push_over_cdp_batch(make_journey_backend):
    backend, sender = make_journey_backend([cart_recovery()])
    post_epoch(backend, SIM_START)
    device = {"device": {"token": "ann-pixel", "type": "android"}}
    batch = {
        "batch": [
            {"type": "track", "anonymousId": "anon-7", "event": "added_to_cart",
             "messageId": "m1", "properties": {"sku": "s", "qty": 1, "cart_id": "c7"}},
            {"type": "identify", "userId": "ann", "anonymousId": "anon-7", "messageId": "m2"},
            {"type": "track", "userId": "ann", "event": "Device Created or Updated",
             "messageId": "m3", "context": device, "properties": {"push_enabled": True}},
        ]
    }  # fmt: skip
    with backend.cdp() as cdp:
        response = cdp.post("/v1/batch", json=batch)
        assert response.status_code == 200, response.text
        # A retried batch is deduplicated by messageId and starts no second run.
        cdp.post("/v1/batch", json=batch)

    [push] = wait_until(lambda: sender.submitted)
    assert push.job.token == "ann-pixel"
    assert push.job.link == "shop://cart/c7"
    assert push.job.profile_id == backend.profile_of("id", "ann")
    time.sleep(SLACK)
    assert len(sender.submitted) == 1
