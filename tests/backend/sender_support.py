"""Helpers for the push sender suites: scripted gateway policies, running gateways, a recorder."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from sim.backend.sender import PushSender, SenderConfig
from sim.backend.sender_apns import ApnsSettings
from sim.backend.sender_fcm import FcmSettings
from sim.backend.sender_jobs import PushJob, PushService, SendOutcome, SendResult
from sim.backend.sender_retry import RetryPolicy
from sim.formats.tokens import derive_run_key, issue_token
from sim.gateways import pki
from sim.gateways.apns_auth import ApnsAuth
from sim.gateways.apns_rules import ApnsRules
from sim.gateways.apns_server import ApnsGateway, ScriptFactory
from sim.gateways.fcm_rules import FcmRules
from sim.gateways.fcm_server import FcmGateway
from sim.gateways.hooks import (
    ALIVE,
    NO_FAULT,
    FaultAction,
    Outcome,
    PushRequest,
    TokenVerdict,
)

RUN_KEY = derive_run_key(20261204)

# Fast retries, so a suite with many retried sends stays within seconds.
FAST_RETRY = RetryPolicy(max_attempts=4, max_elapsed=10.0, base=0.01, cap=0.05)
FAST_CONFIG = SenderConfig(workers=2, queue_size=50, attempt_timeout=5.0, retry=FAST_RETRY)


def run(coroutine: Coroutine[Any, Any, Any], timeout: float = 30.0) -> Any:
    """Run ``coroutine`` on a new event loop, failing after ``timeout`` seconds."""
    return asyncio.run(asyncio.wait_for(coroutine, timeout))


def android_token(group_id: int, sequence: int = 0) -> str:
    """Return a well-formed FCM registration token."""
    return issue_token(RUN_KEY, "android", group_id, sequence)


def ios_token(group_id: int, sequence: int = 0) -> str:
    """Return a well-formed APNs device token."""
    return issue_token(RUN_KEY, "ios", group_id, sequence)


def job_for(service: PushService, token: str, **fields: Any) -> PushJob:
    """Return a job registered one minute ago, with a cart link and delivery ids."""
    fields.setdefault("registered_at", time.time() - 60.0)
    fields.setdefault("title", "Still thinking it over?")
    fields.setdefault("body", "Your cart is waiting")
    fields.setdefault("link", "shop://cart/c-42")
    fields.setdefault("delivery_id", "dlv-" + token[:6])
    fields.setdefault("delivery_token", "tok-" + token[:6])
    return PushJob(service, token, **fields)


class ScriptedTokens:
    """A token policy with a fixed verdict per token, ALIVE otherwise."""

    def __init__(self) -> None:
        self.verdicts: dict[str, TokenVerdict] = {}

    def check(self, request: PushRequest) -> TokenVerdict:
        return self.verdicts.get(request.token, ALIVE)


class FailFirst:
    """A fault policy that rejects the first ``count`` pushes to each scripted token."""

    def __init__(self) -> None:
        self.plans: dict[str, tuple[int, FaultAction]] = {}
        self.seen: dict[str, int] = {}

    def fail(self, token: str, count: int, status: int, retry_after: int | None = None) -> None:
        self.plans[token] = (count, FaultAction(status=status, retry_after=retry_after))

    def delay(self, token: str, seconds: float) -> None:
        self.plans[token] = (10**9, FaultAction(delay=seconds))

    def action(self, request: PushRequest) -> FaultAction:
        plan = self.plans.get(request.token)
        if plan is None:
            return NO_FAULT
        seen = self.seen.get(request.token, 0)
        self.seen[request.token] = seen + 1
        count, action = plan
        return action if seen < count else NO_FAULT


class RecordingSink:
    """A delivery sink that keeps every push the gateway responded to."""

    def __init__(self) -> None:
        self.records: list[tuple[PushRequest, Outcome]] = []
        self._lock = threading.Lock()

    def record(self, request: PushRequest, outcome: Outcome) -> None:
        with self._lock:
            self.records.append((request, outcome))

    def for_token(self, token: str) -> list[tuple[PushRequest, Outcome]]:
        return [(request, outcome) for request, outcome in self.records if request.token == token]

    def accepted(self) -> list[tuple[PushRequest, Outcome]]:
        return [(request, outcome) for request, outcome in self.records if outcome.status == 200]


@dataclass
class Recorder:
    """The journey engine's side of the sender: every result and every prune, in order."""

    results: list[SendResult] = field(default_factory=list)
    prunes: list[tuple[str, str]] = field(default_factory=list)

    def on_outcome(self, result: SendResult) -> None:
        self.results.append(result)

    async def on_prune(self, token: str, reason: str) -> None:
        self.prunes.append((token, reason))

    def outcome_of(self, job: PushJob) -> SendResult:
        matches = [result for result in self.results if result.job.job_id == job.job_id]
        assert len(matches) == 1, f"job {job.job_id} has {len(matches)} results: {matches}"
        return matches[0]

    def outcomes(self) -> list[SendOutcome]:
        return [result.outcome for result in self.results]


