"""Per-shard inboxes: how each Locust worker receives the pushes for the phones it simulates.

An accepted push to an issued token belongs to the shard that owns the token's group. The inbox
is fed by the ledger after each commit, so it contains only committed rows and is rebuilt
from the ledger file after a restart. Each shard keeps a bounded in-memory tail, trimmed at its
acknowledged cursor. Reads behind the tail go to SQLite.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import sqlite3
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sim.gateways.ledger import InboxEntry

ACK_META_PREFIX = "inbox_ack:"
MAX_WAIT = 30.0  # wall seconds a long poll may hold a request open
MAX_LIMIT = 10_000

_SELECT = (
    "SELECT seq, shard, delivery_id, token, payload, service, wall_time FROM deliveries "
    "WHERE shard = ? AND seq > ? AND delivery_id IS NOT NULL AND wall_time >= ? "
    "ORDER BY seq LIMIT ?"
)


def entry_json(entry: InboxEntry) -> dict:
    """Return the JSON form of a delivery; the payload is decoded when it is JSON."""
    data = {
        "seq": entry.seq,
        "delivery_id": entry.delivery_id,
        "token": entry.token,
        "service": entry.service,
        "wall_time": entry.wall_time,
    }
    try:
        data["payload"] = json.loads(entry.payload)
    except (ValueError, TypeError):
        data["payload"] = None
        data["payload_base64"] = base64.b64encode(entry.payload or b"").decode()
    return data


@dataclass
class _ShardInbox:
    # Every delivery of this shard with seq > floor is in ``tail`` (once committed).
    floor: int
    acked: int = 0
    tail: deque[InboxEntry] = field(default_factory=deque)
    waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future]] = field(default_factory=list)


class Inbox:
    """The shards' deliveries, fed by ``publish`` from the ledger's writer thread."""

    def __init__(
        self,
        ledger_path: str | Path,
        *,
        last_seq: int = 0,
        acks: dict[int, int] | None = None,
        max_tail: int = 10_000,
        store_ack: Callable[[int, int], None] | None = None,
    ) -> None:
        self.ledger_path = Path(ledger_path)
        self.max_tail = max_tail
        self.last_seq = last_seq
        self._start_floor = last_seq
        self._store_ack = store_ack
        self._acks = dict(acks or {})
        self._shards: dict[int, _ShardInbox] = {}
        # Wall Unix seconds of the current run's first action. Deliveries received earlier
        # belong to an earlier run on the same gateways, whose phones are gone.
        self._run_since = 0.0
        self._lock = threading.Lock()
        self._local = threading.local()

    def _shard(self, shard: int) -> _ShardInbox:
        state = self._shards.get(shard)
        if state is None:
            state = _ShardInbox(floor=self._start_floor, acked=self._acks.get(shard, 0))
            self._shards[shard] = state
        return state

    def publish(self, entries: list[InboxEntry]) -> None:
        """Append committed deliveries in seq order and wake the long polls of their shards."""
        woken = []
        with self._lock:
            for entry in entries:
                state = self._shard(entry.shard)
                self.last_seq = max(self.last_seq, entry.seq)
                if entry.seq <= state.acked or entry.wall_time < self._run_since:
                    continue
                state.tail.append(entry)
                if len(state.tail) > self.max_tail:
                    # No worker reads this shard fast enough. Keep the newest entries in
                    # memory and serve older ones from SQLite.
                    state.floor = state.tail.popleft().seq
                if state.waiters:
                    woken.extend(state.waiters)
                    state.waiters = []
        for loop, future in woken:
            try:
                loop.call_soon_threadsafe(_resolve, future)
            except RuntimeError:
                pass  # the poller's loop closed while it waited

    def start_run(self, since: float) -> None:
        """Hide from every shard the deliveries received before wall Unix time ``since``."""
        with self._lock:
            self._run_since = since
            for state in self._shards.values():
                state.tail = deque(entry for entry in state.tail if entry.wall_time >= since)

    def acked(self, shard: int) -> int:
        with self._lock:
            return self._shard(shard).acked

    def ack(self, shard: int, seq: int) -> int:
        """Move the shard's cursor to ``seq`` and drop what it covers; return the cursor.

        Raises ValueError for a cursor past the last committed push, since it would skip
        deliveries not yet made.
        """
        with self._lock:
            if seq > self.last_seq:
                raise ValueError(
                    f"invalid cursor {seq}: the last delivery so far is seq {self.last_seq}; "
                    "acknowledge the seq of a delivery you received"
                )
            state = self._shard(shard)
            if seq <= state.acked:
                return state.acked
            state.acked = seq
            while state.tail and state.tail[0].seq <= seq:
                state.tail.popleft()
        if self._store_ack is not None:
            self._store_ack(shard, seq)
        return seq

    def memory_entries(self) -> int:
        """Return how many deliveries the shards hold in memory."""
        with self._lock:
            return sum(len(state.tail) for state in self._shards.values())

    def _from_memory(self, shard: int, after: int, limit: int) -> list[InboxEntry] | None:
        # None means the cursor is behind the tail, so the rows must be read from SQLite.
        with self._lock:
            state = self._shard(shard)
            if after < state.floor:
                return None
            newer = itertools.dropwhile(lambda entry: entry.seq <= after, state.tail)
            return list(itertools.islice(newer, limit))

    def _from_disk(self, shard: int, after: int, limit: int) -> list[InboxEntry]:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(f"file:{self.ledger_path}?mode=ro", uri=True)
            self._local.connection = connection
        rows = connection.execute(_SELECT, (shard, after, self._run_since, limit)).fetchall()
        return [InboxEntry(*row) for row in rows]

    def read(self, shard: int, after: int | None = None, limit: int = 1000) -> list[InboxEntry]:
        """Return up to ``limit`` deliveries of ``shard`` after the cursor, without waiting.

        The cursor is never behind the shard's acknowledged cursor, so an acknowledged delivery
        is never returned again. This may read SQLite, so call it off the event loop.
        """
        after = max(after or 0, self.acked(shard))
        found = self._from_memory(shard, after, limit)
        if found is None:
            found = self._from_disk(shard, after, limit)
        return found

    async def fetch(
        self, shard: int, after: int | None = None, limit: int = 1000, wait: float = 0.0
    ) -> list[InboxEntry]:
        """Return deliveries after the cursor, waiting up to ``wait`` wall seconds for one."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(wait, MAX_WAIT)
        while True:
            found = self._from_memory(shard, max(after or 0, self.acked(shard)), limit)
            if found is None:
                found = await loop.run_in_executor(None, self.read, shard, after, limit)
            remaining = deadline - loop.time()
            if found or remaining <= 0:
                return found

            future = loop.create_future()
            with self._lock:
                # Re-check under the lock so a publish between the read and here is not missed.
                state = self._shard(shard)
                cursor = max(after or 0, state.acked)
                if state.tail and state.tail[-1].seq > cursor and cursor >= state.floor:
                    continue
                state.waiters.append((loop, future))
            try:
                await asyncio.wait_for(future, remaining)
            except TimeoutError:
                pass
            finally:
                # A poll that timed out or whose client went away must not stay registered.
                with self._lock:
                    state.waiters = [pair for pair in state.waiters if pair[1] is not future]

    def close(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()


def _resolve(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)
