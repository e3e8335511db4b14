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
    """A DeliverySink that stores every recorded push and outcome."""

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


class RawH2Client:
    """A minimal blocking HTTP/2 client that records every frame the server sends.

    Tests use it where a real client would hide the framing: frame counts, settings, GOAWAY
    debug data, resets and deliberately broken input.
    """

    def __init__(
        self,
        port: int,
        *,
        ssl_context=None,
        server_name="api.sandbox.push.apple.com",
        settings: dict | None = None,
    ) -> None:
        import socket

        from h2.config import H2Configuration
        from h2.connection import H2Connection

        raw = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock = (
            ssl_context.wrap_socket(raw, server_hostname=server_name) if ssl_context else raw
        )
        self.h2 = H2Connection(H2Configuration(client_side=True, header_encoding="utf-8"))
        self.h2.initiate_connection()
        if settings:
            self.h2.update_settings(settings)
        self.frames: list = []  # hyperframe frames from the server, in order
        self.events: list = []
        self.closed = False
        self._buffer = b""
        self.flush()

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data:
            self.sock.sendall(data)

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(
        self,
        path: str,
        headers: list[tuple[str, str]],
        body: bytes = b"",
        *,
        authority: str | None = "api.sandbox.push.apple.com",
        method: str = "POST",
    ) -> int:
        stream_id = self.h2.get_next_available_stream_id()
        pseudo = [(":method", method), (":scheme", "https"), (":path", path)]
        if authority is not None:
            pseudo.append((":authority", authority))
        self.h2.send_headers(stream_id, pseudo + headers, end_stream=not body)
        if body:
            self.send_body(stream_id, body)
        self.flush()
        return stream_id

    def send_body(self, stream_id: int, body: bytes) -> None:
        """Send ``body`` as the window allows, reading window updates as needed."""
        offset = 0
        while offset < len(body):
            window = min(
                self.h2.local_flow_control_window(stream_id), self.h2.max_outbound_frame_size
            )
            if window <= 0:
                self.flush()
                self.read_once()
                continue
            chunk = body[offset : offset + window]
            offset += len(chunk)
            self.h2.send_data(stream_id, chunk, end_stream=offset >= len(body))
        self.flush()

    def read_once(self, timeout: float = 5.0) -> bool:
        from hyperframe.frame import Frame

        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return False
        except OSError:
            data = b""
        if not data:
            self.closed = True
            return False
        self._buffer += data
        while len(self._buffer) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(self._buffer[:9]))
            if len(self._buffer) < 9 + length:
                break
            frame.parse_body(memoryview(self._buffer[9 : 9 + length]))
            self.frames.append(frame)
            self._buffer = self._buffer[9 + length :]
        self.events.extend(self.h2.receive_data(data))
        self.flush()
        return True

    def wait_for(self, predicate, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.closed:
                return predicate()
            self.read_once(remaining)
        return True

    def stream_ended(self, stream_id: int) -> bool:
        from h2.events import StreamEnded, StreamReset

        return any(
            isinstance(e, StreamEnded | StreamReset) and e.stream_id == stream_id
            for e in self.events
        )

    def response(self, stream_id: int) -> tuple[dict[str, str], bytes]:
        from h2.events import DataReceived, ResponseReceived

        headers: dict[str, str] = {}
        body = b""
        for event in self.events:
            if isinstance(event, ResponseReceived) and event.stream_id == stream_id:
                headers = dict(event.headers)
            elif isinstance(event, DataReceived) and event.stream_id == stream_id:
                body += event.data
        return headers, body

    def frames_on(self, stream_id: int) -> list:
        return [f for f in self.frames if f.stream_id == stream_id]

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
