"""The naive switches: each flips the sender into a real backend mistake, shown on the wire."""

from __future__ import annotations

import dataclasses
import time

import pytest
from sender_support import (
    FAST_CONFIG,
    Recorder,
    android_token,
    apns_rig,
    fcm_rig,
    ios_token,
    job_for,
    run,
    send_all,
)

from sim.backend.sender import PushSender
from sim.backend.sender_jobs import PushService, SendOutcome
from sim.gateways.hooks import TokenState, TokenVerdict


@pytest.mark.parametrize("naive", [False, True], ids=["careful", "naive"])
def test_no_pruning_after_fcm_unregistered(credentials, naive):
    recorder = Recorder()
    token = android_token(1)
    job = job_for(PushService.FCM, token)
    config = dataclasses.replace(FAST_CONFIG, no_pruning_after_410=naive)

    async def scenario():
        async with fcm_rig(credentials) as rig:
            rig.tokens.verdicts[token] = TokenVerdict(TokenState.DEAD)
            sender = PushSender(
                config, fcm=rig.settings, on_outcome=recorder.on_outcome, on_prune=recorder.on_prune
            )
            await send_all(sender, [job])
            return sender

    sender = run(scenario())

    result = recorder.outcome_of(job)
    assert result.reason == "UNREGISTERED"
    if naive:
        assert result.outcome is SendOutcome.KEPT
        assert recorder.prunes == []
        assert sender.metrics.value("kept_total", why="pruning_disabled") == 1
    else:
        assert result.outcome is SendOutcome.PRUNED
        assert recorder.prunes == [(token, "UNREGISTERED")]


@pytest.mark.parametrize("naive", [False, True], ids=["careful", "naive"])
def test_no_pruning_after_apns_410(credentials, naive):
    recorder = Recorder()
    token = ios_token(2)
    died_at = time.time() - 10.0
    job = job_for(PushService.APNS, token, registered_at=died_at - 3600.0)
    config = dataclasses.replace(FAST_CONFIG, no_pruning_after_410=naive)

    async def scenario():
        async with apns_rig(credentials) as rig:
            rig.tokens.verdicts[token] = TokenVerdict(TokenState.DEAD, int(died_at * 1000))
            sender = PushSender(
                config,
                apns=rig.settings,
                on_outcome=recorder.on_outcome,
                on_prune=recorder.on_prune,
            )
            await send_all(sender, [job])

    run(scenario())

    result = recorder.outcome_of(job)
    assert result.status == 410
    if naive:
        assert result.outcome is SendOutcome.KEPT
        assert recorder.prunes == []
    else:
        assert result.outcome is SendOutcome.PRUNED
        assert recorder.prunes == [(token, "Unregistered")]


@pytest.mark.parametrize("naive", [False, True], ids=["careful", "naive"])
def test_no_pruning_keeps_bad_token_pruning(credentials, naive):
    # The switch concerns gone tokens only; an invalid token is pruned either way.
    recorder = Recorder()
    token = android_token(3)
    job = job_for(PushService.FCM, token)
    config = dataclasses.replace(FAST_CONFIG, no_pruning_after_410=naive)

    async def scenario():
        async with fcm_rig(credentials) as rig:
            rig.tokens.verdicts[token] = TokenVerdict(TokenState.WRONG_AUDIENCE)
            sender = PushSender(
                config, fcm=rig.settings, on_outcome=recorder.on_outcome, on_prune=recorder.on_prune
            )
            await send_all(sender, [job])

    run(scenario())

    assert recorder.prunes == [(token, "SENDER_ID_MISMATCH")]


@pytest.mark.parametrize("naive", [False, True], ids=["careful", "naive"])
def test_retry_without_backoff(credentials, naive):
    # Two 503 responses carry Retry-After: 1. The careful sender waits at least 1 s before each
    # retry, and the naive one sends again at once.
    recorder = Recorder()
    token = android_token(4)
    job = job_for(PushService.FCM, token)
    config = dataclasses.replace(FAST_CONFIG, retry_without_backoff=naive)

    async def scenario():
        async with fcm_rig(credentials) as rig:
            rig.faults.fail(token, 2, 503, retry_after=1)
            sender = PushSender(config, fcm=rig.settings, on_outcome=recorder.on_outcome)
            await send_all(sender, [job])
            return rig

    rig = run(scenario())

    assert recorder.outcome_of(job).outcome is SendOutcome.DELIVERED
    times = [request.received_at for request, _ in rig.sink.for_token(token)]
    gaps = [later - earlier for earlier, later in zip(times, times[1:], strict=False)]
    assert len(gaps) == 2
    if naive:
        assert max(gaps) < 0.5
    else:
        assert min(gaps) >= 1.0
