"""WAL checkpoints on their own thread, so that no commit of the store's writer runs one.

By default SQLite checkpoints inside the commit that takes the WAL past 1000 pages. That commit
then copies the WAL's pages into the database file and syncs it, so every write of its batch
waits several milliseconds longer. Here a thread with its own connection runs a passive
checkpoint at a fixed interval instead. SQLite documents that a passive checkpoint waits for no
reader or writer, and the whole checkpoint is one SQLite call, which runs without the GIL.
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


class Checkpointer:
    """A daemon thread that checkpoints the WAL of ``path`` every ``interval`` seconds."""

    def __init__(
        self,
        path: Path,
        connect: Callable[[Path], sqlite3.Connection],
        interval: float = CHECKPOINT_INTERVAL_SECONDS,
    ) -> None:
        self.path = path
        self.interval = interval
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
                    connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.Error as error:
                    # The next interval tries again. Until one succeeds the WAL only grows.
                    log.warning("WAL checkpoint of %s failed: %s", self.path, error)
        finally:
            connection.close()
