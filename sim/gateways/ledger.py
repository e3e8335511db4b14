"""The delivery ledger: a durable record of every push request the gateways answered.

``record`` runs on a wire server's event loop and only appends the request to a deque. Every
``group_interval`` seconds a sender thread takes what is pending, lays it out as plain tuples and
sends it to the writer process (ledger_writer.py), which completes the rows, inserts them into
SQLite (WAL, synchronous=NORMAL) and commits. A receiver thread takes the writer's answers: the
counts for /metrics and the committed deliveries for the inbox. So a busy gateway commits a few
dozen times a second, and ``record`` does no I/O and takes no lock.

A ``kill -9`` of the gateway loses what the sender had not yet handed to the writer: under a
load the writer keeps up with, the pushes of the last ``group_interval``. The writer commits the
batches already in the pipe, then exits.
The writer commits a heartbeat every ``flush_interval`` seconds while idle. After a crash the next
open reports the wall-time window that may be missing, in ``possible_gap``, in the ledger's
metadata and through /metrics.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import sqlite3
import subprocess
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

from sim.formats.delivery import (
    META_CLEAN_SHUTDOWN,
    META_LAST_FLUSH,
    META_POSSIBLE_GAPS,
    create_schema,
    create_token_index,
    drop_token_index,
)
from sim.gateways.hooks import Outcome, PushRequest, Service
from sim.gateways.ledger_writer import (
    LedgerWriter,
    WriterOptions,
    command,
    environment,
    lock_writer,
    wait_for_writer,
)
from sim.gateways.logs import RepeatLimiter
from sim.gateways.registry import locate_token
from sim.gateways.run import RunConfig, RunState

log = logging.getLogger(__name__)

_SET_META = "INSERT OR REPLACE INTO ledger_meta (key, value) VALUES (?, ?)"


@dataclass(frozen=True)
class PossibleGap:
    """Wall-time window whose rows a crash may have lost, and the queue depth when it began."""

    since: float
    until: float
    backlog: int

    @property
    def seconds(self) -> float:
        return self.until - self.since


class InboxEntry(NamedTuple):
    """A committed, accepted push to an issued token, on its way to its shard's inbox."""

    seq: int
    shard: int
    delivery_id: str
    token: str
    payload: bytes
    service: str
    wall_time: float


def _header(request: PushRequest, value: str | None, name: str) -> str | None:
    return value if value is not None else request.headers.get(name)


def _record(request: PushRequest, outcome: Outcome, config: RunConfig | None) -> tuple:
    """Return one push and its response as the tuple the writer reads (``RECORD_FIELDS``)."""
    retry_key = group_id = None
    if request.service is Service.APNS:
        retry_key = request.headers.get("apns-id") or request.message_id
    if config is not None:
        # The registry checked this token a moment ago, so its MAC check is cached.
        info = locate_token(config.run_key, request.token)
        group_id = info.group_id if info is not None else None
    return (
        config,
        group_id,
        retry_key,
        request.received_at,
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
        outcome.fault,
        json.dumps(outcome.extra, sort_keys=True) if outcome.extra else None,
    )


