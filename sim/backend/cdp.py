"""Segment-compatible CDP intake: ``/v1/batch`` (and ``/v1/b``), ``/v1/identify``, ``/v1/track``.

Requests authenticate with HTTP Basic, the write key as the username and an empty password.
As in Segment's HTTP API, a call that breaks a size limit or fails validation is dropped with a
200, unless the request sends ``X-Strict-Mode: 1``, which gets 400 and applies nothing.
A message whose ``messageId`` was processed before is acknowledged and skipped.
"""

from __future__ import annotations

import functools
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

from aiohttp import BasicAuth, hdrs, web

from sim.backend import devices, events
from sim.backend.cdp_apply import (
    DEVICE_DELETED,
    ApplyOptions,
    Message,
    apply_messages,
)
from sim.backend.devices import DeviceRegistration
from sim.backend.limits import (
    ATTRIBUTE_NAME_MAX_BYTES,
    ATTRIBUTE_VALUE_MAX_BYTES,
    CDP_BATCH_MAX_BYTES,
    CDP_CALL_MAX_BYTES,
    EVENT_NAME_MAX_BYTES,
    ID_MAX_BYTES,
    json_size,
    read_limited_body,
    utf8_size,
)
from sim.backend.services import SERVICES, Services

log = logging.getLogger(__name__)

STRICT_HEADER = "X-Strict-Mode"

DEVICE_UPDATED = "Device Created or Updated"
DELIVERY_EVENT = "Report Delivery Event"

# Message types that are acknowledged but not stored: they carry nothing that journeys need.
IGNORED_TYPES = ("page", "screen", "group")
APPLIED_TYPES = ("identify", "track", "alias")

# Device tokens are not ids: an FCM token is about 160 characters, above the 150-byte id limit.
DEVICE_TOKEN_MAX_BYTES = ATTRIBUTE_VALUE_MAX_BYTES


