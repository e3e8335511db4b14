"""The push sender against the mock APNs gateway: aioapns over TLS with a provider token."""

from __future__ import annotations

import collections
import dataclasses
import json
import time

import pytest
from sender_support import (
    FAST_CONFIG,
    FAST_RETRY,
    Recorder,
    apns_rig,
    ios_token,
    job_for,
    run,
    send_all,
)

from sim.backend.sender import PushSender
from sim.backend.sender_apns import apns_id_for
from sim.backend.sender_jobs import PushService, SendOutcome
from sim.gateways.apns_server import ConnectionScript, GoawayPlan
from sim.gateways.hooks import TokenState, TokenVerdict


def _sender(rig, recorder: Recorder, config=FAST_CONFIG, **options) -> PushSender:
    return PushSender(
        config,
        apns=rig.settings,
        on_outcome=recorder.on_outcome,
        on_prune=recorder.on_prune,
        **options,
    )


def test_apns_push_delivered(credentials):
    recorder = Recorder()
    token = ios_token(1)
    job = job_for(PushService.APNS, token, delivery_id="dlv-1", delivery_token="secret-1")

    async def scenario():
        async with apns_rig(credentials) as rig:
            sender = _sender(rig, recorder)
            await send_all(sender, [job])
            return rig, sender

    rig, sender = run(scenario())

    result = recorder.outcome_of(job)
    assert result.outcome is SendOutcome.DELIVERED
    assert result.status == 200
    assert result.message_id.lower() == job.job_id
    [(request, _)] = rig.sink.accepted()
    assert request.token == token
    assert request.audience == credentials.apns_topic
    assert request.headers["apns-push-type"] == "alert"
    assert request.headers["apns-priority"] == "10"
    assert json.loads(request.payload) == {
        "aps": {
            "alert": {"title": "Still thinking it over?", "body": "Your cart is waiting"},
            "sound": "default",
        },
        "CIO": {
            "push": {
                "link": "shop://cart/c-42",
                "title": "Still thinking it over?",
                "body": "Your cart is waiting",
            }
        },
        "CIO-Delivery-ID": "dlv-1",
        "CIO-Delivery-Token": "secret-1",
    }
    assert sender.metrics.value("sends_total", service="apns", outcome="delivered") == 1


def test_apns_job_id_not_uuid(credentials):
    # Journey engines may use their own job ids; APNs still gets a valid apns-id.
    recorder = Recorder()
    job = job_for(PushService.APNS, ios_token(6), job_id="cart-42-step-1")

    async def scenario():
        async with apns_rig(credentials) as rig:
            await send_all(_sender(rig, recorder), [job])
            return rig

    rig = run(scenario())

    result = recorder.outcome_of(job)
    assert result.outcome is SendOutcome.DELIVERED
    assert result.message_id.lower() == apns_id_for("cart-42-step-1")
    [(request, _)] = rig.sink.accepted()
    assert request.message_id.lower() == apns_id_for("cart-42-step-1")


def test_apns_backoff_on_503(credentials):
    recorder = Recorder()
    token = ios_token(2)
    job = job_for(PushService.APNS, token)

    async def scenario():
        async with apns_rig(credentials) as rig:
            rig.faults.fail(token, 2, 503)
            sender = _sender(rig, recorder)
            await send_all(sender, [job])
            return rig, sender

    rig, sender = run(scenario())

    result = recorder.outcome_of(job)
    assert result.outcome is SendOutcome.DELIVERED
    assert result.attempts == 3
    assert [o.status for _, o in rig.sink.for_token(token)] == [503, 503, 200]
    assert sender.metrics.value("retries_total", reason="ServiceUnavailable") == 2


def test_apns_retry_bound(credentials):
    recorder = Recorder()
    token = ios_token(3)
    job = job_for(PushService.APNS, token)

    async def scenario():
        async with apns_rig(credentials) as rig:
            rig.faults.fail(token, 100, 429)
            await send_all(_sender(rig, recorder), [job])
            return rig

    rig = run(scenario())

    result = recorder.outcome_of(job)
    assert result.outcome is SendOutcome.FAILED
    assert result.reason == "TooManyRequests"
    assert result.attempts == FAST_RETRY.max_attempts
    assert len(rig.sink.for_token(token)) == FAST_RETRY.max_attempts


