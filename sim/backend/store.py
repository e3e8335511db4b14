"""The backend's SQLite store: group-commit writes in a writer process, reads on threads.

Every write is a picklable callable ``op(connection) -> result``, usually a module-level function
bound to plain data with ``functools.partial``. ``Store.write`` sends it to the writer process
(``sim/backend/store_writer.py``), which takes the writes sent since its last commit, runs them
and commits them in one transaction. ``Store.write`` returns only after that commit, so a write
that a request acknowledged survives a restart of the backend.

Reads run on threads of this process, each with its own connection in WAL mode. A read started
after a write returned sees it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import sqlite3
import subprocess
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from sim.backend.checkpoints import RESTART_FRAMES
from sim.backend.store_schema import SCHEMA, SCHEMA_VERSION, connect, create_schema
from sim.backend.store_writer import (
    READ_SIZE,
    FrameReader,
    StoreWriteError,
    WriterOptions,
    command,
    environment,
    frame,
)

__all__ = [
    "QUIET_SECONDS",
    "SCHEMA",
    "SCHEMA_VERSION",
    "Store",
    "StoreClosedError",
    "StoreWriteError",
    "StoreWriterGoneError",
    "connect",
]

log = logging.getLogger(__name__)

T = TypeVar("T")
WriteOp = Callable[[sqlite3.Connection], T]

# While it lingers (linger_seconds > 0), the writer waits this long (seconds) for the next frame
# of writes. The event loop parses a Track API request in well under this interval, about
# 0.07 ms in tests/bench/bench_backend.py, so a wait that brings no new write most likely means
# the loop has no request left to parse. The writer then commits at once.
QUIET_SECONDS = 0.0003

# Seconds that close() waits for the writer process to commit what is queued and exit.
CLOSE_TIMEOUT_SECONDS = 60.0

_STOP = frame(pickle.dumps(None), 0)


class StoreClosedError(RuntimeError):
    """Raised by a write that arrives after the store began to close."""


class StoreWriterGoneError(StoreClosedError):
    """Raised by every write once the writer process has exited before the store closed."""


class Store:
    """The backend's SQLite database with one group-commit writer process and reader threads.

    ``on_batch`` is called on the event loop with the size of every committed batch. Writes
    must all come from one event loop, the one of the first write.
    """

    def __init__(
        self,
        path: Path,
        *,
        batch_max: int = 500,
        linger_seconds: float = 0.0,
        quiet_seconds: float = QUIET_SECONDS,
        on_batch: Callable[[int], None] | None = None,
        readers: int = 2,
        wal_restart_frames: int = RESTART_FRAMES,
    ) -> None:
        self.path = Path(path)
        self.wal_restart_frames = wal_restart_frames
        self.batch_max = batch_max
        self.linger_seconds = linger_seconds
        self.quiet_seconds = quiet_seconds
        self._on_batch = on_batch
        self._process: subprocess.Popen | None = None
        self._ops_fd = -1
        self._results_fd = -1
        self._loop: asyncio.AbstractEventLoop | None = None

        # Ops not yet sent with their futures, and the futures of ops sent to the writer in the
        # order sent, because the writer returns their results in that order.
        self._outbox_ops: list[WriteOp] = []
        self._outbox_futures: list[asyncio.Future] = []
        self._flush_scheduled = False
        self._sent: deque[asyncio.Future] = deque()
        self._unsent = bytearray()  # bytes of frames the ops pipe did not take yet
        self._frames = FrameReader()

        self._closing = False
        self._writer_exited: asyncio.Future | None = None
        self._failure: StoreWriterGoneError | None = None

        self._lock = threading.Lock()
        self._reader_connections: list[sqlite3.Connection] = []
        self._reader_local = threading.local()
        self._readers = ThreadPoolExecutor(max_workers=readers, thread_name_prefix="store-read")

    @property
    def queue_depth(self) -> int:
        """Number of writes waiting for the writer or inside its current batch."""
        return len(self._outbox_ops) + len(self._sent)

    @property
    def writer_pid(self) -> int | None:
        """The writer process's pid once open, for its CPU time in benchmarks."""
        return self._process.pid if self._process is not None else None

    def open(self) -> None:
        """Create the schema if needed and start the writer process."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = connect(self.path)
        try:
            create_schema(connection)
        finally:
            connection.close()

        options = WriterOptions(
            path=str(self.path),
            batch_max=self.batch_max,
            linger_seconds=self.linger_seconds,
            quiet_seconds=self.quiet_seconds,
            wal_restart_frames=self.wal_restart_frames,
        )
        # A command line rather than multiprocessing: a spawned child imports the parent's main
        # module again, and the backend may be started from any script, guarded or not.
        ops_read, ops_write = os.pipe()
        results_read, results_write = os.pipe()
        child_ends = (ops_read, results_write)
        try:
            self._process = subprocess.Popen(
                command(options, *child_ends), pass_fds=child_ends, env=environment()
            )
        finally:
            # Only the writer keeps these ends open, so each side reads EOF once the other exits.
            for fd in child_ends:
                os.close(fd)
        os.set_blocking(ops_write, False)
        os.set_blocking(results_read, False)
        self._ops_fd, self._results_fd = ops_write, results_read
        log.info("store opened at %s, writer pid %d", self.path, self._process.pid)

    async def write(self, op: WriteOp[T]) -> T:
        """Run ``op`` in the writer process and return its result once its batch has committed.

        ``op`` must pickle, and so must its result. An exception raised by ``op`` rolls back
        only that op's changes and is raised here. ``op`` may run twice: when another op of its
        batch raises, the writer rolls the batch back and runs it again with each op in its own
        savepoint. So ``op`` must change nothing but the database.

        An ``op`` with an ``apply_group`` attribute is grouped: the writer passes every grouped
        op of a batch that has the same ``apply_group`` to one call,
        ``apply_group(connection, ops)``, which returns their results in order. Grouped ops run
        after the other ops of their batch. Every op of a batch was in flight at once, and none
        is acknowledged before the batch commits, so callers cannot tell that order from any
        other.
        """
        if self._failure is not None:
            raise self._failure
        if self._closing or self._process is None:
            state = "closing" if self._closing else "not open"
            raise StoreClosedError(f"store {self.path} is {state}: the write was not applied")
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._attach(loop)

        future = loop.create_future()
        self._outbox_ops.append(op)
        self._outbox_futures.append(future)
        if not self._flush_scheduled:
            # Every write made in this iteration of the loop goes out in one frame.
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return await future

    async def read(self, query: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``query`` inside one read transaction, so it sees a single consistent snapshot."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, self._run_read, query)

    async def close(self) -> None:
        """Commit every write queued so far, stop the writer and close all connections."""
        if self._closing:
            return
        self._closing = True
        if self._process is not None:
            if self._loop is None:
                self._attach(asyncio.get_running_loop())
            await self._stop_writer()
        self._readers.shutdown(wait=True)
        for connection in self._reader_connections:
            connection.close()
        log.info("store closed at %s", self.path)

    def _attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Bind the store's pipes to ``loop``, the one loop that may write from now on."""
        if self._loop is not None:
            raise RuntimeError(
                f"store {self.path} takes writes from one event loop only, the loop of its "
                "first write"
            )
        self._loop = loop
        self._writer_exited = loop.create_future()
        loop.add_reader(self._results_fd, self._receive)

    async def _stop_writer(self) -> None:
        assert self._process is not None and self._writer_exited is not None
        self._flush()
        self._send(_STOP)
        try:
            await asyncio.wait_for(asyncio.shield(self._writer_exited), CLOSE_TIMEOUT_SECONDS)
            await asyncio.to_thread(self._process.wait, CLOSE_TIMEOUT_SECONDS)
        except (TimeoutError, subprocess.TimeoutExpired):
            log.error(
                "store %s: writer process %d did not finish in %.0f s; killing it",
                self.path,
                self._process.pid,
                CLOSE_TIMEOUT_SECONDS,
            )
            self._process.kill()
            self._process.wait()
            self._writer_gone()
        if self._process.returncode != 0:
            log.error(
                "store %s: writer process exited with status %d",
                self.path,
                self._process.returncode,
            )
        self._release_pipes()

    def _flush(self) -> None:
        """Send the ops written since the last flush to the writer in one frame."""
        self._flush_scheduled = False
        ops, futures = self._outbox_ops, self._outbox_futures
        if not ops:
            return
        self._outbox_ops, self._outbox_futures = [], []
        try:
            payload = pickle.dumps(ops, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # one op does not pickle; fail that one and send the others
            ops, futures = self._reject_unpicklable(ops, futures)
            if not ops:
                return
            payload = pickle.dumps(ops, protocol=pickle.HIGHEST_PROTOCOL)
        self._sent.extend(futures)
        self._send(frame(payload, len(ops)))

    @staticmethod
    def _reject_unpicklable(
        ops: list[WriteOp], futures: list[asyncio.Future]
    ) -> tuple[list[WriteOp], list[asyncio.Future]]:
        kept_ops, kept_futures = [], []
        for op, future in zip(ops, futures, strict=True):
            try:
                pickle.dumps(op, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as error:  # raised to this write's caller
                if not future.done():
                    future.set_exception(
                        TypeError(
                            f"store write {op!r:.80} cannot be pickled for the writer process "
                            f"({error}): use a module-level function with functools.partial"
                        )
                    )
                continue
            kept_ops.append(op)
            kept_futures.append(future)
        return kept_ops, kept_futures

    def _send(self, data: bytes) -> None:
        """Write ``data`` to the ops pipe without blocking; the loop sends the rest later."""
        if self._failure is not None:
            return
        if self._unsent:
            self._unsent += data
            return
        try:
            written = os.write(self._ops_fd, data)
        except BlockingIOError:
            written = 0
        except OSError:  # the writer closed its end, so it exited
            self._writer_gone()
            return
        if written < len(data):
            self._unsent += data[written:]
            assert self._loop is not None
            self._loop.add_writer(self._ops_fd, self._send_unsent)

    def _send_unsent(self) -> None:
        try:
            written = os.write(self._ops_fd, self._unsent)
        except BlockingIOError:
            return
        except OSError:
            self._writer_gone()
            return
        del self._unsent[:written]
        if not self._unsent:
            assert self._loop is not None
            self._loop.remove_writer(self._ops_fd)

    def _receive(self) -> None:
        """Settle the writes of every batch outcome that arrived from the writer."""
        try:
            data = os.read(self._results_fd, READ_SIZE)
        except BlockingIOError:
            return
        if not data:
            self._writer_gone()
            return

        sent = self._sent
        for payload, count in self._frames.feed(data):
            try:
                results, errors = pickle.loads(payload)
            except Exception as error:  # the batch committed, but its results are unreadable
                log.exception(
                    "store %s: the outcome of a batch of %d writes could not be unpickled",
                    self.path,
                    count,
                )
                results = [None] * count
                errors = dict.fromkeys(
                    range(count),
                    StoreWriteError(
                        f"the write committed, but the writer's outcome could not be "
                        f"unpickled: {error!r}"
                    ),
                )
            for index, result in enumerate(results):
                future = sent.popleft()
                if future.cancelled():
                    continue
                if errors and index in errors:
                    future.set_exception(errors[index])
                else:
                    future.set_result(result)
            if self._on_batch is not None:
                self._on_batch(len(results))

    def _writer_gone(self) -> None:
        """Fail every write in flight, and every later one, after the writer process exited."""
        assert self._loop is not None and self._writer_exited is not None
        if self._writer_exited.done():
            return
        self._loop.remove_reader(self._results_fd)
        if self._unsent:
            self._loop.remove_writer(self._ops_fd)
            self._unsent.clear()
        self._writer_exited.set_result(None)

        waiting = [*self._sent, *self._outbox_futures]
        self._sent.clear()
        self._outbox_ops, self._outbox_futures = [], []
        if self._closing and not waiting:
            return

        assert self._process is not None
        status = self._process.poll()
        exit_text = "closed its pipe" if status is None else f"exited with status {status}"
        self._failure = StoreWriterGoneError(
            f"store {self.path}: the writer process (pid {self._process.pid}) {exit_text}, so "
            "this write was not committed; see the backend's log for the writer's error and "
            "restart the backend"
        )
        log.error("%s (%d writes in flight)", self._failure, len(waiting))
        for future in waiting:
            if not future.done():
                future.set_exception(self._failure)

    def _release_pipes(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._results_fd)
            self._loop.remove_writer(self._ops_fd)
        for fd in (self._ops_fd, self._results_fd):
            os.close(fd)
        self._ops_fd = self._results_fd = -1

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
