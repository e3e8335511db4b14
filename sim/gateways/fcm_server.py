"""The mock FCM HTTP v1 gateway and its OAuth2 token endpoint, served by hypercorn's protocols.

One TLS port carries HTTP/1.1 and HTTP/2, chosen by ALPN, as fcm.googleapis.com does; a plain
port takes HTTP/1.1 or HTTP/2 with prior knowledge (h2c). Both ports serve the send method
(``POST /v1/projects/{project}/messages:send``) and the token endpoint (``POST /token``), so
fcm.googleapis.com and oauth2.googleapis.com can both point at the TLS port.

The rules live in ``fcm_rules``. This module parses HTTP and checks the access token. It also
adds injected latency without blocking other requests, and reports each send to the sink.
It runs hypercorn's connection handler (``TCPServer``) on its own asyncio servers, instead of
``hypercorn.asyncio.serve``, so that stop() can bound the TLS close and abort connections left
open after the graceful timeout.

With ``hooks`` (``GatewayWorld.hooks``) the gateway keeps the connection and request gauges
current and applies GOAWAY storms to its HTTP/2 connections. Only a connection with no stream
open takes part in a storm's draw, and then hypercorn's h2 connection sends GOAWAY with the
highest stream id received and the gateway closes it. Every stream up to that id is answered,
and a client re-sends any stream it opened later. h2 sends nothing after its own GOAWAY, and a
client built on h2 accepts nothing after one, so a connection is never closed mid-response.

NOTE: a connection that always has a stream open when the gateway polls never gets a storm's
GOAWAY. stream_limit faults do not reach FCM connections, because hypercorn's h2 treats a
stream over the advertised limit as a connection error. A storm leaves HTTP/1.1 connections open.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
import time
from dataclasses import dataclass
from typing import Any

from hypercorn.asyncio.tcp_server import TCPServer
from hypercorn.asyncio.worker_context import WorkerContext
from hypercorn.config import Config
from hypercorn.protocol.h2 import H2Protocol
from hypercorn.utils import wrap_app

from sim.gateways import pki
from sim.gateways.fcm_rules import (
    FcmResponse,
    FcmRules,
    google_error,
    unauthenticated_response,
)
from sim.gateways.hooks import DeliverySink, DiscardSink, Outcome, WorldHooks
from sim.gateways.oauth import ServiceAccount, TokenIssuer

log = logging.getLogger(__name__)

SEND_PATH = re.compile(r"^/v1/projects/(?P<project>[^/]+)/messages:send$")
TOKEN_PATH = "/token"

# Largest request body read, in bytes. A valid send is at most a few KiB, so anything bigger is
# rejected with 413 before it fills memory.
MAX_BODY_BYTES = 256 * 1024

# Seconds a client gets to finish the TLS handshake, and to reply to the TLS close at shutdown.
# asyncio waits 30 s for the close by default, which a pooled idle client never sends.
TLS_HANDSHAKE_TIMEOUT = 10.0
TLS_SHUTDOWN_TIMEOUT = 1.0

# Seconds an idle connection stays open. hypercorn's default of 5 s would make pooled senders
# reconnect between bursts and show up as connection churn.
# NOTE: Google does not document its idle timeout; 300 s is an estimate.
DEFAULT_KEEP_ALIVE_TIMEOUT = 300.0

# Headers kept in the ledger. The Authorization header carries a secret and is never kept.
_LEDGER_HEADERS = frozenset(
    {"content-type", "user-agent", "x-goog-api-format-version", "x-firebase-client"}
)


def _json_response_headers(body: bytes, extra: dict[str, str]) -> list[tuple[bytes, bytes]]:
    headers = [
        (b"content-type", b"application/json; charset=UTF-8"),
        (b"content-length", str(len(body)).encode()),
    ]
    headers += [(name.lower().encode(), value.encode()) for name, value in extra.items()]
    return headers


async def _send_json(send, status: int, payload: dict, extra: dict[str, str] | None = None):
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": _json_response_headers(body, extra or {}),
        }
    )
    await send({"type": "http.response.body", "body": body})


# Largest body drained and discarded before an error response, in bytes. hypercorn 0.18 drops the
# whole HTTP/2 connection (KeyError in its stream table) when DATA arrives for a stream it has
# already answered, so the gateway reads a request to its end before answering it.
MAX_DRAIN_BYTES = 16 * 1024 * 1024


class BodyTooLarge(Exception):
    """The request body is over ``MAX_BODY_BYTES``; ``args[0]`` is its size in bytes."""


async def _read_body(receive, limit: int = MAX_BODY_BYTES) -> bytes:
    """Read the request body; past ``limit`` bytes, drain the rest and raise BodyTooLarge."""
    chunks = []
    size = 0
    more = True
    while more and size <= limit:
        event = await receive()
        if event["type"] == "http.disconnect":
            return b"".join(chunks)
        chunk = event.get("body", b"")
        size += len(chunk)
        chunks.append(chunk)
        more = event.get("more_body", False)
    if size <= limit:
        return b"".join(chunks)

    chunks.clear()
    while more and size <= MAX_DRAIN_BYTES:
        event = await receive()
        if event["type"] == "http.disconnect":
            break
        size += len(event.get("body", b""))
        more = event.get("more_body", False)
    raise BodyTooLarge(size)


async def _drain(receive) -> None:
    try:
        await _read_body(receive, limit=0)
    except BodyTooLarge:
        pass


class FcmApp:
    """The ASGI application behind both ports: routes, access-token checks and the sink.

    With ``issuer=None`` every send is accepted without an access token, for teams whose
    sender cannot be pointed at the mock's token endpoint.
    """

    def __init__(
        self,
        rules: FcmRules | None = None,
        issuer: TokenIssuer | None = None,
        sink: DeliverySink | None = None,
        hooks: WorldHooks | None = None,
    ) -> None:
        self.rules = rules or FcmRules()
        self.issuer = issuer
        self.sink = sink or DiscardSink()
        self.hooks = hooks
        self._errors_logged = 0
        self._token_rejections = 0

    async def __call__(self, scope: dict, receive, send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return

        if self.hooks is not None:
            self.hooks.stream_started()
        try:
            await self._route(scope, receive, send)
        except Exception:
            # A bug in a rule or a sink must cost one 500 response, never the server.
            self._log_error(
                "internal error while responding to %s %s", scope["method"], scope["path"]
            )
            try:
                await _send_json(send, 500, google_error(500, "Internal error encountered."))
            except Exception:
                # The response had already started; hypercorn closes the stream.
                pass
        finally:
            if self.hooks is not None:
                self.hooks.stream_ended()

    async def _lifespan(self, receive, send) -> None:
        while True:
            event = await receive()
            if event["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif event["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _log_error(self, message: str, *args: Any) -> None:
        # Log the first 20 errors with their traceback, then every 100th, so a fuzzing or
        # misbehaving client cannot flood the log.
        self._errors_logged += 1
        count = self._errors_logged
        if count <= 20 or count % 100 == 0:
            log.exception(message + " (error %d)", *args, count)

    async def _route(self, scope: dict, receive, send) -> None:
        path = scope["path"]
        method = scope["method"]

        match = SEND_PATH.match(path)
        routed = (match is not None or path == TOKEN_PATH) and method == "POST"
        if not routed:
            await _drain(receive)

        if match:
            if method != "POST":
                await self._method_not_allowed(send, method, path)
                return
            await self._send_message(scope, receive, send, match["project"])
            return

        if path == TOKEN_PATH:
            if method != "POST":
                await self._method_not_allowed(send, method, path)
                return
            await self._token(scope, receive, send)
            return

        message = (
            f"The requested URL {path} was not found on this server; "
            "use POST /v1/projects/PROJECT/messages:send or POST /token"
        )
        await _send_json(send, 404, google_error(404, message))

    async def _method_not_allowed(self, send, method: str, path: str) -> None:
        message = f"Method {method} is not allowed on {path}; use POST"
        await _send_json(send, 405, google_error(405, message), {"Allow": "POST"})

    async def _token(self, scope: dict, receive, send) -> None:
        if self.issuer is None:
            description = "This gateway runs without access tokens, so senders need none."
            body = {"error": "invalid_request", "error_description": description}
            await _send_json(send, 404, body)
            return
        try:
            body = await _read_body(receive)
        except BodyTooLarge:
            payload = {
                "error": "invalid_request",
                "error_description": f"The request body is over {MAX_BODY_BYTES} bytes.",
            }
            await _send_json(send, 413, payload)
            return

        headers = dict(_decode_headers(scope))
        response = self.issuer.token_request(body, headers.get("content-type", ""))
        if response.status != 200:
            self._token_rejections += 1
            count = self._token_rejections
            if count <= 20 or count % 100 == 0:
                log.info(
                    "token request rejected: %s (rejection %d)",
                    response.body.get("error_description"),
                    count,
                )
        await _send_json(send, response.status, response.body, {"Cache-Control": "no-store"})

    async def _send_message(self, scope: dict, receive, send, project: str) -> None:
        received_at = time.time()
        headers = dict(_decode_headers(scope))
        client = scope.get("client") or ("", 0)
        connection_id = f"{client[0]}:{client[1]}/{scope.get('http_version', '')}"
        ledger_headers = {name: value for name, value in headers.items() if name in _LEDGER_HEADERS}

        try:
            body = await _read_body(receive)
        except BodyTooLarge as error:
            # The ledger gets the rejection without the body, which was never kept.
            push = self.rules.push_request(project, b"", ledger_headers, connection_id, received_at)
            message = (
                f"Request body of {error.args[0]} bytes or more is over the "
                f"{MAX_BODY_BYTES}-byte limit; send at most 4096 bytes of data and notification"
            )
            response = FcmResponse(413, google_error(413, message), reason="INVALID_ARGUMENT")
            self.sink.record(push, _outcome(response))
            await _send_json(send, response.status, response.body)
            return

        push = self.rules.push_request(project, body, ledger_headers, connection_id, received_at)
        response = self._auth_response(headers.get("authorization"), project)
        if response is None:
            response = self.rules.decide(push, project)
        if response.delay > 0:
            # Sleeping on the event loop delays this response only; other streams go on.
            await asyncio.sleep(response.delay)

        self.sink.record(push, _outcome(response))
        await _send_json(send, response.status, response.body, response.headers)

    def _auth_response(self, authorization: str | None, project: str) -> FcmResponse | None:
        if self.issuer is None:
            return None
        grant, reason, message = self.issuer.check_bearer(authorization)
        if grant is None:
            return unauthenticated_response(reason, message)
        if grant.project_id != project:
            message = (
                f"Permission 'cloudmessaging.messages.create' denied on project {project!r}: "
                f"the service account {grant.client_email} belongs to {grant.project_id!r}"
            )
            return FcmResponse(403, google_error(403, message), reason="PERMISSION_DENIED")
        return None


def _decode_headers(scope: dict):
    for name, value in scope.get("headers", ()):
        yield name.decode("latin-1").lower(), value.decode("latin-1")


def _outcome(response: FcmResponse) -> Outcome:
    extra = {"validate_only": "true"} if response.validate_only else {}
    return Outcome(
        status=response.status,
        reason=response.reason,
        delivery_id=response.delivery_id,
        retry_after=response.retry_after,
        added_latency=response.delay,
        extra=extra,
        fault=response.fault,
    )


class _TCPServer(TCPServer):
    """hypercorn's connection handler, closing the socket as soon as the client has closed.

    hypercorn 0.18 keeps waiting for the keep-alive timeout after the client's FIN, so the
    socket would sit in CLOSE-WAIT for up to 300 s and count as open.
    NOTE: stops hypercorn's private ``idle_task``; recheck on a hypercorn upgrade.
    """

    async def _read_data(self) -> None:
        await super()._read_data()
        await self.idle_task.stop()


def _h2_protocol(server: TCPServer) -> H2Protocol | None:
    """Return the hypercorn HTTP/2 protocol serving a connection, or None for HTTP/1.1.

    NOTE: reads hypercorn 0.18's ``TCPServer.protocol.protocol``, which is not public API.
    """
    wrapper = getattr(server, "protocol", None)
    protocol = getattr(wrapper, "protocol", None)
    return protocol if isinstance(protocol, H2Protocol) else None


def _listen_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise OSError(
            error.errno,
            f"cannot bind the FCM gateway to {host}:{port}: {error.strerror}; "
            "pick a free port or use 0",
        ) from error
    sock.setblocking(False)
    return sock


@dataclass(frozen=True)
class FcmPorts:
    """The ports a started gateway listens on; ``plain`` is None when h2c is off."""

    host: str
    tls: int
    plain: int | None

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.tls}"

    @property
    def token_uri(self) -> str:
        return f"{self.base_url}{TOKEN_PATH}"


class FcmGateway:
    """The mock FCM gateway with its token endpoint on one TLS port and one plain port.

    Example::

        gateway = FcmGateway(credentials)
        ports = await gateway.start()   # FcmPorts(host="127.0.0.1", tls=..., plain=...)
        ...
        await gateway.stop()
    """

    def __init__(
        self,
        credentials: pki.Credentials,
        *,
        rules: FcmRules | None = None,
        issuer: TokenIssuer | None = None,
        sink: DeliverySink | None = None,
        require_auth: bool = True,
        access_token_lifetime: int = 3600,
        host: str = "127.0.0.1",
        tls_port: int = 0,
        plain_port: int | None = 0,
        graceful_timeout: float = 5.0,
        keep_alive_timeout: float = DEFAULT_KEEP_ALIVE_TIMEOUT,
        hooks: WorldHooks | None = None,
    ) -> None:
        if require_auth and issuer is None:
            account = ServiceAccount.from_file(credentials.fcm_service_account)
            token_uri = json.loads(credentials.fcm_service_account.read_text()).get("token_uri")
            issuer = TokenIssuer(
                [account],
                audiences=[token_uri] if token_uri else [],
                lifetime=access_token_lifetime,
            )
        self.app = FcmApp(rules, issuer if require_auth else None, sink, hooks)
        self.hooks = hooks
        self.credentials = credentials
        self.host = host
        self.tls_port = tls_port
        self.plain_port = plain_port
        self.graceful_timeout = graceful_timeout
        self.keep_alive_timeout = keep_alive_timeout
        self.ports: FcmPorts | None = None
        self._servers: list[asyncio.Server] = []
        self._context: WorkerContext | None = None
        self._connections: dict[asyncio.Task, asyncio.StreamWriter] = {}
        self._tcp_servers: dict[asyncio.Task, TCPServer] = {}
        self._poll_timer: asyncio.TimerHandle | None = None
        self._connection_errors = 0

    @property
    def issuer(self) -> TokenIssuer | None:
        return self.app.issuer

    async def start(self) -> FcmPorts:
        """Bind the ports and start serving; return the bound ports (port 0 picks a free one)."""
        if self._servers:
            raise RuntimeError("the FCM gateway is already running; call stop() first")

        tls_socket = _listen_socket(self.host, self.tls_port)
        plain_socket = None
        if self.plain_port is not None:
            try:
                plain_socket = _listen_socket(self.host, self.plain_port)
            except OSError:
                tls_socket.close()
                raise
        self.ports = FcmPorts(
            host=self.host,
            tls=tls_socket.getsockname()[1],
            plain=plain_socket.getsockname()[1] if plain_socket else None,
        )

        # Senders that sign for the token URI they post to get the mock's own URIs accepted.
        if self.app.issuer is not None:
            for name in {self.host, "localhost"}:
                self.app.issuer.audiences.add(f"https://{name}:{self.ports.tls}{TOKEN_PATH}")
                if self.ports.plain:
                    self.app.issuer.audiences.add(f"http://{name}:{self.ports.plain}{TOKEN_PATH}")

        config = Config()
        config.errorlog = logging.getLogger("hypercorn.error")
        config.accesslog = None
        config.keep_alive_timeout = self.keep_alive_timeout
        self._context = WorkerContext(None)
        app = wrap_app(self.app, config.wsgi_max_body_size, "asgi")
        loop = asyncio.get_running_loop()

        async def serve_connection(reader, writer) -> None:
            task = asyncio.current_task()
            self._connections[task] = writer
            peer = writer.get_extra_info("peername")
            server = _TCPServer(app, loop, config, self._context, {}, reader, writer)
            self._tcp_servers[task] = server
            if self.hooks is not None:
                self.hooks.connection_opened()
            try:
                await server
            except TimeoutError:
                # The client did not reply to the TLS close within TLS_SHUTDOWN_TIMEOUT.
                log.debug("FCM connection from %s closed without a TLS close reply", peer)
            except Exception:
                # A protocol error inside hypercorn ends this connection only.
                self._connection_errors += 1
                count = self._connection_errors
                if count <= 20 or count % 100 == 0:
                    log.exception("FCM connection from %s failed (error %d)", peer, count)
            finally:
                self._connections.pop(task, None)
                self._tcp_servers.pop(task, None)
                if self.hooks is not None:
                    self.hooks.connection_closed()

        tls_context = pki.server_ssl_context(self.credentials, alpn=["h2", "http/1.1"])
        self._servers.append(
            await asyncio.start_server(
                serve_connection,
                sock=tls_socket,
                ssl=tls_context,
                ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT,
                ssl_shutdown_timeout=TLS_SHUTDOWN_TIMEOUT,
            )
        )
        if plain_socket is not None:
            self._servers.append(await asyncio.start_server(serve_connection, sock=plain_socket))

        log.info(
            "FCM gateway listening on %s (TLS, HTTP/1.1 and HTTP/2) and %s (plain)",
            f"{self.host}:{self.ports.tls}",
            f"{self.host}:{self.ports.plain}" if self.ports.plain else "off",
        )
        if self.hooks is not None:
            self._poll_timer = loop.call_later(self.hooks.poll_interval, self._poll)
        return self.ports

    def _poll(self) -> None:
        """Send GOAWAY on the idle HTTP/2 connections a storm picks, and close them."""
        hooks = self.hooks
        assert hooks is not None
        now = time.time()
        try:
            if hooks.directives(now).goaway_rate > 0:
                for task, server in list(self._tcp_servers.items()):
                    protocol = _h2_protocol(server)
                    if protocol is None or protocol.streams or protocol.closed:
                        continue
                    if hooks.goaway_due(now):
                        self._goaway(task, protocol)
        except Exception:
            # A failing fault policy must not stop the polling, or a storm would never end.
            self._connection_errors += 1
            if self._connection_errors <= 20 or self._connection_errors % 100 == 0:
                log.exception("FCM gateway: polling the fault timeline failed")
        self._poll_timer = asyncio.get_running_loop().call_later(hooks.poll_interval, self._poll)

    def _goaway(self, task: asyncio.Task, protocol: H2Protocol) -> None:
        writer = self._connections.get(task)
        if writer is None or writer.is_closing():
            return
        # last_stream_id defaults to the highest stream received, and none is open.
        protocol.connection.close_connection()
        writer.write(protocol.connection.data_to_send())
        writer.close()
        log.info("FCM connection from %s: GOAWAY (storm)", writer.get_extra_info("peername"))

    async def stop(self) -> None:
        """Stop accepting, let requests in flight finish (up to ``graceful_timeout``), close."""
        if not self._servers:
            return
        if self._poll_timer is not None:
            self._poll_timer.cancel()
            self._poll_timer = None
        for server in self._servers:
            server.close()

        # Setting `terminated` makes hypercorn close idle keep-alive connections and finish
        # the ones with requests in flight.
        if self._context is not None:
            await self._context.terminated.set()
        connections = set(self._connections)
        if connections:
            _, pending = await asyncio.wait(connections, timeout=self.graceful_timeout)
            if pending:
                log.warning(
                    "FCM gateway aborting %d connections still open after %.1f s",
                    len(pending),
                    self.graceful_timeout,
                )
                for task in pending:
                    writer = self._connections.get(task)
                    if writer is not None:
                        writer.transport.abort()
                _, pending = await asyncio.wait(pending, timeout=1.0)
                for task in pending:
                    task.cancel()

        for server in self._servers:
            await server.wait_closed()
        self._servers = []
        log.info("FCM gateway stopped")
