"""Small JSON-over-HTTP client for the gateways' control and inbox APIs, for use in greenlets.

It uses geventhttpclient, which Locust already brings, so a long poll yields to other greenlets
instead of blocking the worker.
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import urlsplit

from geventhttpclient import HTTPClient

log = logging.getLogger(__name__)


class ControlError(RuntimeError):
    """A control request failed; the message names the URL and the status."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        # The HTTP status of the response, or None when no response came.
        self.status = status


class ControlClient:
    """Authenticated JSON requests to one base URL."""

    def __init__(self, base_url: str, token: str, *, timeout: float = 30.0):
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"invalid control URL {base_url!r}: use http://127.0.0.1:PORT")
        self.base_url = base_url.rstrip("/")
        self.prefix = parts.path.rstrip("/")
        self._client = HTTPClient(
            parts.hostname,
            parts.port or (443 if parts.scheme == "https" else 80),
            ssl=parts.scheme == "https",
            connection_timeout=5.0,
            network_timeout=timeout,
            concurrency=4,
        )
        self._headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """Send one request and return the decoded JSON body, raising ControlError otherwise."""
        payload = json.dumps(body).encode() if body is not None else None
        url = self.prefix + path
        try:
            response = self._client.request(method, url, body=payload, headers=self._headers)
            data = response.read()
        except (OSError, TimeoutError) as error:
            raise ControlError(f"{method} {self.base_url}{path} failed: {error}") from error
        if response.status_code >= 300:
            text = data.decode(errors="replace")[:300]
            raise ControlError(
                f"{method} {self.base_url}{path} answered {response.status_code}: {text}",
                response.status_code,
            )
        return json.loads(data) if data else None

    def close(self) -> None:
        self._client.close()
