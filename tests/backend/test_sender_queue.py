"""The sender's lifecycle: backpressure, drops, shutdown, config wiring and failing callbacks."""

from __future__ import annotations

import asyncio
import dataclasses
import logging

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
    wait_until,
)

from sim.backend.sender import PushSender, settings_from_gateway_config
from sim.backend.sender_jobs import PushService, SendOutcome
from sim.formats.gateway_config import ApnsEndpoint, FcmEndpoint, GatewayConfig
from sim.gateways.hooks import TokenState, TokenVerdict

# One worker and room for two queued jobs, so a slow first send fills the queue.
SMALL_CONFIG = dataclasses.replace(FAST_CONFIG, workers=1, queue_size=2)


def _jobs(first_group: int, count: int):
    return [job_for(PushService.FCM, android_token(first_group + n)) for n in range(count)]


async def _busy_sender(rig, recorder: Recorder, slow_seconds: float = 0.5, **options):
    """Start a one-worker sender whose worker is busy with a slow first job."""
    sender = PushSender(
        SMALL_CONFIG,
        fcm=rig.settings,
        on_outcome=recorder.on_outcome,
        on_prune=recorder.on_prune,
        **options,
    )
    await sender.start()
    [slow] = _jobs(900, 1)
    rig.faults.delay(slow.token, slow_seconds)
    await sender.submit(slow)
    await wait_until(lambda: sender.metrics.value("in_flight", service="fcm") == 1)
    return sender, slow


def test_try_submit_drops_when_full(credentials, caplog):
    recorder = Recorder()
    queued, extra = _jobs(10, 2), _jobs(20, 1)[0]

    async def scenario():
        async with fcm_rig(credentials) as rig:
            sender, slow = await _busy_sender(rig, recorder)
            accepted = [sender.try_submit(job) for job in queued]
            depth = sender.metrics.value("queue_depth", service="fcm")
            dropped = sender.try_submit(extra)
            await sender.close()
            return sender, slow, accepted, depth, dropped

    with caplog.at_level(logging.WARNING, logger="sim.backend.sender"):
        sender, slow, accepted, depth, dropped = run(scenario())

    assert accepted == [True, True]
    assert depth == 2
    assert dropped is False
    assert sender.metrics.value("drops_total", service="fcm") == 1
    result = recorder.outcome_of(extra)
    assert result.outcome is SendOutcome.NOT_SENT
    assert result.reason == "queue_full"
    assert recorder.outcome_of(slow).outcome is SendOutcome.DELIVERED
    assert all(recorder.outcome_of(job).outcome is SendOutcome.DELIVERED for job in queued)
    assert any("dropped job " + extra.job_id in message for message in caplog.messages)


def test_submit_waits_when_full(credentials):
    recorder = Recorder()
    queued, waiting = _jobs(30, 2), _jobs(40, 1)[0]

    async def scenario():
        async with fcm_rig(credentials) as rig:
            sender, slow = await _busy_sender(rig, recorder)
            for job in queued:
                await sender.submit(job)
            submit = asyncio.create_task(sender.submit(waiting))
            await asyncio.sleep(0.2)
            blocked = not submit.done()
            await asyncio.wait_for(submit, 5.0)
            await sender.close()
            return sender, blocked

    sender, blocked = run(scenario())

    assert blocked
    assert recorder.outcome_of(waiting).outcome is SendOutcome.DELIVERED
    assert sender.metrics.value("drops_total") == 0
    assert len(recorder.results) == 4


def test_close_without_drain(credentials):
    recorder = Recorder()
    queued = _jobs(50, 2)

    async def scenario():
        async with fcm_rig(credentials) as rig:
            sender, slow = await _busy_sender(rig, recorder)
            for job in queued:
                await sender.submit(job)
            await sender.close(drain=False)
            return rig, sender, slow

    rig, sender, slow = run(scenario())

    # The send in flight finishes; the queued jobs are reported, never sent.
    assert recorder.outcome_of(slow).outcome is SendOutcome.DELIVERED
    for job in queued:
        result = recorder.outcome_of(job)
        assert result.outcome is SendOutcome.NOT_SENT
        assert result.reason == "shutdown"
        assert rig.sink.for_token(job.token) == []
    assert sender.metrics.value("queue_depth") == 0


def test_close_timeout_cancels_sends(credentials):
    recorder = Recorder()

    async def scenario():
        async with fcm_rig(credentials) as rig:
            sender, slow = await _busy_sender(rig, recorder, slow_seconds=3.0)
            await sender.close(timeout=0.1)
            return slow

    slow = run(scenario())

    result = recorder.outcome_of(slow)
    assert result.outcome is SendOutcome.FAILED
    assert result.reason == "shutdown"