@pytest.mark.parametrize(
    ("registered_offset", "outcome"),
    [(-3600.0, SendOutcome.PRUNED), (+5.0, SendOutcome.KEPT)],
    ids=["registered-before", "registered-after"],
)
def test_apns_410_timestamp_rule(credentials, registered_offset, outcome):
    # The token died 10 s ago; the device registered it either an hour before or 5 s after.
    recorder = Recorder()
    token = ios_token(4)
    died_at = time.time() - 10.0
    job = job_for(PushService.APNS, token, registered_at=died_at + registered_offset)

    async def scenario():
        async with apns_rig(credentials) as rig:
            rig.tokens.verdicts[token] = TokenVerdict(TokenState.DEAD, int(died_at * 1000))
            sender = _sender(rig, recorder)
            await send_all(sender, [job])
            return sender

    sender = run(scenario())

    result = recorder.outcome_of(job)
    assert result.outcome is outcome
    assert result.status == 410
    assert result.reason == "Unregistered"
    assert result.timestamp_ms == int(died_at * 1000)
    if outcome is SendOutcome.PRUNED:
        assert recorder.prunes == [(token, "Unregistered")]
    else:
        assert recorder.prunes == []
        assert sender.metrics.value("kept_total", why="registered_again") == 1


@pytest.mark.parametrize(
    ("state", "reason"),
    [
        (TokenState.UNKNOWN, "BadDeviceToken"),
        (TokenState.WRONG_AUDIENCE, "DeviceTokenNotForTopic"),
    ],
)
def test_apns_invalid_token_pruned(credentials, state, reason):
    recorder = Recorder()
    token = ios_token(5)
    job = job_for(PushService.APNS, token)

    async def scenario():
        async with apns_rig(credentials) as rig:
            rig.tokens.verdicts[token] = TokenVerdict(state)
            await send_all(_sender(rig, recorder), [job])

    run(scenario())

    result = recorder.outcome_of(job)
    assert result.outcome is SendOutcome.PRUNED
    assert result.status == 400
    assert result.reason == reason
    assert recorder.prunes == [(token, reason)]


def test_apns_goaway_no_duplicates(credentials):
    # The first connection responds to 5 pushes, ignores 5 more and sends GOAWAY. The ignored
    # ones must arrive once on a new connection, and none may arrive twice.
    def script(number: int) -> ConnectionScript:
        if number == 1:
            return ConnectionScript(goaway=GoawayPlan(after_requests=5, ignored_requests=5))
        return ConnectionScript()

    recorder = Recorder()
    jobs = [job_for(PushService.APNS, ios_token(100 + number)) for number in range(30)]
    config = dataclasses.replace(FAST_CONFIG, workers=10)

    async def scenario():
        async with apns_rig(credentials, script=script) as rig:
            await send_all(_sender(rig, recorder, config=config), jobs)
            return rig

    rig = run(scenario())

    assert recorder.outcomes() == [SendOutcome.DELIVERED] * 30
    accepted = collections.Counter(request.token for request, _ in rig.sink.accepted())
    assert set(accepted) == {job.token for job in jobs}
    assert max(accepted.values()) == 1
    connections = {request.connection_id for request, _ in rig.sink.records}
    assert len(connections) >= 2


def test_apns_gateway_down_bounded(credentials):
    # aioapns sleeps 1 s after each failed connection, so this test allows two attempts only.
    recorder = Recorder()
    job = job_for(PushService.APNS, ios_token(200))
    retry = dataclasses.replace(FAST_RETRY, max_attempts=2)
    config = dataclasses.replace(FAST_CONFIG, retry=retry)

    async def scenario():
        async with apns_rig(credentials) as rig:
            settings = dataclasses.replace(rig.settings, max_connection_attempts=1)
        sender = PushSender(config, apns=settings, on_outcome=recorder.on_outcome)
        await send_all(sender, [job])
        return sender

    sender = run(scenario())

    result = recorder.outcome_of(job)
    assert result.outcome is SendOutcome.FAILED
    assert result.reason == "connection_error"
    assert result.attempts == 2
    assert sender.metrics.value("attempts_total", status="connection_error") == 2
