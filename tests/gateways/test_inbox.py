"""Per-shard inboxes over real HTTP: each shard gets exactly its pushes, in order, once."""

from __future__ import annotations

import asyncio
import time

from sim.formats.delivery import read_rows
from sim.formats.shards import shard_of
from sim.formats.tokens import derive_run_key
from sim.gateways.hooks import Service
from sim.gateways.registry import Invalidation
from sim.gateways.world import GatewayWorld
from tests.gateways.worldkit import (
    SIM_T0,
    answer,
    apns_token,
    control_client,
    fcm_token,
    push,
    run,
    run_config,
    wait_for,
)

SHARDS = 3


def world_with_pushes(path, count: int = 300, **kwargs) -> GatewayWorld:
    """Return a started world that answered ``count`` pushes, some rejected, all committed."""
    world = GatewayWorld(path, flush_interval=0.02, **kwargs).start()
    world.configure_run(run_config(shard_count=SHARDS))
    dead = apns_token(999)
    world.registry.report([Invalidation(dead, "uninstall", SIM_T0 - 10, SIM_T0 - 5)])
    for number in range(count):
        if number % 10 == 9:
            token = apns_token(number, run_key=derive_run_key(1))  # never issued: rejected
        elif number % 10 == 8:
            token = dead  # reported gone: 410
        elif number % 2:
            token = fcm_token(number % 37)
        else:
            token = apns_token(number % 41)
        service = Service.APNS if len(token) == 64 else Service.FCM
        answer(world, push(token, service=service, payload={"n": number}))
    wait_for(lambda: world.ledger.committed == count)
    return world


def expected_by_shard(path) -> dict[int, list[str]]:
    rows = [row for row in read_rows(str(path)) if row.delivery_id]
    return {
        shard: [row.delivery_id for row in rows if shard_of(row.group_id, SHARDS) == shard]
        for shard in range(SHARDS)
    }


def test_each_shard_gets_its_pushes_once(tmp_path):
    path = tmp_path / "ledger.sqlite"
    world = world_with_pushes(path)

    async def drain(client, shard: int) -> tuple[list[dict], list[dict]]:
        received = []
        while True:
            response = await client.get(f"/inbox/{shard}", params={"limit": 17})
            assert response.status_code == 200
            batch = response.json()["deliveries"]
            if not batch:
                break
            received.extend(batch)
            ack = await client.post(f"/inbox/{shard}/ack", json={"cursor": batch[-1]["seq"]})
            assert ack.json() == {"shard": shard, "cursor": batch[-1]["seq"]}
        # A client that forgets its cursor and asks from the start gets nothing acknowledged.
        again = await client.get(f"/inbox/{shard}", params={"after": 0})
        return received, again.json()["deliveries"]

    async def scenario():
        async with control_client(world) as client:
            return [await drain(client, shard) for shard in range(SHARDS)]

    results = run(scenario())
    world.close()
    expected = expected_by_shard(path)

    assert sum(len(ids) for ids in expected.values()) == 240
    for shard, (received, again) in enumerate(results):
        seqs = [delivery["seq"] for delivery in received]
        assert [delivery["delivery_id"] for delivery in received] == expected[shard]
        assert seqs == sorted(set(seqs))
        assert again == []
        assert all(delivery["payload"]["n"] >= 0 for delivery in received)
        assert all(delivery["service"] in ("apns", "fcm") for delivery in received)


def test_long_poll_wakes_on_delivery(tmp_path):
    world = GatewayWorld(tmp_path / "ledger.sqlite", flush_interval=0.02).start()
    world.configure_run(run_config(shard_count=1))

    async def scenario():
        async with control_client(world) as client:
            poll = asyncio.create_task(client.get("/inbox/0", params={"wait": 10}))
            await asyncio.sleep(0.3)
            sent_at = time.monotonic()
            answer(world, push(apns_token(5), payload={"hello": 1}))
            response = await poll
            woke_after = time.monotonic() - sent_at

            empty_started = time.monotonic()
            cursor = response.json()["cursor"]
            empty = await client.get("/inbox/0", params={"wait": 0.5, "after": cursor})
            empty_waited = time.monotonic() - empty_started
            return response.json(), woke_after, empty.json(), empty_waited

    body, woke_after, empty, empty_waited = run(scenario())
    world.close()

    assert [delivery["payload"] for delivery in body["deliveries"]] == [{"hello": 1}]
    assert body["cursor"] == body["deliveries"][0]["seq"]
    assert woke_after < 2.0
    assert empty["deliveries"] == []
    assert 0.45 <= empty_waited < 3.0


