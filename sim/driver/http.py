"""A lane's HTTP/1.1 connection to the backend, reporting each request to Locust's statistics.

Locust's ``FastHttpSession`` sits on geventhttpclient's ``UserAgent``, which builds a
urllib-style request, parses the URL, keeps a cookie jar and wraps the response for every
call. Below it, ``HTTPClient`` validates and merges every header and checks the pooled socket
with a gevent ``select``. A lane needs none of that, because it sends API calls with headers
its adapter built over one keep-alive connection to one host. So this client writes the request
head itself, and reads the response with geventhttpclient's C parser (llhttp), which handles
chunked bodies, 1xx responses and ``Connection: close``. It keeps only the status, the body
length and whether the connection stays open (``sim/driver/response.py``).

Requests keep their Locust names, and a response is a failure in the statistics exactly when
``FastHttpSession`` would count it as one: a connection error, or a status outside the 2xx and
redirect codes of ``LocustUserAgent.valid_response_codes``. Differences from
``FastHttpSession``: redirects are not followed (an SDK API call never expects one), cookies
are ignored, and no ``Accept-Encoding`` is sent, so the response length in the statistics is
the length on the wire.
"""

from __future__ import annotations

import json
import select
import socket
import time
from json.encoder import c_make_encoder, encode_basestring_ascii
from ssl import SSLError
from typing import Any
from urllib.parse import urlsplit

import gevent.socket
import gevent.ssl
from gevent.monkey import get_original
from gevent.timeout import Timeout
from geventhttpclient._parser import HTTPParseError
from geventhttpclient.response import HTTPConnectionClosed
from geventhttpclient.useragent import ConnectionError as ClientConnectionError

from sim.driver.response import BLOCK_SIZE, read_response
from sim.driver.wire import HttpRequest

# Locust is not imported here: importing it monkey-patches the whole process, which a test
# of this module must not do. The status set and the exceptions are those of Locust 2.47's
# ``locust.contrib.fasthttp`` (``LocustUserAgent.valid_response_codes``, ``FAILURE_EXCEPTIONS``).
VALID_STATUSES = frozenset(
    [200, 201, 202, 203, 204, 205, 206, 207, 208, 226, 301, 302, 303, 304, 307, 308]
)
FAILURES = (
    ClientConnectionError,
    ConnectionError,
    socket.error,
    SSLError,
    Timeout,
    HTTPConnectionClosed,
    HTTPParseError,
)
# The status of a request that got no response at all, as Locust's ErrorResponse reports it.
NO_RESPONSE = 0
JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}
USER_AGENT = "pushsim"
# Methods that carry a body, so they send ``Content-Length: 0`` when it is empty (RFC 9110 8.6).
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
# Sets of request headers whose rendered lines a client keeps. An adapter uses one or two.
RENDERED_HEADER_SETS = 16
_POLL = get_original("select", "poll")
READ = 1  # the event mask of a read watcher in gevent's loop.io


class BadStatus(Exception):
    """A response whose status Locust counts as a failure, such as ``BadStatus(503)``."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def _unverified_ssl_context() -> gevent.ssl.SSLContext:
    # Locust's FastHttpUser does not verify certificates either (its ``insecure`` default).
    # It is gevent's own context, so the handshake yields to the hub even without patching.
    context = gevent.ssl.SSLContext(gevent.ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = gevent.ssl.CERT_NONE
    return context


# One encoder for every body: json.dumps with non-default options builds a new one per call.
_ENCODER = json.JSONEncoder(separators=(",", ":"))
# JSONEncoder.encode also makes a new C encoder for every call, so this one is made once with
# _ENCODER's settings. It keeps no set of containers in progress, because a request body has
# no reference cycle.
_C_ENCODE = (
    c_make_encoder(
        None, _ENCODER.default, encode_basestring_ascii, None, ":", ",", False, False, True
    )
    if c_make_encoder is not None
    else None
)


def _encode_body(value: Any) -> str:
    """Return ``value`` as compact JSON text, as ``_ENCODER.encode`` does."""
    if _C_ENCODE is None or value.__class__ is str:
        return _ENCODER.encode(value)
    return "".join(_C_ENCODE(value, 0))


def backend_url_problem(base_url: str) -> str | None:
    """Return why ``base_url`` cannot be the backend's URL, or None when it can."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"invalid backend URL {base_url!r}: expected http://HOST[:PORT] or https://..."
    return None


