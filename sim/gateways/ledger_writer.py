"""The delivery ledger's writer: it completes each record into a row and commits batches to SQLite.

It runs in a process of its own, ``python -m sim.gateways.ledger_writer``, started by
``DeliveryLedger.start`` with two inherited pipes. A gateway's event loop is bound by the GIL, and
a writer thread in the same process would take the GIL for every row it builds and, inside
``executemany``, hand it back and forth once per row. In its own process the writer costs the
event loop only the pickling of each batch, and its SQLite work runs on another core.

While it runs, the writer keeps an exclusive lock on ``<ledger>.writer-lock``. When its gateway
dies, the writer commits the batches already in the pipe, reads the end of the pipe and exits. A
ledger opened on the same file waits for that lock first, so it never reads the file while an
older writer still writes.

The gateway sends ``("batch", records, metas)`` messages and finally ``("stop",)``. Each record
is a tuple laid out as ``RECORD_FIELDS``. After each commit the writer sends ``("committed",
entries, stats)``, where ``entries`` are the inbox tuples of accepted pushes to issued tokens,
and after each idle heartbeat ``("stats", stats)``. Its last message is ``("closed", stats)``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import signal
import sqlite3
import sys
import time
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TextIO

from sim.formats.delivery import COLUMNS, META_LAST_FLUSH, create_schema
from sim.formats.shards import shard_of
from sim.gateways.logs import RepeatLimiter

log = logging.getLogger("sim.gateways.ledger")

# A record as the gateway sends it: the run config at receipt, the token's group (None for a
# token the run did not issue), the APNs retry key, then the columns the gateway fills in, in
# COLUMNS order. The writer adds seq, sim_time, retry_of, duplicate_of and shard.
RECORD_FIELDS = (
    "config", "group_id", "retry_key", "wall_time", "service", "connection_id", "token", "audience",
    "message_id", "collapse_id", "priority", "expiration", "push_type", "payload", "status",
    "reason", "delivery_id", "timestamp_ms", "retry_after", "added_latency", "fault", "extra",
)  # fmt: skip

_INSERT = (
    f"INSERT INTO deliveries (seq, {', '.join(COLUMNS)}) "
    f"VALUES ({', '.join('?' * (len(COLUMNS) + 1))})"
)
_SET_META = "INSERT OR REPLACE INTO ledger_meta (key, value) VALUES (?, ?)"
# Positions in a row tuple, which starts with seq and then follows COLUMNS.
_SHARD = 1 + COLUMNS.index("shard")
_DELIVERY_ID = 1 + COLUMNS.index("delivery_id")
_TOKEN = 1 + COLUMNS.index("token")
_PAYLOAD = 1 + COLUMNS.index("payload")
_SERVICE = 1 + COLUMNS.index("service")
_WALL_TIME = 1 + COLUMNS.index("wall_time")
_EXTRA = 1 + COLUMNS.index("extra")


@dataclass(frozen=True)
class WriterOptions:
    """Settings of a writer process: the ledger file, the next seq and the window sizes."""

    path: str
    next_seq: int
    flush_interval: float
    retry_window: float
    duplicate_window: float
    max_window_entries: int
    max_batch: int


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


class LedgerWriter:
    """Completes records into rows and commits them, with the batch's meta writes, at once."""

    def __init__(self, options: WriterOptions) -> None:
        self.options = options
        self.next_seq = options.next_seq
        self.handled = 0  # records committed or lost to an SQLite error
        self.committed = 0
        self.write_errors = 0  # batches lost to SQLite errors
        self.last_flush_wall: float | None = None
        self._retries = RecentKeys(options.retry_window, options.max_window_entries)
        self._duplicates = RecentKeys(options.duplicate_window, options.max_window_entries)
        self._repeats = RepeatLimiter(log)

        self._connection = sqlite3.connect(options.path, timeout=30.0)
        self._connection.execute("PRAGMA journal_mode=WAL")
        # In WAL mode NORMAL survives a process crash and skips an fsync per commit. Only a power
        # loss can undo the last commits.
        self._connection.execute("PRAGMA synchronous=NORMAL")
        create_schema(self._connection)
        self._connection.commit()

    def stats(self) -> dict:
        return {
            "handled": self.handled,
            "committed": self.committed,
            "write_errors": self.write_errors,
            "last_flush_wall": self.last_flush_wall,
            "windows": {"retries": len(self._retries), "duplicates": len(self._duplicates)},
        }

    def write_safely(self, records: list[tuple], metas: list[tuple[str, str]]) -> list[tuple]:
        """Write one batch and return its inbox tuples; log and count an SQLite error."""
        try:
            return self.write(records, metas)
        except sqlite3.Error:
            # Without a ledger the run's verdicts are void, so log the error and keep the
            # gateway running. The rows of this batch are lost, like a crash would lose them.
            self.write_errors += 1
            self.handled += len(records)
            self._rollback()
            log.exception(
                "delivery ledger %s: writing %d records failed", self.options.path, len(records)
            )
            return []

    def write(self, records: list[tuple], metas: list[tuple[str, str]]) -> list[tuple]:
        """Insert the rows and metas, commit, and return the inbox tuples of the batch."""
        rows = []
        for record in records:
            rows.append(self._row(self.next_seq, record))
            self.next_seq += 1

        try:
            self._connection.executemany(_INSERT, rows)
        except sqlite3.IntegrityError:
            self._connection.rollback()
            rows = self._insert_one_by_one(rows)
        for key, value in metas:
            self._connection.execute(_SET_META, (key, value))
        now = time.time()
        self._connection.execute(_SET_META, (META_LAST_FLUSH, repr(now)))
        self._connection.commit()
        self.committed += len(rows)
        self.handled += len(records)
        self.last_flush_wall = now

        # Deliveries reach the inbox only once committed, so a crash never leaves a phone with
        # a delivery id the ledger does not hold.
        return [
            (row[0], row[_SHARD], row[_DELIVERY_ID], row[_TOKEN], row[_PAYLOAD], row[_SERVICE],
             row[_WALL_TIME])
            for row in rows
            if row[_DELIVERY_ID] is not None and row[_SHARD] is not None
        ]  # fmt: skip

    def heartbeat_safely(self) -> None:
        """Commit the wall time, so a crash while idle is dated within one flush interval."""
        now = time.time()
        try:
            self._connection.execute(_SET_META, (META_LAST_FLUSH, repr(now)))
            self._connection.commit()
        except sqlite3.Error as error:
            self._rollback()
            self._repeats.log(
                logging.ERROR,
                "heartbeat",
                "delivery ledger %s: heartbeat failed: %r",
                self.options.path,
                error,
            )
            return
        self.last_flush_wall = now

    def close(self) -> None:
        self._connection.close()

    def _rollback(self) -> None:
        try:
            self._connection.rollback()
        except sqlite3.Error:
            log.exception(
                "delivery ledger %s: rollback after a failed write failed", self.options.path
            )

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
                    self.options.path,
                    delivery_id,
                    row[0],
                )
            inserted.append(row)
        return inserted

    def _row(self, seq: int, record: tuple) -> tuple:
        config, group_id, retry_key, wall_time, service, *known = record
        token = known[1]
        sim_time = shard = None
        if config is not None:
            sim_time = config.epoch.sim_at(wall_time)
            if group_id is not None:
                shard = shard_of(group_id, config.shard_count)

        retry_of = duplicate_of = None
        if service == "apns":
            if retry_key:
                retry_of = self._retries.first_seq(retry_key, seq, wall_time)
        else:
            payload = known[8]
            key = token.encode() + b"\0" + (payload or b"")
            duplicate_of = self._duplicates.first_seq(key, seq, wall_time)

        # known: connection_id .. added_latency, then fault and extra.
        return (seq, wall_time, sim_time, service, *known[:-2], retry_of, duplicate_of, shard,
                group_id, *known[-2:])  # fmt: skip


