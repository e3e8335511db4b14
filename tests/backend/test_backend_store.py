"""Group commit, durability across restarts, and the read queries of the store."""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import sqlite3
import time
from pathlib import Path

import httpx
import pytest
from backend_harness import API_KEY, SITE_ID

from sim.backend import identity, queries
from sim.backend.services import SERVICES
from sim.backend.store import (
    Store,
    StoreClosedError,
    StoreWriteError,
    StoreWriterGoneError,
)

CONCURRENT_WRITES = 300
CLIENT_CONNECTIONS = 50


# Store writes run in the writer process, so they are module-level functions bound with
# functools.partial, never closures.
def insert_meta(connection: sqlite3.Connection, key: str, value: str = "v") -> None:
    connection.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (key, value))


def insert_then_fail(connection: sqlite3.Connection) -> None:
    connection.execute("INSERT INTO meta (key, value) VALUES ('doomed', 'v')")
    raise ValueError("invalid write")


def insert_slowly(connection: sqlite3.Connection, key: str, seconds: float) -> None:
    insert_meta(connection, key)
    time.sleep(seconds)


def return_cursor(connection: sqlite3.Connection) -> sqlite3.Cursor:
    return connection.execute("INSERT INTO meta (key, value) VALUES ('cursor', 'v')")


def meta_keys(connection: sqlite3.Connection) -> set[str]:
    return {row[0] for row in connection.execute("SELECT key FROM meta")}


async def post_events(url: str, ids: list[str], stop_after: int | None = None, stop=None):
    """Post one event per id concurrently and return the ids acknowledged with 200.

    With ``stop_after``, ``stop`` runs in a thread once that many acknowledgements arrived, so
    the server shuts down while requests are still in flight.
    """
    limits = httpx.Limits(max_connections=CLIENT_CONNECTIONS)
    acknowledged: list[str] = []
    stopping: list[asyncio.Task] = []

    async with httpx.AsyncClient(
        base_url=url, auth=(SITE_ID, API_KEY), limits=limits, timeout=10.0
    ) as client:

        async def post(event_id: str) -> None:
            try:
                response = await client.post(
                    f"/api/v1/customers/user-{event_id[-1]}/events",
                    json={"name": "product_viewed", "id": event_id, "data": {"n": event_id}},
                )
            except httpx.TransportError:
                return
            if response.status_code == 200:
                acknowledged.append(event_id)
                if stop_after is not None and len(acknowledged) == stop_after:
                    stopping.append(asyncio.create_task(asyncio.to_thread(stop)))

        await asyncio.gather(*(post(event_id) for event_id in ids))
        await asyncio.gather(*stopping)
    return acknowledged


def stored_event_ids(backend) -> set[str]:
    return {row["dedupe_id"] for row in backend.query("SELECT dedupe_id FROM events")}


def test_concurrent_writes_survive_restart(backend):
    ids = [f"evt-{n:04d}" for n in range(CONCURRENT_WRITES)]
    acknowledged = asyncio.run(post_events(backend.url, ids))
    assert len(acknowledged) == CONCURRENT_WRITES

    backend.restart()

    assert stored_event_ids(backend) == set(ids)
    with backend.track() as client:
        again = client.post("/api/v1/customers/user-0/events", json={"name": "x", "id": ids[0]})
    assert again.status_code == 200
    assert len(stored_event_ids(backend)) == CONCURRENT_WRITES


def test_concurrent_writes_share_commits(backend):
    ids = [f"batch-{n:04d}" for n in range(CONCURRENT_WRITES)]
    asyncio.run(post_events(backend.url, ids))

    with backend.client() as client:
        text = client.get("/metrics").text
    values = dict(
        line.rsplit(" ", 1)
        for line in text.splitlines()
        if line.startswith("pushsim_backend_write")
    )
    batches = int(values["pushsim_backend_write_batch_size_count"])
    writes = int(values["pushsim_backend_write_batch_size_sum"])
    assert writes == CONCURRENT_WRITES
    assert batches < writes