class CdpError(Exception):
    """An error that rejects a whole request with ``status``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


def error_response(
    status: int, message: str, errors: list[str] | None = None, headers: dict | None = None
) -> web.Response:
    """Build the CDP error body: ``{"success": false, "error": ..., "errors": [...]}``."""
    body: dict = {"success": False, "error": message}
    if errors:
        body["errors"] = errors
    return web.json_response(body, status=status, headers=headers)


def _success() -> web.Response:
    return web.json_response({"success": True})


def _strict(request: web.Request, services: Services) -> bool:
    return services.config.cdp_strict or request.headers.get(STRICT_HEADER, "").strip() == "1"


def _authenticate(request: web.Request, services: Services) -> tuple[str, str]:
    """Return the write key and its log label, or raise a 401 error."""
    header = request.headers.get(hdrs.AUTHORIZATION)
    if not header:
        raise CdpError(401, "missing credentials: send HTTP Basic auth with the write key as user")
    try:
        credential = BasicAuth.decode(header)
    except ValueError:
        raise CdpError(
            401, "invalid Authorization header: use HTTP Basic with the write key"
        ) from None
    for index, key in enumerate(services.config.cdp_write_keys):
        if hmac.compare_digest(key.encode(), credential.login.encode()):
            return key, f"CDP write key #{index}"
    raise CdpError(401, "unauthorized: the write key is not valid")


Handler = Callable[[web.Request, Services, bytes, bool], Awaitable[web.Response]]


def _endpoint(limit: int) -> Callable[[Handler], Callable[[web.Request], Awaitable[web.Response]]]:
    """Authenticate, rate-limit and read a body of at most ``limit`` bytes before ``handler``."""

    def wrap(handler: Handler) -> Callable[[web.Request], Awaitable[web.Response]]:
        @functools.wraps(handler)
        async def run(request: web.Request) -> web.Response:
            services = request.app[SERVICES]
            strict = _strict(request, services)
            try:
                key, label = _authenticate(request, services)
                retry_after = services.limiter.check(f"cdp:{key}", label)
                if retry_after is not None:
                    services.metrics.count_rate_limited("cdp")
                    raise CdpError(
                        429,
                        f"rate limit exceeded for {label}: retry after {retry_after} s",
                        headers={hdrs.RETRY_AFTER: str(retry_after)},
                    )
                body = await read_limited_body(request, limit)
                if body is None:
                    services.metrics.count_dropped("request_too_large")
                    if strict:
                        raise CdpError(400, f"request body too large: the limit is {limit} bytes")
                    log.info("%s dropped: body over %d bytes", request.path, limit)
                    return _success()
                return await handler(request, services, body, strict)
            except CdpError as error:
                if error.status != 429:
                    log.info("%s rejected with %d: %s", request.path, error.status, error)
                return error_response(error.status, str(error), headers=error.headers)

        return run

    return wrap


def _decode(body: bytes) -> dict:
    try:
        value = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CdpError(400, f"invalid JSON body: {error}") from None
    if not isinstance(value, dict):
        raise CdpError(400, f"invalid body: expected a JSON object, got {type(value).__name__}")
    return value


def _parse_time(value: object, key: str) -> float | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"invalid {key!r}: expected an ISO 8601 string, got {value!r:.60}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"invalid {key!r} {value!r:.60}: expected ISO 8601") from None
    if parsed.tzinfo is None:
        raise ValueError(f"invalid {key!r} {value!r:.60}: add a UTC offset, such as Z")
    return parsed.timestamp()


def _event_time(message: dict, now: float) -> float:
    """Return when the message happened in wall seconds, corrected for the device's clock skew.

    Without ``timestamp``, Segment's rule applies: received time minus the delay between
    ``originalTimestamp`` and ``sentAt``, both read from the device's clock.
    """
    timestamp = _parse_time(message.get("timestamp"), "timestamp")
    if timestamp is not None:
        return timestamp
    original = _parse_time(message.get("originalTimestamp"), "originalTimestamp")
    sent = _parse_time(message.get("sentAt"), "sentAt")
    if original is not None and sent is not None:
        return now - (sent - original)
    return original if original is not None else now


def _id_field(message: dict, key: str) -> str | None:
    value = message.get(key)
    if value is None or value == "":
        return None
    # Segment's libraries accept numeric user ids and send them as JSON numbers.
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise ValueError(f"invalid {key!r}: expected a string, got {value!r:.60}")
    if utf8_size(value) > ID_MAX_BYTES:
        raise ValueError(f"{key!r} too long: {utf8_size(value)} bytes, the limit is {ID_MAX_BYTES}")
    return value


def _object_field(message: dict, key: str) -> dict:
    value = message.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"invalid {key!r}: expected a JSON object, got {type(value).__name__}")
    return value


def _check_traits(traits: dict) -> None:
    for name, value in traits.items():
        if utf8_size(name) > ATTRIBUTE_NAME_MAX_BYTES:
            raise ValueError(
                f"trait name {name[:40]!r}... too long: "
                f"the limit is {ATTRIBUTE_NAME_MAX_BYTES} bytes"
            )
        if json_size(value) > ATTRIBUTE_VALUE_MAX_BYTES:
            raise ValueError(
                f"trait {name!r} value too long: {json_size(value)} bytes, "
                f"the limit is {ATTRIBUTE_VALUE_MAX_BYTES}"
            )


def _push_enabled(properties: dict, context: dict) -> bool | None:
    device = context.get("device") if isinstance(context.get("device"), dict) else {}
    for value in (
        properties.get("push_enabled"),
        device.get("push_enabled"),
        context.get("push_enabled"),
    ):
        if isinstance(value, bool):
            return value
        # The strings "true" and "false" are accepted too, because clients often send every
        # device attribute as a string.
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
    return None


def _device_token(properties: dict, context: dict) -> str:
    device = context.get("device")
    token = device.get("token") if isinstance(device, dict) else None
    if token is None:
        token = properties.get("device_id") or properties.get("token")
    if not isinstance(token, str) or not token:
        raise ValueError("missing 'context.device.token': a device event must name its token")
    if utf8_size(token) > DEVICE_TOKEN_MAX_BYTES:
        raise ValueError(f"device token too long: the limit is {DEVICE_TOKEN_MAX_BYTES} bytes")
    return token


def _device_registration(
    token: str, properties: dict, context: dict, timestamp: float
) -> DeviceRegistration:
    device = context.get("device") if isinstance(context.get("device"), dict) else {}
    platform = str(device.get("type") or properties.get("platform") or "").lower()
    if platform not in devices.PLATFORMS:
        raise ValueError(
            f"invalid 'context.device.type' {platform!r:.60}: use one of "
            f"{', '.join(devices.PLATFORMS)}"
        )
    app = context.get("app") if isinstance(context.get("app"), dict) else {}
    os = context.get("os") if isinstance(context.get("os"), dict) else {}
    push_enabled_at = properties.get("push_enabled_at")
    if isinstance(push_enabled_at, bool) or not isinstance(push_enabled_at, int | float | None):
        raise ValueError(f"invalid 'push_enabled_at' {push_enabled_at!r:.60}: use Unix seconds")
    return DeviceRegistration(
        token=token,
        platform=platform,
        last_used=timestamp,
        push_enabled=_push_enabled(properties, context),
        push_enabled_at=push_enabled_at,
        app_version=app.get("version") if isinstance(app.get("version"), str) else None,
        os_version=os.get("version") if isinstance(os.get("version"), str) else None,
        attributes=properties,
    )


def parse_message(message: object, message_type: str | None, now: float) -> Message | None:
    """Validate one CDP message; return None for a type that is acknowledged but not stored.

    Raises ValueError naming the field and the fix.
    """
    if not isinstance(message, dict):
        raise ValueError(f"invalid message: expected a JSON object, got {type(message).__name__}")
    size = json_size(message)
    if size > CDP_CALL_MAX_BYTES:
        raise ValueError(f"message too large: {size} bytes, the limit is {CDP_CALL_MAX_BYTES}")

    kind = message_type or message.get("type")
    if kind in IGNORED_TYPES:
        return None
    if kind not in APPLIED_TYPES:
        raise ValueError(
            f"invalid 'type' {kind!r:.60}: use one of {', '.join(APPLIED_TYPES + IGNORED_TYPES)}"
        )

    message_id = _id_field(message, "messageId")
    user_id = _id_field(message, "userId")
    anonymous_id = _id_field(message, "anonymousId")
    if user_id is None and anonymous_id is None:
        raise ValueError("missing 'userId' and 'anonymousId': a message needs at least one")
    parsed = Message(kind, message_id, user_id, anonymous_id, _event_time(message, now))

    if kind == "identify":
        parsed.traits = _object_field(message, "traits")
        _check_traits(parsed.traits)
        return parsed

    if kind == "alias":
        parsed.previous_id = _id_field(message, "previousId")
        if parsed.previous_id is None or user_id is None:
            raise ValueError("missing 'previousId' or 'userId': an alias message needs both")
        return parsed

    event = message.get("event")
    if not isinstance(event, str) or not event:
        raise ValueError("missing 'event': a track message needs an event name")
    if utf8_size(event) > EVENT_NAME_MAX_BYTES:
        raise ValueError(f"'event' too long: the limit is {EVENT_NAME_MAX_BYTES} bytes")
    parsed.event = event
    parsed.properties = _object_field(message, "properties")
    context = _object_field(message, "context")

    if event == DEVICE_UPDATED:
        token = _device_token(parsed.properties, context)
        parsed.device = _device_registration(token, parsed.properties, context, parsed.timestamp)
    elif event == DEVICE_DELETED:
        parsed.device_token = _device_token(parsed.properties, context)
    elif event == DELIVERY_EVENT:
        delivery_id = parsed.properties.get("deliveryId")
        metric = parsed.properties.get("metric")
        if not isinstance(delivery_id, str) or not delivery_id:
            raise ValueError("missing 'properties.deliveryId' in a Report Delivery Event")
        if not isinstance(metric, str) or metric.lower() not in events.DELIVERY_METRICS:
            raise ValueError(
                f"invalid 'properties.metric' {metric!r:.60}: use one of "
                f"{', '.join(events.DELIVERY_METRICS)}"
            )
        parsed.delivery_id = delivery_id
        parsed.metric = metric.lower()
        recipient = parsed.properties.get("recipient")
        parsed.device_token = recipient if isinstance(recipient, str) else None
    return parsed


async def _apply(services: Services, messages: list[Message]) -> None:
    if not messages:
        return
    now = services.clock.wall_now()

    config = services.config
    op = functools.partial(
        apply_messages,
        messages=messages,
        options=ApplyOptions(config.no_anonymous_merge, config.single_device_per_person),
        now=now,
    )
    applied = await services.store.write(op)
    for _ in range(applied.events):
        services.metrics.count_event(events.CDP)
    for _ in range(applied.duplicates):
        services.metrics.count_duplicate(events.CDP)


def _with_batch_fields(item: object, payload: dict) -> object:
    """Return a message with the batch's ``sentAt`` and ``context`` filled in where it has none.

    Mobile Segment libraries set ``sentAt`` once per batch, and a batch-level ``context``
    applies to every message in it, the message's own keys winning.
    """
    if not isinstance(item, dict):
        return item
    message = dict(item)
    if "sentAt" not in message and "sentAt" in payload:
        message["sentAt"] = payload["sentAt"]
    shared_context = payload.get("context")
    own_context = message.get("context")
    if isinstance(shared_context, dict) and (own_context is None or isinstance(own_context, dict)):
        message["context"] = {**shared_context, **(own_context or {})}
    return message


@_endpoint(CDP_BATCH_MAX_BYTES)
async def batch(
    request: web.Request, services: Services, body: bytes, strict: bool
) -> web.Response:
    """POST /v1/batch: apply every valid message; in strict mode any invalid one rejects all."""
    payload = _decode(body)
    items = payload.get("batch")
    if not isinstance(items, list):
        raise CdpError(400, "missing field 'batch': send {\"batch\": [message, ...]}")

    now = services.clock.wall_now()
    messages: list[Message] = []
    errors: list[str] = []
    for index, item in enumerate(items):
        try:
            parsed = parse_message(_with_batch_fields(item, payload), None, now)
        except ValueError as error:
            errors.append(f"batch[{index}]: {error}")
            continue
        if parsed is not None:
            messages.append(parsed)

    if errors:
        services.metrics.count_dropped("invalid_message", len(errors))
        if strict:
            log.info("%s rejected with 400: %s", request.path, errors[0])
            return error_response(400, f"{len(errors)} invalid messages in batch", errors)
        log.info("%s dropped %d invalid messages, first: %s", request.path, len(errors), errors[0])
    await _apply(services, messages)
    return _success()


def _single(message_type: str) -> Handler:
    async def handle(
        request: web.Request, services: Services, body: bytes, strict: bool
    ) -> web.Response:
        payload = _decode(body)
        try:
            parsed = parse_message(payload, message_type, services.clock.wall_now())
        except ValueError as error:
            services.metrics.count_dropped("invalid_message")
            if strict:
                raise CdpError(400, str(error)) from None
            log.info("%s dropped an invalid message: %s", request.path, error)
            return _success()
        await _apply(services, [parsed] if parsed is not None else [])
        return _success()

    handle.__doc__ = f"POST /v1/{message_type}: apply one {message_type} message."
    return handle


identify = _endpoint(CDP_CALL_MAX_BYTES)(_single("identify"))
track = _endpoint(CDP_CALL_MAX_BYTES)(_single("track"))


def add_routes(app: web.Application) -> None:
    """Register the CDP routes on ``app``."""
    app.router.add_post("/v1/batch", batch)
    app.router.add_post("/v1/b", batch)
    app.router.add_post("/v1/identify", identify)
    app.router.add_post("/v1/track", track)
