"""A loopback HTTP CONNECT proxy that tunnels only to the mock gateways' own ports.

Clients that hard-code Google's and Apple's hosts can reach the mocks unchanged through an
``HTTPS_PROXY``-style setting: the proxy maps each allowed ``(host, port)`` to a port on
127.0.0.1 and rejects every other target with 403. It never resolves a name and never opens a
connection anywhere but 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass

log = logging.getLogger(__name__)

UPSTREAM_HOST = "127.0.0.1"
FCM_HOSTS = ("fcm.googleapis.com", "oauth2.googleapis.com")
APNS_HOSTS = ("api.push.apple.com", "api.development.push.apple.com", "api.sandbox.push.apple.com")

# Limits on a request head: bytes, and seconds to receive it.
MAX_HEAD_BYTES = 8192
HEAD_TIMEOUT = 10.0
_CHUNK = 64 * 1024


def gateway_routes(
    *, fcm_tls_port: int | None = None, apns_port: int | None = None, port: int = 443
) -> dict[tuple[str, int], int]:
    """Build the allow-list mapping the public push hosts on ``port`` to the mocks' ports.

    Example::

        gateway_routes(fcm_tls_port=8443, apns_port=2197)
        # {("fcm.googleapis.com", 443): 8443, ("oauth2.googleapis.com", 443): 8443,
        #  ("api.push.apple.com", 443): 2197, ...}
    """
    routes: dict[tuple[str, int], int] = {}
    if fcm_tls_port is not None:
        routes.update({(host, port): fcm_tls_port for host in FCM_HOSTS})
    if apns_port is not None:
        routes.update({(host, port): apns_port for host in APNS_HOSTS})
    return routes


@dataclass(frozen=True)
class _Reply:
    status: int
    reason: str
    message: str

    def encode(self) -> bytes:
        body = self.message.encode() + b"\n"
        head = (
            f"HTTP/1.1 {self.status} {self.reason}\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        )
        return head.encode() + body


class ConnectProxy:
    """Tunnel ``CONNECT host:port`` to 127.0.0.1 for allowed targets and reject the rest with 403.

    ``routes`` maps ``(host, port)`` (host in lower case) to a port on 127.0.0.1.
    """

    def __init__(
        self,
        routes: Mapping[tuple[str, int], int],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.routes = {
            (name.lower(), target_port): local for (name, target_port), local in routes.items()
        }
        self.host = host
        self.port = port
        self.upstream_connections = 0
        self._server: asyncio.Server | None = None
        self._tunnels: set[asyncio.Task] = set()
        self._rejections = 0

    async def start(self) -> int:
        """Start listening and return the bound port (port 0 picks a free one)."""
        self._server = await asyncio.start_server(
            self._handle, self.host, self.port, limit=MAX_HEAD_BYTES
        )
        self.port = self._server.sockets[0].getsockname()[1]
        allowed = ", ".join(
            f"{h}:{p}->{UPSTREAM_HOST}:{local}" for (h, p), local in sorted(self.routes.items())
        )
        log.info("CONNECT proxy listening on %s:%d, tunnels %s", self.host, self.port, allowed)
        return self.port

    async def stop(self) -> None:
        """Stop listening and close the open tunnels."""
        if self._server is None:
            return
        self._server.close()
        for task in list(self._tunnels):
            task.cancel()
        await asyncio.gather(*self._tunnels, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None
        log.info("CONNECT proxy stopped")

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tunnels.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            if task is not None:
                self._tunnels.discard(task)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
        except asyncio.LimitOverrunError:
            await self._reply(
                writer,
                _Reply(
                    431,
                    "Request Header Fields Too Large",
                    f"request head is over {MAX_HEAD_BYTES} bytes",
                ),
            )
            return
        except (TimeoutError, asyncio.IncompleteReadError):
            await self._reply(writer, _Reply(400, "Bad Request", "invalid or incomplete request"))
            return

        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = request_line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            await self._reply(
                writer, _Reply(400, "Bad Request", f"invalid request line {request_line[:100]!r}")
            )
            return
        method, authority, _ = parts
        if method.upper() != "CONNECT":
            await self._reply(
                writer,
                _Reply(
                    405,
                    "Method Not Allowed",
                    f"method {method[:20]!r} is not supported; "
                    "this proxy only tunnels with CONNECT",
                ),
            )
            return

        local_port = self._route(authority)
        if local_port is None:
            self._rejections += 1
            if self._rejections <= 20 or self._rejections % 100 == 0:
                log.warning(
                    "CONNECT proxy rejected target %r (rejection %d)",
                    authority[:200],
                    self._rejections,
                )
            allowed = ", ".join(f"{h}:{p}" for h, p in sorted(self.routes))
            await self._reply(
                writer,
                _Reply(
                    403,
                    "Forbidden",
                    f"target {authority[:200]!r} is not a mock gateway; allowed: {allowed}",
                ),
            )
            return

        await self._tunnel(reader, writer, local_port)

    def _route(self, authority: str) -> int | None:
        host, sep, port_text = authority.rpartition(":")
        if not sep or not port_text.isdigit():
            return None
        return self.routes.get((host.strip("[]").lower(), int(port_text)))

    async def _tunnel(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, local_port: int
    ) -> None:
        self.upstream_connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(UPSTREAM_HOST, local_port)
        except OSError as error:
            log.warning("CONNECT proxy cannot reach %s:%d: %s", UPSTREAM_HOST, local_port, error)
            await self._reply(
                writer,
                _Reply(502, "Bad Gateway", f"the mock on port {local_port} is not listening"),
            )
            return

        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            up_writer.close()

    @staticmethod
    async def _reply(writer: asyncio.StreamWriter, reply: _Reply) -> None:
        writer.write(reply.encode())
        try:
            await writer.drain()
        except ConnectionError:
            pass


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    try:
        while chunk := await source.read(_CHUNK):
            sink.write(chunk)
            await sink.drain()
    except ConnectionError:
        pass
    finally:
        # Half-close, so the other side sees end of stream and the other pipe can finish.
        if sink.can_write_eof() and not sink.is_closing():
            try:
                sink.write_eof()
            except OSError:
                pass