def test_shutdown_keeps_every_acknowledged_write(backend):
    ids = [f"late-{n:04d}" for n in range(CONCURRENT_WRITES)]
    acknowledged = asyncio.run(post_events(backend.url, ids, stop_after=50, stop=backend.stop))
    assert len(acknowledged) >= 50

    backend.start()

    missing = set(acknowledged) - stored_event_ids(backend)
    assert not missing


def test_failed_write_rolls_back_alone(tmp_path):
    async def scenario():
        store = Store(tmp_path / "s.db", linger_seconds=0.01)
        store.open()
        results = await asyncio.gather(
            store.write(functools.partial(insert_meta, key="a")),
            store.write(insert_then_fail),
            store.write(functools.partial(insert_meta, key="b")),
            return_exceptions=True,
        )
        keys = await store.read(meta_keys)
        await store.close()
        return results, keys

    results, keys = asyncio.run(scenario())
    assert results[0] is None
    assert isinstance(results[1], ValueError)
    assert str(results[1]) == "invalid write"
    assert results[2] is None
    assert {"a", "b"} <= keys
    assert "doomed" not in keys


def test_op_error_keeps_its_type_and_fields(tmp_path):
    # UnknownPartyError takes its messages as arguments, so it must survive the pickle round
    # trip from the writer process with them.
    async def scenario():
        store = Store(tmp_path / "s.db", linger_seconds=0.01)
        store.open()
        try:
            merge = functools.partial(
                identity.merge_parties,
                primary=("id", "ann"),
                secondary=("email", "bob@example.com"),
                now=1.0,
            )
            return await asyncio.gather(
                store.write(merge),
                store.write(functools.partial(insert_meta, key="after")),
                return_exceptions=True,
            )
        finally:
            await store.close()

    error, after = asyncio.run(scenario())
    assert isinstance(error, identity.UnknownPartyError)
    assert error.messages == [
        "no customer found with id 'ann'",
        "no customer found with email 'bob@example.com'",
    ]
    assert after is None


def test_unpicklable_op_fails_alone(tmp_path):
    async def scenario():
        store = Store(tmp_path / "s.db", linger_seconds=0.01)
        store.open()
        try:
            results = await asyncio.gather(
                store.write(lambda connection: insert_meta(connection, "closure")),
                store.write(functools.partial(insert_meta, key="plain")),
                return_exceptions=True,
            )
            return results, await store.read(meta_keys)
        finally:
            await store.close()

    (closure, plain), keys = asyncio.run(scenario())
    assert isinstance(closure, TypeError)
    assert "functools.partial" in str(closure)
    assert plain is None
    assert "plain" in keys
    assert "closure" not in keys


def test_unpicklable_result_reports_commit(tmp_path):
    async def scenario():
        store = Store(tmp_path / "s.db")
        store.open()
        try:
            results = await asyncio.gather(
                store.write(return_cursor),
                store.write(functools.partial(insert_meta, key="other")),
                return_exceptions=True,
            )
            return results, await store.read(meta_keys)
        finally:
            await store.close()

    (cursor, other), keys = asyncio.run(scenario())
    assert isinstance(cursor, StoreWriteError)
    assert "committed" in str(cursor)
    assert other is None
    assert {"cursor", "other"} <= keys


def test_close_commits_every_queued_write(tmp_path):
    async def scenario():
        store = Store(tmp_path / "s.db", linger_seconds=0.05)
        store.open()
        writes = [
            asyncio.ensure_future(store.write(functools.partial(insert_meta, key=f"q{n}")))
            for n in range(200)
        ]
        # Let the writes reach the store's outbox, then close while they are still in flight.
        await asyncio.sleep(0)
        await store.close()
        return [write.done() and write.exception() is None for write in writes]

    settled = asyncio.run(scenario())
    assert all(settled)
    connection = sqlite3.connect(tmp_path / "s.db")
    try:
        count = connection.execute("SELECT count(*) FROM meta WHERE key LIKE 'q%'").fetchone()[0]
    finally:
        connection.close()
    assert count == 200


