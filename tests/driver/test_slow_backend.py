"""A backend that stalls for some customers: only their devices fall behind schedule."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from collections import defaultdict

import pytest
from aiohttp import web

from tests.driver.locust_harness import run_locust, truth_records

STALL = 0.3  # wall seconds


def is_slow(identity: str) -> bool:
    """One customer or anonymous id in ten, chosen by a stable hash."""
    return hashlib.blake2b(identity.encode(), digest_size=2).digest()[0] % 10 == 0


def identity_of(request: web.Request, body: dict) -> str:
    parts = request.path.split("/")
    if len(parts) > 4 and parts[3] == "customers":
        return parts[4]
    return str(body.get("anonymous_id", ""))


@pytest.fixture
def stalling_backend():
    """An aiohttp server that answers 200 to everything, stalling for the slow identities."""

    async def handle(request: web.Request) -> web.Response:
        body = {}
        if request.can_read_body:
            try:
                body = json.loads(await request.read())
            except ValueError:
                body = {}
        if is_slow(identity_of(request, body)):
            await asyncio.sleep(STALL)
        return web.json_response({})

    loop = asyncio.new_event_loop()
    started = threading.Event()
    state = {}

    async def serve():
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        state["runner"] = runner
        state["port"] = runner.addresses[0][1]
        started.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(serve(), loop)
    started.wait(10)
    yield f"http://127.0.0.1:{state['port']}"
    asyncio.run_coroutine_threadsafe(state["runner"].cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)


def test_slow_customers_lag_alone(stalling_backend, tmp_path):
    result = run_locust(
        tmp_path / "run",
        stalling_backend,
        overrides=(
            "clock.duration=4h",
            "clock.time_scale=720",
            "clock.drain=10m",
            "clock.lag_budget=1s",
            "population.installs=400",
        ),
        users=60,
    )
    assert result.returncode == 0, result.stderr[-3000:]

    calls = [
        record
        for record in truth_records(tmp_path / "run")
        if record.get("kind") == "sdk_call" and record.get("status") in ("sent", "dropped")
    ]
    # A device is slow when any of its calls went out under a stalled identity: its later
    # calls wait behind that one in the device's own queue, as an SDK's would.
    slow_devices = {
        record["device"]
        for record in calls
        if is_slow(record.get("user_id") or record.get("anonymous_id") or "")
    }
    lags: dict[bool, list[float]] = defaultdict(list)
    drops: dict[bool, int] = defaultdict(int)
    for record in calls:
        slow = record["device"] in slow_devices
        if record["status"] == "dropped":
            drops[slow] += 1
        lags[slow].append(record.get("lag_ms", 0.0))

    def p99(values):
        ordered = sorted(values)
        return ordered[int(0.99 * (len(ordered) - 1))]

    assert len(lags[False]) > 500
    assert len(lags[True]) > 20
    # Devices of stalled customers queue behind their own slow calls.
    assert p99(lags[True]) > 250
    # Everyone else keeps the schedule: p99 lag well inside the one-second budget.
    assert p99(lags[False]) < 1000
    assert drops[False] == 0
