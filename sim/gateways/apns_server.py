"""The mock APNs gateway: an asyncio HTTP/2 server built directly on ``h2``.

It serves TLS (with ALPN ``h2``, or with no ALPN at all, as aioapns connects) or cleartext
HTTP/2 with prior knowledge (h2c). Each request goes to an ``ApnsRules`` object, and the server
only frames the response. A 200 is one HEADERS frame with END_STREAM. An error is a HEADERS
frame and exactly one DATA frame carrying ``{"reason": ...}``. Plain ASGI servers add an empty
DATA frame, which aioapns would try to parse as JSON, so the server uses h2 directly.

Every connection follows a ``ConnectionScript``, and the live ``ApnsConnection`` objects accept
commands (GOAWAY, stalls, stream limits), so tests and a fault timeline can drive the wire. With
``hooks`` (``GatewayWorld.hooks``) the gateway polls the fault timeline for GOAWAY storms and
stream limits and keeps the connection and stream gauges current.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import logging
import secrets
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    RequestReceived,
    SettingsAcknowledged,
    StreamEnded,
    StreamReset,
    WindowUpdated,
)
from h2.exceptions import FlowControlError, ProtocolError, StreamClosedError
from h2.settings import SettingCodes, Settings
from hpack import Encoder, NeverIndexedHeaderTuple

from sim.gateways import huffman_memo
from sim.gateways.apns_auth import ClientCertificate, Clock, ConnectionAuth
from sim.gateways.apns_reasons import reject
from sim.gateways.apns_rules import MAX_VOIP_PAYLOAD, ApnsRequest, ApnsResponse, ApnsRules
from sim.gateways.hooks import WorldHooks

if TYPE_CHECKING:
    from sim.gateways.faults import ConnectionDirectives

log = logging.getLogger(__name__)

DEFAULT_MAX_CONCURRENT_STREAMS = 1000
# h2 treats a stream over the advertised limit as a connection error, but RFC 9113 allows a
# stream error. The server advertises the APNs limit itself and resets each extra stream with
# REFUSED_STREAM, so h2 enforces only this ceiling.
_H2_STREAM_CEILING = 2**20
# Seconds to wait for the streams a GOAWAY keeps before closing anyway.
DRAIN_TIMEOUT = 10.0
# Debug reason of the GOAWAY a scripted storm sends: Apple's reason for a server going away.
STORM_GOAWAY_REASON = "Shutdown"
# h2 validates inbound headers, so a bad header block becomes a protocol error. Outbound headers
# are built here from fixed names and ASCII values, so h2 skips checking them again.
H2_CONFIG = H2Configuration(
    client_side=False,
    header_encoding=None,
    validate_outbound_headers=False,
    normalize_outbound_headers=False,
)
# Bytes of request body kept in memory; the rest is only counted for 413 PayloadTooLarge.
_BODY_KEEP = MAX_VOIP_PAYLOAD + 1


@dataclass
class GoawayPlan:
    """A GOAWAY sent in the middle of a flight of requests.

    The connection responds to its first ``after_requests`` requests and ignores up to
    ``ignored_requests`` more. Then it sends GOAWAY with ``last_stream_id`` set to the stream of
    request number ``after_requests`` and ``{"reason": reason}`` as debug data. The GOAWAY goes
    out when the last ignored request arrives, or ``ignore_timeout`` seconds after request
    ``after_requests``, whichever comes first.
    """

    after_requests: int
    reason: str = "Shutdown"
    ignored_requests: int = 0
    ignore_timeout: float = 0.5
    error_code: ErrorCodes = ErrorCodes.NO_ERROR

    def __post_init__(self) -> None:
        reject(self.reason)  # raises for a name outside Apple's list


@dataclass
class ConnectionScript:
    """The behaviour of one connection besides the rules.

    ``max_concurrent_streams`` is advertised once the connection is authenticated, and
    ``unauthenticated_streams`` before a valid provider token arrives. After the first rejected
    request, ``streams_after_rejection`` (when set) replaces the advertised limit. A response
    whose reason is in ``goaway_on_reasons`` is followed by GOAWAY with that reason, as Apple
    may do after provider-token errors.

    Requests are numbered from 1 in arrival order. ``resets`` maps a request number to the
    RST_STREAM error code sent instead of a response. ``stalls`` maps a request number to the
    seconds during which the connection delays every response.
    """

    max_concurrent_streams: int = DEFAULT_MAX_CONCURRENT_STREAMS
    unauthenticated_streams: int = 1
    streams_after_rejection: int | None = None
    goaway_on_reasons: frozenset[str] = frozenset()
    goaway: GoawayPlan | None = None
    resets: dict[int, ErrorCodes] = field(default_factory=dict)
    stalls: dict[int, float] = field(default_factory=dict)


ScriptFactory = Callable[[int], ConnectionScript]


class _LiteralEncoder(Encoder):
    """HPACK encoder that sends every string literal without Huffman coding.

    Each response carries a new 36-character apns-id. Encoding a response with hpack 4.2's
    pure-Python Huffman coder took 20 µs in a tight loop, and 3.6 µs without it. RFC 7541
    leaves the choice to the encoder, and the literal costs 9 more bytes on the wire.
    """

    def encode(self, headers, huffman=True):
        return super().encode(headers, huffman=False)


class _AdmissionSettings(Settings):
    """Local settings whose stream limit, as h2 enforces it, is the ceiling."""

    @property
    def max_concurrent_streams(self) -> int:
        return _H2_STREAM_CEILING


@dataclass
class _Stream:
    stream_id: int
    number: int
    method: str = ""
    path: str = ""
    authority: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    body_size: int = 0
    ignored: bool = False
    timer: asyncio.TimerHandle | None = None
    response: ApnsResponse | None = None


class _LogLimiter:
    """Lets through a few log lines per key and window, then counts the rest."""

    def __init__(self, per_window: int = 5, window: float = 10.0) -> None:
        self.per_window = per_window
        self.window = window
        self._counts: dict[str, tuple[float, int]] = {}

    def allow(self, key: str) -> bool:
        now = time.monotonic()
        start, count = self._counts.get(key, (now, 0))
        if now - start > self.window:
            if count > self.per_window:
                log.warning("%d more %r messages were suppressed", count - self.per_window, key)
            start, count = now, 0
        self._counts[key] = (start, count + 1)
        return count < self.per_window


_limiter = _LogLimiter()
_STATUS_BYTES = {
    status: str(status).encode() for status in (200, 400, 403, 404, 405, 410, 413, 429, 500, 503)
}


def _decode(value: bytes) -> str:
    # surrogateescape keeps every byte, so byte-length rules still measure the raw value.
    return value.decode("utf-8", "surrogateescape")


class ApnsConnection(asyncio.Protocol):
    """One client connection: HTTP/2 framing, stream admission and scripted behaviour."""

    def __init__(self, gateway: ApnsGateway, number: int, script: ConnectionScript) -> None:
        self.gateway = gateway
        self.number = number
        self.connection_id = f"apns-{gateway.instance_id}-{number}"
        self.script = script
        self.auth = ConnectionAuth()
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()

        self.h2 = H2Connection(config=H2_CONFIG)
        self.h2.encoder = _LiteralEncoder()
        self._streams: dict[int, _Stream] = {}
        # Error bodies waiting for flow-control window, with the response to record once sent.
        self._blocked: dict[int, tuple[bytes, ApnsResponse]] = {}
        self._requests = 0
        self._goaway_last_stream = 0  # stream of request number GoawayPlan.after_requests
        self._advertised: collections.deque[int] = collections.deque()
        self._enforced_limit: int | None = None  # None until the client ACKs our SETTINGS
        self._rejected_once = False
        self._stalled_until = 0.0
        self._stall_timer: asyncio.TimerHandle | None = None
        self._drain: tuple[int, str, ErrorCodes] | None = None
        self._drain_timer: asyncio.TimerHandle | None = None
        self._goaway_timer: asyncio.TimerHandle | None = None
        self._last_activity = time.monotonic()
        self._idle_timer: asyncio.TimerHandle | None = None
        self._closing = False
        self._lost = False
        # The limit the script asks for, the lower one a stream_limit fault imposes, and the
        # value last sent in SETTINGS. The connection advertises the lower of the first two.
        self._script_limit = script.unauthenticated_streams
        self._fault_limit: int | None = None
        self._announced = 0

    # --- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            der = ssl_object.getpeercert(binary_form=True)
            if der:
                self.auth.certificate = ClientCertificate.from_der(der)
        log.debug("connection %s from %s", self.connection_id, peer)

        hooks = self.gateway.hooks
        if hooks is not None:
            hooks.connection_opened()
            self._fault_limit = hooks.directives(self.gateway.clock()).max_streams
        self._script_limit = (
            self.script.max_concurrent_streams
            if self.auth.authenticated
            else self.script.unauthenticated_streams
        )
        limit = self._effective_limit()
        self._announced = limit
        self.h2.local_settings = _AdmissionSettings(
            client=False,
            initial_values={
                SettingCodes.MAX_CONCURRENT_STREAMS: limit,
                SettingCodes.MAX_HEADER_LIST_SIZE: H2Connection.DEFAULT_MAX_HEADER_LIST_SIZE,
            },
        )
        self.h2.initiate_connection()
        self._advertised.append(limit)
        self._flush()
        self._arm_idle_timer()

    def data_received(self, data: bytes) -> None:
        self._last_activity = time.monotonic()
        try:
            events = self.h2.receive_data(data)
        except ProtocolError as error:
            # h2 has queued a GOAWAY with the matching error code.
            if _limiter.allow("protocol error"):
                log.warning(
                    "connection %s: HTTP/2 protocol error, sent GOAWAY and closed: %s",
                    self.connection_id,
                    error,
                )
            self._flush()
            self._close_transport()
            return

        for event in events:
            if isinstance(event, RequestReceived):
                self._on_request(event)
            elif isinstance(event, DataReceived):
                self._on_data(event)
            elif isinstance(event, StreamEnded):
                self._on_stream_ended(event.stream_id)
            elif isinstance(event, StreamReset):
                self._forget(event.stream_id)
            elif isinstance(event, WindowUpdated):
                self._send_blocked()
            elif isinstance(event, SettingsAcknowledged):
                if self._advertised:
                    self._enforced_limit = self._advertised.popleft()
            elif isinstance(event, ConnectionTerminated):
                self._closing = True
        self._flush()
        if self._closing and not self._streams:
            self._close_transport()

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._idle_timer, self._drain_timer, self._goaway_timer, self._stall_timer):
            if timer is not None:
                timer.cancel()
        for stream_id in list(self._streams):
            self._forget(stream_id)
        self.gateway._connections.discard(self)
        if self.gateway.hooks is not None and not self._lost:
            self.gateway.hooks.connection_closed()
        self._lost = True
        if not self.closed.done():
            self.closed.set_result(None)
        log.debug("connection %s closed: %s", self.connection_id, exc or "normally")

    # --- commands ---------------------------------------------------------------------------

    def goaway(
        self,
        reason: str = "Shutdown",
        *,
        last_stream_id: int | None = None,
        error_code: ErrorCodes = ErrorCodes.NO_ERROR,
    ) -> None:
        """Respond on every stream up to ``last_stream_id``, then send GOAWAY and close.

        Streams above ``last_stream_id`` get no response and no record, so clients re-send
        them on another connection. The default keeps every stream received so far.
        """
        reject(reason)  # raises for a name outside Apple's list
        if self._drain is not None or self.transport is None:
            return
        last = self.h2.highest_inbound_stream_id if last_stream_id is None else last_stream_id
        self._drain = (last, reason, error_code)
        for stream_id in [s for s in self._streams if s > last]:
            self._forget(stream_id)
        self._drain_timer = asyncio.get_running_loop().call_later(
            DRAIN_TIMEOUT, self._finish_drain, True
        )
        self._finish_drain()

    @property
    def draining(self) -> bool:
        """True once a GOAWAY is decided and the connection only finishes the streams it kept."""
        return self._drain is not None

    def set_max_concurrent_streams(self, limit: int) -> None:
        """Advertise a new SETTINGS_MAX_CONCURRENT_STREAMS; it applies once the client ACKs.

        An active stream_limit fault caps the advertised value, and lifting it restores ``limit``.
        """
        self._script_limit = limit
        self._advertise(self._effective_limit())

    def apply_directives(self, directives: ConnectionDirectives) -> None:
        """Advertise the stream limit a fault imposes, or restore the script's when it ends."""
        if directives.max_streams == self._fault_limit:
            return
        self._fault_limit = directives.max_streams
        limit = self._effective_limit()
        if limit != self._announced:
            self._advertise(limit)

    def _effective_limit(self) -> int:
        if self._fault_limit is None:
            return self._script_limit
        return min(self._script_limit, self._fault_limit)

    def _advertise(self, limit: int) -> None:
        if self.transport is None or self._drain is not None:
            return
        self.h2.update_settings({SettingCodes.MAX_CONCURRENT_STREAMS: limit})
        self._advertised.append(limit)
        self._announced = limit
        self._flush()

    def stall(self, seconds: float) -> None:
        """Delay every response for ``seconds``, while the connection keeps reading requests."""
        loop = asyncio.get_running_loop()
        self._stalled_until = max(self._stalled_until, loop.time() + seconds)
        if self._stall_timer is not None:
            self._stall_timer.cancel()
        self._stall_timer = loop.call_at(self._stalled_until, self._release_stall)

    def reset_stream(self, stream_id: int, error_code: ErrorCodes = ErrorCodes.CANCEL) -> None:
        """Send RST_STREAM on an open stream instead of a response."""
        if stream_id in self._streams:
            self._forget(stream_id)
            try:
                self.h2.reset_stream(stream_id, error_code)
            except (ProtocolError, StreamClosedError):
                return
            self._flush()

    # --- events -----------------------------------------------------------------------------

    def _on_request(self, event: RequestReceived) -> None:
        stream_id = event.stream_id
        if self._drain is not None and stream_id > self._drain[0]:
            return
        if self._enforced_limit is not None and len(self._streams) >= self._enforced_limit:
            self.h2.reset_stream(stream_id, ErrorCodes.REFUSED_STREAM)
            return

        self._requests += 1
        stream = _Stream(stream_id, self._requests)
        for name, value in event.headers or ():
            if name[:1] == b":":
                if name == b":method":
                    stream.method = _decode(value)
                elif name == b":path":
                    stream.path = _decode(value)
                elif name == b":authority":
                    stream.authority = _decode(value)
                continue
            text_name = _decode(name).lower()
            text_value = _decode(value)
            if text_name == "host" and not stream.authority:
                stream.authority = text_value
            stream.headers.append((text_name, text_value))
        self._streams[stream_id] = stream
        if self.gateway.hooks is not None:
            self.gateway.hooks.stream_started()

        self._apply_script(stream)

    def _apply_script(self, stream: _Stream) -> None:
        script = self.script
        number = stream.number
        if number in script.stalls:
            self.stall(script.stalls[number])
        if number in script.resets:
            self.reset_stream(stream.stream_id, script.resets[number])
            return

        plan = script.goaway
        if plan is None or self._drain is not None:
            return
        if number > plan.after_requests:
            stream.ignored = True
        if number == plan.after_requests:
            self._goaway_last_stream = stream.stream_id
            self._goaway_timer = asyncio.get_running_loop().call_later(
                plan.ignore_timeout, self._scripted_goaway
            )
        if number >= plan.after_requests + plan.ignored_requests:
            self._scripted_goaway()

    def _scripted_goaway(self) -> None:
        plan = self.script.goaway
        if plan is None or self._drain is not None:
            return
        self.goaway(
            plan.reason, last_stream_id=self._goaway_last_stream, error_code=plan.error_code
        )
        self._flush()

    def _on_data(self, event: DataReceived) -> None:
        # Hand the window back at once: bodies are small, and a big one is only counted.
        if event.flow_controlled_length:
            self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        stream = self._streams.get(event.stream_id)
        if stream is None or event.data is None:
            return
        stream.body_size += len(event.data)
        room = _BODY_KEEP - len(stream.body)
        if room > 0:
            stream.body += event.data[:room]

    def _on_stream_ended(self, stream_id: int) -> None:
        stream = self._streams.get(stream_id)
        if stream is None or stream.ignored:
            return

        request = ApnsRequest(
            method=stream.method,
            path=stream.path,
            authority=stream.authority,
            headers=stream.headers,
            body=bytes(stream.body),
            body_size=stream.body_size,
            auth=self.auth,
            connection_id=self.connection_id,
            received_at=self.gateway.clock(),
        )
        was_authenticated = self.auth.authenticated
        try:
            response = self.gateway.rules.evaluate(request)
        except Exception:
            # A failing policy must not take the connection down, so the client gets a 500.
            if _limiter.allow("rules failed"):
                log.exception(
                    "connection %s stream %d: rules failed, responding 500 InternalServerError",
                    self.connection_id,
                    stream_id,
                )
            response = self.gateway.rules.internal_error(request)
        stream.response = response

        if not was_authenticated and self.auth.authenticated:
            self.set_max_concurrent_streams(self.script.max_concurrent_streams)
        if response.status != 200 and not self._rejected_once:
            self._rejected_once = True
            if self.script.streams_after_rejection is not None:
                self.set_max_concurrent_streams(self.script.streams_after_rejection)

        loop = asyncio.get_running_loop()
        wait = max(response.delay, self._stalled_until - loop.time())
        if wait > 0:
            stream.timer = loop.call_later(wait, self._respond_later, stream_id)
        else:
            self._respond(stream)

        if response.reason in self.script.goaway_on_reasons:
            self.goaway(response.reason)

    # --- responses --------------------------------------------------------------------------

    def _respond_later(self, stream_id: int) -> None:
        stream = self._streams.get(stream_id)
        if stream is None:
            return
        stream.timer = None
        if self._stalled_until > asyncio.get_running_loop().time():
            return  # _release_stall sends it
        self._respond(stream)
        self._flush()
        self._after_response()

    def _release_stall(self) -> None:
        self._stall_timer = None
        for stream in list(self._streams.values()):
            if stream.response is not None and stream.timer is None:
                self._respond(stream)
        self._flush()
        self._after_response()

    def _respond(self, stream: _Stream) -> None:
        response = stream.response
        if response is None:
            return
        del self._streams[stream.stream_id]
        if self.gateway.hooks is not None:
            self.gateway.hooks.stream_ended()
        # Every apns-id is new, so adding it to the HPACK dynamic table would only evict entries.
        headers = [
            (b":status", _STATUS_BYTES.get(response.status) or str(response.status).encode()),
            NeverIndexedHeaderTuple(b"apns-id", response.apns_id.encode()),
        ]
        if response.outcome.retry_after is not None:
            headers.append((b"retry-after", str(response.outcome.retry_after).encode()))
        try:
            # HTTP forbids a body in the response to HEAD, so its error is headers only.
            if response.reason is None or stream.method == "HEAD":
                self.h2.send_headers(stream.stream_id, headers, end_stream=True)
            else:
                body = response.body()
                headers.append((b"content-type", b"application/json"))
                headers.append((b"content-length", str(len(body)).encode()))
                self.h2.send_headers(stream.stream_id, headers)
                # One DATA frame per error body: wait for window rather than split it.
                if self.h2.local_flow_control_window(stream.stream_id) < len(body):
                    self._blocked[stream.stream_id] = (body, response)
                    return
                self.h2.send_data(stream.stream_id, body, end_stream=True)
        except (ProtocolError, StreamClosedError) as error:
            # The client reset or closed the stream first; the response never left.
            log.debug(
                "connection %s stream %d: response not sent: %s",
                self.connection_id,
                stream.stream_id,
                error,
            )
            return
        self.gateway.rules.record(response)

    def _send_blocked(self) -> None:
        for stream_id, (body, response) in list(self._blocked.items()):
            try:
                window = self.h2.local_flow_control_window(stream_id)
            except (ProtocolError, StreamClosedError):
                del self._blocked[stream_id]
                continue
            if window >= len(body):
                del self._blocked[stream_id]
                try:
                    self.h2.send_data(stream_id, body, end_stream=True)
                except (FlowControlError, StreamClosedError, ProtocolError):
                    continue
                self.gateway.rules.record(response)
        self._after_response()

    def _after_response(self) -> None:
        if self._drain is not None:
            self._finish_drain()
        elif self._closing and not self._streams:
            self._close_transport()

    def _forget(self, stream_id: int) -> None:
        stream = self._streams.pop(stream_id, None)
        self._blocked.pop(stream_id, None)
        if stream is None:
            return
        if stream.timer is not None:
            stream.timer.cancel()
        if self.gateway.hooks is not None:
            self.gateway.hooks.stream_ended()

    # --- shutdown ---------------------------------------------------------------------------

    def _finish_drain(self, timed_out: bool = False) -> None:
        if self._drain is None or self.transport is None or self.transport.is_closing():
            return
        last, reason, error_code = self._drain
        if not timed_out and (any(s <= last for s in self._streams) or self._blocked):
            return
        if timed_out:
            log.warning(
                "connection %s: %d streams still open after %.0f s of draining",
                self.connection_id,
                len(self._streams),
                DRAIN_TIMEOUT,
            )
        debug_data = json.dumps({"reason": reason}).encode()
        try:
            self.h2.close_connection(error_code, debug_data, last_stream_id=last)
        except ProtocolError:
            pass
        log.info("connection %s: GOAWAY %s last_stream_id=%d", self.connection_id, reason, last)
        self._flush()
        self._close_transport()

    def _arm_idle_timer(self) -> None:
        timeout = self.gateway.idle_timeout
        if timeout is None:
            return
        remaining = timeout - (time.monotonic() - self._last_activity)
        if remaining <= 0 and not self._streams:
            self.goaway("IdleTimeout")
            return
        delay = max(remaining, timeout / 4)
        self._idle_timer = asyncio.get_running_loop().call_later(delay, self._arm_idle_timer)

    def _flush(self) -> None:
        data = self.h2.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _close_transport(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


class ApnsGateway:
    """The mock APNs service on one port: TLS when ``ssl_context`` is set, h2c otherwise.

    ``script`` returns the ``ConnectionScript`` for the n-th connection (1-based).
    ``idle_timeout`` closes connections idle that many wall seconds with GOAWAY IdleTimeout.
    ``hooks`` (optional) receives the connection and stream gauges, and every
    ``hooks.poll_interval`` seconds the gateway applies its GOAWAY storms and stream limits.
    """

    def __init__(
        self,
        rules: ApnsRules,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
        script: ScriptFactory | None = None,
        idle_timeout: float | None = None,
        clock: Clock | None = None,
        hooks: WorldHooks | None = None,
    ) -> None:
        self.rules = rules
        self.hooks = hooks
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.script = script or (lambda number: ConnectionScript())
        self.idle_timeout = idle_timeout
        self.clock = clock or rules.auth.clock
        self.instance_id = secrets.token_hex(3)  # keeps connection ids unique across gateways
        self._server: asyncio.Server | None = None
        self._connections: set[ApnsConnection] = set()
        self._numbers = itertools.count(1)
        self._poll_timer: asyncio.TimerHandle | None = None

    @property
    def connections(self) -> list[ApnsConnection]:
        """Open connections, oldest first."""
        return sorted(self._connections, key=lambda connection: connection.number)

    async def start(self) -> int:
        """Start listening and return the bound port (useful with ``port=0``)."""
        huffman_memo.install()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._make_connection, self.host, self.port, ssl=self.ssl_context
        )
        self.port = self._server.sockets[0].getsockname()[1]
        scheme = "TLS" if self.ssl_context is not None else "h2c"
        log.info("APNs gateway listening on %s:%d (%s)", self.host, self.port, scheme)
        if self.hooks is not None:
            self._poll_timer = loop.call_later(self.hooks.poll_interval, self._poll)
        return self.port

    def _poll(self) -> None:
        """Apply the fault timeline's stream limit and GOAWAY draws to every open connection."""
        hooks = self.hooks
        assert hooks is not None
        now = self.clock()
        try:
            directives = hooks.directives(now)
            for connection in self.connections:
                if connection.draining:
                    continue
                connection.apply_directives(directives)
                if directives.goaway_rate > 0 and hooks.goaway_due(now):
                    connection.goaway(STORM_GOAWAY_REASON)
        except Exception:
            # A failing fault policy must not stop the polling, or a storm would never end.
            if _limiter.allow("poll failed"):
                log.exception(
                    "APNs gateway on port %d: polling the fault timeline failed", self.port
                )
        self._poll_timer = asyncio.get_running_loop().call_later(hooks.poll_interval, self._poll)

    async def stop(self, grace: float = 5.0) -> None:
        """Stop accepting, send GOAWAY Shutdown to every client, and wait up to ``grace`` s."""
        if self._server is None:
            return
        if self._poll_timer is not None:
            self._poll_timer.cancel()
            self._poll_timer = None
        self._server.close()
        connections = list(self._connections)
        for connection in connections:
            connection.goaway("Shutdown")
        if connections:
            waits = [connection.closed for connection in connections]
            await asyncio.wait(waits, timeout=grace)
            for connection in connections:
                if not connection.closed.done() and connection.transport is not None:
                    connection.transport.abort()
        await self._server.wait_closed()
        self._server = None
        log.info("APNs gateway on %s:%d stopped", self.host, self.port)

    def _make_connection(self) -> ApnsConnection:
        number = next(self._numbers)
        connection = ApnsConnection(self, number, self.script(number))
        self._connections.add(connection)
        return connection


