"""Size limits on intake, the per-credential rate limit and a bounded body reader."""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass

from aiohttp import hdrs, web

log = logging.getLogger(__name__)

# Customer.io Track API v1 limits, in bytes of UTF-8.
ID_MAX_BYTES = 150
ATTRIBUTE_NAME_MAX_BYTES = 150
ATTRIBUTE_VALUE_MAX_BYTES = 1000
EVENT_NAME_MAX_BYTES = 100
EVENT_DATA_MAX_BYTES = 100 * 1024

# Segment HTTP API limits: one message, and one whole batch request (bytes).
CDP_CALL_MAX_BYTES = 32 * 1024
CDP_BATCH_MAX_BYTES = 500 * 1024

# Rate-limit rejections are logged once per credential per this many seconds, with a count.
REJECTION_LOG_INTERVAL_SECONDS = 10.0


def utf8_size(text: str) -> int:
    """Return the length of ``text`` in UTF-8 bytes."""
    # An ASCII string has one byte per character, and isascii() does not copy the string.
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def json_size(value: object) -> int:
    """Return the size in bytes of ``value`` as compact JSON (a string counts without quotes)."""
    if isinstance(value, str):
        return utf8_size(value)
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


async def read_limited_body(request: web.Request, limit: int) -> bytes | None:
    """Read the request body, or return None when it is longer than ``limit`` bytes.

    An oversized body is still read to its end and discarded, so the connection stays usable
    and memory stays bounded by ``limit``.
    """
    length = request.content_length
    if length is not None and length <= limit and hdrs.CONTENT_ENCODING not in request.headers:
        # The HTTP parser ends an uncompressed body at its Content-Length, so one read is
        # bounded, and it skips the per-chunk async iteration below. A small body has usually
        # arrived whole with the headers, and then it is taken without awaiting.
        content = request.content
        if content.is_eof():
            return content.read_nowait()
        return await content.read()

    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size <= limit:
            chunks.append(chunk)
        elif chunks:
            chunks.clear()
    if size > limit:
        return None
    return b"".join(chunks)


class TokenBucket:
    """A token bucket holding up to ``burst`` requests that refills at ``rate`` per second."""

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.updated = now

    def take(self, now: float) -> float:
        """Take one token and return 0, or return the seconds until one will be available."""
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


@dataclass
class _RejectionLog:
    count: int = 0
    logged_at: float = -math.inf


class RateLimiter:
    """Token buckets keyed by credential.

    ``label`` names the credential in logs, because the key itself may be a secret.
    """

    def __init__(self, rate: float | None, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: dict[str, TokenBucket] = {}
        self._rejections: dict[str, _RejectionLog] = {}

    def check(self, key: str, label: str) -> int | None:
        """Take a token for ``key``; return None if allowed, else the Retry-After in seconds."""
        if self.rate is None:
            return None
        now = time.monotonic()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, now)
        wait = bucket.take(now)
        if wait == 0:
            return None

        rejections = self._rejections.setdefault(key, _RejectionLog())
        rejections.count += 1
        if now - rejections.logged_at >= REJECTION_LOG_INTERVAL_SECONDS:
            log.warning(
                "rate limit of %.1f/s (burst %d) exceeded by %s: %d rejections since last report",
                self.rate,
                self.burst,
                label,
                rejections.count,
            )
            rejections.count = 0
            rejections.logged_at = now
        return max(1, math.ceil(wait))