class LaneClient:
    """One keep-alive connection to the backend at ``base_url``, opened on first use.

    ``base_url`` is Locust's ``--host``, and its path, if any, prefixes every request path.
    Every request fires ``request_event``, Locust's ``events.request``, with the request's
    Locust name. Timeouts are in seconds.
    """

    def __init__(
        self,
        base_url: str,
        request_event: Any,
        *,
        connection_timeout: float,
        network_timeout: float,
    ) -> None:
        problem = backend_url_problem(base_url)
        if problem is not None:
            raise ValueError(problem)
        parts = urlsplit(base_url)
        self.base_url = base_url.rstrip("/")
        self._prefix = parts.path.rstrip("/")
        self._host = parts.hostname
        self._address = (parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
        self._ssl_context = _unverified_ssl_context() if parts.scheme == "https" else None
        self._connection_timeout = connection_timeout
        self._network_timeout = network_timeout
        host_header = parts.netloc.rpartition("@")[2]
        self._fixed_head = f"Host: {host_header}\r\nUser-Agent: {USER_AGENT}\r\n"
        self._rendered: dict[tuple, str] = {}
        self._sock: gevent.socket.socket | None = None
        self._idle_events: Any = None
        self._response_ready: Any = None  # a read watcher on a plain socket, see _first_bytes
        self._fire = request_event.fire

    def send(self, request: HttpRequest) -> int:
        """Send ``request`` and return its HTTP status, or ``NO_RESPONSE`` on a connection error."""
        message = self._message(request)

        start_time = time.time()
        started = time.perf_counter()
        exception: Exception | None = None
        status = NO_RESPONSE
        length = 0
        try:
            length, status = self._exchange(request.method, message)
        except FAILURES as error:
            exception = error
            self._drop_connection()
        if exception is None and status not in VALID_STATUSES:
            exception = BadStatus(status)

        self._fire(
            request_type=request.method,
            name=request.name,
            response_time=(time.perf_counter() - started) * 1000.0,
            response_length=length,
            exception=exception,
            context={},
            response=None,
            url=self.base_url + request.path,
            start_time=start_time,
        )
        return status

    def _message(self, request: HttpRequest) -> bytes:
        """Return the request's head and body as they go on the wire."""
        body = b""
        if request.text is not None:
            body = request.text.encode()
        elif request.json is not None:
            body = _encode_body(request.json).encode()
        fields = self._fields(request.headers, request.json is not None)
        length = ""
        if body or request.method in BODY_METHODS:
            length = f"Content-Length: {len(body)}\r\n"
        head = f"{request.method} {self._prefix}{request.path} HTTP/1.1\r\n{fields}{length}\r\n"
        # The request head is latin-1, as in http.client and geventhttpclient.
        return head.encode("latin-1") + body

    def _fields(self, headers: dict[str, str], json_body: bool) -> str:
        """Return the header lines before Content-Length, rendered once per set of headers.

        Adapters send the same few headers with every request, and checking and formatting
        them cost about as much as encoding a small body.
        """
        key = (json_body, *headers.items())
        fields = self._rendered.get(key)
        if fields is None:
            if json_body:
                headers = {**JSON_HEADERS, **headers}
            lines = [self._fixed_head]
            for field, value in headers.items():
                if "\n" in value or "\r" in value:
                    raise ValueError(f"invalid value for header field {field!r}: {value!r}")
                lines.append(f"{field}: {value}\r\n")
            fields = "".join(lines)
            if len(self._rendered) >= RENDERED_HEADER_SETS:
                self._rendered.clear()
            self._rendered[key] = fields
        return fields

    def _exchange(self, method: str, message: bytes) -> tuple[int, int]:
        """Write one request and read its response. Return the body length and the status."""
        sock = self._connection()
        self._send_message(sock, message)
        response = read_response(sock, method, self._first_bytes(sock))
        if response.should_close():
            self._drop_connection()
        return response.body_length, response.get_code()

    @staticmethod
    def _send_message(sock: gevent.socket.socket, message: bytes) -> None:
        """Write ``message`` with as few socket calls as its size allows.

        A request fits the socket's send buffer, so one ``send`` writes all of it. gevent's
        ``sendall`` first reads the buffer size with getsockopt (a system call) and the clock,
        and slices the message: 2.15 µs against 0.71 µs for ``send`` of 400 bytes on a socket
        pair.
        """
        sent = sock.send(message)
        if sent < len(message):
            # gevent's send waits, within the socket's timeout, until the buffer takes more.
            view = memoryview(message)
            while sent < len(message):
                sent += sock.send(view[sent:])

    def _first_bytes(self, sock: gevent.socket.socket) -> bytes | None:
        """Wait until the response starts, and return what the first read brings.

        Return None on a TLS connection, which is read by ``read_response`` alone.

        The response is almost never there right after the request was written, so gevent's
        recv would first fail with EAGAIN, raise and catch that, and then wait. Waiting first
        cut the CPU per request from 64.5 to 60.7 µs in a loop of 64 lanes against nginx.
        """
        if self._response_ready is None:
            # TLS may already hold decrypted bytes that the socket no longer shows.
            return None
        # On timeout this raises TimeoutError("timed out"), as gevent's recv does.
        gevent.socket.wait(self._response_ready, self._network_timeout)
        try:
            return sock.recv(BLOCK_SIZE)
        except ConnectionResetError:
            # A reset before the first byte is a connection closed without a response.
            raise HTTPConnectionClosed("connection closed.") from None

    def _connection(self) -> gevent.socket.socket:
        sock = self._sock
        if sock is not None and self._idle_events.poll(0):
            # An idle keep-alive socket has nothing to read unless the server closed it, and a
            # closed or failed one reports POLLHUP or POLLERR whatever it was registered for.
            self._drop_connection()
            sock = None
        if sock is None:
            sock = gevent.socket.create_connection(self._address, self._connection_timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._ssl_context is not None:
                sock = self._ssl_context.wrap_socket(sock, server_hostname=self._host)
            sock.settimeout(self._network_timeout)
            # The unpatched poll returns at once, while gevent's would start I/O watchers and go
            # through the hub on every check. A check took 0.4 µs in a loop, against 1.05 µs for
            # a select, which builds its lists on every call.
            self._idle_events = _POLL()
            self._idle_events.register(sock.fileno(), select.POLLIN)
            if self._ssl_context is None:
                self._response_ready = gevent.get_hub().loop.io(sock.fileno(), READ)
            self._sock = sock
        return sock

    def _drop_connection(self) -> None:
        if self._response_ready is not None:
            self._response_ready.close()
            self._response_ready = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def close(self) -> None:
        self._drop_connection()
