"""WAL checkpoints on their own thread, so that no commit of the store's writer runs one.

By default SQLite checkpoints inside the commit that takes the WAL past 1000 pages. That commit
then copies the WAL's pages into the database file and syncs it, so every write of its batch
waits several milliseconds longer. Here a thread with its own connection runs a passive
checkpoint at a fixed interval instead. SQLite documents that a passive checkpoint waits for no
reader or writer, and the whole checkpoint is one SQLite call, which runs without the GIL.

A passive checkpoint alone never shrinks a busy WAL. SQLite writes from the start of the WAL
again only when a write transaction begins after every frame was copied, and under steady
writes the writer commits again while each checkpoint runs. Under the Track API mix of
tests/bench/bench_backend.py the WAL grew by 110 MB a second. So once the WAL contains
``RESTART_FRAMES`` frames, the thread requests that the writer copy the few frames committed
since the thread's last checkpoint. The writer does that between two batches, when no commit can
race it, and its next transaction starts the WAL over.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

# Wall seconds between two checkpoints. An estimate of the WAL this lets grow: the Track API
# mix of tests/bench/bench_backend.py changes about 2.4 pages of 4 KiB per write, so 0.1 s of
# 10,000 writes/s adds about 10 MB.
CHECKPOINT_INTERVAL_SECONDS = 0.1

# WAL frames (pages of 4 KiB) after which the writer finishes a checkpoint and starts the WAL
# over, so the WAL file stays near 128 MiB. The writer's checkpoint syncs the database and delays
# its next batch by 2 to 9 ms, so a smaller WAL costs tail latency. Under bench_backend.py the
# p99 latency was 16 to 18 ms at 4,096 frames, 13.5 ms at 32,768 and 11 ms with a WAL that grew.
RESTART_FRAMES = 32768


class Checkpointer:
    """A daemon thread that checkpoints the WAL of ``path`` every ``interval`` seconds.

    ``restart_requested`` is set when the WAL contains ``restart_frames`` frames or more. The
    writer then calls ``finish_for_restart`` between two of its transactions.
    """

    def __init__(
        self,
        path: Path,
        connect: Callable[[Path], sqlite3.Connection],
        interval: float = CHECKPOINT_INTERVAL_SECONDS,
        restart_frames: int = RESTART_FRAMES,
    ) -> None:
        self.path = path
        self.interval = interval
        self.restart_frames = restart_frames
        self.restart_requested = threading.Event()
        self._connect = connect
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="store-checkpoint", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop after the checkpoint in progress, if any.

        SQLite checkpoints what is left when the store closes its last connection.
        """
        self._stopped.set()
        self._thread.join()

    def _run(self) -> None:
        connection = self._connect(self.path)
        try:
            while not self._stopped.wait(self.interval):
                try:
                    _, frames, _ = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    if frames >= self.restart_frames:
                        self.restart_requested.set()
                except sqlite3.Error as error:
                    # The next interval tries again. Until one succeeds the WAL only grows.
                    log.warning("WAL checkpoint of %s failed: %s", self.path, error)
        finally:
            connection.close()


def finish_for_restart(connection: sqlite3.Connection) -> None:
    """Copy the rest of the WAL on the writer's ``connection``, outside any transaction.

    No commit can come between this checkpoint and the writer's next transaction, which then
    finds every frame copied and writes from the start of the WAL again, unless a reader still
    reads an older snapshot from the WAL. In that case the checkpoint thread sets its request
    again after its next checkpoint.
    """
    try:
        connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    except sqlite3.Error as error:
        log.warning(
            "WAL checkpoint of the writer failed, so the WAL grows until one succeeds: %s", error
        )
