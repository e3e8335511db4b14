"""What an SDK call becomes on the wire: an HTTP request, and its idempotency id."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from typing import Any

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


@dataclass(slots=True)
class HttpRequest:
    """One request to the backend. ``name`` is the label in Locust's statistics."""

    method: str
    path: str
    name: str
    json: Any = None
    headers: dict[str, str] = field(default_factory=dict)


def basic_auth(user: str, password: str) -> str:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return f"Basic {token}"


def event_ulid(wall_ms: int, group_id: int, seq: int) -> str:
    """Return a ULID for an event: its wall time in ms, then 80 bits derived from the call.

    Customer.io deduplicates events by a ULID ``id``. Deriving the random part from the call
    keeps a retried request's id unchanged and the model free of unseeded randomness.
    """
    entropy = hashlib.blake2b(
        f"{group_id}:{seq}".encode(), digest_size=10, person=b"pushsim-ulid"
    ).digest()
    value = (wall_ms & ((1 << 48) - 1)) << 80 | int.from_bytes(entropy, "big")
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))