class DeliveryLedger:
    """DeliverySink that writes every push and its response to SQLite, from a writer process."""

    def __init__(
        self,
        path: str | Path,
        run: RunState | None = None,
        *,
        flush_interval: float = 0.1,
        group_interval: float = 0.02,
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
        if not 0 < group_interval <= flush_interval:
            raise ValueError(
                f"invalid group_interval {group_interval!r}: use 0 < seconds <= flush_interval "
                f"({flush_interval!r})"
            )
        self.path = Path(path)
        self.run = run or RunState()
        self.flush_interval = flush_interval
        self.group_interval = group_interval
        self.on_commit = on_commit
        # Counts from the writer's last report, read from any thread for /metrics.
        self.committed = 0  # rows committed since open
        self.write_errors = 0  # batches lost to SQLite errors or to a writer that died
        self._send_errors = 0  # batches the sender could not hand to the writer
        self.last_flush_wall: float | None = None
        self._handled = 0  # records the writer committed or lost
        self._sent = 0  # records sent to the writer
        self._windows = {"retries": 0, "duplicates": 0}
        self._repeats = RepeatLimiter(log)
        # deque.append and deque.popleft are atomic, so the event loop and the sender thread
        # share it without a lock. A meta write is queued as (None, key, value).
        self._pending: deque = deque()
        self._stopping = threading.Event()
        self._process = None
        self._sender: threading.Thread | None = None
        self._receiver: threading.Thread | None = None
        self._records = None
        self._commits = None

        self.path.parent.mkdir(parents=True, exist_ok=True)
        wait_for_writer(str(self.path))
        self._connection = sqlite3.connect(self.path, check_same_thread=False, timeout=30.0)
        self._connection.execute("PRAGMA journal_mode=WAL")
        create_schema(self._connection)
        drop_token_index(self._connection)
        self.possible_gap = self._detect_gap()
        self.next_seq = self._max_seq() + 1
        self._set_meta(META_CLEAN_SHUTDOWN, "0")
        self._set_meta("flush_interval", repr(flush_interval))
        self._connection.commit()
        self._options = WriterOptions(
            path=str(self.path),
            next_seq=self.next_seq,
            flush_interval=flush_interval,
            retry_window=retry_window,
            duplicate_window=duplicate_window,
            max_window_entries=max_window_entries,
            max_batch=max_batch,
        )

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
        heartbeat = float(last_flush)
        last_row = self._connection.execute(
            "SELECT wall_time FROM deliveries ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        since = min(last_row[0], heartbeat) if last_row else heartbeat
        backlog = int(self.meta("backlog_at_flush") or 0)
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
        """Start the writer process; return the ledger so ``DeliveryLedger(...).start()`` reads."""
        if self._process is not None:
            return self
        # A command line rather than multiprocessing: a spawned child imports the parent's main
        # module again, and a gateway may be started from any script, guarded or not.
        records_out, records_in = multiprocessing.Pipe(duplex=False)
        commits_out, commits_in = multiprocessing.Pipe(duplex=False)
        lock = lock_writer(str(self.path))
        child_ends = (records_out.fileno(), commits_in.fileno(), lock.fileno())
        try:
            self._process = subprocess.Popen(
                command(self._options, *child_ends), pass_fds=child_ends, env=environment()
            )
        finally:
            lock.close()
        # Only the writer keeps these ends open, so each side reads EOF once the other exits.
        records_out.close()
        commits_in.close()
        self._records, self._commits = records_in, commits_out

        self._sender = threading.Thread(
            target=self._send_loop, name=f"ledger-sender:{self.path.name}", daemon=True
        )
        self._receiver = threading.Thread(
            target=self._receive_loop, name=f"ledger-receiver:{self.path.name}", daemon=True
        )
        self._sender.start()
        self._receiver.start()
        log.info(
            "delivery ledger %s started at seq %d, writer pid %d",
            self.path,
            self.next_seq,
            self._process.pid,
        )
        return self

    @property
    def writer_pid(self) -> int | None:
        """Return the writer process's pid once started, for its CPU time in benchmarks."""
        return self._process.pid if self._process is not None else None

    def window_entries(self) -> dict[str, int]:
        """Return how many keys the retry and duplicate windows kept at the last commit."""
        return dict(self._windows)

    @property
    def backlog(self) -> int:
        """Return how many records wait to be committed."""
        return len(self._pending) + self._sent - self._handled

    def record(self, request: PushRequest, outcome: Outcome) -> None:
        """Queue one push and its response for the writer, from any thread, without I/O."""
        self._pending.append((request, outcome, self.run.config))

    def set_meta(self, key: str, value: str) -> None:
        """Queue a ``ledger_meta`` write, committed in order with the records queued before it."""
        self._pending.append((None, key, value))

    def close(self, timeout: float = 30.0) -> None:
        """Write everything pending, build the token index, mark the shutdown clean and close."""
        if self._process is not None:
            self._stopping.set()
            for thread in (self._sender, self._receiver):
                thread.join(timeout)
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
            if self._process.poll() is None or self._receiver.is_alive():
                log.error("delivery ledger %s: writer did not finish in %.0f s", self.path, timeout)
                self._process.kill()
                return
            self._records.close()
            self._commits.close()
            if self._process.returncode != 0:
                # Pushes sent after the writer died are lost. Leaving the shutdown unclean makes
                # the next open report the window that may be missing.
                log.error(
                    "delivery ledger %s: writer process exited with status %d, so the ledger "
                    "stays marked as not closed cleanly",
                    self.path,
                    self._process.returncode,
                )
                self._connection.close()
                return
        elif self._pending:
            self._write_here()
        create_token_index(self._connection)
        self._set_meta(META_CLEAN_SHUTDOWN, "1")
        self._connection.commit()
        self._connection.close()
        log.info("delivery ledger %s closed after %d rows", self.path, self.committed)

    def _take(self, limit: int | None = None) -> tuple[list[tuple], list[tuple[str, str]]]:
        """Pop up to ``limit`` pending records, with the meta writes queued among them."""
        records, metas = [], []
        pending = self._pending
        while pending and (limit is None or len(records) < limit):
            item = pending.popleft()
            if item[0] is None:
                metas.append((item[1], item[2]))
            else:
                records.append(_record(*item))
        return records, metas

    def _write_here(self) -> None:
        # A ledger that was never started writes its pending records in this process on close.
        writer = LedgerWriter(self._options)
        try:
            records, metas = self._take()
            entries = writer.write_safely(records, metas)
            self._absorb(writer.stats())
        finally:
            writer.close()
        if entries and self.on_commit is not None:
            self.on_commit([InboxEntry(*entry) for entry in entries])

    def _send_loop(self) -> None:
        # A message contains at most max_batch records. When the writer falls behind, a backlog
        # builds up in the deque. Sent at once, it would need every row tuple and one pickle of
        # megabytes in both processes, and that would set their peak memory.
        limit = self._options.max_batch
        backlog = False
        while True:
            stopping = self._stopping.wait(0 if backlog else self.group_interval)
            records, metas = self._take(limit)
            backlog = len(records) == limit
            try:
                if records or metas:
                    self._records.send(("batch", records, metas))
                    self._sent += len(records)
                if stopping and not backlog:
                    self._records.send(("stop",))
                    return
            except OSError as error:
                self._send_errors += 1
                self.write_errors += 1
                self._repeats.log(
                    logging.ERROR,
                    "writer-gone",
                    "delivery ledger %s: sending %d records to the writer process failed, so "
                    "they are lost: %r",
                    self.path,
                    len(records),
                    error,
                )
                if stopping:
                    return

    def _receive_loop(self) -> None:
        while True:
            try:
                message = self._commits.recv()
            except (EOFError, OSError):
                if not self._stopping.is_set():
                    log.error(
                        "delivery ledger %s: writer process %d exited before the ledger closed; "
                        "pushes from now on are not recorded",
                        self.path,
                        self._process.pid,
                    )
                return
            self._absorb(message[-1])
            if message[0] == "committed" and message[1] and self.on_commit is not None:
                self.on_commit([InboxEntry(*entry) for entry in message[1]])
            if message[0] == "closed":
                return

    def _absorb(self, stats: dict) -> None:
        self.committed = stats["committed"]
        self.write_errors = self._send_errors + stats["write_errors"]
        self._handled = stats["handled"]
        self._windows = stats["windows"]
        if stats["last_flush_wall"] is not None:
            self.last_flush_wall = stats["last_flush_wall"]
