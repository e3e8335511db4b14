"""Profiles, their identifiers and merges.

Each identifier (a customer id, an email, an anonymous id) points at one live profile through
the ``identities`` table. A merge moves the secondary profile's identifiers, events, devices and
journey runs to the primary, so every identifier of the secondary resolves to the primary from
then on. Every function here runs inside a write on the store's writer thread.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from dataclasses import dataclass

log = logging.getLogger(__name__)

ID = "id"
EMAIL = "email"
ANONYMOUS_ID = "anonymous_id"

# A path identifier of this form names a profile by its row id, as Customer.io's cio_id does.
CIO_ID_PREFIX = "cio_"


class UnknownPartyError(LookupError):
    """Raised by ``merge_parties`` when a party of the merge names no profile."""

    def __init__(self, *messages: str) -> None:
        super().__init__(*messages)
        self.messages = list(messages)


@dataclass(frozen=True)
class IdentifyResult:
    """Outcome of an identify: the person's profile and the anonymous profile merged into it."""

    profile_id: int
    created: bool
    merged_profile_id: int | None = None


def lookup(connection: sqlite3.Connection, kind: str, value: str) -> int | None:
    """Return the live profile id that owns identifier ``kind``/``value``, or None."""
    row = connection.execute(
        "SELECT profile_id FROM identities WHERE kind = ? AND value = ?", (kind, value)
    ).fetchone()
    return row[0] if row else None


def lookup_reference(connection: sqlite3.Connection, reference: str) -> int | None:
    """Return the profile named by a path identifier: a customer id, an email or ``cio_<n>``.

    As in the Customer.io Track API, the shape decides: a value with ``@`` is tried as an email
    first, then as an id.
    """
    profile_id = None
    if "@" in reference:
        profile_id = lookup(connection, EMAIL, reference)
    if profile_id is None:
        profile_id = lookup(connection, ID, reference)
    if profile_id is None and reference.startswith(CIO_ID_PREFIX):
        number = reference.removeprefix(CIO_ID_PREFIX)
        if number.isdigit():
            row = connection.execute(
                "SELECT id FROM profiles WHERE id = ? AND merged_into IS NULL", (int(number),)
            ).fetchone()
            profile_id = row[0] if row else None
    return profile_id


def _link(connection: sqlite3.Connection, kind: str, value: str, profile_id: int, now: float):
    connection.execute(
        "INSERT OR IGNORE INTO identities (kind, value, profile_id, created_at) "
        "VALUES (?, ?, ?, ?)",
        (kind, value, profile_id, now),
    )


def _create_profile(connection: sqlite3.Connection, customer_id: str | None, now: float) -> int:
    cursor = connection.execute(
        "INSERT INTO profiles (customer_id, created_at, updated_at) VALUES (?, ?, ?)",
        (customer_id, now, now),
    )
    profile_id = cursor.lastrowid
    assert profile_id is not None
    if customer_id is not None:
        _link(connection, ID, customer_id, profile_id, now)
    return profile_id


def ensure_person(connection: sqlite3.Connection, reference: str, now: float) -> tuple[int, bool]:
    """Return ``(profile_id, created)`` for a path identifier, creating the person if unknown."""
    profile_id = lookup_reference(connection, reference)
    if profile_id is not None:
        return profile_id, False
    return _create_profile(connection, reference, now), True


def ensure_anonymous(connection: sqlite3.Connection, anonymous_id: str, now: float) -> int:
    """Return the profile that owns ``anonymous_id``, creating an anonymous profile if unknown."""
    profile_id = lookup(connection, ANONYMOUS_ID, anonymous_id)
    if profile_id is not None:
        return profile_id
    profile_id = _create_profile(connection, None, now)
    _link(connection, ANONYMOUS_ID, anonymous_id, profile_id, now)
    return profile_id


def load_attributes(connection: sqlite3.Connection, profile_id: int) -> dict:
    row = connection.execute(
        "SELECT attributes FROM profiles WHERE id = ?", (profile_id,)
    ).fetchone()
    return json.loads(row[0]) if row else {}


def update_attributes(
    connection: sqlite3.Connection, profile_id: int, changes: dict, now: float
) -> None:
    """Apply attribute changes to a profile. A None value removes the attribute."""
    attributes = load_attributes(connection, profile_id)
    for name, value in changes.items():
        if value is None:
            attributes.pop(name, None)
        else:
            attributes[name] = value
    email = attributes.get(EMAIL)
    connection.execute(
        "UPDATE profiles SET attributes = ?, email = ?, updated_at = ? WHERE id = ?",
        (
            json.dumps(attributes, sort_keys=True),
            email if isinstance(email, str) else None,
            now,
            profile_id,
        ),
    )
    if isinstance(email, str) and email:
        # An email already linked to another profile stays with that profile.
        _link(connection, EMAIL, email, profile_id, now)


