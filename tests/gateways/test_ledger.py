"""The delivery ledger: every answered push on disk, retries and duplicates marked, crashes
bounded and reported."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from sim.formats.delivery import read_rows
from sim.formats.shards import shard_of
from sim.gateways.hooks import Outcome, Service
from sim.gateways.ledger import DeliveryLedger
from sim.gateways.ledger_writer import RecentKeys
from sim.gateways.run import RunState
from sim.gateways.world import GatewayWorld
from tests.gateways.worldkit import (
    SIM_T0,
    accepted,
    apns_token,
    fcm_token,
    push,
    run_config,
    wait_for,
)

REPO = Path(__file__).resolve().parents[2]
WALL_T0 = 1_700_000_000.0


def open_ledger(path: Path, **kwargs) -> DeliveryLedger:
    state = RunState(run_config(wall_t0=WALL_T0, time_scale=60.0, shard_count=4))
    return DeliveryLedger(path, state, **kwargs).start()


def test_every_field_recorded(tmp_path):
    ledger = open_ledger(tmp_path / "ledger.sqlite")
    token = apns_token(77, 3)
    request = push(
        token,
        received_at=WALL_T0 + 10.0,
        message_id="6f1c7b9e-0000-4000-8000-000000000001",
        headers={
            "apns-id": "6f1c7b9e-0000-4000-8000-000000000001",
            "apns-collapse-id": "cart-42",
            "apns-priority": "10",
            "apns-expiration": "1700003600",
            "apns-push-type": "alert",
        },
        payload={"aps": {"alert": "hi"}, "cart_id": "42"},
    )
    ledger.record(request, accepted("delivery-1", added_latency=0.25, extra={"note": "x"}))
    ledger.record(
        push(token, received_at=WALL_T0 + 11.0),
        Outcome(410, "Unregistered", timestamp_ms=1_700_000_005_000, retry_after=None),
    )
    ledger.close()

    first, second = read_rows(str(tmp_path / "ledger.sqlite"))

    assert first.seq == 1
    assert first.wall_time == WALL_T0 + 10.0
    assert first.sim_time == SIM_T0 + 600.0
    assert first.service == "apns"
    assert first.connection_id == "conn-1"
    assert first.token == token
    assert first.audience == "com.example.shop"
    assert first.message_id == "6f1c7b9e-0000-4000-8000-000000000001"
    assert first.collapse_id == "cart-42"
    assert first.priority == "10"
    assert first.expiration == "1700003600"
    assert first.push_type == "alert"
    assert json.loads(first.payload) == {"aps": {"alert": "hi"}, "cart_id": "42"}
    assert (first.status, first.reason, first.delivery_id) == (200, None, "delivery-1")
    assert first.added_latency == 0.25
    assert first.group_id == 77
    assert first.shard == shard_of(77, 4)
    assert json.loads(first.extra) == {"note": "x"}
    assert (second.status, second.reason, second.delivery_id) == (410, "Unregistered", None)
    assert second.timestamp_ms == 1_700_000_005_000


def test_fcm_options_from_request_fields(tmp_path):
    ledger = open_ledger(tmp_path / "ledger.sqlite")
    request = push(fcm_token(5), service=Service.FCM, received_at=WALL_T0)
    request.collapse_id, request.priority, request.expiration = "cart", "high", "3600s"
    ledger.record(request, Outcome(503, "UNAVAILABLE", retry_after=7, fault="brownout"))
    ledger.close()

    (row,) = read_rows(str(tmp_path / "ledger.sqlite"))

    assert (row.collapse_id, row.priority, row.expiration) == ("cart", "high", "3600s")
    assert row.push_type is None
    assert (row.retry_after, row.fault) == (7, "brownout")


def test_apns_id_reuse_marks_retry(tmp_path):
    ledger = open_ledger(tmp_path / "ledger.sqlite")
    token = apns_token(1)
    for offset, apns_id in [(0, "a"), (1, "b"), (2, "a"), (3, "a")]:
        request = push(token, received_at=WALL_T0 + offset, headers={"apns-id": apns_id})
        ledger.record(request, Outcome(503, "ServiceUnavailable"))
    ledger.close()

    rows = list(read_rows(str(tmp_path / "ledger.sqlite")))

    assert [row.retry_of for row in rows] == [None, None, 1, 1]
    assert all(row.duplicate_of is None for row in rows)


def test_fcm_same_payload_marks_duplicate(tmp_path):
    ledger = open_ledger(tmp_path / "ledger.sqlite", duplicate_window=60.0)
    token, other = fcm_token(1), fcm_token(2)
    sends = [
        (token, {"cart": 1}, 0.0),
        (token, {"cart": 2}, 1.0),
        (token, {"cart": 1}, 5.0),
        (other, {"cart": 1}, 6.0),
        (token, {"cart": 1}, 200.0),
    ]
    for number, (target, payload, offset) in enumerate(sends):
        request = push(target, service=Service.FCM, payload=payload, received_at=WALL_T0 + offset)
        ledger.record(request, accepted(f"fcm-{number}"))
    ledger.close()

    rows = list(read_rows(str(tmp_path / "ledger.sqlite")))

    # The fifth send comes 195 s after the last one with that payload, outside the window.
    assert [row.duplicate_of for row in rows] == [None, None, 1, None, None]


def test_recent_keys_bounded():
    keys = RecentKeys(window=1000.0, max_entries=100)

    for number in range(10_000):
        keys.first_seq(f"key-{number}", number, 5.0)

    assert len(keys) <= 100
    assert keys.first_seq("key-9999", 10_001, 5.0) == 9999


def test_without_run_no_sim_time_or_shard(tmp_path):
    ledger = DeliveryLedger(tmp_path / "ledger.sqlite").start()
    ledger.record(push(apns_token(3), received_at=WALL_T0), accepted("x"))
    ledger.close()

    (row,) = read_rows(str(tmp_path / "ledger.sqlite"))

    assert row.sim_time is None
    assert row.shard is None
    assert row.group_id is None


def test_reused_delivery_id_kept_without_id(tmp_path):
    ledger = open_ledger(tmp_path / "ledger.sqlite")
    for offset in range(3):
        ledger.record(push(apns_token(3), received_at=WALL_T0 + offset), accepted("same-id"))
    ledger.close()

    rows = list(read_rows(str(tmp_path / "ledger.sqlite")))

    assert len(rows) == 3
    assert [row.delivery_id for row in rows] == ["same-id", None, None]
    assert json.loads(rows[2].extra) == {"reused_delivery_id": "same-id"}


def test_clean_close_reports_no_gap(tmp_path):
    path = tmp_path / "ledger.sqlite"
    ledger = open_ledger(path)
    ledger.record(push(apns_token(1), received_at=WALL_T0), accepted("one"))
    ledger.close()

    reopened = open_ledger(path)
    reopened.record(push(apns_token(1), received_at=WALL_T0 + 1), accepted("two"))
    reopened.close()

    assert reopened.possible_gap is None
    assert [row.seq for row in read_rows(str(path))] == [1, 2]


def ledger_indexes(path: Path) -> set[str]:
    connection = sqlite3.connect(path)
    try:
        rows = connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'deliveries'"
        ).fetchall()
    finally:
        connection.close()
    return {name for (name,) in rows}


def test_token_index_built_on_close(tmp_path):
    path = tmp_path / "ledger.sqlite"
    ledger = open_ledger(path)
    ledger.record(push(apns_token(1), received_at=WALL_T0), accepted("one"))
    wait_for(lambda: ledger.committed == 1)

    while_open = ledger_indexes(path)
    ledger.close()
    after_close = ledger_indexes(path)
    reopened = open_ledger(path)
    while_reopened = ledger_indexes(path)
    reopened.close()

    assert "deliveries_shard" in while_open
    assert "deliveries_token" not in while_open
    assert "deliveries_token" in after_close
    assert "deliveries_token" not in while_reopened
    assert "deliveries_token" in ledger_indexes(path)


def test_record_does_not_wait_for_disk(tmp_path):
    ledger = open_ledger(tmp_path / "ledger.sqlite")
    request = push(apns_token(1), received_at=WALL_T0)
    outcome = Outcome(400, "BadDeviceToken")

    started = time.perf_counter()
    for _ in range(20_000):
        ledger.record(request, outcome)
    elapsed = time.perf_counter() - started
    wait_for(lambda: ledger.committed == 20_000)
    ledger.close()

    # 20,000 queue puts take a few ms. A commit per record would take seconds.
    assert elapsed < 1.0


@pytest.mark.timeout(60)
def test_backlog_reaches_writer_in_bounded_batches(tmp_path):
    path = tmp_path / "ledger.sqlite"
    batches = []
    ledger = open_ledger(path, max_batch=50, on_commit=lambda entries: batches.append(len(entries)))

    # A stopped writer lets a backlog of 1,000 records build up in the gateway.
    os.kill(ledger.writer_pid, signal.SIGSTOP)
    try:
        for number in range(1000):
            request = push(apns_token(number), received_at=WALL_T0 + number)
            ledger.record(request, accepted(f"delivery-{number}"))
        time.sleep(0.2)
    finally:
        os.kill(ledger.writer_pid, signal.SIGCONT)
    wait_for(lambda: ledger.committed == 1000)
    ledger.close()

    assert sum(batches) == 1000
    # Messages hold at most 50 records, and the writer merges them up to 50 rows, so no batch
    # reaches 100. One batch of the whole backlog would set both processes' peak memory.
    assert max(batches) < 100
    rows = read_rows(str(path))
    assert [row.delivery_id for row in rows] == [f"delivery-{number}" for number in range(1000)]


def test_version_one_file_gains_columns(tmp_path):
    path = tmp_path / "old.sqlite"
    connection = sqlite3.connect(path)
    connection.execute(
        "CREATE TABLE deliveries (seq INTEGER PRIMARY KEY, wall_time REAL NOT NULL, "
        "sim_time REAL, service TEXT NOT NULL, connection_id TEXT NOT NULL, token TEXT NOT NULL, "
        "audience TEXT NOT NULL, message_id TEXT NOT NULL, collapse_id TEXT, priority TEXT, "
        "expiration TEXT, push_type TEXT, payload BLOB, status INTEGER NOT NULL, reason TEXT, "
        "delivery_id TEXT UNIQUE, timestamp_ms INTEGER, retry_after INTEGER, "
        "added_latency REAL NOT NULL DEFAULT 0, retry_of INTEGER, duplicate_of INTEGER, "
        "shard INTEGER, group_id INTEGER)"
    )
    connection.commit()
    connection.close()

    ledger = open_ledger(path)
    ledger.record(push(apns_token(1), received_at=WALL_T0), Outcome(200, fault="latency"))
    ledger.close()

    (row,) = read_rows(str(path))
    assert row.fault == "latency"


FEEDER = textwrap.dedent(
    """
    import mmap, struct, sys, time
    from tests.gateways.worldkit import push, accepted, apns_token, fcm_token, run_config
    from sim.gateways.hooks import Outcome, Service
    from sim.gateways.world import GatewayWorld

    path, count, rate = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    # The number of records handed to the sink so far, readable by the test after a SIGKILL.
    with open(sys.argv[4], "r+b") as progress_file:
        progress = mmap.mmap(progress_file.fileno(), 8)
    world = GatewayWorld(path, flush_interval=0.1).start()
    world.configure_run(run_config(time_scale=60.0, shard_count=4))
    started = time.time()
    print(f"started {started!r} writer {world.ledger.writer_pid}", flush=True)
    for number in range(count):
        ahead = started + number / rate - time.time()
        if ahead > 0.0005:
            time.sleep(ahead)
        if number % 2:
            request = push(fcm_token(number % 500), service=Service.FCM,
                           payload={"n": number}, received_at=time.time())
        else:
            request = push(apns_token(number % 500), payload={"n": number},
                           received_at=time.time())
        if number % 7 == 3:
            outcome = Outcome(410, "Unregistered", timestamp_ms=1)
        else:
            outcome = accepted(f"delivery-{number}")
        world.sink.record(request, outcome)
        struct.pack_into("<Q", progress, 0, number + 1)
    print("done", flush=True)
    time.sleep(60)
    """
)


def process_gone(pid: int) -> bool:
    """Tell whether ``pid`` has exited; an unreaped zombie counts as exited."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state == "Z"