def test_writer_death_fails_writes(tmp_path):
    async def scenario():
        store = Store(tmp_path / "s.db")
        store.open()
        await store.write(functools.partial(insert_meta, key="before"))

        in_flight = asyncio.ensure_future(
            store.write(functools.partial(insert_slowly, key="slow", seconds=5.0))
        )
        await asyncio.sleep(0.5)
        os.kill(store.writer_pid, signal.SIGKILL)
        in_flight_error = await asyncio.wait_for(
            asyncio.gather(in_flight, return_exceptions=True), 5.0
        )
        with pytest.raises(StoreWriterGoneError) as later:
            await asyncio.wait_for(store.write(functools.partial(insert_meta, key="after")), 5.0)
        await asyncio.wait_for(store.close(), 5.0)
        return in_flight_error[0], later.value

    in_flight, later = asyncio.run(scenario())
    assert isinstance(in_flight, StoreWriterGoneError)
    assert "exited with status -9" in str(in_flight) or "closed its pipe" in str(in_flight)
    assert "restart the backend" in str(in_flight)
    assert later is in_flight


def test_lone_write_ends_the_linger_early(tmp_path):
    # With a 2 s linger, a write that waited out the whole linger would take 2 s. The writer
    # commits once a look at its queue finds nothing new.
    async def scenario():
        store = Store(tmp_path / "s.db", linger_seconds=2.0)
        store.open()
        try:
            started = time.monotonic()
            await store.write(functools.partial(insert_meta, key="k"))
            return time.monotonic() - started
        finally:
            await store.close()

    assert asyncio.run(scenario()) < 1.0


def test_read_sees_acknowledged_write(tmp_path):
    async def scenario():
        store = Store(tmp_path / "s.db")
        store.open()
        seen = []
        for n in range(20):
            await store.write(functools.partial(insert_meta, key=f"k{n}"))
            row = await store.read(
                lambda connection, n=n: connection.execute(
                    "SELECT 1 FROM meta WHERE key = ?", (f"k{n}",)
                ).fetchone()
            )
            seen.append(row is not None)
        await store.close()
        return seen

    assert all(asyncio.run(scenario()))


def test_write_after_close_raises(tmp_path):
    async def scenario():
        store = Store(tmp_path / "s.db")
        store.open()
        await store.close()
        with pytest.raises(StoreClosedError):
            await store.write(functools.partial(insert_meta, key="late"))

    asyncio.run(scenario())


def test_writer_outlasts_group_sigterm(tmp_path):
    # A process-group SIGTERM reaches the writer too, and the store must still commit what the
    # backend writes while it shuts down.
    async def scenario():
        store = Store(tmp_path / "s.db")
        store.open()
        await store.write(functools.partial(insert_meta, key="before"))
        os.kill(store.writer_pid, signal.SIGTERM)
        await asyncio.sleep(0.2)
        await store.write(functools.partial(insert_meta, key="after"))
        await store.close()

    asyncio.run(scenario())
    connection = sqlite3.connect(tmp_path / "s.db")
    try:
        keys = {row[0] for row in connection.execute("SELECT key FROM meta")}
    finally:
        connection.close()
    assert {"before", "after"} <= keys


def test_backend_reports_writer_death(backend, track):
    store = backend.server.app[SERVICES].store
    os.kill(store.writer_pid, signal.SIGKILL)

    response = track.post("/api/v1/customers/ann/events", json={"name": "product_viewed"})

    assert response.status_code == 500
    assert "writer process exited" in response.json()["meta"]["error"]
    assert not backend.query("SELECT 1 FROM profiles WHERE customer_id = 'ann'")


def test_store_uses_wal(backend):
    connection = sqlite3.connect(backend.config.db_path)
    try:
        mode = connection.execute("PRAGMA journal_mode").fetchone()[0]
    finally:
        connection.close()
    assert mode == "wal"