def identify(
    connection: sqlite3.Connection,
    reference: str,
    attributes: dict,
    *,
    anonymous_id: str | None,
    merge_anonymous: bool,
    update_only: bool,
    now: float,
) -> IdentifyResult | None:
    """Create or update a person, and stitch the profile of ``anonymous_id`` into it.

    With ``merge_anonymous`` False the anonymous id is ignored, so whatever it tracked stays on
    its anonymous profile. With ``update_only`` an unknown person is not created and the
    result is None.
    """
    if update_only:
        profile_id = lookup_reference(connection, reference)
        if profile_id is None:
            return None
        created = False
    else:
        profile_id, created = ensure_person(connection, reference, now)
    update_attributes(connection, profile_id, attributes, now)

    merged = None
    if anonymous_id and merge_anonymous:
        merged = stitch_anonymous(connection, profile_id, anonymous_id, now)
    return IdentifyResult(profile_id, created, merged)


def stitch_anonymous(
    connection: sqlite3.Connection, profile_id: int, anonymous_id: str, now: float
) -> int | None:
    """Give ``anonymous_id`` to a person and merge its anonymous profile into them.

    Return the merged profile id, or None when there was nothing to merge. An anonymous id that
    already belongs to another identified person stays with that person, because a device that
    two people share must not hand one person's history to the other.
    """
    owner = lookup(connection, ANONYMOUS_ID, anonymous_id)
    if owner is None:
        _link(connection, ANONYMOUS_ID, anonymous_id, profile_id, now)
        return None
    if owner == profile_id:
        return None

    owner_is_person = connection.execute(
        "SELECT 1 FROM identities WHERE profile_id = ? AND kind = ?", (owner, ID)
    ).fetchone()
    if owner_is_person:
        log.info(
            "anonymous id %s already belongs to profile %d: not stitched into profile %d",
            anonymous_id,
            owner,
            profile_id,
        )
        return None
    merge(connection, profile_id, owner, reason="identify_anonymous", now=now)
    return owner


def merge(
    connection: sqlite3.Connection, primary: int, secondary: int, *, reason: str, now: float
) -> None:
    """Merge profile ``secondary`` into ``primary``; the primary's attributes win on conflict."""
    if primary == secondary:
        return

    attributes = load_attributes(connection, secondary)
    attributes.update(load_attributes(connection, primary))
    update_attributes(connection, primary, attributes, now)

    connection.execute(
        "UPDATE identities SET profile_id = ? WHERE profile_id = ?", (primary, secondary)
    )
    connection.execute(
        "UPDATE events SET profile_id = ? WHERE profile_id = ?", (primary, secondary)
    )
    connection.execute(
        "UPDATE journey_runs SET profile_id = ? WHERE profile_id = ?", (primary, secondary)
    )
    moved = connection.execute(
        "SELECT token FROM devices WHERE profile_id = ?", (secondary,)
    ).fetchall()
    connection.execute(
        "UPDATE devices SET profile_id = ?, updated_at = ? WHERE profile_id = ?",
        (primary, now, secondary),
    )
    connection.executemany(
        "INSERT INTO device_history (token, profile_id, action, reason, at) "
        "VALUES (?, ?, 'moved', ?, ?)",
        [(row[0], primary, f"merge of profile {secondary}", now) for row in moved],
    )

    # Profiles merged into the secondary earlier now point at the survivor directly.
    connection.execute(
        "UPDATE profiles SET merged_into = ? WHERE merged_into = ?", (primary, secondary)
    )
    connection.execute(
        "UPDATE profiles SET merged_into = ?, updated_at = ? WHERE id = ?",
        (primary, now, secondary),
    )
    connection.execute(
        "INSERT INTO merges (primary_profile, secondary_profile, reason, merged_at) "
        "VALUES (?, ?, ?, ?)",
        (primary, secondary, reason, now),
    )


def lookup_party(connection: sqlite3.Connection, kind: str, value: str) -> int | None:
    """Return the profile of a merge party given by ``id``, ``email`` or ``cio_id``, or None."""
    if kind == "cio_id":
        return lookup_reference(connection, CIO_ID_PREFIX + value)
    return lookup(connection, kind, value)


def merge_parties(
    connection: sqlite3.Connection,
    *,
    primary: tuple[str, str],
    secondary: tuple[str, str],
    now: float,
) -> None:
    """Merge the ``secondary`` party into the ``primary``, each a ``(kind, value)`` pair.

    Raises UnknownPartyError, with one message per party not found, and changes nothing then.
    """
    primary_id = lookup_party(connection, *primary)
    secondary_id = lookup_party(connection, *secondary)
    missing = [
        f"no customer found with {kind} {value!r}"
        for (kind, value), found in ((primary, primary_id), (secondary, secondary_id))
        if found is None
    ]
    if missing:
        raise UnknownPartyError(*missing)
    assert primary_id is not None and secondary_id is not None
    merge(connection, primary_id, secondary_id, reason="merge_customers", now=now)
