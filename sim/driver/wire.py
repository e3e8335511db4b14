"""What an SDK call becomes on the wire: an HTTP request, and its idempotency id."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from typing import Any

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_CROCKFORD_PAIRS = [first + second for first in _CROCKFORD for second in _CROCKFORD]
# Copying a hasher set up with ``person`` costs about half as much as building one per call.
_ULID_HASH = hashlib.blake2b(digest_size=10, person=b"pushsim-ulid")


@dataclass(slots=True)
class HttpRequest:
    """One request to the backend. ``name`` is the label in Locust's statistics.

    ``text``, when set, is the compact ASCII JSON text of ``json`` that an adapter already
    wrote, and the client sends it instead of encoding ``json`` again.
    """

    method: str
    path: str
    name: str
    json: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    text: str | None = None


def basic_auth(user: str, password: str) -> str:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return f"Basic {token}"


def event_ulid(wall_ms: int, group_id: int, seq: int) -> str:
    """Return a ULID for an event: its wall time in ms, then 80 bits derived from the call.

    Customer.io deduplicates events by a ULID ``id``. Deriving the random part from the call
    keeps a retried request's id unchanged and the model free of unseeded randomness.
    """
    hasher = _ULID_HASH.copy()
    hasher.update(f"{group_id}:{seq}".encode())
    value = (wall_ms & ((1 << 48) - 1)) << 80 | int.from_bytes(hasher.digest(), "big")
    # 130 bits, the top two zero, as 13 groups of 10 bits: two Crockford digits per group.
    return "".join([_CROCKFORD_PAIRS[(value >> shift) & 1023] for shift in range(120, -10, -10)])
