"""Builders shared by the gateway world's tests: tokens, pushes, run configs and a live server."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time

import httpx

from sim.formats.epoch import Epoch
from sim.formats.tokens import derive_run_key, issue_token
from sim.gateways.control import serve_control, stop_control
from sim.gateways.hooks import Outcome, PushRequest, Service
from sim.gateways.run import RunConfig
from sim.gateways.world import GatewayWorld

RUN_KEY = derive_run_key(7)
TOPIC = "com.example.shop"
PROJECT = "pushsim-shop"
SIM_T0 = 1_795_000_000.0  # 2026-11-18, an arbitrary simulated start


def apns_token(
    group_id: int, sequence: int = 0, run_key: bytes = RUN_KEY, environment: str = "production"
) -> str:
    return issue_token(run_key, "ios", group_id, sequence, environment)


def fcm_token(group_id: int, sequence: int = 0, run_key: bytes = RUN_KEY) -> str:
    return issue_token(run_key, "android", group_id, sequence)


def push(
    token: str,
    *,
    service: Service = Service.APNS,
    received_at: float | None = None,
    audience: str | None = None,
    payload: dict | bytes | None = None,
    message_id: str = "",
    headers: dict[str, str] | None = None,
    environment: str | None = None,
) -> PushRequest:
    """Return a push as a wire server would hand it to the seams."""
    if audience is None:
        audience = TOPIC if service is Service.APNS else PROJECT
    if payload is None:
        payload = {"aps": {"alert": "Your cart is waiting"}}
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return PushRequest(
        service=service,
        token=token,
        audience=audience,
        headers=headers or {},
        payload=body,
        connection_id="conn-1",
        received_at=time.time() if received_at is None else received_at,
        message_id=message_id,
        environment=environment,
    )


def accepted(delivery_id: str, **fields) -> Outcome:
    return Outcome(status=200, delivery_id=delivery_id, **fields)


def run_config(
    *,
    wall_t0: float | None = None,
    time_scale: float = 1.0,
    shard_count: int = 4,
    mode: str = "registry",
) -> RunConfig:
    epoch = Epoch(wall_t0=time.time() if wall_t0 is None else wall_t0, sim_t0=SIM_T0,
                  time_scale=time_scale)  # fmt: skip
    return RunConfig(epoch, RUN_KEY, shard_count, mode, TOPIC, PROJECT)


def wait_for(condition, timeout: float = 10.0, interval: float = 0.01) -> None:
    """Poll ``condition()`` until it is true, failing after ``timeout`` wall seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


@contextlib.asynccontextmanager
async def control_client(world: GatewayWorld, *, auth: bool = True):
    """Serve ``world``'s control API on a free loopback port and yield an httpx client for it."""
    runner, port = await serve_control(world, "127.0.0.1", 0)
    headers = {"Authorization": f"Bearer {world.control_token}"} if auth else {}
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=30.0
        ) as client:
            yield client
    finally:
        await stop_control(runner)


def run(coroutine):
    """Run a test coroutine on a fresh event loop."""
    return asyncio.run(coroutine)


_delivery_numbers = itertools.count(1)

_REJECTIONS = {
    Service.APNS: {
        "unknown": (400, "BadDeviceToken"),
        "dead": (410, "Unregistered"),
        "wrong_audience": (400, "DeviceTokenNotForTopic"),
        "throttled": (429, "TooManyRequests"),
    },
    Service.FCM: {
        "unknown": (400, "INVALID_ARGUMENT"),
        "dead": (404, "UNREGISTERED"),
        "wrong_audience": (403, "SENDER_ID_MISMATCH"),
        "throttled": (429, "QUOTA_EXCEEDED"),
    },
}


def answer(world: GatewayWorld, request: PushRequest) -> Outcome:
    """Answer ``request`` through the world's seams in a wire server's order, and record it.

    The fault policy goes first because a scripted rejection replaces the rules. The latency it
    adds is recorded, not slept, since the tests drive time through ``received_at``.
    """
    action = world.fault_policy.action(request)
    if action.status is not None:
        outcome = Outcome(
            action.status,
            action.reason,
            retry_after=action.retry_after,
            added_latency=action.delay,
            fault=action.fault,
        )
    else:
        verdict = world.token_policy(request.service).check(request)
        if verdict.state.value == "alive":
            delivery_id = f"d-{request.service.value}-{next(_delivery_numbers)}"
            outcome = Outcome(200, delivery_id=delivery_id)
        else:
            status, reason = _REJECTIONS[request.service][verdict.state.value]
            outcome = Outcome(status, reason, timestamp_ms=verdict.died_at_ms)
        outcome.added_latency = action.delay
        outcome.fault = action.fault
    world.sink.record(request, outcome)
    return outcome
