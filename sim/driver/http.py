"""A lane's HTTP connection to the backend, reporting each request to Locust's statistics.

Locust's ``FastHttpSession`` sits on geventhttpclient's ``UserAgent``, which builds a
urllib-style request, parses the URL, keeps a cookie jar and wraps the response for every
call. A lane needs none of that: it sends API calls with a fixed header set to one host. Going
straight to geventhttpclient's ``HTTPClient`` roughly halves the client's CPU per request (about
60 against 117 µs in a loop of 64 greenlets against nginx on 2 vCPUs, an estimate that includes
Locust's statistics). Requests keep their Locust names, and a response is a failure in the
statistics exactly when ``FastHttpSession`` would count it as one: a connection error, or a
status outside the 2xx and redirect codes of ``LocustUserAgent.valid_response_codes``.

Differences from ``FastHttpSession``: redirects are not followed (an SDK API call never expects
one), cookies are ignored, and no ``Accept-Encoding`` is sent, so the response length in the
statistics is the length on the wire.
"""

from __future__ import annotations

import json
import socket
import time
from ssl import SSLError
from typing import Any
from urllib.parse import urlsplit

import gevent.ssl
from gevent.timeout import Timeout
from geventhttpclient import HTTPClient
from geventhttpclient._parser import HTTPParseError
from geventhttpclient.response import HTTPConnectionClosed
from geventhttpclient.useragent import ConnectionError as ClientConnectionError

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


class BadStatus(Exception):
    """A response whose status Locust counts as a failure, such as ``BadStatus(503)``."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def _unverified_ssl_context():
    # Locust's FastHttpUser does not verify certificates either (its ``insecure`` default).
    return gevent.ssl._create_unverified_context()


# One encoder for every body: json.dumps with non-default options builds a new one per call.
_ENCODER = json.JSONEncoder(separators=(",", ":"))


class LaneClient:
    """One keep-alive connection to the backend at ``base_url``.

    ``base_url`` is Locust's ``--host``, and its path, if any, prefixes every request path.
    Every request fires ``request_event``, Locust's ``events.request``, with the request's
    Locust name.
    """

    def __init__(
        self,
        base_url: str,
        request_event: Any,
        *,
        connection_timeout: float,
        network_timeout: float,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"invalid backend URL {base_url!r}: expected http://HOST[:PORT] or https://..."
            )
        self.base_url = base_url.rstrip("/")
        self._prefix = parts.path.rstrip("/")
        self._client = HTTPClient(
            parts.hostname,
            parts.port,
            concurrency=1,
            connection_timeout=connection_timeout,
            network_timeout=network_timeout,
            ssl=parts.scheme == "https",
            ssl_context_factory=_unverified_ssl_context,
            insecure=True,
        )
        self._fire = request_event.fire

    def send(self, request: HttpRequest) -> int:
        """Send ``request`` and return its HTTP status, or ``NO_RESPONSE`` on a connection error."""
        body = b""
        headers = request.headers
        if request.json is not None:
            body = _ENCODER.encode(request.json).encode()
            headers = {**JSON_HEADERS, **request.headers}

        start_time = time.time()
        started = time.perf_counter()
        exception: Exception | None = None
        status = NO_RESPONSE
        length = 0
        try:
            response = self._client.request(
                request.method, self._prefix + request.path, body=body, headers=headers
            )
            try:
                length = len(response.read())
                status = response.status_code
            finally:
                response.release()
        except FAILURES as error:
            exception = error
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

    def close(self) -> None:
        self._client.close()
