"""Cart recovery end to end: HTTP intake, journey engine, push sender, mock APNs and FCM."""

from __future__ import annotations

import dataclasses
import datetime
import json
import time

import pytest
from backend_harness import default_config
from journey_gateways import GatewayLoop
from journey_harness import (
    TIME_SCALE,
    add_device,
    post_epoch,
    runs,
    send_event,
    wait_until,
)
from sender_support import FAST_CONFIG, RecordingSink, ScriptedTokens, android_token, ios_token

from sim.backend.push_gateways import gateway_sender_factory
from sim.gateways.hooks import TokenState, TokenVerdict
from sim.scenario.schema import FrequencyCap, Journey, Match, Trigger

SIM_START = datetime.datetime(2026, 11, 27, 12, 0, tzinfo=datetime.UTC).timestamp()
DELAY = 1800.0


@pytest.fixture
def gateways(credentials):
    running = GatewayLoop(credentials)
    yield running
    running.close()


class NullListener:
    """A push listener that ignores every report and finds no registration for any token."""

    def push_outcome(self, outcome) -> None:
        return None

    def prune(self, request) -> None:
        return None

    async def registered_at(self, token: str) -> float | None:
        return None


def cart_recovery() -> Journey:
    return Journey(
        name="cart_recovery",
        trigger=Trigger(event="added_to_cart"),
        delay=DELAY,
        exit=Match(event="order_completed", match="cart_id"),
        frequency_cap=FrequencyCap(count=0),
        title="Still thinking it over?",
        body="Your cart is saved.",
        link="shop://cart/{cart_id}",
    )


def accepted_payloads(sink: RecordingSink) -> list[tuple[str, dict, float]]:
    return [
        (request.token, json.loads(request.payload), request.received_at)
        for request, _ in sink.accepted()
    ]


def test_cart_push_reaches_both_gateways(make_journey_backend, gateways):
    factory = gateway_sender_factory(
        apns=gateways.apns.settings, fcm=gateways.fcm.settings, sender_config=FAST_CONFIG
    )
    backend, _ = make_journey_backend([cart_recovery()], sender=factory)
    iphone, pixel, other = ios_token(1), android_token(1), android_token(2)
    post_epoch(backend, SIM_START)
    with backend.track() as track:
        add_device(track, "ann", iphone, "ios")
        add_device(track, "ann", pixel, "android")
        add_device(track, "bob", other, "android")
        triggered_at = send_event(track, "ann", "added_to_cart", sku="s", qty=1, cart_id="c1")

    wait_until(lambda: gateways.apns.sink.accepted() and gateways.fcm.sink.accepted())
    [run] = wait_until(lambda: [r for r in runs(backend) if r["state"] == "done"])
    assert run["outcome"] == "sent"
    sends = backend.query("SELECT delivery_id, token, outcome FROM journey_sends")
    delivery_ids = {row["token"]: row["delivery_id"] for row in sends}
    assert {row["outcome"] for row in sends} == {"accepted"}

    [(apns_token, apns_payload, apns_at)] = accepted_payloads(gateways.apns.sink)
    assert apns_token == iphone
    assert apns_payload["CIO"]["push"]["link"] == "shop://cart/c1"
    assert apns_payload["aps"]["alert"]["title"] == "Still thinking it over?"
    assert apns_payload["CIO-Delivery-ID"] == delivery_ids[iphone]

    [(fcm_token, fcm_request, fcm_at)] = accepted_payloads(gateways.fcm.sink)
    assert fcm_token == pixel
    assert fcm_request["message"]["data"]["link"] == "shop://cart/c1"
    assert fcm_request["message"]["data"]["CIO-Delivery-ID"] == delivery_ids[pixel]

    for received_at in (apns_at, fcm_at):
        assert received_at >= triggered_at + DELAY / TIME_SCALE - 0.05


def test_order_first_reaches_no_gateway(make_journey_backend, gateways):
    factory = gateway_sender_factory(
        apns=gateways.apns.settings, fcm=gateways.fcm.settings, sender_config=FAST_CONFIG
    )
    backend, _ = make_journey_backend([cart_recovery()], sender=factory)
    post_epoch(backend, SIM_START)
    with backend.track() as track:
        add_device(track, "ann", ios_token(3), "ios")
        send_event(track, "ann", "added_to_cart", sku="s", qty=1, cart_id="c1")
        send_event(track, "ann", "order_completed", order_id="o1", cart_id="c1", items=1)

    [run] = wait_until(lambda: [r for r in runs(backend) if r["state"] == "done"])
    assert run["outcome"] == "exited"
    assert gateways.apns.sink.records == []


@pytest.mark.parametrize("no_pruning", [False, True])
def test_unregistered_token_is_pruned(make_journey_backend, gateways, no_pruning):
    factory = gateway_sender_factory(
        apns=gateways.apns.settings, fcm=gateways.fcm.settings, sender_config=FAST_CONFIG
    )
    backend, _ = make_journey_backend(
        [cart_recovery()], sender=factory, no_pruning_after_410=no_pruning
    )
    token = ios_token(4)
    post_epoch(backend, SIM_START)
    with backend.track() as track:
        add_device(track, "ann", token, "ios")
    # The token died after it was registered, so a 410 for it must prune it.
    died_at_ms = int(time.time() * 1000) + 1
    tokens: ScriptedTokens = gateways.apns.tokens
    tokens.verdicts[token] = TokenVerdict(TokenState.DEAD, died_at_ms)
    with backend.track() as track:
        send_event(track, "ann", "added_to_cart", sku="s", qty=1, cart_id="c1")

    [run] = wait_until(lambda: [r for r in runs(backend) if r["state"] == "done"])
    assert run["outcome"] == "failed"
    [send] = backend.query("SELECT outcome, status_code, reason FROM journey_sends")
    assert (send["outcome"], send["status_code"]) == ("rejected", 410)
    time.sleep(0.2)
    [device] = backend.query("SELECT status FROM devices WHERE token = ?", (token,))
    assert device["status"] == ("active" if no_pruning else "pruned")


def test_sender_switches_pass_through(tmp_path, gateways):
    config = dataclasses.replace(
        default_config(tmp_path / "backend.db"),
        retry_without_backoff=True,
        no_pruning_after_410=True,
    )
    factory = gateway_sender_factory(fcm=gateways.fcm.settings, sender_config=FAST_CONFIG)
    sender = factory(config, NullListener())
    assert sender.sender.config.retry_without_backoff is True
    assert sender.sender.config.no_pruning_after_410 is True
    assert sender.sender.config.workers == FAST_CONFIG.workers
