"""Device tokens and their owners.

A token belongs to one profile at a time, as in Customer.io: registering a token under another
person moves it there. Every change of owner or status is appended to ``device_history``.
Every function here runs inside a write on the store's writer thread.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from dataclasses import dataclass, field

from sim.backend import identity

log = logging.getLogger(__name__)

ACTIVE = "active"
DELETED = "deleted"
PRUNED = "pruned"

PLATFORMS = ("ios", "android")


@dataclass(frozen=True)
class DeviceRegistration:
    """A device token as an app reports it. A None field leaves the stored value unchanged."""

    token: str
    platform: str
    last_used: float | None = None
    push_enabled: bool | None = None
    push_enabled_at: float | None = None
    app_version: str | None = None
    os_version: str | None = None
    attributes: dict = field(default_factory=dict)


@dataclass(frozen=True)
class RegisterResult:
    """Outcome of a registration: the previous owner when the token moved, and replaced tokens."""

    created: bool
    previous_profile_id: int | None = None
    replaced_tokens: tuple[str, ...] = ()


def _history(
    connection: sqlite3.Connection,
    token: str,
    profile_id: int,
    action: str,
    reason: str | None,
    now: float,
) -> None:
    connection.execute(
        "INSERT INTO device_history (token, profile_id, action, reason, at) VALUES (?, ?, ?, ?, ?)",
        (token, profile_id, action, reason, now),
    )


def _push_flag(value: bool | None) -> int | None:
    return None if value is None else int(value)


# Maximum age, in wall seconds, of an app's registration stamp that still counts as the moment of
# registration. An older last_used describes earlier use of the device, not this registration.
FRESH_STAMP = 60.0


def register_device(
    connection: sqlite3.Connection,
    profile_id: int,
    device: DeviceRegistration,
    *,
    single_device: bool,
    now: float,
) -> RegisterResult:
    """Register ``device`` to ``profile_id``, moving it from any other owner.

    ``registered_at`` is set on every registration, so a sender can tell a token registered
    again after a failed send from one that was not. It is the app's own ``last_used`` stamp when
    that lies within ``FRESH_STAMP`` seconds before ``now``, else ``now``. At a time scale of
    thousands, a few milliseconds of request latency would otherwise reorder a registration and
    the token's death that were simulated seconds apart. With ``single_device``
    every other active token of the profile is deleted with reason ``replaced``.
    """
    registered_at = now
    if device.last_used is not None and now - FRESH_STAMP <= device.last_used <= now:
        registered_at = device.last_used
    row = connection.execute(
        "SELECT profile_id, status, attributes FROM devices WHERE token = ?", (device.token,)
    ).fetchone()
    previous_owner = None

    if row is None:
        connection.execute(
            "INSERT INTO devices (token, profile_id, platform, last_used, first_registered_at, "
            "registered_at, updated_at, push_enabled, push_enabled_at, app_version, os_version, "
            "attributes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                device.token,
                profile_id,
                device.platform,
                device.last_used,
                registered_at,
                registered_at,
                now,
                _push_flag(device.push_enabled),
                device.push_enabled_at,
                device.app_version,
                device.os_version,
                json.dumps(device.attributes, sort_keys=True),
            ),
        )
        _history(connection, device.token, profile_id, "registered", None, registered_at)
    else:
        attributes = json.loads(row["attributes"])
        attributes.update(device.attributes)
        connection.execute(
            "UPDATE devices SET profile_id = ?, platform = ?, "
            "last_used = COALESCE(?, last_used), registered_at = ?, updated_at = ?, "
            "push_enabled = COALESCE(?, push_enabled), "
            "push_enabled_at = COALESCE(?, push_enabled_at), "
            "app_version = COALESCE(?, app_version), os_version = COALESCE(?, os_version), "
            "attributes = ?, status = 'active', status_reason = NULL, status_at = NULL "
            "WHERE token = ?",
            (
                profile_id,
                device.platform,
                device.last_used,
                registered_at,
                now,
                _push_flag(device.push_enabled),
                device.push_enabled_at,
                device.app_version,
                device.os_version,
                json.dumps(attributes, sort_keys=True),
                device.token,
            ),
        )
        if row["profile_id"] != profile_id:
            previous_owner = row["profile_id"]
            _history(
                connection,
                device.token,
                profile_id,
                "moved",
                f"from profile {previous_owner}",
                registered_at,
            )
        elif row["status"] != ACTIVE:
            _history(
                connection, device.token, profile_id, "reactivated", row["status"], registered_at
            )

    replaced: tuple[str, ...] = ()
    if single_device:
        replaced = _replace_other_devices(connection, profile_id, device.token, now)
    return RegisterResult(row is None, previous_owner, replaced)


def _replace_other_devices(
    connection: sqlite3.Connection, profile_id: int, token: str, now: float
) -> tuple[str, ...]:
    others = [
        row[0]
        for row in connection.execute(
            "SELECT token FROM devices WHERE profile_id = ? AND token != ? AND status = 'active'",
            (profile_id, token),
        )
    ]
    for other in others:
        set_status(connection, other, DELETED, "replaced", now)
    return tuple(others)


def set_status(
    connection: sqlite3.Connection, token: str, status: str, reason: str, now: float
) -> bool:
    """Set the status of ``token`` (deleted or pruned) with its reason; False if unknown."""
    row = connection.execute("SELECT profile_id FROM devices WHERE token = ?", (token,)).fetchone()
    if row is None:
        return False
    connection.execute(
        "UPDATE devices SET status = ?, status_reason = ?, status_at = ?, updated_at = ? "
        "WHERE token = ?",
        (status, reason, now, now, token),
    )
    _history(connection, token, row[0], status, reason, now)
    return True


def delete_device(connection: sqlite3.Connection, profile_id: int, token: str, now: float) -> bool:
    """Delete ``token`` if ``profile_id`` owns it; a token owned by someone else stays as is."""
    row = connection.execute(
        "SELECT profile_id, status FROM devices WHERE token = ?", (token,)
    ).fetchone()
    if row is None or row["profile_id"] != profile_id or row["status"] != ACTIVE:
        return False
    return set_status(connection, token, DELETED, "deleted by the app", now)


def register_device_of(
    connection: sqlite3.Connection,
    *,
    reference: str,
    device: DeviceRegistration,
    single_device: bool,
    now: float,
) -> RegisterResult:
    """Register ``device`` to the person of the path identifier ``reference``, created if new."""
    profile_id, _ = identity.ensure_person(connection, reference, now)
    return register_device(connection, profile_id, device, single_device=single_device, now=now)


def delete_device_of(
    connection: sqlite3.Connection, *, reference: str, token: str, now: float
) -> bool:
    """Delete ``token`` from the person of the path identifier ``reference``, if they own it."""
    profile_id = identity.lookup_reference(connection, reference)
    if profile_id is None:
        return False
    return delete_device(connection, profile_id, token, now)


def prune_device(connection: sqlite3.Connection, token: str, reason: str, now: float) -> bool:
    """Mark ``token`` pruned after a gateway reported it invalid; False if the token is unknown."""
    return set_status(connection, token, PRUNED, reason, now)
