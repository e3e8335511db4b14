"""Random identifiers the gateways make up per push: an apns-id and an FCM message id suffix.

They come from a Mersenne Twister seeded once from the OS, not from ``uuid.uuid4`` or
``secrets``, which read the OS for every id. In a profiled gateway with other threads,
``os.urandom`` took 8 us a call against 0.3 us in a tight loop, most likely because the system
call releases the GIL. These ids need to be unique, not unguessable: with 122 random bits a
collision within a run is vanishingly unlikely.
"""

from __future__ import annotations

import random

_random = random.Random()  # seeded from os.urandom


def new_apns_id() -> str:
    """Return a random version 4 UUID in upper case, as APNs writes apns-id."""
    bits = _random.getrandbits(128)
    # Set the version (4) and the RFC 4122 variant bits, as uuid.UUID(version=4) does.
    bits = (bits & ~(0xF000 << 64)) | (0x4000 << 64)
    bits = (bits & ~(0xC000 << 48)) | (0x8000 << 48)
    text = f"{bits:032X}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def new_hex(length: int) -> str:
    """Return ``length`` random lower-case hex digits."""
    return f"{_random.getrandbits(4 * length):0{length}x}"
