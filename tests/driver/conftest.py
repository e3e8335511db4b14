"""A stand-in backend for driver tests: 200 to everything, stalling for one identity in ten."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading

import pytest
from aiohttp import web

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
