"""CDP messages as store writes: each validated message applied to profiles, devices and events.

Every function here runs inside a write in the store's writer process, so this module imports
no HTTP code.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass, field

from sim.backend import devices, events, identity
from sim.backend.devices import DeviceRegistration

log = logging.getLogger("sim.backend.cdp")

DEVICE_DELETED = "Device Deleted"


@dataclass
class Message:
    """One validated CDP message, ready to apply."""

    type: str
    message_id: str | None
    user_id: str | None
    anonymous_id: str | None
    timestamp: float
    event: str | None = None
    properties: dict = field(default_factory=dict)
    traits: dict = field(default_factory=dict)
    device: DeviceRegistration | None = None
    device_token: str | None = None
    delivery_id: str | None = None
    metric: str | None = None
    previous_id: str | None = None


@dataclass
class Applied:
    """Counts from applying a request's messages."""

    events: int = 0
    duplicates: int = 0


@dataclass(frozen=True)
class ApplyOptions:
    """The backend's naive switches that change how a message is applied."""

    no_anonymous_merge: bool = False
    single_device_per_person: bool = False


def _profile_of(connection: sqlite3.Connection, message: Message, now: float) -> int:
    if message.user_id is not None:
        return identity.ensure_person(connection, message.user_id, now)[0]
    assert message.anonymous_id is not None
    return identity.ensure_anonymous(connection, message.anonymous_id, now)


def _apply_alias(
    connection: sqlite3.Connection, profile_id: int, message: Message, now: float
) -> None:
    """Merge the profile known by ``previousId`` (a user id or an anonymous id) into the user.

    An alias is an explicit merge, so the no_anonymous_merge switch does not apply to it. An
    unknown ``previousId`` changes nothing.
    """
    assert message.previous_id is not None
    previous = identity.lookup(connection, identity.ID, message.previous_id)
    if previous is None:
        previous = identity.lookup(connection, identity.ANONYMOUS_ID, message.previous_id)
    if previous is None:
        log.info(
            "alias from unknown id %s to user %s ignored", message.previous_id, message.user_id
        )
        return
    identity.merge(connection, profile_id, previous, reason="alias", now=now)


def apply_message(
    connection: sqlite3.Connection,
    message: Message,
    options: ApplyOptions,
    applied: Applied,
    now: float,
) -> None:
    """Apply one validated message to the store, unless its messageId was processed before."""
    if message.message_id is not None and not events.claim_message(
        connection, message.message_id, message.type, now
    ):
        applied.duplicates += 1
        return
    profile_id = _profile_of(connection, message, now)

    if message.type == "identify":
        identity.update_attributes(connection, profile_id, message.traits, now)
        both_ids = message.user_id is not None and message.anonymous_id is not None
        if both_ids and not options.no_anonymous_merge:
            identity.stitch_anonymous(connection, profile_id, message.anonymous_id, now)
        return

    if message.type == "alias":
        _apply_alias(connection, profile_id, message, now)
        return

    if message.device is not None:
        devices.register_device(
            connection,
            profile_id,
            message.device,
            single_device=options.single_device_per_person,
            now=now,
        )
    elif message.event == DEVICE_DELETED:
        assert message.device_token is not None
        devices.delete_device(connection, profile_id, message.device_token, now)
    elif message.delivery_id is not None:
        assert message.metric is not None
        events.insert_delivery_metric(
            connection,
            delivery_id=message.delivery_id,
            metric=message.metric,
            device_token=message.device_token,
            timestamp=message.timestamp,
            source=events.CDP,
            now=now,
        )
    else:
        assert message.event is not None
        stored = events.insert_event(
            connection,
            profile_id=profile_id,
            anonymous_id=message.anonymous_id,
            name=message.event,
            data=message.properties,
            timestamp=message.timestamp,
            source=events.CDP,
            dedupe_id=message.message_id,
            now=now,
        )
        if stored is not None:
            applied.events += 1


def apply_messages(
    connection: sqlite3.Connection,
    *,
    messages: list[Message],
    options: ApplyOptions,
    now: float,
) -> Applied:
    """Apply a request's messages in order and return the counts of events and duplicates."""
    applied = Applied()
    for message in messages:
        apply_message(connection, message, options, applied, now)
    return applied