def committed_rows(path: Path) -> int:
    if not path.exists():
        return 0
    try:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1.0)
        try:
            return connection.execute("SELECT count(*) FROM deliveries").fetchone()[0]
        finally:
            connection.close()
    except sqlite3.OperationalError:
        return 0


@pytest.mark.timeout(60)
def test_dead_writer_leaves_shutdown_unclean(tmp_path, caplog):
    path = tmp_path / "ledger.sqlite"
    ledger = open_ledger(path)
    ledger.record(push(apns_token(1), received_at=WALL_T0), accepted("one"))
    wait_for(lambda: ledger.committed == 1)

    os.kill(ledger.writer_pid, signal.SIGKILL)
    wait_for(lambda: process_gone(ledger.writer_pid))
    ledger.record(push(apns_token(2), received_at=WALL_T0 + 1), accepted("two"))
    wait_for(lambda: ledger.write_errors >= 1)
    ledger.close()
    reopened = open_ledger(path)
    reopened.close()

    assert "writer process exited with status -9" in caplog.text
    assert [row.delivery_id for row in read_rows(str(path))] == ["one"]
    assert reopened.possible_gap is not None


STOPPER = textwrap.dedent(
    """
    import signal, sys, time
    from tests.gateways.worldkit import accepted, apns_token, push
    from sim.gateways.ledger import DeliveryLedger

    ledger = DeliveryLedger(sys.argv[1]).start()

    def stop(signum, frame):
        ledger.close()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    for number in range(200):
        request = push(apns_token(number), received_at=1_700_000_000.0 + number)
        ledger.record(request, accepted(f"delivery-{number}"))
        # The first commit shows the writer has started and set its signal handling.
        while number == 99 and ledger.committed < 100:
            time.sleep(0.01)
    print(f"writer {ledger.writer_pid}", flush=True)
    while True:
        time.sleep(0.1)
    """
)


