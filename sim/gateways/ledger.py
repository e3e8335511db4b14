"""The delivery ledger: a durable record of every push request the gateways answered.

``record`` runs on a wire server's event loop and only puts the request on a queue. One writer
thread takes everything queued, inserts it into SQLite (WAL, synchronous=NORMAL) and commits, so a
batch grows with the load and a commit follows each batch within ``flush_interval`` seconds. A
``kill -9`` loses what was still queued: under a load the writer keeps up with, that is at most
the last flush interval's pushes. After a crash the next open reports the wall-time window that
may be missing, in ``possible_gap``, in the ledger's metadata and through /metrics.
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from sim.formats.delivery import (
    COLUMNS,
    META_CLEAN_SHUTDOWN,
    META_LAST_FLUSH,
    META_POSSIBLE_GAPS,
    create_schema,
)
from sim.formats.shards import shard_of
from sim.gateways.hooks import Outcome, PushRequest, Service
from sim.gateways.logs import RepeatLimiter
from sim.gateways.registry import locate_token
from sim.gateways.run import RunConfig, RunState

log = logging.getLogger(__name__)

_INSERT = (
    f"INSERT INTO deliveries (seq, {', '.join(COLUMNS)}) "
    f"VALUES ({', '.join('?' * (len(COLUMNS) + 1))})"
)
_SET_META = "INSERT OR REPLACE INTO ledger_meta (key, value) VALUES (?, ?)"
_STOP = object()
# Positions in a row tuple, which starts with seq and then follows COLUMNS.
_SHARD = 1 + COLUMNS.index("shard")
_DELIVERY_ID = 1 + COLUMNS.index("delivery_id")
_TOKEN = 1 + COLUMNS.index("token")
_PAYLOAD = 1 + COLUMNS.index("payload")
_SERVICE = 1 + COLUMNS.index("service")
_WALL_TIME = 1 + COLUMNS.index("wall_time")
_EXTRA = 1 + COLUMNS.index("extra")


@dataclass(frozen=True)
class PossibleGap:
    """Wall-time window whose rows a crash may have lost, and the queue depth when it began."""

    since: float
    until: float
    backlog: int

    @property
    def seconds(self) -> float:
        return self.until - self.since


@dataclass(frozen=True)
class InboxEntry:
    """A committed, accepted push to an issued token, on its way to its shard's inbox."""

    seq: int
    shard: int
    delivery_id: str
    token: str
    payload: bytes
    service: str
    wall_time: float


