"""The store's writer process: it runs every write op, in group commits, off the event loop's GIL.

``Store.open`` starts ``python -m sim.backend.store_writer`` with two inherited pipes. A writer
thread in the backend's process held the GIL for about 50 µs of Python per write (op closures,
parameter binding, statement calls). It also took the GIL back after every SQLite statement, so
the event loop and the writer shared one core. In its own process the writer runs on the other core,
and the event loop pays only for pickling the ops and unpickling the results.

Both pipes carry frames: a header of two 4-byte little-endian numbers, the payload's length and
its count of items, then the payload, a pickle. The backend sends lists of ops, each a picklable
callable ``op(connection) -> result``, in the order ``Store.write`` received them, and finally
``None`` to stop. The count lets the writer fail every op of a frame that cannot be unpickled.
After each commit the writer sends ``(results, errors)``: one result per op of the batch, in the
order they were sent, and the errors by index in the batch (or None). So the backend matches
results to writes by their order.

When the stop marker arrives or the backend's end of the pipe closes, because the backend
stopped the writer or died, the writer commits every op it has received and exits.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import select
import signal
import struct
import sys
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sim.backend.checkpoints import RESTART_FRAMES, Checkpointer, finish_for_restart
from sim.backend.store_batches import commit_batch
from sim.backend.store_schema import connect

log = logging.getLogger("sim.backend.store")

# A frame's payload length in bytes and its count of items.
FRAME_HEADER = struct.Struct("<II")

# Bytes read from a pipe at once. A Linux pipe buffers 64 KiB unless resized.
READ_SIZE = 1 << 20


@dataclass(frozen=True)
class WriterOptions:
    """Settings of a writer process: the database, the batch size and the linger (seconds).

    ``wal_restart_frames`` is the WAL size, in frames, at which the writer starts the WAL over.
    """

    path: str
    batch_max: int
    linger_seconds: float
    quiet_seconds: float
    wal_restart_frames: int = RESTART_FRAMES


class StoreWriteError(RuntimeError):
    """Error raised in place of an op's error or result that could not be sent back by pickle."""


class FrameReader:
    """Splits the bytes read from a pipe into the payloads of whole frames."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[bytes, int]]:
        """Add ``data`` and return the payload and count of each frame it completed, in order."""
        buffer = self._buffer
        buffer += data
        frames = []
        start = 0
        header = FRAME_HEADER.size
        while len(buffer) - start >= header:
            length, count = FRAME_HEADER.unpack_from(buffer, start)
            end = start + header + length
            if len(buffer) < end:
                break
            frames.append((bytes(buffer[start + header : end]), count))
            start = end
        if start:
            del buffer[:start]
        return frames


def frame(payload: bytes, count: int) -> bytes:
    """Return ``payload`` with its header."""
    return FRAME_HEADER.pack(len(payload), count) + payload


def encode_outcome(results: list[Any], errors: dict[int, BaseException] | None) -> bytes:
    """Pickle a batch's outcome, replacing what cannot travel by a ``StoreWriteError``.

    An op's error must survive a round trip, because an exception whose ``__init__`` takes
    other arguments than ``args`` pickles but fails to unpickle.
    """
    if errors:
        errors = {index: _portable_error(error) for index, error in errors.items()}
    try:
        return pickle.dumps((results, errors), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # an op returned something that does not pickle; find which
        errors = dict(errors or {})
        for index, result in enumerate(results):
            try:
                pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as error:  # reported to that op's caller instead of its result
                results[index] = None
                errors[index] = StoreWriteError(
                    f"the write committed, but its result of type {type(result).__name__} "
                    f"cannot be pickled back from the writer process ({error}): return plain "
                    "data from the op"
                )
        return pickle.dumps((results, errors), protocol=pickle.HIGHEST_PROTOCOL)


def _portable_error(error: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(error, protocol=pickle.HIGHEST_PROTOCOL))
    except Exception:  # the caller gets the error's type and text instead
        return StoreWriteError(f"{type(error).__name__}: {error}")
    return error


def environment() -> dict[str, str]:
    """Return the writer's environment: the backend's, with the backend's ``sys.path``.

    The writer unpickles each op by importing its module, so every module that the backend can
    import must be importable there too, tests' modules included.
    """
    paths = [entry or os.getcwd() for entry in sys.path]
    root = str(Path(__file__).resolve().parents[2])
    return {**os.environ, "PYTHONPATH": os.pathsep.join([root, *paths])}


def command(options: WriterOptions, ops_fd: int, results_fd: int) -> list[str]:
    """Return the command line that starts a writer on inherited pipe ends."""
    return [
        sys.executable,
        "-m",
        "sim.backend.store_writer",
        json.dumps(asdict(options)),
        str(ops_fd),
        str(results_fd),
    ]


class _Unreadable:
    """Op in place of a write that failed to unpickle, so that its caller still gets an error."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def __call__(self, connection: object) -> None:
        raise StoreWriteError(
            f"the writer process could not unpickle this write ({self.error!r}): make every "
            "op a module-level function or class that the writer can import"
        )


