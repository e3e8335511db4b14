"""The app on one phone: its install, device token, permission, identity and the SDK calls it makes.

Every SDK call leaves through ``Device.send``, which stamps it with the group's sequence and
the truth (the person at the phone), and hands it to the SDK port. The SDK faults that change
what a call looks like are applied here, where a real SDK would make the mistake.
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING, Any

from sim.formats.tokens import PRODUCTION
from sim.model.ports import SdkCall

if TYPE_CHECKING:
    from sim.model.group import ShopperGroup
    from sim.model.people import Person

# Permission states of a device; "unasked" means the app has not prompted since it was installed.
UNASKED, GRANTED, DENIED, NOT_DETERMINED = "unasked", "granted", "denied", "not_determined"

PRODUCT_EVENTS = frozenset({"product_viewed", "added_to_cart"})


class Device:
    """One phone with the app: state that the SDK and the push services see."""

    __slots__ = (
        "group",
        "index",
        "device_id",
        "platform",
        "os_version",
        "app_version",
        "prompts_for_push",
        "user",
        "users",
        "installed",
        "installed_at",
        "anonymous_id",
        "identified",
        "token",
        "registered",
        "token_stuck",
        "sync_deferred",
        "next_track_anonymous",
        "permission",
        "permission_at",
        "session_rate",
        "handover",
        "fresh",
        "agenda",
        "last_product",
        "session_origin",
        "apns_environment",
        "late_rotation",
    )

    def __init__(self, group: ShopperGroup, index: int, platform: str, user: Person):
        self.group = group
        self.index = index
        self.device_id = f"d{group.group_id}-{index}"
        self.platform = platform
        self.os_version = ""
        self.app_version = ""
        # Android below 13 grants push permission without a prompt.
        self.prompts_for_push = True
        # The APNs environment of the build: sandbox for a development-signed iOS build.
        self.apns_environment = PRODUCTION
        self.session_rate = 0.0  # sessions per simulated second

        # Who uses the phone: the current person and everyone who shares it.
        self.user = user
        self.users: list[Person] = [user]
        self.handover = False

        # The install and what the SDK keeps while the app is installed.
        self.installed = False
        self.installed_at = 0.0
        self.anonymous_id = ""
        self.identified: str | None = None
        self.token: str | None = None
        # The last registration sent to the backend: (token, user_id, push_enabled), or None.
        self.registered: tuple | None = None
        self.token_stuck = False
        self.sync_deferred = False
        # True while a background rotation waits for the foreground because of the
        # late_background_rotation fault, so that the late registration carries its label.
        self.late_rotation = False
        self.next_track_anonymous = False

        self.permission = UNASKED
        self.permission_at: float | None = None

        # True from an install until its first session sends Application Installed.
        self.fresh = False
        # Heap of (time, tie-breaker, kind, payload) for return visits and reorders.
        self.agenda: list[tuple] = []
        self.last_product = None
        self.session_origin = "organic"

    @property
    def push_enabled(self) -> bool:
        return self.permission == GRANTED

    def send(
        self,
        at: float,
        method: str,
        *,
        event: str | None = None,
        properties: dict[str, Any] | None = None,
        attributes: dict[str, Any] | None = None,
        token: str | None = None,
        anonymous: bool = False,
        fault: str | None = None,
    ) -> None:
        """Make one SDK call as this app, at simulated time ``at``."""
        group = self.group
        seq = group.seq = group.seq + 1
        call = SdkCall(
            at,
            group.group_id,
            seq,
            method,
            self.device_id,
            self.user.person_id,
            self.anonymous_id,
            None if anonymous else self.identified,
            token,
            event,
            properties,
            attributes,
            fault,
        )
        group.world.sdk_methods[method](call)

    def track(
        self,
        at: float,
        name: str,
        properties: dict[str, Any] | None = None,
        *,
        stream_owner: Any = None,
    ) -> None:
        """Track event ``name`` the way this app's SDK sends it, faults included.

        ``stream_owner`` has the ``faults`` stream that the fault dice draw from: the group's
        streams unless given.
        """
        group = self.group
        world = group.world
        world.stats.events[name] += 1
        # What World.observe does, inline: most events have no audience watching them.
        watchers = world.watchers.get(name)
        if watchers is not None:
            for audience in watchers:
                audience.observe(self, at, name, properties)

        faults: list[str] = []
        if name in PRODUCT_EVENTS:
            dice = world.faults
            owner = stream_owner or group.streams
            if name == "added_to_cart" and self.platform == "ios":
                if dice.roll("event_name_drift", owner):
                    name = "add_to_cart"
                    faults.append("event_name_drift")
            if dice.roll("sku_as_object", owner):
                properties = dict(properties or {})
                properties["sku"] = {"id": properties.get("sku")}
                faults.append("sku_as_object")

        method = "track"
        anonymous = False
        if self.identified is None:
            method = "anonymous_track"
        elif self.next_track_anonymous:
            # The SDK's identify had not landed yet, so the event goes out as anonymous.
            self.next_track_anonymous = False
            method, anonymous = "anonymous_track", True
            faults.append("anonymous_track_after_identify")

        # Several faults on one call are joined with commas, in the order they were injected.
        fault = ",".join(faults) if faults else None
        self.send(at, method, event=name, properties=properties, anonymous=anonymous, fault=fault)

    def sync_token(self, at: float) -> None:
        """Register the device token if the backend's view of it is out of date."""
        if not self.installed or self.token is None or self.token_stuck or self.sync_deferred:
            return
        state = (self.token, self.identified, self.push_enabled)
        if state == self.registered:
            return
        self.registered = state
        attributes = {
            "platform": self.platform,
            "push_enabled": self.push_enabled,
            "push_enabled_at": self.permission_at if self.push_enabled else None,
            "app_version": self.app_version,
            "os_version": self.os_version,
            "device_id": self.device_id,
            # The phone's IANA time zone, as SDKs collect it, for sends in local time.
            "timezone": self.group.timezone,
        }
        # A development build sends its environment, as SDKs that flag test devices do, so that
        # a backend can send its pushes to the APNs sandbox. Store builds send no such attribute.
        if self.apns_environment != PRODUCTION:
            attributes["apns_environment"] = self.apns_environment
        fault = "late_background_rotation" if self.late_rotation else None
        self.late_rotation = False
        self.send(at, "register_token", token=self.token, attributes=attributes, fault=fault)

    def set_user(self, at: float, person: Person) -> None:
        """Make ``person`` the one using the phone from ``at`` on."""
        self.user = person
        self.group.record(at, "device_user", device=self.device_id, person=person.person_id)

    def schedule(self, at: float, kind: str, payload: object) -> None:
        """Add a return visit or a reorder at ``at`` to the device's agenda."""
        heapq.heappush(self.agenda, (at, self.group.next_tiebreak(), kind, payload))