def test_submit_rejected_after_close(credentials):
    async def scenario():
        async with fcm_rig(credentials) as rig:
            sender = PushSender(FAST_CONFIG, fcm=rig.settings)
            await sender.start()
            await sender.close()
            with pytest.raises(RuntimeError, match="closed"):
                await sender.submit(_jobs(60, 1)[0])
            with pytest.raises(RuntimeError, match="closed"):
                sender.try_submit(_jobs(61, 1)[0])

    run(scenario())


def test_submit_unconfigured_service(credentials):
    async def scenario():
        async with fcm_rig(credentials) as rig:
            async with PushSender(FAST_CONFIG, fcm=rig.settings) as sender:
                ios_job = dataclasses.replace(_jobs(70, 1)[0], service=PushService.APNS)
                with pytest.raises(ValueError, match="no apns settings"):
                    await sender.submit(ios_job)

    run(scenario())


def test_callback_errors_counted(credentials):
    jobs = _jobs(80, 3)
    delivered = []

    def on_outcome(result):
        delivered.append(result)
        raise RuntimeError("store is down")

    async def scenario():
        async with fcm_rig(credentials) as rig:
            sender = PushSender(FAST_CONFIG, fcm=rig.settings, on_outcome=on_outcome)
            await send_all(sender, jobs)
            return sender

    sender = run(scenario())

    assert [result.outcome for result in delivered] == [SendOutcome.DELIVERED] * 3
    assert sender.metrics.value("callback_errors_total", callback="on_outcome") == 3


def test_payload_too_large_not_sent(credentials):
    recorder = Recorder()
    job = job_for(PushService.FCM, android_token(90), body="x" * 5000)

    async def scenario():
        async with fcm_rig(credentials) as rig:
            await send_all(
                PushSender(FAST_CONFIG, fcm=rig.settings, on_outcome=recorder.on_outcome), [job]
            )
            return rig

    rig = run(scenario())

    result = recorder.outcome_of(job)
    assert result.outcome is SendOutcome.NOT_SENT
    assert result.reason == "payload_too_large"
    assert rig.sink.records == []


def test_sender_from_gateway_config(credentials, tmp_path):
    # The backend reads the gateways' config file, and one file must reach both mock services.
    recorder = Recorder()
    ios_job = job_for(PushService.APNS, ios_token(95))
    android_job = job_for(PushService.FCM, android_token(95))

    async def scenario():
        async with fcm_rig(credentials) as fcm, apns_rig(credentials) as apns:
            config = GatewayConfig(
                ca_cert=str(credentials.ca_cert),
                apns=ApnsEndpoint(
                    tls_port=apns.settings.port,
                    key_path=str(credentials.apns_key),
                    key_id=credentials.apns_key_id,
                    team_id=credentials.apns_team_id,
                    topic=credentials.apns_topic,
                ),
                fcm=FcmEndpoint(
                    service_account=str(credentials.fcm_service_account),
                    project_id=credentials.fcm_project_id,
                    send_url=fcm.settings.send_url,
                    token_uri=fcm.settings.token_uri,
                ),
            )
            path = tmp_path / "gateways.json"
            config.write(path)
            apns_settings, fcm_settings = settings_from_gateway_config(path)
            sender = PushSender(
                FAST_CONFIG,
                apns=apns_settings,
                fcm=fcm_settings,
                on_outcome=recorder.on_outcome,
            )
            await send_all(sender, [ios_job, android_job])
            return sender

    sender = run(scenario())

    assert recorder.outcome_of(ios_job).outcome is SendOutcome.DELIVERED
    assert recorder.outcome_of(android_job).outcome is SendOutcome.DELIVERED
    text = sender.metrics.render_prometheus()
    assert 'pushsim_sender_sends_total{outcome="delivered",reason="",service="apns"} 1' in text
    assert 'pushsim_sender_sends_total{outcome="delivered",reason="",service="fcm"} 1' in text


def test_registration_lookup_error_falls_back(credentials):
    # A failing lookup must not lose the job, so the job's own registration time decides.
    recorder = Recorder()
    job = _jobs(96, 1)[0]

    def lookup(token: str) -> float:
        raise RuntimeError("store is down")

    async def scenario():
        async with fcm_rig(credentials) as rig:
            rig.tokens.verdicts[job.token] = TokenVerdict(TokenState.DEAD)
            sender = PushSender(
                FAST_CONFIG,
                fcm=rig.settings,
                on_outcome=recorder.on_outcome,
                on_prune=recorder.on_prune,
                registration_lookup=lookup,
            )
            await send_all(sender, [job])
            return sender

    sender = run(scenario())

    assert recorder.outcome_of(job).outcome is SendOutcome.PRUNED
    assert recorder.prunes == [(job.token, "UNREGISTERED")]
    assert sender.metrics.value("callback_errors_total", callback="registration_lookup") == 1
