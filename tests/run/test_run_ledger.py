"""A run's copy of a shared delivery ledger: only the rows of the run's wall-time window."""

from __future__ import annotations

import json
import sqlite3

from sim.formats.delivery import (
    COLUMNS,
    META_LAST_FLUSH,
    META_POSSIBLE_GAPS,
    create_schema,
    read_rows,
)
from sim.run.run_ledger import META_WINDOW, copy_run_rows, wait_for_commit


def shared_ledger(path, wall_times: list[float], last_flush: float, gaps: list[dict]) -> None:
    connection = sqlite3.connect(path)
    create_schema(connection)
    for number, wall_time in enumerate(wall_times, start=1):
        row = dict.fromkeys(COLUMNS)
        row.update(
            wall_time=wall_time, service="apns", connection_id="c1", token=f"t{number}",
            audience="com.example.shop", message_id=f"m{number}", status=200,
            delivery_id=f"d{number}", added_latency=0.0,
        )  # fmt: skip
        connection.execute(
            f"INSERT INTO deliveries ({', '.join(COLUMNS)}) VALUES "
            f"({', '.join('?' * len(COLUMNS))})",
            [row[column] for column in COLUMNS],
        )
    connection.executemany(
        "INSERT OR REPLACE INTO ledger_meta (key, value) VALUES (?, ?)",
        [(META_LAST_FLUSH, repr(last_flush)), (META_POSSIBLE_GAPS, json.dumps(gaps))],
    )
    connection.commit()
    connection.close()


def test_copy_keeps_window_rows(tmp_path):
    source = tmp_path / "shared.sqlite"
    gaps = [{"since": 95.0, "until": 96.0, "backlog": 3}, {"since": 150.0, "until": 151.0,
                                                           "backlog": 1}]  # fmt: skip
    shared_ledger(source, [90.0, 99.9, 100.0, 120.0, 140.0, 140.1], 200.0, gaps)
    copy = tmp_path / "run" / "deliveries.sqlite"
    copy.parent.mkdir()

    count = copy_run_rows(source, copy, since=100.0, until=140.0)
    rows = list(read_rows(str(copy)))
    connection = sqlite3.connect(copy)
    meta = dict(connection.execute("SELECT key, value FROM ledger_meta"))
    connection.close()

    assert count == 3
    assert [row.seq for row in rows] == [3, 4, 5]
    assert [row.delivery_id for row in rows] == ["d3", "d4", "d5"]
    assert json.loads(meta[META_WINDOW]) == {"since": 100.0, "until": 140.0}
    assert json.loads(meta[META_POSSIBLE_GAPS]) == []


def test_copy_replaces_earlier_copy(tmp_path):
    source = tmp_path / "shared.sqlite"
    shared_ledger(source, [10.0, 20.0], 30.0, [{"since": 15.0, "until": 16.0, "backlog": 2}])
    copy = tmp_path / "deliveries.sqlite"

    copy_run_rows(source, copy, since=0.0, until=30.0)
    count = copy_run_rows(source, copy, since=15.0, until=30.0)
    connection = sqlite3.connect(copy)
    gaps = json.loads(dict(connection.execute("SELECT key, value FROM ledger_meta"))[
        META_POSSIBLE_GAPS])  # fmt: skip
    connection.close()

    assert count == 1
    assert [row.seq for row in read_rows(str(copy))] == [2]
    assert gaps == [{"since": 15.0, "until": 16.0, "backlog": 2}]


def test_wait_for_commit(tmp_path):
    source = tmp_path / "shared.sqlite"
    shared_ledger(source, [10.0], 50.0, [])

    assert wait_for_commit(source, until=40.0, timeout=1.0) is True
    assert wait_for_commit(source, until=49.5, timeout=0.3) is False