def test_long_polls_on_several_shards(tmp_path):
    world = GatewayWorld(tmp_path / "ledger.sqlite", flush_interval=0.02).start()
    world.configure_run(run_config(shard_count=SHARDS))
    tokens = {}
    for group in range(200):
        tokens.setdefault(shard_of(group, SHARDS), apns_token(group))

    async def scenario():
        async with control_client(world) as client:
            polls = [
                asyncio.create_task(client.get(f"/inbox/{shard}", params={"wait": 10}))
                for shard in range(SHARDS)
            ]
            await asyncio.sleep(0.2)
            for shard in range(SHARDS):
                answer(world, push(tokens[shard], payload={"shard": shard}))
            return [(await poll).json() for poll in polls]

    bodies = run(scenario())
    world.close()

    for shard, body in enumerate(bodies):
        assert [delivery["payload"] for delivery in body["deliveries"]] == [{"shard": shard}]


def test_unread_shard_spills_to_sqlite(tmp_path):
    path = tmp_path / "ledger.sqlite"
    world = world_with_pushes(path, count=300, max_inbox_tail=10)

    in_memory = world.inbox.memory_entries()
    by_shard = {shard: world.inbox.read(shard, limit=1000) for shard in range(SHARDS)}
    world.close()
    expected = expected_by_shard(path)

    assert in_memory <= 10 * SHARDS
    for shard in range(SHARDS):
        assert [entry.delivery_id for entry in by_shard[shard]] == expected[shard]


def test_acks_survive_restart(tmp_path):
    path = tmp_path / "ledger.sqlite"
    world = world_with_pushes(path, count=100)
    first = world.inbox.read(0, limit=5)
    world.inbox.ack(0, first[-1].seq)
    world.close()

    reopened = GatewayWorld(path).start()
    # The same run is posted again after a restart, with the epoch it had.
    reopened.configure_run(run_config(shard_count=SHARDS, wall_t0=world.run.config.epoch.wall_t0))
    after_restart = reopened.inbox.read(0, after=0, limit=1000)
    reopened.close()

    assert reopened.ledger.possible_gap is None
    assert len(first) == 5
    assert after_restart
    assert after_restart[0].seq > first[-1].seq
    assert [entry.delivery_id for entry in first + after_restart] == expected_by_shard(path)[0]


def test_inbox_rejects_bad_requests(tmp_path):
    world = world_with_pushes(tmp_path / "ledger.sqlite", count=20)

    async def scenario():
        async with control_client(world) as client:
            return {
                "shard": await client.get(f"/inbox/{SHARDS}"),
                "word": await client.get("/inbox/first"),
                "wait": await client.get("/inbox/0", params={"wait": "forever"}),
                "limit": await client.get("/inbox/0", params={"limit": 0}),
                "ahead": await client.post("/inbox/0/ack", json={"cursor": 10_000}),
                "cursor": await client.post("/inbox/0/ack", json={"cursor": "7"}),
            }

    responses = run(scenario())
    world.close()

    assert responses["shard"].status_code == 404
    assert "use an integer from 0 to 2" in responses["shard"].json()["error"]
    assert responses["word"].status_code == 404
    assert responses["wait"].status_code == 400
    assert "invalid wait 'forever'" in responses["wait"].json()["error"]
    assert responses["limit"].status_code == 400
    assert responses["ahead"].status_code == 400
    assert "invalid cursor 10000" in responses["ahead"].json()["error"]
    assert responses["cursor"].status_code == 400
    assert "invalid cursor '7': expected int" in responses["cursor"].json()["error"]


def test_inbox_before_run_is_conflict(tmp_path):
    world = GatewayWorld(tmp_path / "ledger.sqlite").start()

    async def scenario():
        async with control_client(world) as client:
            return await client.get("/inbox/0")

    response = run(scenario())
    world.close()

    assert response.status_code == 409
    assert "post /control/run" in response.json()["error"]


def test_abandoned_long_poll_unregistered(tmp_path):
    world = GatewayWorld(tmp_path / "ledger.sqlite").start()
    world.configure_run(run_config(shard_count=1))

    async def scenario():
        polls = [asyncio.create_task(world.inbox.fetch(0, wait=10)) for _ in range(5)]
        await asyncio.sleep(0.1)
        registered = len(world.inbox._shard(0).waiters)
        for poll in polls:
            poll.cancel()
        await asyncio.gather(*polls, return_exceptions=True)
        return registered, len(world.inbox._shard(0).waiters)

    registered, remaining = run(scenario())
    world.close()

    assert registered == 5
    assert remaining == 0


def test_new_run_hides_earlier_deliveries(tmp_path):
    world = world_with_pushes(tmp_path / "ledger.sqlite", count=50)
    earlier = [world.inbox.read(shard, limit=1000) for shard in range(SHARDS)]

    world.configure_run(run_config(shard_count=SHARDS, wall_t0=time.time()))
    hidden = [world.inbox.read(shard, after=0, limit=1000) for shard in range(SHARDS)]
    token = apns_token(3)
    answer(world, push(token, payload={"run": 2}))
    wait_for(lambda: world.ledger.committed == 51)
    shard = shard_of(3, SHARDS)  # apns_token(3) belongs to group 3
    current = world.inbox.read(shard, after=0, limit=1000)
    world.close()

    assert sum(len(entries) for entries in earlier) > 0
    assert hidden == [[], [], []]
    assert [entry.token for entry in current] == [token]
