"""A run's own delivery ledger, cut from the ledger of gateways that serve several runs.

Gateways started once with ``pushsim gateways`` keep one ledger for every run posted to them.
A run's rows are those the gateways received from the run's first action (the epoch's
``wall_t0``) until the run finished. They are copied, with their original ``seq``, into
``RUN_DIR/deliveries.sqlite``, which the oracle prefers, so the run directory stays complete
after the gateways move on to the next run.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from sim.formats.delivery import COLUMNS, META_LAST_FLUSH, META_POSSIBLE_GAPS, create_schema
from sim.formats.epoch import Epoch

# The run's own copy, which the oracle reads before the gateways' directory of the run.
DELIVERIES_FILE = "deliveries.sqlite"

# Wall seconds past the run's end that the writer's last commit must reach before the copy.
# While the writer keeps up, a push the gateways respond to before the end reaches it within
# the ledger's group interval (20 ms), so one second leaves room for a short backlog.
COMMIT_MARGIN = 1.0
# Wall seconds to wait for that commit before copying what is there.
COMMIT_TIMEOUT = 15.0

META_SOURCE = "source_ledger"
META_WINDOW = "run_window"


def _read_meta(connection: sqlite3.Connection, key: str) -> str | None:
    row = connection.execute("SELECT value FROM ledger_meta WHERE key = ?", (key,)).fetchone()
    return row[0] if row else None


def wait_for_commit(ledger: Path, until: float, timeout: float = COMMIT_TIMEOUT) -> bool:
    """Wait until the ledger's writer has committed past ``until`` plus the margin.

    Returns False when the writer has not done so within ``timeout`` wall seconds, for example
    because the gateways stopped. The caller then copies what the file contains.
    """
    deadline = time.monotonic() + timeout
    while True:
        connection = sqlite3.connect(f"file:{ledger}?mode=ro", uri=True)
        try:
            last_flush = _read_meta(connection, META_LAST_FLUSH)
        finally:
            connection.close()
        if last_flush is not None and float(last_flush) >= until + COMMIT_MARGIN:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)


def copy_run_rows(source: Path, destination: Path, since: float, until: float) -> int:
    """Copy the rows received from ``since`` to ``until`` (wall Unix seconds); return the count.

    The copy also records the source, the window and the source's possible gaps that overlap
    the window, since verdicts inside a gap are uncertain.
    """
    destination.unlink(missing_ok=True)
    reader = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    writer = sqlite3.connect(destination)
    try:
        create_schema(writer)
        columns = ", ".join(("seq", *COLUMNS))
        placeholders = ", ".join("?" * (len(COLUMNS) + 1))
        rows = reader.execute(
            f"SELECT {columns} FROM deliveries WHERE wall_time >= ? AND wall_time <= ? "
            "ORDER BY seq",
            (since, until),
        )
        count = 0
        while batch := rows.fetchmany(5000):
            writer.executemany(f"INSERT INTO deliveries ({columns}) VALUES ({placeholders})", batch)
            count += len(batch)

        gaps = json.loads(_read_meta(reader, META_POSSIBLE_GAPS) or "[]")
        overlapping = [gap for gap in gaps if gap["since"] <= until and gap["until"] >= since]
        metas = {
            META_SOURCE: str(source),
            META_WINDOW: json.dumps({"since": since, "until": until}),
            META_POSSIBLE_GAPS: json.dumps(overlapping),
        }
        writer.executemany(
            "INSERT OR REPLACE INTO ledger_meta (key, value) VALUES (?, ?)", metas.items()
        )
        writer.commit()
        return count
    finally:
        reader.close()
        writer.close()


def copy_run_ledger(
    ledger: Path, run_dir: Path, epoch: Epoch, *, wait: bool
) -> tuple[int, str | None]:
    """Copy the run's rows, from its first action until now, into ``run_dir``.

    With ``wait``, first wait for the ledger's writer to commit past now; pass False for
    gateways that stopped, which commit nothing more. Returns the rows copied and a warning when
    the writer had not committed that far.
    """
    until = time.time()
    warning = None
    if wait and not wait_for_commit(ledger, until):
        warning = (
            f"the gateways' ledger {ledger} has not committed up to the run's end; the report "
            "may miss the last pushes"
        )
    count = copy_run_rows(ledger, run_dir / DELIVERIES_FILE, epoch.wall_t0, until)
    return count, warning