def main(argv: list[str] | None = None) -> int:
    """Run a mock APNs gateway until interrupted: ``python -m sim.gateways.apns_server``."""
    import argparse
    import signal

    from sim.gateways import pki
    from sim.gateways.apns_auth import PRODUCTION, SANDBOX, ApnsAuth

    parser = argparse.ArgumentParser(description="Run the mock APNs gateway.")
    parser.add_argument(
        "--credentials", default="pushsim-credentials", help="credentials directory (created)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to bind; 0 picks a free one")
    parser.add_argument("--h2c", action="store_true", help="serve cleartext HTTP/2, not TLS")
    parser.add_argument(
        "--environment",
        choices=(SANDBOX, PRODUCTION),
        default=SANDBOX,
        help="APNs environment for hosts other than Apple's (default sandbox)",
    )
    parser.add_argument(
        "--idle-timeout", type=float, default=None, help="seconds before GOAWAY IdleTimeout"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    async def serve() -> None:
        credentials = pki.ensure_credentials(args.credentials)
        rules = ApnsRules(auth=ApnsAuth.from_credentials(credentials), environment=args.environment)
        context = (
            None if args.h2c else pki.server_ssl_context(credentials, request_client_cert=True)
        )
        gateway = ApnsGateway(
            rules,
            host=args.host,
            port=args.port,
            ssl_context=context,
            idle_timeout=args.idle_timeout,
        )
        await gateway.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signal_number in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signal_number, stop.set)
        await stop.wait()
        await gateway.stop()

    asyncio.run(serve())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
