"""A Segment-compatible CDP batch, shaped as current mobile SDKs send it.

Each app install buffers its messages and sends them as one ``POST /v1/b`` when 20 have queued
or 30 simulated seconds after the oldest one, whichever comes first. Device tokens travel as
"Device Created or Updated" and "Device Deleted" track events with ``context.device.token``.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass, field

from sim.driver.wire import HttpRequest, basic_auth, event_ulid
from sim.model.ports import SdkCall

FLUSH_AT = 20
FLUSH_INTERVAL = 30.0  # simulated seconds
DEVICE_UPDATED = "Device Created or Updated"
DEVICE_DELETED = "Device Deleted"
DELIVERY_EVENT = "Report Delivery Event"


def _iso(wall: float) -> str:
    moment = datetime.datetime.fromtimestamp(wall, datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class DeviceBuffer:
    """Messages one app install has queued, and the calls they came from."""

    messages: list[dict] = field(default_factory=list)
    calls: list[SdkCall] = field(default_factory=list)
    oldest_at: float = 0.0


class CdpBatchAdapter:
    """Buffers SDK calls per device and turns them into batch requests.

    ``add`` returns a full batch when the buffer reaches ``FLUSH_AT``; the driver calls
    ``flush`` for a device ``FLUSH_INTERVAL`` simulated seconds after its first buffered call.
    """

    def __init__(self, write_key: str, wall_time: Callable[[SdkCall], float]):
        self.headers = {"Authorization": basic_auth(write_key, "")}
        self.wall_time = wall_time
        self.buffers: dict[str, DeviceBuffer] = {}

    def add(self, call: SdkCall) -> tuple[HttpRequest, list[SdkCall]] | None:
        """Buffer ``call``; return the batch to send when the buffer is full."""
        message = self.message_for(call)
        if message is None:
            return None
        buffer = self.buffers.get(call.device)
        if buffer is None:
            buffer = self.buffers[call.device] = DeviceBuffer(oldest_at=call.at)
        buffer.messages.append(message)
        buffer.calls.append(call)
        if len(buffer.messages) >= FLUSH_AT:
            return self.flush(call.device, sent_at=self.wall_time(call))
        return None

    def is_first(self, device: str) -> bool:
        """Tell whether the device's buffer contains exactly one message, so a timer must start."""
        buffer = self.buffers.get(device)
        return buffer is not None and len(buffer.messages) == 1

    def flush(self, device: str, sent_at: float) -> tuple[HttpRequest, list[SdkCall]] | None:
        """Return the device's buffered messages as one batch request, or None if empty."""
        buffer = self.buffers.pop(device, None)
        if buffer is None or not buffer.messages:
            return None
        body = {"batch": buffer.messages, "sentAt": _iso(sent_at)}
        return HttpRequest("POST", "/v1/b", "batch", body, self.headers), buffer.calls

    def message_for(self, call: SdkCall) -> dict | None:
        """Return the batch message for one SDK call, or None when it sends nothing."""
        wall = self.wall_time(call)
        base = {
            "messageId": event_ulid(int(wall * 1000), call.group_id, call.seq),
            "timestamp": _iso(wall),
            "anonymousId": call.anonymous_id,
        }
        if call.user_id is not None:
            base["userId"] = call.user_id

        attributes = dict(call.attributes or {})
        platform = attributes.pop("platform", None)
        if call.method == "identify":
            return {**base, "type": "identify", "traits": attributes}
        if call.method in ("register_token", "delete_token"):
            event = DEVICE_UPDATED if call.method == "register_token" else DEVICE_DELETED
            device = {"token": call.token}
            if platform:
                device["type"] = platform
            return {
                **base,
                "type": "track",
                "event": event,
                "properties": attributes,
                "context": {"device": device},
            }
        if call.method in ("track", "anonymous_track"):
            message = {**base, "type": "track", "event": call.event}
            message["properties"] = call.properties or {}
            if call.method == "anonymous_track":
                message.pop("userId", None)
            return message
        if call.method == "push_metric":
            properties = call.properties or {}
            return {
                **base,
                "type": "track",
                "event": DELIVERY_EVENT,
                "properties": {
                    "deliveryId": properties.get("delivery_id"),
                    "metric": call.event,
                    "recipient": call.token,
                },
            }
        if call.method == "clear_identity":
            return None
        raise ValueError(f"unknown SDK method {call.method!r}")