def lock_path(ledger_path: str) -> str:
    """Return the path of the lock file that a running writer of ``ledger_path`` keeps."""
    return f"{ledger_path}.writer-lock"


def lock_writer(ledger_path: str, timeout: float = 30.0) -> TextIO:
    """Return the ledger's lock file, locked, once no other writer has it.

    Raises TimeoutError after ``timeout`` seconds. The lock lasts while any process keeps the
    returned file open, so the gateway hands it to its writer process and closes its own copy.
    """
    deadline = time.monotonic() + timeout
    lock = open(lock_path(ledger_path), "a")  # closed by the caller or kept by the writer
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return lock
        except BlockingIOError:
            if time.monotonic() > deadline:
                lock.close()
                raise TimeoutError(
                    f"timed out after {timeout:.0f} s waiting for the writer process that "
                    f"locks {lock_path(ledger_path)}: stop the gateway that writes "
                    f"{ledger_path} first"
                ) from None
            time.sleep(0.01)


def wait_for_writer(ledger_path: str, timeout: float = 30.0) -> None:
    """Wait until no writer process has the ledger's lock, or raise TimeoutError."""
    lock = lock_writer(ledger_path, timeout)
    lock.close()


def environment() -> dict[str, str]:
    """Return the writer's environment: the gateway's, with this ``sim`` package importable."""
    root = str(Path(__file__).resolve().parents[2])
    paths = [root, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def command(options: WriterOptions, records_fd: int, commits_fd: int, lock_fd: int) -> list[str]:
    """Return the command line that starts a writer on inherited pipe ends and lock file."""
    return [
        sys.executable,
        "-m",
        "sim.gateways.ledger_writer",
        json.dumps(asdict(options)),
        str(records_fd),
        str(commits_fd),
        str(lock_fd),
    ]


def serve(options: WriterOptions, records: Connection, commits: Connection) -> None:
    """Write every batch received, commit a heartbeat while idle, then report the counts."""
    # The gateway handles Ctrl-C and SIGTERM and closes the ledger, which stops this process in
    # order. Both signals also reach this process whenever they go to the gateway's whole process
    # group, as from a terminal or from pushsim run, and dying then would lose the last batches.
    # A gateway that dies without closing still ends this process: its pipe reads EOF.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    writer = LedgerWriter(options)
    try:
        stopping = False
        while not stopping:
            try:
                if not records.poll(options.flush_interval):
                    writer.heartbeat_safely()
                    commits.send(("stats", writer.stats()))
                    continue
                message = records.recv()
            except EOFError:
                # The gateway exited without closing the ledger, so the shutdown stays unclean.
                return

            if message[0] == "stop":
                break
            batch, metas = list(message[1]), list(message[2])
            # A writer that fell behind catches up in larger transactions.
            while len(batch) < options.max_batch and records.poll(0):
                try:
                    message = records.recv()
                except EOFError:
                    break
                if message[0] == "stop":
                    stopping = True
                    break
                batch.extend(message[1])
                metas.extend(message[2])
            entries = writer.write_safely(batch, metas)
            commits.send(("committed", entries, writer.stats()))

        commits.send(("closed", writer.stats()))
    except (BrokenPipeError, ConnectionResetError):
        pass  # the gateway exited, and every committed row stays on disk
    finally:
        writer.close()


def main(argv: list[str]) -> int:
    options = WriterOptions(**json.loads(argv[0]))
    records = Connection(int(argv[1]), writable=False)
    commits = Connection(int(argv[2]), readable=False)
    # The gateway locked this file before starting the writer. Keeping it open keeps the lock
    # until this process exits, however the gateway ends.
    with open(int(argv[3])):
        serve(options, records, commits)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
