"""Stable assignment of shopper groups to shards (Locust workers)."""

from __future__ import annotations

import hashlib


def group_hash(group_id: int) -> int:
    """Return a 64-bit hash of a group id that is the same in every process and on every machine.

    Python's ``hash()`` is salted per process, so it can never decide ownership.
    """
    digest = hashlib.blake2b(group_id.to_bytes(8, "big"), digest_size=8, person=b"pushsim-shard")
    return int.from_bytes(digest.digest(), "big")


def shard_of(group_id: int, shard_count: int) -> int:
    """Return the shard index in ``range(shard_count)`` that owns ``group_id``."""
    if shard_count < 1:
        raise ValueError(f"invalid shard count {shard_count}: it must be at least 1")
    return group_hash(group_id) % shard_count


def parse_shard(text: str) -> tuple[int, int]:
    """Parse ``"i/N"`` into ``(i, N)``, raising ValueError with the fix on bad input."""
    index_text, slash, count_text = text.partition("/")
    try:
        index, count = int(index_text), int(count_text)
    except ValueError:
        index, count = -1, 0
    if not slash or count < 1 or not 0 <= index < count:
        raise ValueError(
            f"invalid shard {text!r}: write it as i/N with 0 <= i < N, for example 0/2"
        )
    return index, count
