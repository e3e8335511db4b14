"""The backend's SQLite store: its schema and the group-commit writer.

Every write is a function of a ``sqlite3.Connection`` that runs on one writer thread. The writer
takes the writes queued since its last commit, runs them and commits them in one transaction.
``Store.write`` returns only after that commit, so a write that a request acknowledged survives
a restart of the process.

Reads run on a separate connection in WAL mode. A read started after a write returned sees it.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from sim.backend.checkpoints import Checkpointer

log = logging.getLogger(__name__)

T = TypeVar("T")
WriteOp = Callable[[sqlite3.Connection], T]

SCHEMA_VERSION = 1

# While it lingers, the writer looks at its queue this often (seconds). The event loop parses a
# Track API request in well under this interval, about 0.08 ms in tests/bench/bench_backend.py,
# so a look that finds no new write most likely means the loop has no request left to parse.
# The writer then commits at once instead of sleeping out the rest of the linger.
QUIET_SECONDS = 0.0003

# Times are wall Unix seconds (REAL) throughout. JSON columns hold objects encoded as text.
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- A profile is a person (customer_id set) or an anonymous visitor (customer_id NULL).
-- A merged profile keeps its row, and merged_into names the profile that absorbed it.
CREATE TABLE IF NOT EXISTS profiles (
    id INTEGER PRIMARY KEY,
    customer_id TEXT UNIQUE,
    email TEXT,
    attributes TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    merged_into INTEGER REFERENCES profiles(id)
);
-- A merge repoints the profiles merged into its secondary. Without this index that UPDATE scans
-- every profile inside the writer's batch. Most profiles are never merged, hence the WHERE.
CREATE INDEX IF NOT EXISTS profiles_by_merged_into
    ON profiles (merged_into) WHERE merged_into IS NOT NULL;

-- Every identifier the backend has seen, pointing at the live profile that owns it.
CREATE TABLE IF NOT EXISTS identities (
    kind TEXT NOT NULL CHECK (kind IN ('id', 'email', 'anonymous_id')),
    value TEXT NOT NULL,
    profile_id INTEGER NOT NULL REFERENCES profiles(id),
    created_at REAL NOT NULL,
    PRIMARY KEY (kind, value)
);
CREATE INDEX IF NOT EXISTS identities_by_profile ON identities (profile_id);

CREATE TABLE IF NOT EXISTS merges (
    id INTEGER PRIMARY KEY,
    primary_profile INTEGER NOT NULL REFERENCES profiles(id),
    secondary_profile INTEGER NOT NULL REFERENCES profiles(id),
    reason TEXT NOT NULL,
    merged_at REAL NOT NULL
);

-- One row per device token. A token belongs to one profile at a time.
CREATE TABLE IF NOT EXISTS devices (
    token TEXT PRIMARY KEY,
    profile_id INTEGER NOT NULL REFERENCES profiles(id),
    platform TEXT NOT NULL,
    last_used REAL,
    first_registered_at REAL NOT NULL,
    registered_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    push_enabled INTEGER,
    push_enabled_at REAL,
    app_version TEXT,
    os_version TEXT,
    attributes TEXT NOT NULL DEFAULT '{}',
    status TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'deleted', 'pruned')),
    status_reason TEXT,
    status_at REAL
);
CREATE INDEX IF NOT EXISTS devices_by_profile ON devices (profile_id, status);

-- Every change of a token's owner or status, so ownership at any past time can be answered.
CREATE TABLE IF NOT EXISTS device_history (
    id INTEGER PRIMARY KEY,
    token TEXT NOT NULL,
    profile_id INTEGER NOT NULL,
    action TEXT NOT NULL,
    reason TEXT,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS device_history_by_token ON device_history (token, at);

-- id grows with every insert, so a journey engine can follow new events with id > last seen.
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    profile_id INTEGER REFERENCES profiles(id),
    anonymous_id TEXT,
    name TEXT NOT NULL,
    data TEXT NOT NULL DEFAULT '{}',
    timestamp REAL NOT NULL,
    received_at REAL NOT NULL,
    source TEXT NOT NULL CHECK (source IN ('track', 'cdp')),
    dedupe_id TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS events_by_dedupe_id
    ON events (source, dedupe_id) WHERE dedupe_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_by_profile ON events (profile_id, name, timestamp);

CREATE TABLE IF NOT EXISTS delivery_metrics (
    id INTEGER PRIMARY KEY,
    delivery_id TEXT NOT NULL,
    metric TEXT NOT NULL,
    device_token TEXT,
    timestamp REAL NOT NULL,
    received_at REAL NOT NULL,
    source TEXT NOT NULL CHECK (source IN ('track', 'cdp')),
    UNIQUE (delivery_id, metric)
);

-- CDP messageIds already processed, so a retried message is acknowledged and not applied twice.
CREATE TABLE IF NOT EXISTS cdp_messages (
    message_id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    received_at REAL NOT NULL
);

-- One row per journey entry. The journey engine owns state and outcome. match_value is the
-- trigger's value of the journey's match property (cart_id, sku), so one cart starts one run;
-- detail holds the run's trigger properties, deep link and flags as JSON.
CREATE TABLE IF NOT EXISTS journey_runs (
    id INTEGER PRIMARY KEY,
    journey TEXT NOT NULL,
    profile_id INTEGER NOT NULL REFERENCES profiles(id),
    trigger_event_id INTEGER REFERENCES events(id),
    match_value TEXT,
    state TEXT NOT NULL,
    due_at REAL,
    sent_at REAL,
    outcome TEXT,
    detail TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    UNIQUE (journey, trigger_event_id)
);
CREATE INDEX IF NOT EXISTS journey_runs_by_due ON journey_runs (journey, state, due_at);
CREATE INDEX IF NOT EXISTS journey_runs_by_profile
    ON journey_runs (profile_id, journey, match_value);

-- One row per push a journey run handed to the sender: one per device of the person.
-- outcome stays NULL until the sender reports it, so a restart submits the push again.
CREATE TABLE IF NOT EXISTS journey_sends (
    delivery_id TEXT PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES journey_runs(id),
    token TEXT NOT NULL,
    service TEXT NOT NULL CHECK (service IN ('apns', 'fcm')),
    link TEXT NOT NULL,
    submitted_at REAL NOT NULL,
    outcome TEXT,
    status_code INTEGER,
    reason TEXT,
    attempts INTEGER,
    finished_at REAL
);
CREATE INDEX IF NOT EXISTS journey_sends_by_run ON journey_sends (run_id);
CREATE INDEX IF NOT EXISTS journey_sends_pending ON journey_sends (outcome) WHERE outcome IS NULL;

-- Every epoch posted to the control endpoint. The latest row is the run's epoch.
CREATE TABLE IF NOT EXISTS epochs (
    id INTEGER PRIMARY KEY,
    wall_t0 REAL NOT NULL,
    sim_t0 REAL NOT NULL,
    time_scale REAL NOT NULL,
    run_key TEXT,
    shard_count INTEGER,
    posted_at REAL NOT NULL
);
"""