def test_merge_repoint_uses_index(tmp_path):
    store = Store(tmp_path / "s.db")
    store.open()
    asyncio.run(store.close())

    connection = sqlite3.connect(tmp_path / "s.db")
    try:
        plan = connection.execute(
            "EXPLAIN QUERY PLAN UPDATE profiles SET merged_into = ? WHERE merged_into = ?", (1, 2)
        ).fetchall()
    finally:
        connection.close()
    details = " ".join(row[3] for row in plan)
    assert "profiles_by_merged_into" in details
    assert "SCAN" not in details


def test_queries_for_journey_engine(backend, track):
    track.put("/api/v1/customers/ann", json={"email": "ann@example.com"})
    track.put(
        "/api/v1/customers/ann/devices",
        json={"device": {"id": "tok-1", "platform": "ios", "last_used": 1_700_000_000}},
    )
    for n, name in enumerate(["product_viewed", "added_to_cart", "order_completed"]):
        track.post(
            "/api/v1/customers/ann/events",
            json={"name": name, "timestamp": 1_700_000_000 + n, "data": {"n": n}},
        )

    async def read_all():
        store = Store(backend.config.db_path)
        store.open()
        try:
            profile = await store.read(
                lambda c: queries.find_profile(c, "email", "ann@example.com")
            )
            devices = await store.read(lambda c: queries.devices_of(c, profile["id"]))
            carts = await store.read(
                lambda c: queries.events_of(c, profile["id"], names=["added_to_cart"])
            )
            tail = await store.read(lambda c: queries.events_after(c, 1))
            return profile, devices, carts, tail
        finally:
            await store.close()

    profile, devices, carts, tail = asyncio.run(read_all())
    assert profile["customer_id"] == "ann"
    assert profile["attributes"] == {"email": "ann@example.com"}
    assert [device["token"] for device in devices] == ["tok-1"]
    assert [event["data"] for event in carts] == [{"n": 1}]
    assert [event["name"] for event in tail] == ["added_to_cart", "order_completed"]


def test_checkpoints_run_off_writer(tmp_path):
    async def scenario():
        store = Store(tmp_path / "s.db")
        store.open()
        try:
            for n in range(50):
                await store.write(functools.partial(insert_meta, key=f"k{n}", value="v" * 2000))
            # About 60 pages stay far below SQLite's automatic checkpoint at 1000, so only the
            # checkpoint thread copies them from the WAL into the database file.
            await asyncio.sleep(0.5)
            return (tmp_path / "s.db").stat().st_size
        finally:
            await store.close()

    size = asyncio.run(scenario())
    assert size > 50 * 2000


def _wal_restarts(wal: Path) -> int:
    """The checkpoint sequence number in a WAL header, which grows each time the WAL restarts."""
    with wal.open("rb") as file:
        header = file.read(16)
    return int.from_bytes(header[12:16], "big") if len(header) == 16 else 0


def test_busy_writer_starts_the_wal_over(tmp_path):
    """Under steady concurrent writes the writer keeps starting the WAL over.

    A passive checkpoint alone copies frames but never lets the writer start the WAL over while
    commits keep coming, so the file would grow by every frame written.
    """

    async def scenario():
        store = Store(tmp_path / "s.db", wal_restart_frames=64)
        store.open()
        wal = tmp_path / "s.db-wal"
        restarts = largest = 0
        try:
            # The first write waits for the writer process to start.
            await store.write(functools.partial(insert_meta, key="first"))
            deadline = time.monotonic() + 1.0

            async def write_rows(writer: int) -> None:
                for n in range(20_000):
                    if time.monotonic() > deadline:
                        return
                    await store.write(functools.partial(insert_meta, key=f"w{writer}-{n}"))

            async def watch_wal() -> None:
                nonlocal restarts, largest
                while True:
                    restarts = max(restarts, _wal_restarts(wal))
                    largest = max(largest, wal.stat().st_size)
                    await asyncio.sleep(0.01)

            watcher = asyncio.create_task(watch_wal())
            await asyncio.gather(*(write_rows(writer) for writer in range(4)))
            watcher.cancel()
            return restarts, largest
        finally:
            await store.close()

    restarts, largest = asyncio.run(scenario())
    # Checkpoints run every 0.1 s, so a second of writes gives several chances to start over.
    assert restarts >= 3, (restarts, largest)