class _OpsPipe:
    """The writer's end of the backend's ops pipe, with the ops received and not yet run."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.pending: deque = deque()
        self.ended = False  # the stop marker or the end of the pipe arrived
        self._frames = FrameReader()

    def read(self, timeout: float | None) -> bool:
        """Read what arrives within ``timeout`` seconds (None: wait); True if anything came."""
        if timeout is not None:
            readable, _, _ = select.select([self.fd], [], [], timeout)
            if not readable:
                return False
        data = os.read(self.fd, READ_SIZE)
        if not data:
            self.ended = True
            return True
        for payload, count in self._frames.feed(data):
            try:
                ops = pickle.loads(payload)
            except Exception as error:  # each op of the frame fails with this error
                log.exception("store writer: %d ops could not be unpickled", count)
                ops = [_Unreadable(error)] * count
            if ops is None:
                self.ended = True
            else:
                self.pending.extend(ops)
        return True

    def take(self, batch: list, batch_max: int) -> None:
        pending = self.pending
        while pending and len(batch) < batch_max:
            batch.append(pending.popleft())


def _collect_batch(ops: _OpsPipe, options: WriterOptions) -> list:
    """Take up to ``batch_max`` ops, lingering up to ``linger_seconds`` for more.

    The linger ends early once ``quiet_seconds`` pass without a new frame. The event loop sends
    the writes of one iteration in one frame, so a quiet pipe most likely means that the loop
    has no request left to parse.
    """
    batch: list = []
    ops.take(batch, options.batch_max)
    deadline = time.monotonic() + options.linger_seconds
    while not ops.ended and len(batch) < options.batch_max:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        if not ops.read(min(options.quiet_seconds, remaining)):
            break
        ops.take(batch, options.batch_max)
    return batch


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def serve(options: WriterOptions, ops_fd: int, results_fd: int) -> None:
    """Commit every op received, in batches, and send back each batch's outcome."""
    # Ctrl-C and pushsim's orchestrator (SIGTERM to the process group) signal the backend and
    # this process together. The backend then finishes its requests and closes the store, which
    # stops this process in order, so the writer waits for that or for the end of its pipe.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    path = Path(options.path)
    connection = connect(path)
    # The checkpointer thread copies the WAL into the database, so no commit does.
    connection.execute("PRAGMA wal_autocheckpoint = 0")
    # 64 MiB of page cache (a negative size is in KiB) instead of SQLite's 2 MiB. Under the
    # Track API mix of tests/bench/bench_backend.py the identities and events indexes outgrow
    # 2 MiB within seconds, and py-spy then put 20% of the writer's samples in pread64.
    connection.execute("PRAGMA cache_size = -65536")
    checkpointer = Checkpointer(path, connect, restart_frames=options.wal_restart_frames)
    checkpointer.start()

    ops = _OpsPipe(ops_fd)
    try:
        while True:
            if not ops.pending and not ops.ended:
                ops.read(None)
            if not ops.pending:
                if ops.ended:
                    break
                continue
            batch = _collect_batch(ops, options)
            outcome = commit_batch(connection, batch)
            payload = encode_outcome(outcome.results, outcome.errors)
            _write_all(results_fd, frame(payload, len(batch)))
            if checkpointer.restart_requested.is_set():
                checkpointer.restart_requested.clear()
                finish_for_restart(connection)
    except BrokenPipeError:
        # The backend died. Every batch written so far is committed, and no caller is left to
        # read the rest of the outcomes.
        log.warning("store writer: the backend closed its end before reading every outcome")
    finally:
        checkpointer.stop()
        connection.close()


def main(argv: list[str]) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    options = WriterOptions(**json.loads(argv[0]))
    serve(options, int(argv[1]), int(argv[2]))
    return 0


if __name__ == "__main__":
    # Run the module under its import name, so that the classes it pickles, such as
    # StoreWriteError, unpickle in the backend as sim.backend.store_writer's, not __main__'s.
    from sim.backend.store_writer import main as writer_main

    sys.exit(writer_main(sys.argv[1:]))