class StoreClosedError(RuntimeError):
    """Raised by a write that arrives after the store began to close."""


class _Stop:
    """Queue marker after which the writer commits its current batch and exits."""


_STOP = _Stop()


class _PendingWrite:
    __slots__ = ("op", "future", "loop")

    def __init__(self, op: WriteOp, future: asyncio.Future, loop: asyncio.AbstractEventLoop):
        self.op = op
        self.future = future
        self.loop = loop


def connect(path: Path, *, read_only: bool = False) -> sqlite3.Connection:
    """Open a connection in autocommit mode with WAL, so transactions are explicit."""
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    connection.row_factory = sqlite3.Row
    # A reader waits this long (ms) for the writer's checkpoint instead of failing at once.
    connection.execute("PRAGMA busy_timeout = 5000")
    connection.execute("PRAGMA foreign_keys = ON")
    if not read_only:
        connection.execute("PRAGMA journal_mode = WAL")
        # NORMAL writes the WAL at every commit but syncs it only at checkpoints, so a commit
        # survives a crash or kill of the process, and only a power loss or an OS crash can
        # undo the last ones. FULL's fsync per commit bounded the intake's rate.
        connection.execute("PRAGMA synchronous = NORMAL")
    return connection


def _settle(future: asyncio.Future, result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _settle_all(outcomes: list[tuple[asyncio.Future, Any, BaseException | None]]) -> None:
    for future, result, error in outcomes:
        _settle(future, result, error)


class Store:
    """The backend's SQLite database with one group-commit writer and a pool of readers.

    ``on_batch`` is called on the writer thread with the size of every committed batch.
    """

    def __init__(
        self,
        path: Path,
        *,
        batch_max: int = 500,
        linger_seconds: float = 0.002,
        quiet_seconds: float = QUIET_SECONDS,
        on_batch: Callable[[int], None] | None = None,
        readers: int = 2,
    ) -> None:
        self.path = Path(path)
        self.batch_max = batch_max
        self.linger_seconds = linger_seconds
        self.quiet_seconds = quiet_seconds
        self._on_batch = on_batch
        self._queue: queue.SimpleQueue[_PendingWrite | _Stop] = queue.SimpleQueue()
        # Writes the writer took off the queue and has not settled yet. Only the writer changes
        # it, so the writer never takes ``_lock``, which the event loop takes for every write.
        self._in_batch = 0
        self._closing = False
        self._lock = threading.Lock()
        self._writer_connection: sqlite3.Connection | None = None
        self._writer_thread: threading.Thread | None = None
        self._checkpointer = Checkpointer(self.path, connect)
        self._reader_connections: list[sqlite3.Connection] = []
        self._reader_local = threading.local()
        self._readers = ThreadPoolExecutor(max_workers=readers, thread_name_prefix="store-read")

    @property
    def queue_depth(self) -> int:
        """Number of writes waiting for the writer or inside its current batch (approximate)."""
        return self._queue.qsize() + self._in_batch

    def open(self) -> None:
        """Create the schema if needed and start the writer thread."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = connect(self.path)
        connection.executescript(SCHEMA)
        connection.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)",
            (str(SCHEMA_VERSION),),
        )
        # The checkpointer thread copies the WAL into the database, so no commit does.
        connection.execute("PRAGMA wal_autocheckpoint = 0")
        self._checkpointer.start()
        self._writer_connection = connection
        self._writer_thread = threading.Thread(
            target=self._run_writer, name="store-writer", daemon=True
        )
        self._writer_thread.start()
        log.info("store opened at %s", self.path)

    async def write(self, op: WriteOp[T]) -> T:
        """Run ``op`` on the writer thread and return its result once its batch has committed.

        An exception raised by ``op`` rolls back only that op's changes and is raised here.
        ``op`` may run twice: when another op of its batch raises, the writer rolls the batch
        back and runs it again with each op in its own savepoint. So ``op`` must change nothing
        but the database.

        An ``op`` with an ``apply_group`` attribute is grouped: the writer passes every grouped
        op of a batch that has the same ``apply_group`` to one call,
        ``apply_group(connection, ops)``, which returns their results in order. Grouped ops run
        after the other ops of their batch. Every op of a batch was in flight at once, and none
        is acknowledged before the batch commits, so callers cannot tell that order from any
        other.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()
        with self._lock:
            if self._closing:
                raise StoreClosedError(f"store {self.path} is closing: the write was not applied")
            self._queue.put(_PendingWrite(op, future, loop))
        return await future

    async def read(self, query: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``query`` inside one read transaction, so it sees a single consistent snapshot."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, self._run_read, query)

    async def close(self) -> None:
        """Commit every write queued so far, stop the writer and close all connections."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
            self._queue.put(_STOP)
        if self._writer_thread is not None:
            await asyncio.to_thread(self._writer_thread.join)
            await asyncio.to_thread(self._checkpointer.stop)
        self._readers.shutdown(wait=True)
        for connection in self._reader_connections:
            connection.close()
        if self._writer_connection is not None:
            self._writer_connection.close()
        log.info("store closed at %s", self.path)

    def _run_read(self, query: Callable[[sqlite3.Connection], T]) -> T:
        connection = getattr(self._reader_local, "connection", None)
        if connection is None:
            connection = connect(self.path, read_only=True)
            self._reader_local.connection = connection
            with self._lock:
                self._reader_connections.append(connection)
        connection.execute("BEGIN")
        try:
            return query(connection)
        finally:
            connection.execute("COMMIT")

    def _run_writer(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if isinstance(first, _Stop):
                break
            batch, stopping = self._collect_batch(first)
            self._commit(batch)

    def _collect_batch(self, first: _PendingWrite) -> tuple[list[_PendingWrite], bool]:
        """Gather up to ``batch_max`` writes, lingering up to ``linger_seconds`` for more.

        The linger ends early once a sleep of ``quiet_seconds`` brings no new write. The writer
        sleeps instead of waiting on the queue, because a waiting writer wakes up and takes the
        GIL from the event loop for every write put in the queue.
        """
        batch = [first]
        stopping = self._take_queued(batch)
        if self.linger_seconds <= 0:
            return batch, stopping

        deadline = time.monotonic() + self.linger_seconds
        while not stopping and len(batch) < self.batch_max:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            time.sleep(min(self.quiet_seconds, remaining))
            taken = len(batch)
            stopping = self._take_queued(batch)
            if len(batch) == taken:
                break
        return batch, stopping

    def _take_queued(self, batch: list[_PendingWrite]) -> bool:
        """Move queued writes into ``batch`` up to ``batch_max``; True if the stop marker came."""
        while len(batch) < self.batch_max:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return False
            if isinstance(item, _Stop):
                return True
            batch.append(item)
        return False

    def _commit(self, batch: list[_PendingWrite]) -> None:
        connection = self._writer_connection
        assert connection is not None
        self._in_batch = len(batch)
        try:
            connection.execute("BEGIN IMMEDIATE")
            outcomes = self._apply_together(connection, batch)
            if outcomes is None:
                # An op raised and its partial changes are in the transaction, so run the batch
                # again and isolate each op in a savepoint.
                connection.execute("ROLLBACK")
                connection.execute("BEGIN IMMEDIATE")
                outcomes = [self._apply_alone(connection, pending) for pending in batch]
            connection.execute("COMMIT")
        except sqlite3.Error as error:
            log.error("commit of a batch of %d writes failed: %s", len(batch), error)
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            outcomes = [(pending, None, error) for pending in batch]

        if self._on_batch is not None:
            self._on_batch(len(batch))
        self._settle_batch(outcomes)
        self._in_batch = 0

    @staticmethod
    def _settle_batch(outcomes: list[tuple[_PendingWrite, Any, BaseException | None]]) -> None:
        """Hand each outcome to its event loop, with one wake-up per loop and batch."""
        by_loop: dict[asyncio.AbstractEventLoop, list] = {}
        for pending, result, error in outcomes:
            by_loop.setdefault(pending.loop, []).append((pending.future, result, error))
        for loop, settled in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle_all, settled)
            except RuntimeError:
                # The caller's event loop closed first, so no caller waits for these results.
                log.warning("%d writes committed after their event loop closed", len(settled))

    @staticmethod
    def _apply_together(
        connection: sqlite3.Connection, batch: list[_PendingWrite]
    ) -> list[tuple[_PendingWrite, Any, BaseException | None]] | None:
        """Run every op of ``batch`` without savepoints; None as soon as one op raises.

        A savepoint costs two more statements per op, and each statement releases and retakes
        the GIL that the event loop needs.
        """
        outcomes: list[Any] = [None] * len(batch)
        groups: dict[Callable, list[int]] = {}
        for index, pending in enumerate(batch):
            apply_group = getattr(pending.op, "apply_group", None)
            if apply_group is not None:
                groups.setdefault(apply_group, []).append(index)
                continue
            try:
                result = pending.op(connection)
            except Exception:  # the batch is run again and this op's error reported then
                return None
            outcomes[index] = (pending, result, None)

        for apply_group, indexes in groups.items():
            try:
                results = apply_group(connection, [batch[index].op for index in indexes])
            except Exception:  # the batch is run again with each op alone
                log.exception("grouped writes failed; running their batch one write at a time")
                return None
            for index, result in zip(indexes, results, strict=True):
                outcomes[index] = (batch[index], result, None)
        return outcomes

    @staticmethod
    def _apply_alone(
        connection: sqlite3.Connection, pending: _PendingWrite
    ) -> tuple[_PendingWrite, Any, BaseException | None]:
        connection.execute("SAVEPOINT write_op")
        try:
            result = pending.op(connection)
        except Exception as error:  # the op's caller receives the error through its future
            connection.execute("ROLLBACK TO write_op")
            connection.execute("RELEASE write_op")
            return pending, None, error
        connection.execute("RELEASE write_op")
        return pending, result, None
