"""The push sender against the mock FCM gateway over TLS, with OAuth from the service account."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time

import pytest
from sender_support import (
    FAST_CONFIG,
    FAST_RETRY,
    Recorder,
    android_token,
    fcm_rig,
    job_for,
    run,
    send_all,
    wait_until,
)

from sim.backend.sender import PushSender
from sim.backend.sender_jobs import PushService, SendOutcome
from sim.gateways.hooks import TokenState, TokenVerdict


def _sender(rig, recorder: Recorder, config=FAST_CONFIG, **options) -> PushSender:
    return PushSender(
        config,
        fcm=rig.settings,
        on_outcome=recorder.on_outcome,
        on_prune=recorder.on_prune,
        **options,
    )


def test_fcm_push_delivered(credentials):
    recorder = Recorder()
    token = android_token(1)
    job = job_for(PushService.FCM, token)

    async def scenario():
        async with fcm_rig(credentials) as rig:
            sender = _sender(rig, recorder)
            await send_all(sender, [job])
            return rig, sender

    rig, sender = run(scenario())

    result = recorder.outcome_of(job)
    assert result.outcome is SendOutcome.DELIVERED
    assert result.status == 200
    assert result.attempts == 1
    assert result.message_id.startswith(f"projects/{credentials.fcm_project_id}/messages/")
    [(request, outcome)] = rig.sink.accepted()
    assert request.token == token
    assert result.message_id.endswith(outcome.delivery_id)
    assert recorder.prunes == []
    assert sender.metrics.value("sends_total", service="fcm", outcome="delivered") == 1


def test_fcm_payload_customer_io_shape(credentials):
    token = android_token(2)
    job = job_for(PushService.FCM, token, delivery_id="dlv-7", delivery_token="secret-7")

    async def scenario():
        async with fcm_rig(credentials) as rig:
            await send_all(_sender(rig, Recorder()), [job])
            return rig

    rig = run(scenario())

    [(request, _)] = rig.sink.accepted()
    message = json.loads(request.payload)["message"]
    assert message["token"] == token
    assert message["android"] == {"priority": "high"}
    assert message["data"] == {
        "link": "shop://cart/c-42",
        "title": "Still thinking it over?",
        "body": "Your cart is waiting",
        "CIO-Delivery-ID": "dlv-7",
        "CIO-Delivery-Token": "secret-7",
    }


def test_fcm_access_token_cached(credentials):
    recorder = Recorder()
    jobs = [job_for(PushService.FCM, android_token(10 + number)) for number in range(6)]

    async def scenario():
        async with fcm_rig(credentials) as rig:
            sender = _sender(rig, recorder)
            await send_all(sender, jobs)
            return sender

    sender = run(scenario())

    assert recorder.outcomes() == [SendOutcome.DELIVERED] * 6
    assert sender.transports[PushService.FCM].tokens.fetches == 1


def test_fcm_expired_access_token_refetched(credentials):
    # The sender's clock runs 100 s behind, so it still trusts a 1-second access token that
    # the gateway already treats as expired. The 401 must make it fetch a new one.
    recorder = Recorder()
    first, second = (job_for(PushService.FCM, android_token(20 + n)) for n in range(2))

    async def scenario():
        async with fcm_rig(credentials, access_token_lifetime=1) as rig:
            sender = _sender(rig, recorder, config=dataclasses.replace(FAST_CONFIG, workers=1))
            transport = sender.transports[PushService.FCM]
            transport.tokens.clock = lambda: time.time() - 100.0
            transport.tokens.refresh_margin = 0.0
            await sender.start()
            await sender.submit(first)
            await wait_until(lambda: len(recorder.results) == 1)
            await asyncio.sleep(1.2)
            await sender.submit(second)
            await sender.close()
            return rig, transport, sender

    rig, transport, sender = run(scenario())

    assert recorder.outcome_of(first).outcome is SendOutcome.DELIVERED
    result = recorder.outcome_of(second)
    assert result.outcome is SendOutcome.DELIVERED
    assert result.attempts == 2
    assert transport.tokens.fetches == 2
    assert [o.reason for _, o in rig.sink.for_token(second.token)] == ["UNAUTHENTICATED", None]
    assert sender.metrics.value("retries_total", reason="ACCESS_TOKEN_EXPIRED") == 1


def test_fcm_backoff_on_503(credentials):
    recorder = Recorder()
    token = android_token(30)
    job = job_for(PushService.FCM, token)

    async def scenario():
        async with fcm_rig(credentials) as rig:
            rig.faults.fail(token, 2, 503)
            sender = _sender(rig, recorder)
            await send_all(sender, [job])
            return rig, sender

    rig, sender = run(scenario())

    result = recorder.outcome_of(job)
    assert result.outcome is SendOutcome.DELIVERED
    assert result.attempts == 3
    assert [o.status for _, o in rig.sink.for_token(token)] == [503, 503, 200]
    assert sender.metrics.value("retries_total", service="fcm", reason="UNAVAILABLE") == 2
    assert sender.metrics.value("attempts_total", service="fcm", status="503") == 2


@pytest.mark.parametrize("status", [503, 429])
def test_fcm_retry_after_honoured(credentials, status):
    recorder = Recorder()
    token = android_token(40 + status)
    job = job_for(PushService.FCM, token)

    async def scenario():
        async with fcm_rig(credentials) as rig:
            rig.faults.fail(token, 1, status, retry_after=1)
            await send_all(_sender(rig, recorder), [job])
            return rig

    rig = run(scenario())

    assert recorder.outcome_of(job).outcome is SendOutcome.DELIVERED
    [(first, rejected), (second, accepted)] = rig.sink.for_token(token)
    assert rejected.status == status
    assert rejected.retry_after == 1
    assert accepted.status == 200
    # Backoff alone would wait at most FAST_RETRY.cap (0.05 s).
    assert second.received_at - first.received_at >= 1.0


def test_fcm_retry_bound_attempts(credentials):
    recorder = Recorder()
    token = android_token(50)
    job = job_for(PushService.FCM, token)

    async def scenario():
        async with fcm_rig(credentials) as rig:
            rig.faults.fail(token, 100, 500)
            sender = _sender(rig, recorder)
            await send_all(sender, [job])
            return rig, sender

    rig, sender = run(scenario())

    result = recorder.outcome_of(job)
    assert result.outcome is SendOutcome.FAILED
    assert result.reason == "INTERNAL"
    assert result.attempts == FAST_RETRY.max_attempts
    assert len(rig.sink.for_token(token)) == FAST_RETRY.max_attempts
    assert sender.metrics.value("retries_total") == FAST_RETRY.max_attempts - 1


def test_fcm_retry_bound_time(credentials):
    # A Retry-After beyond the time budget ends the job at once instead of sleeping past it.
    recorder = Recorder()
    token = android_token(51)
    job = job_for(PushService.FCM, token)
    retry = dataclasses.replace(FAST_RETRY, max_elapsed=2.0)
    config = dataclasses.replace(FAST_CONFIG, retry=retry)

    async def scenario():
        async with fcm_rig(credentials) as rig:
            rig.faults.fail(token, 100, 503, retry_after=30)
            started = time.monotonic()
            await send_all(_sender(rig, recorder, config=config), [job])
            return rig, time.monotonic() - started

    rig, elapsed = run(scenario())

    result = recorder.outcome_of(job)
    assert result.outcome is SendOutcome.FAILED
    assert result.attempts == 1
    assert len(rig.sink.for_token(token)) == 1
    assert elapsed < 2.0


def test_fcm_unregistered_pruned(credentials):
    recorder = Recorder()
    token = android_token(60)
    job = job_for(PushService.FCM, token)

    async def scenario():
        async with fcm_rig(credentials) as rig:
            rig.tokens.verdicts[token] = TokenVerdict(TokenState.DEAD)
            sender = _sender(rig, recorder)
            await send_all(sender, [job])
            return sender

    sender = run(scenario())

    result = recorder.outcome_of(job)
    assert result.outcome is SendOutcome.PRUNED
    assert result.status == 404
    assert result.reason == "UNREGISTERED"
    assert recorder.prunes == [(token, "UNREGISTERED")]
    assert sender.metrics.value("prunes_total", service="fcm", reason="UNREGISTERED") == 1


def test_fcm_unregistered_kept_after_reregistration(credentials):
    # The device registers the token again while the send is in flight, so the lookup at
    # decision time returns a registration newer than the send.
    recorder = Recorder()
    token = android_token(61)
    job = job_for(PushService.FCM, token)

    async def scenario():
        async with fcm_rig(credentials) as rig:
            rig.tokens.verdicts[token] = TokenVerdict(TokenState.DEAD)
            sender = _sender(rig, recorder, registration_lookup=lambda _token: time.time())
            await send_all(sender, [job])
            return sender

    sender = run(scenario())

    result = recorder.outcome_of(job)
    assert result.outcome is SendOutcome.KEPT
    assert result.reason == "UNREGISTERED"
    assert recorder.prunes == []
    assert sender.metrics.value("kept_total", why="registered_again") == 1


def test_fcm_unregistered_pruned_when_lookup_older(credentials):
    recorder = Recorder()
    token = android_token(62)
    job = job_for(PushService.FCM, token)

    async def lookup(_token: str) -> float:
        return time.time() - 3600.0

    async def scenario():
        async with fcm_rig(credentials) as rig:
            rig.tokens.verdicts[token] = TokenVerdict(TokenState.DEAD)
            await send_all(_sender(rig, recorder, registration_lookup=lookup), [job])

    run(scenario())

    assert recorder.outcome_of(job).outcome is SendOutcome.PRUNED
    assert recorder.prunes == [(token, "UNREGISTERED")]


@pytest.mark.parametrize(
    ("state", "reason"),
    [
        (TokenState.WRONG_AUDIENCE, "SENDER_ID_MISMATCH"),
        (TokenState.UNKNOWN, "INVALID_ARGUMENT"),
    ],
)
def test_fcm_invalid_token_pruned(credentials, state, reason):
    recorder = Recorder()
    token = android_token(70)
    job = job_for(PushService.FCM, token)

    async def scenario():
        async with fcm_rig(credentials) as rig:
            rig.tokens.verdicts[token] = TokenVerdict(state)
            await send_all(_sender(rig, recorder), [job])

    run(scenario())

    result = recorder.outcome_of(job)
    assert result.outcome is SendOutcome.PRUNED
    assert result.reason == reason
    assert result.attempts == 1
    assert recorder.prunes == [(token, reason)]


def test_fcm_quota_for_one_device_retried(credentials):
    # QUOTA_EXCEEDED (429) for a throttled device is retried, never pruned.
    recorder = Recorder()
    token = android_token(71)
    job = job_for(PushService.FCM, token)

    async def scenario():
        async with fcm_rig(credentials) as rig:
            rig.tokens.verdicts[token] = TokenVerdict(TokenState.THROTTLED)
            await send_all(_sender(rig, recorder), [job])

    run(scenario())

    result = recorder.outcome_of(job)
    assert result.outcome is SendOutcome.FAILED
    assert result.reason == "QUOTA_EXCEEDED"
    assert result.attempts == FAST_RETRY.max_attempts
    assert recorder.prunes == []


def test_fcm_gateway_down_bounded(credentials):
    # With the gateway stopped, the access token request fails; the sender retries within its
    # bound and reports the job failed.
    recorder = Recorder()
    job = job_for(PushService.FCM, android_token(80))

    async def scenario():
        async with fcm_rig(credentials) as rig:
            pass
        await send_all(_sender(rig, recorder), [job])

    run(scenario())

    result = recorder.outcome_of(job)
    assert result.outcome is SendOutcome.FAILED
    assert result.reason == "oauth_error"
    assert result.status is None
    assert result.attempts == FAST_RETRY.max_attempts
