"""The backend's SQLite schema and how every connection to it is opened."""

from __future__ import annotations

import sqlite3
from pathlib import Path

SCHEMA_VERSION = 1

# Times are wall Unix seconds (REAL) throughout. JSON columns hold objects encoded as text.
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- A profile is a person (customer_id set) or an anonymous visitor (customer_id NULL).
-- A merged profile keeps its row, and merged_into names the profile that absorbed it.
CREATE TABLE IF NOT EXISTS profiles (
    id INTEGER PRIMARY KEY,
    customer_id TEXT UNIQUE,
    email TEXT,
    attributes TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    merged_into INTEGER REFERENCES profiles(id)
);
-- A merge repoints the profiles merged into its secondary. Without this index that UPDATE scans
-- every profile inside the writer's batch. Most profiles are never merged, hence the WHERE.
CREATE INDEX IF NOT EXISTS profiles_by_merged_into
    ON profiles (merged_into) WHERE merged_into IS NOT NULL;

-- Every identifier the backend has seen, pointing at the live profile that owns it.
CREATE TABLE IF NOT EXISTS identities (
    kind TEXT NOT NULL CHECK (kind IN ('id', 'email', 'anonymous_id')),
    value TEXT NOT NULL,
    profile_id INTEGER NOT NULL REFERENCES profiles(id),
    created_at REAL NOT NULL,
    PRIMARY KEY (kind, value)
);
CREATE INDEX IF NOT EXISTS identities_by_profile ON identities (profile_id);

CREATE TABLE IF NOT EXISTS merges (
    id INTEGER PRIMARY KEY,
    primary_profile INTEGER NOT NULL REFERENCES profiles(id),
    secondary_profile INTEGER NOT NULL REFERENCES profiles(id),
    reason TEXT NOT NULL,
    merged_at REAL NOT NULL
);

-- One row per device token. A token belongs to one profile at a time.
CREATE TABLE IF NOT EXISTS devices (
    token TEXT PRIMARY KEY,
    profile_id INTEGER NOT NULL REFERENCES profiles(id),
    platform TEXT NOT NULL,
    last_used REAL,
    first_registered_at REAL NOT NULL,
    registered_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    push_enabled INTEGER,
    push_enabled_at REAL,
    app_version TEXT,
    os_version TEXT,
    attributes TEXT NOT NULL DEFAULT '{}',
    status TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'deleted', 'pruned')),
    status_reason TEXT,
    status_at REAL
);
CREATE INDEX IF NOT EXISTS devices_by_profile ON devices (profile_id, status);

-- Every change of a token's owner or status, so ownership at any past time can be answered.
CREATE TABLE IF NOT EXISTS device_history (
    id INTEGER PRIMARY KEY,
    token TEXT NOT NULL,
    profile_id INTEGER NOT NULL,
    action TEXT NOT NULL,
    reason TEXT,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS device_history_by_token ON device_history (token, at);

-- id grows with every insert, so a journey engine can follow new events with id > last seen.
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    profile_id INTEGER REFERENCES profiles(id),
    anonymous_id TEXT,
    name TEXT NOT NULL,
    data TEXT NOT NULL DEFAULT '{}',
    timestamp REAL NOT NULL,
    received_at REAL NOT NULL,
    source TEXT NOT NULL CHECK (source IN ('track', 'cdp')),
    dedupe_id TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS events_by_dedupe_id
    ON events (source, dedupe_id) WHERE dedupe_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_by_profile ON events (profile_id, name, timestamp);

CREATE TABLE IF NOT EXISTS delivery_metrics (
    id INTEGER PRIMARY KEY,
    delivery_id TEXT NOT NULL,
    metric TEXT NOT NULL,
    device_token TEXT,
    timestamp REAL NOT NULL,
    received_at REAL NOT NULL,
    source TEXT NOT NULL CHECK (source IN ('track', 'cdp')),
    UNIQUE (delivery_id, metric)
);

-- CDP messageIds already processed, so a retried message is acknowledged and not applied twice.
CREATE TABLE IF NOT EXISTS cdp_messages (
    message_id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    received_at REAL NOT NULL
);

-- One row per journey entry. The journey engine owns state and outcome. match_value is the
-- trigger's value of the journey's match property (cart_id, sku), so one cart starts one run;
-- detail holds the run's trigger properties, deep link and flags as JSON.
CREATE TABLE IF NOT EXISTS journey_runs (
    id INTEGER PRIMARY KEY,
    journey TEXT NOT NULL,
    profile_id INTEGER NOT NULL REFERENCES profiles(id),
    trigger_event_id INTEGER REFERENCES events(id),
    match_value TEXT,
    state TEXT NOT NULL,
    due_at REAL,
    sent_at REAL,
    outcome TEXT,
    detail TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    UNIQUE (journey, trigger_event_id)
);
CREATE INDEX IF NOT EXISTS journey_runs_by_due ON journey_runs (journey, state, due_at);
CREATE INDEX IF NOT EXISTS journey_runs_by_profile
    ON journey_runs (profile_id, journey, match_value);

-- One row per push a journey run handed to the sender: one per device of the person.
-- outcome stays NULL until the sender reports it, so a restart submits the push again.
CREATE TABLE IF NOT EXISTS journey_sends (
    delivery_id TEXT PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES journey_runs(id),
    token TEXT NOT NULL,
    service TEXT NOT NULL CHECK (service IN ('apns', 'fcm')),
    link TEXT NOT NULL,
    submitted_at REAL NOT NULL,
    outcome TEXT,
    status_code INTEGER,
    reason TEXT,
    attempts INTEGER,
    finished_at REAL
);
CREATE INDEX IF NOT EXISTS journey_sends_by_run ON journey_sends (run_id);
CREATE INDEX IF NOT EXISTS journey_sends_pending ON journey_sends (outcome) WHERE outcome IS NULL;

-- Every epoch posted to the control endpoint. The latest row is the run's epoch.
CREATE TABLE IF NOT EXISTS epochs (
    id INTEGER PRIMARY KEY,
    wall_t0 REAL NOT NULL,
    sim_t0 REAL NOT NULL,
    time_scale REAL NOT NULL,
    run_key TEXT,
    shard_count INTEGER,
    posted_at REAL NOT NULL
);
"""


def connect(path: Path, *, read_only: bool = False) -> sqlite3.Connection:
    """Open a connection in autocommit mode with WAL, so transactions are explicit."""
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    connection.row_factory = sqlite3.Row
    # A reader waits this long (ms) for the writer's checkpoint instead of failing at once.
    connection.execute("PRAGMA busy_timeout = 5000")
    connection.execute("PRAGMA foreign_keys = ON")
    if not read_only:
        connection.execute("PRAGMA journal_mode = WAL")
        # NORMAL writes the WAL at every commit but syncs it only at checkpoints, so a commit
        # survives a crash or kill of the process, and only a power loss or an OS crash can
        # undo the last ones. FULL's fsync per commit bounded the intake's rate.
        connection.execute("PRAGMA synchronous = NORMAL")
    return connection


def create_schema(connection: sqlite3.Connection) -> None:
    """Create every table and index that is missing and record the schema version."""
    connection.executescript(SCHEMA)
    connection.execute(
        "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)",
        (str(SCHEMA_VERSION),),
    )