class RecentKeys:
    """Map of recent keys to the seq that first used them, bounded in age and in count.

    A key is found while it is younger than ``window`` wall seconds, unless ``max_entries // 2``
    newer keys pushed it out first. Keys are stored as 64-bit hashes in two generations of plain
    dicts, with the seq and the time packed into one int, at roughly 120 bytes per key (CPython
    3.11 estimate).
    """

    _TICKS = 10  # time resolution: tenths of a second
    _TIME_BITS = 36  # tenths of a second wrap after about 218 years

    def __init__(self, window: float, max_entries: int) -> None:
        self.window = window
        self.max_entries = max_entries
        self._generation_size = max(1, max_entries // 2)
        self._current: dict[int, int] = {}
        self._previous: dict[int, int] = {}
        self._current_started: float | None = None

    def _rotate(self, now: float) -> None:
        started = self._current_started
        if started is None:
            self._current_started = now
            return
        if now - started >= 2 * self.window:
            self._previous, self._current = {}, {}
            self._current_started = now
        elif now - started >= self.window or len(self._current) >= self._generation_size:
            self._previous, self._current = self._current, {}
            self._current_started = now

    def first_seq(self, key: str | bytes, seq: int, now: float) -> int | None:
        """Return the seq that used ``key`` within the window, or remember ``seq`` for it."""
        data = key.encode() if isinstance(key, str) else key
        hashed = int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")
        mask = (1 << self._TIME_BITS) - 1
        ticks = int(now * self._TICKS) & mask
        self._rotate(now)

        packed = self._current.get(hashed)
        if packed is None:
            packed = self._previous.pop(hashed, None)
        if packed is not None:
            age = ((ticks - packed) & mask) / self._TICKS
            if age <= self.window:
                # Keep the first seq so every retry points at the original, and renew its age.
                first = packed >> self._TIME_BITS
                self._current[hashed] = (first << self._TIME_BITS) | ticks
                return first

        self._current[hashed] = (seq << self._TIME_BITS) | ticks
        return None

    def __len__(self) -> int:
        return len(self._current) + len(self._previous)


def _header(request: PushRequest, value: str | None, name: str) -> str | None:
    return value if value is not None else request.headers.get(name)


class DeliveryLedger:
    """DeliverySink that writes every answered push to SQLite off the request path."""

    def __init__(
        self,
        path: str | Path,
        run: RunState | None = None,
        *,
        flush_interval: float = 0.1,
        retry_window: float = 300.0,
        duplicate_window: float = 60.0,
        max_window_entries: int = 100_000,
        max_batch: int = 5000,
        on_commit: Callable[[list[InboxEntry]], None] | None = None,
    ) -> None:
        if not 0 < flush_interval <= 5:
            raise ValueError(
                f"invalid flush_interval {flush_interval!r}: use 0 < seconds <= 5, because a "
                "crash loses up to one interval of pushes"
            )
        self.path = Path(path)
        self.run = run or RunState()
        self.flush_interval = flush_interval
        self.max_batch = max_batch
        self.on_commit = on_commit
        self._retries = RecentKeys(retry_window, max_window_entries)
        self._duplicates = RecentKeys(duplicate_window, max_window_entries)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.write_errors = 0  # batches lost to SQLite errors since open
        self.committed = 0  # rows committed since open
        self._repeats = RepeatLimiter(log)
        self.last_flush_wall: float | None = None

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._connection = sqlite3.connect(self.path, check_same_thread=False)
        self._connection.execute("PRAGMA journal_mode=WAL")
        # In WAL mode NORMAL survives a process crash and skips an fsync per commit. Only a power
        # loss can undo the last commits.
        self._connection.execute("PRAGMA synchronous=NORMAL")
        create_schema(self._connection)
        self.possible_gap = self._detect_gap()
        self.next_seq = self._max_seq() + 1
        self._set_meta(META_CLEAN_SHUTDOWN, "0")
        self._set_meta("flush_interval", repr(flush_interval))
        self._connection.commit()

    def _max_seq(self) -> int:
        row = self._connection.execute("SELECT coalesce(max(seq), 0) FROM deliveries").fetchone()
        return row[0]

    def meta(self, key: str) -> str | None:
        """Return a ``ledger_meta`` value as last committed, or None."""
        row = self._connection.execute(
            "SELECT value FROM ledger_meta WHERE key = ?", (key,)
        ).fetchone()
        return row[0] if row else None

    def meta_items(self, prefix: str) -> dict[str, str]:
        """Return every committed ``ledger_meta`` entry whose key starts with ``prefix``."""
        rows = self._connection.execute(
            "SELECT key, value FROM ledger_meta WHERE substr(key, 1, ?) = ?", (len(prefix), prefix)
        ).fetchall()
        return dict(rows)

    def _set_meta(self, key: str, value: str) -> None:
        self._connection.execute(_SET_META, (key, value))

    def _detect_gap(self) -> PossibleGap | None:
        clean = self.meta(META_CLEAN_SHUTDOWN)
        last_flush = self.meta(META_LAST_FLUSH)
        if clean != "0" or last_flush is None:
            return None

        # The writer commits at least every flush interval, even idle, so the crash came within
        # one interval of its last heartbeat. Rows are written in the order they were queued, so
        # what is missing was received after the last row on disk.
        previous_interval = float(self.meta("flush_interval") or self.flush_interval)
        backlog = int(self.meta("backlog_at_flush") or 0)
        heartbeat = float(last_flush)
        last_row = self._connection.execute(
            "SELECT wall_time FROM deliveries ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        since = min(last_row[0], heartbeat) if last_row else heartbeat
        gap = PossibleGap(since=since, until=heartbeat + previous_interval, backlog=backlog)

        gaps = json.loads(self.meta(META_POSSIBLE_GAPS) or "[]")
        gaps.append(asdict(gap))
        self._set_meta(META_POSSIBLE_GAPS, json.dumps(gaps))
        log.warning(
            "delivery ledger %s was not closed cleanly: pushes received between wall %.3f and "
            "%.3f may be missing (%d were queued at the last flush)",
            self.path,
            gap.since,
            gap.until,
            gap.backlog,
        )
        return gap

    def start(self) -> DeliveryLedger:
        """Start the writer thread; return the ledger so ``DeliveryLedger(...).start()`` reads."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._write_loop, name=f"ledger-writer:{self.path.name}", daemon=True
            )
            self._thread.start()
            log.info("delivery ledger %s started at seq %d", self.path, self.next_seq)
        return self

    def window_entries(self) -> dict[str, int]:
        """Return how many keys the retry and duplicate windows keep (read from any thread)."""
        return {"retries": len(self._retries), "duplicates": len(self._duplicates)}

    @property
    def backlog(self) -> int:
        """Return how many records wait for the writer (approximately, like Queue.qsize)."""
        return self._queue.qsize()

    def record(self, request: PushRequest, outcome: Outcome) -> None:
        """Queue one answered push for the writer. Never blocks; safe from any thread."""
        self._queue.put((request, outcome, self.run.config))

    def set_meta(self, key: str, value: str) -> None:
        """Queue a ``ledger_meta`` write, committed in order with the records queued before it."""
        self._queue.put(("meta", key, value))

    def close(self, timeout: float = 30.0) -> None:
        """Write everything queued, mark the shutdown clean and close the file."""
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.error("delivery ledger %s: writer did not finish in %.0f s", self.path, timeout)
                return
            self._thread = None
        else:
            self._drain_without_thread()
        self._set_meta(META_CLEAN_SHUTDOWN, "1")
        self._connection.commit()
        self._connection.close()
        log.info("delivery ledger %s closed after %d rows", self.path, self.committed)

    def _drain_without_thread(self) -> None:
        batch = []
        while True:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        if batch:
            self._write(batch)

    def _write_loop(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=self.flush_interval)
            except queue.Empty:
                try:
                    self._heartbeat()
                except sqlite3.Error as error:
                    self._rollback()
                    self._repeats.log(
                        logging.ERROR,
                        "heartbeat",
                        "delivery ledger %s: heartbeat failed: %r",
                        self.path,
                        error,
                    )
                continue

            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break

            stop = _STOP in batch
            try:
                self._write([item for item in batch if item is not _STOP])
            except sqlite3.Error:
                # Without a ledger the run's verdicts are void, so log the error and keep the
                # server running. The rows of this batch are lost, like a crash would lose them.
                self.write_errors += 1
                self._rollback()
                log.exception(
                    "delivery ledger %s: writing %d records failed", self.path, len(batch)
                )
            if stop:
                return

    def _rollback(self) -> None:
        try:
            self._connection.rollback()
        except sqlite3.Error:
            log.exception("delivery ledger %s: rollback after a failed write failed", self.path)

    def _heartbeat(self) -> None:
        now = time.time()
        self._set_meta(META_LAST_FLUSH, repr(now))
        self._set_meta("backlog_at_flush", "0")
        self._connection.commit()
        self.last_flush_wall = now

    def _write(self, batch: list) -> None:
        rows = []
        metas = []
        for item in batch:
            if item[0] == "meta":
                metas.append(item[1:])
                continue
            request, outcome, config = item
            rows.append(self._row(self.next_seq, request, outcome, config))
            self.next_seq += 1

        try:
            self._connection.executemany(_INSERT, rows)
        except sqlite3.IntegrityError:
            self._connection.rollback()
            rows = self._insert_one_by_one(rows)
        for key, value in metas:
            self._set_meta(key, value)
        now = time.time()
        self._set_meta(META_LAST_FLUSH, repr(now))
        self._set_meta("backlog_at_flush", str(self._queue.qsize()))
        self._connection.commit()
        self.committed += len(rows)
        self.last_flush_wall = now

        # Deliveries reach the inbox only once committed, so a crash never leaves a phone with
        # a delivery id the ledger does not hold.
        entries = [
            InboxEntry(row[0], row[_SHARD], row[_DELIVERY_ID], row[_TOKEN], row[_PAYLOAD],
                       row[_SERVICE], row[_WALL_TIME])
            for row in rows
            if row[_DELIVERY_ID] is not None and row[_SHARD] is not None
        ]  # fmt: skip
        if entries and self.on_commit is not None:
            self.on_commit(entries)

    def _insert_one_by_one(self, rows: list[tuple]) -> list[tuple]:
        # A server that reused a delivery id breaks the UNIQUE constraint. Keep the row, without
        # a delivery id so the phone does not get it twice, and note the id in ``extra``.
        inserted = []
        for row in rows:
            try:
                self._connection.execute(_INSERT, row)
            except sqlite3.IntegrityError:
                delivery_id = row[_DELIVERY_ID]
                extra = json.loads(row[_EXTRA] or "{}")
                extra["reused_delivery_id"] = delivery_id
                row = (*row[:_DELIVERY_ID], None, *row[_DELIVERY_ID + 1 : _EXTRA],
                       json.dumps(extra, sort_keys=True))  # fmt: skip
                self._connection.execute(_INSERT, row)
                self._repeats.log(
                    logging.ERROR,
                    "reused-delivery-id",
                    "delivery ledger %s: delivery id %s of seq %d was already used; recorded "
                    "without it, so the inbox skips this push",
                    self.path,
                    delivery_id,
                    row[0],
                )
            inserted.append(row)
        return inserted

    def _row(
        self, seq: int, request: PushRequest, outcome: Outcome, config: RunConfig | None
    ) -> tuple:
        sim_time = shard = group_id = None
        if config is not None:
            sim_time = config.epoch.sim_at(request.received_at)
            info = locate_token(config.run_key, request.token)
            if info is not None:
                group_id = info.group_id
                shard = shard_of(group_id, config.shard_count)

        retry_of = duplicate_of = None
        if request.service is Service.APNS:
            apns_id = request.headers.get("apns-id") or request.message_id
            if apns_id:
                retry_of = self._retries.first_seq(apns_id, seq, request.received_at)
        else:
            key = request.token.encode() + b"\0" + request.payload
            duplicate_of = self._duplicates.first_seq(key, seq, request.received_at)

        return (
            seq,
            request.received_at,
            sim_time,
            request.service.value,
            request.connection_id,
            request.token,
            request.audience,
            request.message_id,
            _header(request, request.collapse_id, "apns-collapse-id"),
            _header(request, request.priority, "apns-priority"),
            _header(request, request.expiration, "apns-expiration"),
            _header(request, request.push_type, "apns-push-type"),
            request.payload,
            outcome.status,
            outcome.reason,
            outcome.delivery_id,
            outcome.timestamp_ms,
            outcome.retry_after,
            outcome.added_latency,
            retry_of,
            duplicate_of,
            shard,
            group_id,
            outcome.fault,
            json.dumps(outcome.extra, sort_keys=True) if outcome.extra else None,
        )
