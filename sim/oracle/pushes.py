"""Push requests from the delivery ledger, placed on the run's simulated clock and in its truth.

Each row becomes a ``Push``: when it happened (simulated seconds since the run's start), what
deep link it carried, and who owned its device token at that moment by truth.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from sim.formats.delivery import DeliveryRow
from sim.formats.epoch import Epoch
from sim.formats.payload import find_link, link_fields
from sim.oracle.ledger import TruthIndex
from sim.scenario.schema import Journey

ACCEPTED = 200
# Responses that report a device token gone: APNs 410 Unregistered, FCM 404 UNREGISTERED.
UNREGISTERED_STATUSES = frozenset({410, 404})


@dataclass
class Push:
    """One push request and its response, with its truth: the token's owner when it was sent.

    ``holder_person`` is the person using the device that held the token last, which is the
    owner for a live token and the former owner's user for a dead one.
    """

    row: DeliveryRow
    at: float
    link: str | None
    owner_device: str | None
    owner_person: str | None
    holder_person: str | None = None

    @property
    def accepted(self) -> bool:
        return self.row.status == ACCEPTED

    @property
    def token_alive(self) -> bool:
        return self.owner_device is not None

    @property
    def unregistered(self) -> bool:
        return self.row.status in UNREGISTERED_STATUSES and (
            self.row.status == 410 or (self.row.reason or "").upper() == "UNREGISTERED"
        )


def rejected_environment(push: Push, index: TruthIndex) -> str | None:
    """Return the environment of a run's token that APNs rejected on the other host, or None.

    The gateways return 400 BadDeviceToken for a token this run issued only when the request's
    host names the other environment, so such a response counts unless a gateway fault forced it.
    """
    row = push.row
    if row.status != 400 or row.reason != "BadDeviceToken" or row.fault:
        return None
    return index.view.environment(row.token)


def decode_payload(payload: bytes | str | None) -> object:
    """Return the decoded JSON payload, or None when it is missing or not JSON."""
    if payload is None:
        return None
    try:
        return json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None


def place_pushes(
    rows: list[DeliveryRow], index: TruthIndex, epoch: Epoch, origin: float
) -> list[Push]:
    """Place each ledger row on the simulated clock; ``origin`` is the Unix time of ``at`` 0."""
    pushes = []
    for row in rows:
        sim_unix = row.sim_time if row.sim_time is not None else epoch.sim_at(row.wall_time)
        at = sim_unix - origin
        owner = index.view.token_owner(row.token, at)
        holder = owner or index.view.last_holder(row.token, at)
        pushes.append(
            Push(
                row=row,
                at=at,
                link=find_link(decode_payload(row.payload)),
                owner_device=owner.device if owner else None,
                owner_person=owner.person if owner else None,
                holder_person=holder.person if holder else None,
            )
        )
    return pushes


def link_value(push: Push, journey: Journey, field_name: str) -> str | None:
    """Return the match value the push's deep link carries for ``journey``, or None."""
    if not field_name:
        return None
    link = push.link
    if journey.payload_path:
        link = find_link(decode_payload(push.row.payload), journey.payload_path)
    return link_fields(journey.link, link).get(field_name)
