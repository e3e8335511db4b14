"""Helpers for the mock APNs gateway tests: credentials, tokens, policies and a threaded gateway."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import jwt

from sim.formats.tokens import derive_run_key, issue_token
from sim.gateways.apns_auth import ApnsAuth
from sim.gateways.apns_rules import ApnsRules
from sim.gateways.apns_server import ApnsGateway
from sim.gateways.hooks import (
    ALIVE,
    NO_FAULT,
    FaultAction,
    Outcome,
    PushRequest,
    TokenVerdict,
)

RUN_KEY = derive_run_key(7)
TOPIC = "com.example.shop"


def device_token(number: int) -> str:
    """Return an issued APNs device token for shopper group ``number``."""
    return issue_token(RUN_KEY, "ios", number, 0)


def provider_token(credentials, *, iat: float | None = None, key_id=None, team_id=None) -> str:
    """Return an ES256 provider token signed with the credentials' .p8 key."""
    return jwt.encode(
        {"iss": team_id or credentials.apns_team_id, "iat": int(iat or time.time())},
        credentials.apns_key.read_text(),
        algorithm="ES256",
        headers={"kid": key_id or credentials.apns_key_id},
    )


class RecordingSink:
    """A DeliverySink that keeps every answered push."""

    def __init__(self) -> None:
        self.records: list[tuple[PushRequest, Outcome]] = []
        self._lock = threading.Lock()

    def record(self, request: PushRequest, outcome: Outcome) -> None:
        with self._lock:
            self.records.append((request, outcome))

    def accepted(self) -> list[tuple[PushRequest, Outcome]]:
        with self._lock:
            return [(r, o) for r, o in self.records if o.status == 200]


@dataclass
class ScriptedTokens:
    """A TokenPolicy that returns a fixed verdict per token, ALIVE otherwise."""

    verdicts: dict[str, TokenVerdict] = field(default_factory=dict)

    def check(self, request: PushRequest) -> TokenVerdict:
        return self.verdicts.get(request.token, ALIVE)


@dataclass
class ScriptedFaults:
    """A FaultPolicy that applies a fixed action per token."""

    actions: dict[str, FaultAction] = field(default_factory=dict)

    def action(self, request: PushRequest) -> FaultAction:
        return self.actions.get(request.token, NO_FAULT)


def make_rules(credentials, *, clock: Callable[[], float] = time.time, **options) -> ApnsRules:
    """Return rules that accept the credentials' key, with the default topic allowed."""
    auth = ApnsAuth.from_credentials(credentials, clock=clock)
    options.setdefault("topics", {credentials.apns_team_id: frozenset({TOPIC})})
    return ApnsRules(auth=auth, **options)


class GatewayThread:
    """Runs an ApnsGateway on its own event loop in a daemon thread, for synchronous clients."""

    def __init__(self, factory: Callable[[], ApnsGateway]) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.gateway: ApnsGateway = self.call(factory)
        self.port: int = self.run(self.gateway.start())

    def call(self, function: Callable):
        """Run a plain function on the gateway's loop and return its result."""

        async def wrapper():
            return function()

        return self.run(wrapper())

    def run(self, coroutine, timeout: float = 10.0):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        self.run(self.gateway.stop(grace=1.0))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        self.loop.close()