@pytest.mark.timeout(60)
def test_group_sigterm_closes_cleanly(tmp_path):
    # pushsim run stops each component by signalling its process group, so the writer process
    # gets the SIGTERM too. It must leave the stop to the gateway's close.
    path = tmp_path / "ledger.sqlite"
    script = tmp_path / "stopper.py"
    script.write_text(STOPPER)
    stopper = subprocess.Popen(
        [sys.executable, str(script), str(path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        start_new_session=True,
    )
    try:
        stopper.stdout.readline()
        os.killpg(stopper.pid, signal.SIGTERM)
        status = stopper.wait(30)
    finally:
        if stopper.poll() is None:
            stopper.kill()
            stopper.wait(10)
        stopper.stdout.close()

    reopened = DeliveryLedger(path)
    gap = reopened.possible_gap
    reopened.close()

    assert status == 0
    assert gap is None
    assert len(list(read_rows(str(path)))) == 200


@pytest.mark.timeout(60)
def test_kill_mid_burst_loses_one_interval(tmp_path, caplog):
    path = tmp_path / "ledger.sqlite"
    script = tmp_path / "feeder.py"
    script.write_text(FEEDER)
    progress = tmp_path / "progress"
    progress.write_bytes(bytes(8))
    count, rate, flush_interval = 10_000, 5000.0, 0.1
    # Scheduling slack on a busy CI machine, in wall seconds.
    slack = 0.3
    started = time.time()
    feeder = subprocess.Popen(
        [sys.executable, str(script), str(path), str(count), str(rate), str(progress)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    try:
        writer_pid = int(feeder.stdout.readline().split()[-1])
        wait_for(lambda: committed_rows(path) >= 3000, timeout=30.0, interval=0.005)
        killed_at = time.time()
        feeder.send_signal(signal.SIGKILL)
        feeder.wait(10)
    finally:
        if feeder.poll() is None:
            feeder.kill()
            feeder.wait(10)
        feeder.stdout.close()

    # The orphaned writer commits what was already in its pipe and exits.
    wait_for(lambda: process_gone(writer_pid), timeout=10.0)
    with caplog.at_level("WARNING", logger="sim.gateways.ledger"):
        world = GatewayWorld(path).start()
    # The run is posted again after the restart. Its epoch began at the feeder's start, which is
    # after ``started``, so the inbox keeps every delivery of it.
    world.configure_run(run_config(wall_t0=started, time_scale=60.0, shard_count=4))
    gap = world.ledger.possible_gap
    metrics = world.render_metrics()
    inbox = {shard: world.inbox.read(shard, after=0, limit=10_000) for shard in range(4)}
    world.close()
    rows = list(read_rows(str(path)))

    sent = int.from_bytes(progress.read_bytes(), "little")
    numbers = [json.loads(row.payload)["n"] for row in rows]
    assert 3000 <= len(rows) <= sent < count
    # Rows are written in order, so what is missing is the newest pushes only, and everything
    # received before the last flush interval is on disk.
    assert numbers == list(range(len(rows)))
    assert rows[-1].wall_time >= killed_at - flush_interval - slack
    assert sent - len(rows) <= rate * (flush_interval + slack)

    assert gap is not None
    assert gap.since == rows[-1].wall_time
    assert killed_at - flush_interval - slack <= gap.since <= killed_at
    assert killed_at - slack <= gap.until <= killed_at + flush_interval + slack
    assert "may be missing" in caplog.text
    gap_line = next(
        line for line in metrics.splitlines()
        if line.startswith("pushsim_ledger_possible_gap_seconds ")
    )  # fmt: skip
    assert float(gap_line.split()[1]) == pytest.approx(gap.seconds)
    assert flush_interval <= gap.seconds <= flush_interval + 2 * slack

    expected = {
        shard: [row.delivery_id for row in rows if row.delivery_id and row.shard == shard]
        for shard in range(4)
    }
    assert sum(len(ids) for ids in expected.values()) == sum(1 for r in rows if r.delivery_id)
    for shard in range(4):
        assert [entry.delivery_id for entry in inbox[shard]] == expected[shard]


def test_second_ledger_waits_for_writer(tmp_path):
    path = tmp_path / "ledger.sqlite"
    first = open_ledger(path)
    first.record(push(apns_token(1), received_at=WALL_T0), accepted("one"))
    opened = threading.Event()

    def open_second() -> None:
        DeliveryLedger(path).close()
        opened.set()

    opener = threading.Thread(target=open_second)
    opener.start()
    # The writer of the first ledger still runs, so the second waits for its lock.
    assert not opened.wait(0.5)

    first.close()
    opener.join(10)
    assert opened.is_set()
    assert [row.delivery_id for row in read_rows(str(path))] == ["one"]