@dataclass
class FcmRig:
    """A running FCM gateway with scripted policies, and sender settings pointing at it."""

    gateway: FcmGateway
    settings: FcmSettings
    tokens: ScriptedTokens
    faults: FailFirst
    sink: RecordingSink


@asynccontextmanager
async def fcm_rig(credentials: pki.Credentials, **gateway_options: Any) -> AsyncIterator[FcmRig]:
    """Start an FCM gateway on 127.0.0.1 with TLS from the test's CA, and stop it after."""
    tokens, faults, sink = ScriptedTokens(), FailFirst(), RecordingSink()
    rules = FcmRules(token_policy=tokens, fault_policy=faults)
    gateway = FcmGateway(
        credentials,
        rules=rules,
        sink=sink,
        plain_port=None,
        graceful_timeout=1.0,
        **gateway_options,
    )
    ports = await gateway.start()
    settings = FcmSettings(
        service_account=str(credentials.fcm_service_account),
        send_url=f"{ports.base_url}/v1/projects/{credentials.fcm_project_id}/messages:send",
        token_uri=ports.token_uri,
        ca_cert=str(credentials.ca_cert),
    )
    try:
        yield FcmRig(gateway, settings, tokens, faults, sink)
    finally:
        await gateway.stop()


@dataclass
class ApnsRig:
    """A running APNs gateway with scripted policies, and sender settings pointing at it."""

    gateway: ApnsGateway
    settings: ApnsSettings
    tokens: ScriptedTokens
    faults: FailFirst
    sink: RecordingSink


@asynccontextmanager
async def apns_rig(
    credentials: pki.Credentials, *, script: ScriptFactory | None = None
) -> AsyncIterator[ApnsRig]:
    """Start an APNs gateway on 127.0.0.1 with TLS from the test's CA, and stop it after."""
    tokens, faults, sink = ScriptedTokens(), FailFirst(), RecordingSink()
    rules = ApnsRules(
        auth=ApnsAuth.from_credentials(credentials),
        tokens=tokens,
        faults=faults,
        sink=sink,
        topics={credentials.apns_team_id: frozenset({credentials.apns_topic})},
    )
    gateway = ApnsGateway(rules, ssl_context=pki.server_ssl_context(credentials), script=script)
    port = await gateway.start()
    settings = ApnsSettings(
        key_path=str(credentials.apns_key),
        key_id=credentials.apns_key_id,
        team_id=credentials.apns_team_id,
        topic=credentials.apns_topic,
        host="127.0.0.1",
        port=port,
        ca_cert=str(credentials.ca_cert),
    )
    try:
        yield ApnsRig(gateway, settings, tokens, faults, sink)
    finally:
        await gateway.stop(grace=1.0)


async def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``condition`` every 10 ms until it holds, failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"condition not met within {timeout} s"
        await asyncio.sleep(0.01)


async def send_all(sender: PushSender, jobs: list[PushJob]) -> None:
    """Start ``sender``, submit ``jobs``, and close it once every job has a result."""
    await sender.start()
    for job in jobs:
        await sender.submit(job)
    await sender.close()
