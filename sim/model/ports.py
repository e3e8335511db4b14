"""The model's two ports: what the app's SDK sends, and what the push services learn and deliver.

The model is written against these protocols only. ``pushsim plan`` binds them to a recorder;
the live driver binds the same model to HTTP and to the gateways' inbox.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NoReturn, Protocol

from sim.formats.truth import encode

# SDK methods, in the order the SDK port declares them.
SDK_METHODS = (
    "identify",
    "register_token",
    "delete_token",
    "track",
    "anonymous_track",
    "clear_identity",
    "push_metric",
)


class SharedProperties(dict):
    """Event properties that many calls share, such as a product's: read-only, with their JSON.

    ``json`` is the compact JSON text of the properties, made once, so that a recorder need not
    encode the same properties again for every call.
    """

    __slots__ = ("json",)

    def __init__(self, properties: dict[str, Any]):
        super().__init__(properties)
        self.json = encode(self)

    def _read_only(self, *args: object, **kwargs: object) -> NoReturn:
        raise TypeError("shared event properties are read-only: copy them with dict() to change")

    __setitem__ = __delitem__ = __ior__ = _read_only
    clear = pop = popitem = setdefault = update = _read_only

    def __reduce__(self) -> tuple[type, tuple[dict[str, Any]]]:
        return SharedProperties, (dict(self),)


@dataclass(slots=True)
class SdkCall:
    """One call the app's SDK makes, with the truth behind it.

    ``at`` is simulated seconds since the run's start; ``(at, group_id, seq)`` orders calls
    canonically. ``user_id`` is the identity the SDK sends (None while anonymous), ``person``
    the true person at the phone, and ``fault`` the injected fault labels joined with commas,
    if any.
    """

    at: float
    group_id: int
    seq: int
    method: str
    device: str
    person: str
    anonymous_id: str
    user_id: str | None
    token: str | None = None
    event: str | None = None
    properties: dict[str, Any] | None = None
    attributes: dict[str, Any] | None = None
    fault: str | None = None

    def to_record(self) -> dict[str, Any]:
        """Return the call as a dict with a fixed key order, for hashing and JSON Lines."""
        return {
            "at": self.at,
            "group": self.group_id,
            "seq": self.seq,
            "method": self.method,
            "device": self.device,
            "person": self.person,
            "anonymous_id": self.anonymous_id,
            "user_id": self.user_id,
            "token": self.token,
            "event": self.event,
            "properties": self.properties,
            "attributes": self.attributes,
            "fault": self.fault,
        }


class SdkPort(Protocol):
    """The SDK's calls to the push backend, one method per call."""

    def identify(self, call: SdkCall) -> None: ...

    def register_token(self, call: SdkCall) -> None: ...

    def delete_token(self, call: SdkCall) -> None: ...

    def track(self, call: SdkCall) -> None: ...

    def anonymous_track(self, call: SdkCall) -> None: ...

    def clear_identity(self, call: SdkCall) -> None: ...

    def push_metric(self, call: SdkCall) -> None: ...


@dataclass(frozen=True, slots=True)
class TokenInvalidation:
    """A device token that stopped working, as Apple or Google learn it from the phone.

    ``died_at`` is when the token stopped reaching the app. ``reported_at`` is when the push
    service starts to return "unregistered" for it. Both are simulated seconds since the run's
    start. ``reason`` is rotation, restore, reinstall or uninstall, and ``cause`` names the
    rotation (fcm_refresh or os_update) or repeats the reason.
    """

    token: str
    platform: str
    group_id: int
    reason: str
    died_at: float
    reported_at: float
    cause: str = ""


@dataclass(frozen=True, slots=True)
class Delivery:
    """A push the push service hands to the phone that owns ``token``."""

    delivery_id: str
    token: str
    payload: dict[str, Any]


class DeviceCloudPort(Protocol):
    """The phones' reports to Apple and Google: token invalidations, sent as they happen.

    Deliveries travel the other way, into ``World.deliver``.
    """

    def invalidate(self, invalidation: TokenInvalidation) -> None: ...


class TruthSink(Protocol):
    """Destination of the truth records (see ``sim.formats.truth``), written as they happen."""

    def write(self, record: dict) -> None: ...


class NullTruth:
    """A truth sink that drops every record, for runs that need no ledger."""

    def write(self, record: dict) -> None:
        pass
