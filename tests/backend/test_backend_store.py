"""Group commit, durability across restarts, and the read queries of the store."""

from __future__ import annotations

import asyncio
import sqlite3
import time

import httpx
import pytest
from backend_harness import API_KEY, SITE_ID

from sim.backend import queries
from sim.backend.store import Store, StoreClosedError

CONCURRENT_WRITES = 300
CLIENT_CONNECTIONS = 50


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

        def insert(name):
            def op(connection):
                connection.execute("INSERT INTO meta (key, value) VALUES (?, 'v')", (name,))

            return op

        def failing(connection):
            connection.execute("INSERT INTO meta (key, value) VALUES ('doomed', 'v')")
            raise ValueError("invalid write")

        results = await asyncio.gather(
            store.write(insert("a")),
            store.write(failing),
            store.write(insert("b")),
            return_exceptions=True,
        )
        keys = await store.read(
            lambda connection: {row[0] for row in connection.execute("SELECT key FROM meta")}
        )
        await store.close()
        return results, keys

    results, keys = asyncio.run(scenario())
    assert results[0] is None
    assert isinstance(results[1], ValueError)
    assert results[2] is None
    assert {"a", "b"} <= keys
    assert "doomed" not in keys


def test_lone_write_ends_the_linger_early(tmp_path):
    # With a 2 s linger, a write that waited out the whole linger would take 2 s. The writer
    # commits once a look at its queue finds nothing new.
    async def scenario():
        store = Store(tmp_path / "s.db", linger_seconds=2.0)
        store.open()
        try:
            started = time.monotonic()
            await store.write(
                lambda connection: connection.execute(
                    "INSERT INTO meta (key, value) VALUES ('k', 'v')"
                )
            )
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
            await store.write(
                lambda connection, n=n: connection.execute(
                    "INSERT INTO meta (key, value) VALUES (?, 'v')", (f"k{n}",)
                )
            )
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
            await store.write(lambda connection: None)

    asyncio.run(scenario())


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
                await store.write(
                    lambda connection, n=n: connection.execute(
                        "INSERT INTO meta (key, value) VALUES (?, ?)", (f"k{n}", "v" * 2000)
                    )
                )
            # About 60 pages stay far below SQLite's automatic checkpoint at 1000, so only the
            # checkpoint thread copies them from the WAL into the database file.
            await asyncio.sleep(0.5)
            return (tmp_path / "s.db").stat().st_size
        finally:
            await store.close()

    size = asyncio.run(scenario())
    assert size > 50 * 2000
