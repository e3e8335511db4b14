"""Invariants of identity stitching and merges under random sequences of calls."""

from __future__ import annotations

import sqlite3

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.backend import devices, events, identity
from sim.backend.store import SCHEMA

PEOPLE = st.sampled_from(["ann", "bob", "cy"])
VISITORS = st.sampled_from(["anon-1", "anon-2", "anon-3"])
TOKENS = st.sampled_from(["tok-1", "tok-2"])

STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("identify"), PEOPLE, st.one_of(st.none(), VISITORS)),
        st.tuples(st.just("anonymous_event"), VISITORS, st.none()),
        st.tuples(st.just("event"), PEOPLE, st.none()),
        st.tuples(st.just("device"), PEOPLE, TOKENS),
        st.tuples(st.just("merge"), PEOPLE, PEOPLE),
    ),
    max_size=25,
)


def apply_step(connection: sqlite3.Connection, step: tuple, now: float) -> None:
    kind, first, second = step
    if kind == "identify":
        identity.identify(
            connection,
            first,
            {},
            anonymous_id=second,
            merge_anonymous=True,
            update_only=False,
            now=now,
        )
    elif kind == "anonymous_event":
        profile_id = identity.ensure_anonymous(connection, first, now)
        events.insert_event(
            connection,
            profile_id=profile_id,
            anonymous_id=first,
            name="product_viewed",
            data={},
            timestamp=now,
            source=events.TRACK,
            dedupe_id=None,
            now=now,
        )
    elif kind == "event":
        profile_id, _ = identity.ensure_person(connection, first, now)
        events.insert_event(
            connection,
            profile_id=profile_id,
            anonymous_id=None,
            name="added_to_cart",
            data={},
            timestamp=now,
            source=events.TRACK,
            dedupe_id=None,
            now=now,
        )
    elif kind == "device":
        profile_id, _ = identity.ensure_person(connection, first, now)
        registration = devices.DeviceRegistration(token=second, platform="ios")
        devices.register_device(connection, profile_id, registration, single_device=False, now=now)
    else:
        primary, _ = identity.ensure_person(connection, first, now)
        secondary, _ = identity.ensure_person(connection, second, now)
        identity.merge(connection, primary, secondary, reason="merge_customers", now=now)


def live_profiles(connection: sqlite3.Connection) -> set[int]:
    rows = connection.execute("SELECT id FROM profiles WHERE merged_into IS NULL")
    return {row[0] for row in rows}


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(STEPS)
def test_rows_always_point_at_live_profiles(steps):
    # Row access by column name, as on the store's own connections.
    connection = sqlite3.connect(":memory:", isolation_level=None)
    connection.row_factory = sqlite3.Row
    connection.executescript(SCHEMA)
    total_events = 0
    for number, step in enumerate(steps):
        apply_step(connection, step, now=1_700_000_000 + number)
        total_events += step[0] in ("anonymous_event", "event")

    live = live_profiles(connection)
    for table in ("identities", "devices"):
        owners = {row[0] for row in connection.execute(f"SELECT profile_id FROM {table}")}
        assert owners <= live, table
    event_owners = {row[0] for row in connection.execute("SELECT profile_id FROM events")}
    assert event_owners <= live
    merged_targets = {
        row[0]
        for row in connection.execute(
            "SELECT merged_into FROM profiles WHERE merged_into IS NOT NULL"
        )
    }
    assert merged_targets <= live

    # Merges move events and never lose or copy one.
    assert connection.execute("SELECT COUNT(*) FROM events").fetchone()[0] == total_events
    connection.close()
