"""A batch of Track API event writes stores what the same writes store one at a time."""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import astuple

import pytest

from sim.backend import identity
from sim.backend.store import SCHEMA, Store
from sim.backend.track_events import EventWrite, apply_event_writes

NOW = 1_700_000_000.5


def _event(reference=None, anonymous_id=None, dedupe_id=None, name="product_viewed", now=NOW):
    return EventWrite(
        reference=reference,
        anonymous_id=anonymous_id,
        name=name,
        data='{"sku":"s-1"}',
        timestamp=now - 10,
        dedupe_id=dedupe_id,
        now=now,
    )


def _database() -> sqlite3.Connection:
    connection = sqlite3.connect(":memory:", isolation_level=None)
    connection.executescript(SCHEMA)
    # Profiles that exist before the batch: a person with an email and an anonymous visitor.
    ann = identity.ensure_person(connection, "ann", NOW)[0]
    identity.update_attributes(connection, ann, {"email": "ann@example.com"}, NOW)
    identity.ensure_anonymous(connection, "anon-known", NOW)
    connection.execute(
        "INSERT INTO events (profile_id, name, timestamp, received_at, source, dedupe_id) "
        "VALUES (?, 'old', 1, 1, 'track', 'evt-stored')",
        (ann,),
    )
    return connection


def _contents(connection: sqlite3.Connection) -> dict[str, list[tuple]]:
    """Return the stored rows with each profile id replaced by the identifier it was made for.

    A batch may create its new profiles in another order than single writes do, so only the
    row ids of new profiles may differ.
    """
    labels = {
        row[0]: row[1]
        for row in connection.execute(
            "SELECT profiles.id, coalesce(customer_id, 'anonymous ' || identities.value) "
            "FROM profiles LEFT JOIN identities "
            "ON identities.profile_id = profiles.id AND identities.kind = 'anonymous_id'"
        )
    }
    profiles = connection.execute("SELECT id, created_at FROM profiles").fetchall()
    identities = connection.execute(
        "SELECT kind, value, profile_id, created_at FROM identities"
    ).fetchall()
    events = connection.execute(
        "SELECT id, profile_id, anonymous_id, name, data, timestamp, received_at, source, "
        "dedupe_id FROM events ORDER BY id"
    ).fetchall()
    return {
        "profiles": sorted((labels[id_], created_at) for id_, created_at in profiles),
        "identities": sorted(
            (kind, value, labels[owner], created_at)
            for kind, value, owner, created_at in identities
        ),
        "events": [(row[0], labels.get(row[1]), *row[2:]) for row in events],
    }


BATCH = [
    _event("bob", dedupe_id="evt-1"),
    _event("bob", dedupe_id="evt-2", now=NOW + 1),
    _event("carl", dedupe_id="evt-1"),  # repeats evt-1 of this batch: no event, no person
    _event("dora", dedupe_id="evt-stored"),  # repeats a stored id: no event, no person
    _event("ann", dedupe_id="evt-3"),
    _event("ann@example.com", dedupe_id="evt-4"),  # an email reference
    _event("cio_1", dedupe_id="evt-5"),  # a profile row id reference
    _event("new@example.com"),  # an unknown email becomes a customer id
    _event(anonymous_id="anon-known", dedupe_id="evt-6"),
    _event(anonymous_id="anon-new", dedupe_id="evt-7"),
    _event(anonymous_id="anon-new", now=NOW + 2),
    _event(),  # no profile at all
    _event(),  # the same again, without an id: stored twice
]


def test_batch_matches_writes_one_at_a_time():
    one_at_a_time = _database()
    expected = [write(one_at_a_time) for write in BATCH]

    grouped = _database()
    stored = apply_event_writes(grouped, BATCH)

    assert stored == expected
    assert _contents(grouped) == _contents(one_at_a_time)


def test_batch_stores_expected_events():
    connection = _database()
    stored = apply_event_writes(connection, BATCH)

    assert stored == [
        True,
        True,
        False,
        False,
        True,
        True,
        True,
        True,
        True,
        True,
        True,
        True,
        True,
    ]
    people = {row[0] for row in connection.execute("SELECT customer_id FROM profiles")}
    assert "carl" not in people
    assert "dora" not in people
    assert {"bob", "new@example.com"} <= people


def test_batch_of_duplicates_only():
    connection = _database()
    before = _contents(connection)

    stored = apply_event_writes(connection, [_event("zed", dedupe_id="evt-stored")])

    assert stored == [False]
    assert _contents(connection) == before


@pytest.mark.parametrize("linger", [0.0, 0.01])
def test_store_groups_event_writes(tmp_path, linger):
    async def scenario():
        store = Store(tmp_path / "s.db", linger_seconds=linger)
        store.open()
        try:
            writes = [_event(f"p-{n % 7}", dedupe_id=f"evt-{n % 40}") for n in range(60)]
            results = await asyncio.gather(*(store.write(write) for write in writes))
            rows = await store.read(
                lambda connection: connection.execute(
                    "SELECT count(*), count(DISTINCT dedupe_id) FROM events"
                ).fetchone()
            )
            return results, tuple(rows)
        finally:
            await store.close()

    results, (events, distinct) = asyncio.run(scenario())
    assert sum(results) == 40
    assert events == 40
    assert distinct == 40


class BrokenGroupEventWrite(EventWrite):
    """An event write whose grouped path fails, as a broken ``apply_event_writes`` would."""

    __slots__ = ()

    @staticmethod
    def apply_group(connection, writes):
        raise sqlite3.OperationalError("simulated failure of the grouped path")


def test_failing_group_falls_back_to_single_writes(tmp_path):
    # The writer process imports this module to unpickle the writes, so the subclass replaces
    # a patch, which would reach this process only.
    async def scenario():
        store = Store(tmp_path / "s.db", linger_seconds=0.01)
        store.open()
        try:
            writes = [
                BrokenGroupEventWrite(*astuple(_event("p-1", dedupe_id="a"))),
                BrokenGroupEventWrite(*astuple(_event("p-2", dedupe_id="a"))),
            ]
            results = await asyncio.gather(*(store.write(write) for write in writes))
            count = await store.read(
                lambda connection: connection.execute("SELECT count(*) FROM events").fetchone()[0]
            )
            return results, count
        finally:
            await store.close()

    results, count = asyncio.run(scenario())
    assert sorted(results) == [False, True]
    assert count == 1
