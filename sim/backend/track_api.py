"""Customer.io Track API v1 intake: identify, devices, events, anonymous events, merges, metrics.

Requests authenticate with HTTP Basic ``site_id:api_key``. Errors use Customer.io's body,
``{"meta": {"error": "..."}}``, or ``{"meta": {"errors": [...]}}`` when there are several.
"""

from __future__ import annotations

import dataclasses
import functools
import hmac
import json
import logging
from collections.abc import Awaitable, Callable

from aiohttp import BasicAuth, hdrs, web

from sim.backend import devices, events, identity
from sim.backend.devices import DeviceRegistration
from sim.backend.limits import (
    ATTRIBUTE_NAME_MAX_BYTES,
    ATTRIBUTE_VALUE_MAX_BYTES,
    EVENT_DATA_MAX_BYTES,
    EVENT_NAME_MAX_BYTES,
    ID_MAX_BYTES,
    json_size,
    read_limited_body,
    utf8_size,
)
from sim.backend.services import SERVICES, Services
from sim.backend.track_events import EventWrite

log = logging.getLogger(__name__)

PREFIX = "/api/v1"

# Device tokens are not ids: an FCM token is about 160 characters, above the 150-byte id limit.
DEVICE_TOKEN_MAX_BYTES = ATTRIBUTE_VALUE_MAX_BYTES

# The body of every successful response.
OK_BODY = b"{}"

# Maximum number of accepted Authorization headers kept. Each credential has a few spellings at
# most (the scheme's case, base64 padding), so this only bounds a misbehaving client.
ACCEPTED_HEADERS_MAX = 64

# Device attributes that get their own column; the rest stay in the attributes JSON.
APP_VERSION_KEYS = ("app_version",)
OS_VERSION_KEYS = ("os_version", "device_os")


class TrackApiError(Exception):
    """An error returned as Customer.io's error body with the given HTTP status."""

    def __init__(self, status: int, *messages: str, headers: dict[str, str] | None = None):
        super().__init__("; ".join(messages))
        self.status = status
        self.messages = list(messages)
        self.headers = headers or {}


def error_response(
    status: int, messages: list[str], headers: dict[str, str] | None = None
) -> web.Response:
    """Build a Customer.io error response: one ``error``, or ``errors`` when there are several."""
    meta = {"error": messages[0]} if len(messages) == 1 else {"errors": messages}
    return web.json_response({"meta": meta}, status=status, headers=headers)


Handler = Callable[[web.Request, Services], Awaitable[web.Response]]


def _endpoint(handler: Handler) -> Callable[[web.Request], Awaitable[web.Response]]:
    """Authenticate and rate-limit a request, run ``handler`` and turn its errors into bodies."""

    @functools.wraps(handler)
    async def run(request: web.Request) -> web.Response:
        services = request.app[SERVICES]
        try:
            site_id = _authenticate(request, services)
            retry_after = services.limiter.check(f"track:{site_id}", f"site id {site_id}")
            if retry_after is not None:
                services.metrics.count_rate_limited("track")
                raise TrackApiError(
                    429,
                    f"rate limit exceeded for site id {site_id}: retry after {retry_after} s",
                    headers={hdrs.RETRY_AFTER: str(retry_after)},
                )
            return await handler(request, services)
        except TrackApiError as error:
            if error.status >= 400 and error.status != 429:
                log.info(
                    "%s %s rejected with %d: %s",
                    request.method,
                    request.path,
                    error.status,
                    error,
                )
            return error_response(error.status, error.messages, error.headers)

    return run


def _authenticate(request: web.Request, services: Services) -> str:
    """Return the site id of a valid Basic credential, or raise a 401 error."""
    header = request.headers.get(hdrs.AUTHORIZATION)
    if not header:
        raise TrackApiError(
            401, "missing credentials: send HTTP Basic auth with your site id and API key"
        )
    site_id = services.accepted_track_headers.get(header)
    if site_id is not None:
        return site_id
    site_id = _check_credential(header, services)
    # Only accepted headers are remembered, and a client sends the same header with every
    # request, so a repeated request skips the base64 decoding and the constant-time compares.
    if len(services.accepted_track_headers) < ACCEPTED_HEADERS_MAX:
        services.accepted_track_headers[header] = site_id
    return site_id


def _check_credential(header: str, services: Services) -> str:
    """Return the site id that the Basic ``header`` authenticates, or raise a 401 error."""
    try:
        credential = BasicAuth.decode(header)
    except ValueError:
        raise TrackApiError(
            401, "invalid Authorization header: use HTTP Basic with site_id:api_key"
        ) from None

    for known in services.config.track_credentials:
        same_site = hmac.compare_digest(known.site_id.encode(), credential.login.encode())
        same_key = hmac.compare_digest(known.api_key.encode(), credential.password.encode())
        if same_site and same_key:
            return known.site_id
    raise TrackApiError(401, "unauthorized: the site id or API key is not valid")


async def _read_object(request: web.Request, services: Services, *, optional: bool) -> dict:
    """Read the body as a JSON object; an empty body is ``{}`` when ``optional``."""
    limit = services.config.max_body_bytes
    body = await read_limited_body(request, limit)
    if body is None:
        raise TrackApiError(413, f"request body too large: the limit is {limit} bytes")
    if not body.strip():
        if optional:
            return {}
        raise TrackApiError(400, "missing request body: send a JSON object")
    try:
        value = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise TrackApiError(400, f"invalid JSON body: {error}") from None
    if not isinstance(value, dict):
        raise TrackApiError(
            400, f"invalid body: expected a JSON object, got {type(value).__name__}"
        )
    return value


def _check_id(value: str, field_name: str, errors: list[str]) -> None:
    if not value:
        errors.append(f"missing {field_name}: it must be a non-empty string")
    elif utf8_size(value) > ID_MAX_BYTES:
        errors.append(
            f"{field_name} too long: {utf8_size(value)} bytes, the limit is {ID_MAX_BYTES}"
        )


def _string_field(
    body: dict, key: str, errors: list[str], *, required: bool, max_bytes: int
) -> str | None:
    value = body.get(key)
    if value is None:
        if required:
            errors.append(f"missing field {key!r}")
        return None
    if not isinstance(value, str) or not value:
        errors.append(f"invalid {key!r}: expected a non-empty string, got {value!r:.60}")
        return None
    if utf8_size(value) > max_bytes:
        errors.append(f"{key!r} too long: {utf8_size(value)} bytes, the limit is {max_bytes}")
        return None
    return value


def _timestamp_field(body: dict, key: str, errors: list[str]) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        errors.append(f"invalid {key!r}: expected Unix seconds as a number, got {value!r:.60}")
        return None
    return float(value)


def _check_attributes(attributes: dict, errors: list[str], where: str = "attribute") -> None:
    for name, value in attributes.items():
        if utf8_size(name) > ATTRIBUTE_NAME_MAX_BYTES:
            errors.append(
                f"{where} name {name[:40]!r}... too long: {utf8_size(name)} bytes, "
                f"the limit is {ATTRIBUTE_NAME_MAX_BYTES}"
            )
        elif json_size(value) > ATTRIBUTE_VALUE_MAX_BYTES:
            errors.append(
                f"{where} {name!r} value too long: {json_size(value)} bytes, "
                f"the limit is {ATTRIBUTE_VALUE_MAX_BYTES}"
            )


def _event_fields(
    body: dict, errors: list[str]
) -> tuple[str | None, str, float | None, str | None]:
    """Validate an event body and return its name, encoded data, timestamp and dedupe id."""
    name = _string_field(body, "name", errors, required=True, max_bytes=EVENT_NAME_MAX_BYTES)
    data = body.get("data", {})
    if data is None:
        data = {}
    if not isinstance(data, dict):
        errors.append(f"invalid 'data': expected a JSON object, got {type(data).__name__}")
        data = {}
    # One encoding serves both the size limit and the stored column.
    data_text = events.encode_data(data)
    data_size = utf8_size(data_text)
    if data_size > EVENT_DATA_MAX_BYTES:
        errors.append(f"'data' too large: {data_size} bytes, the limit is {EVENT_DATA_MAX_BYTES}")
    timestamp = _timestamp_field(body, "timestamp", errors)
    event_id = _string_field(body, "id", errors, required=False, max_bytes=ID_MAX_BYTES)
    return name, data_text, timestamp, event_id


def _raise_if(errors: list[str]) -> None:
    if errors:
        raise TrackApiError(400, *errors)


def _path_identifier(request: web.Request) -> str:
    identifier = request.match_info["identifier"]
    errors: list[str] = []
    _check_id(identifier, "customer identifier", errors)
    _raise_if(errors)
    return identifier


def _ok() -> web.Response:
    # The same body and Content-Type as web.json_response({}), without encoding it each time.
    return web.Response(body=OK_BODY, content_type="application/json", charset="utf-8")


@_endpoint
async def identify(request: web.Request, services: Services) -> web.Response:
    """PUT /api/v1/customers/{identifier}: create or update a person."""
    identifier = _path_identifier(request)
    body = await _read_object(request, services, optional=True)
    errors: list[str] = []

    anonymous_id = _string_field(
        body, "anonymous_id", errors, required=False, max_bytes=ID_MAX_BYTES
    )
    update_only = body.get("_update", False)
    if not isinstance(update_only, bool):
        errors.append(f"invalid '_update': expected true or false, got {update_only!r:.60}")
    attributes = {k: v for k, v in body.items() if k not in ("anonymous_id", "_update")}
    _check_attributes(attributes, errors)
    _raise_if(errors)

    config = services.config
    now = services.clock.wall_now()

    op = functools.partial(
        identity.identify,
        reference=identifier,
        attributes=attributes,
        anonymous_id=anonymous_id,
        merge_anonymous=not config.no_anonymous_merge,
        update_only=update_only is True,
        now=now,
    )
    result = await services.store.write(op)
    if result is not None and result.merged_profile_id is not None:
        log.debug(
            "anonymous profile %d merged into profile %d (customer %s)",
            result.merged_profile_id,
            result.profile_id,
            identifier,
        )
    return _ok()


def _push_enabled(value: object, errors: list[str]) -> bool | None:
    # The strings "true" and "false" are accepted too, because clients often send every device
    # attribute as a string.
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    errors.append(f"invalid 'push_enabled': expected true or false, got {value!r:.60}")
    return None


def _first_string(attributes: dict, keys: tuple[str, ...]) -> str | None:
    for key in keys:
        value = attributes.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def parse_device(device: object, errors: list[str]) -> DeviceRegistration | None:
    """Validate a Track API ``device`` object and return the registration it describes."""
    if not isinstance(device, dict):
        errors.append('missing field \'device\': send {"device": {"id": ..., "platform": ...}}')
        return None

    token = _string_field(device, "id", errors, required=True, max_bytes=DEVICE_TOKEN_MAX_BYTES)
    platform = device.get("platform")
    if platform not in devices.PLATFORMS:
        errors.append(
            f"invalid 'platform' {platform!r:.60}: use one of {', '.join(devices.PLATFORMS)}"
        )
    last_used = _timestamp_field(device, "last_used", errors)

    attributes = device.get("attributes")
    if attributes is None:
        attributes = {}
    if not isinstance(attributes, dict):
        errors.append(
            f"invalid 'attributes': expected a JSON object, got {type(attributes).__name__}"
        )
        attributes = {}
    _check_attributes(attributes, errors, where="device attribute")
    push_enabled = _push_enabled(attributes.get("push_enabled"), errors)
    push_enabled_at = _timestamp_field(attributes, "push_enabled_at", errors)

    if token is None or platform not in devices.PLATFORMS:
        return None
    return DeviceRegistration(
        token=token,
        platform=platform,
        last_used=last_used,
        push_enabled=push_enabled,
        push_enabled_at=push_enabled_at,
        app_version=_first_string(attributes, APP_VERSION_KEYS),
        os_version=_first_string(attributes, OS_VERSION_KEYS),
        attributes=attributes,
    )


@_endpoint
async def register_device(request: web.Request, services: Services) -> web.Response:
    """PUT /api/v1/customers/{identifier}/devices: add or update a device token."""
    identifier = _path_identifier(request)
    body = await _read_object(request, services, optional=False)
    errors: list[str] = []
    device = parse_device(body.get("device"), errors)
    _raise_if(errors)
    assert device is not None

    single_device = services.config.single_device_per_person
    now = services.clock.wall_now()
    if device.last_used is None:
        # Customer.io's add_device uses the request time when last_used is missing.
        device = dataclasses.replace(device, last_used=now)

    op = functools.partial(
        devices.register_device_of,
        reference=identifier,
        device=device,
        single_device=single_device,
        now=now,
    )
    result = await services.store.write(op)
    if result.previous_profile_id is not None:
        log.debug(
            "device token moved from profile %d to customer %s",
            result.previous_profile_id,
            identifier,
        )
    return _ok()


@_endpoint
async def delete_device(request: web.Request, services: Services) -> web.Response:
    """DELETE /api/v1/customers/{identifier}/devices/{token}: remove a token from a person."""
    identifier = _path_identifier(request)
    token = request.match_info["token"]
    if utf8_size(token) > DEVICE_TOKEN_MAX_BYTES:
        raise TrackApiError(
            400, f"device token too long: the limit is {DEVICE_TOKEN_MAX_BYTES} bytes"
        )
    now = services.clock.wall_now()

    # Deleting a token that the person does not own is not an error, so retries stay harmless.
    await services.store.write(
        functools.partial(devices.delete_device_of, reference=identifier, token=token, now=now)
    )
    return _ok()


@_endpoint
async def track_event(request: web.Request, services: Services) -> web.Response:
    """POST /api/v1/customers/{identifier}/events: store an event of a person."""
    identifier = _path_identifier(request)
    body = await _read_object(request, services, optional=False)
    errors: list[str] = []
    name, data, timestamp, event_id = _event_fields(body, errors)
    _raise_if(errors)
    assert name is not None

    await _store_event(services, identifier, None, name, data, timestamp, event_id)
    return _ok()


@_endpoint
async def track_anonymous_event(request: web.Request, services: Services) -> web.Response:
    """POST /api/v1/events: store an event of an anonymous visitor, keyed by ``anonymous_id``."""
    body = await _read_object(request, services, optional=False)
    errors: list[str] = []
    name, data, timestamp, event_id = _event_fields(body, errors)
    anonymous_id = _string_field(
        body, "anonymous_id", errors, required=False, max_bytes=ID_MAX_BYTES
    )
    _raise_if(errors)
    assert name is not None

    await _store_event(services, None, anonymous_id, name, data, timestamp, event_id)
    return _ok()


async def _store_event(
    services: Services,
    reference: str | None,
    anonymous_id: str | None,
    name: str,
    data: str,
    timestamp: float | None,
    event_id: str | None,
) -> None:
    """Store one Track API event of the person ``reference``, else of ``anonymous_id``."""
    now = services.clock.wall_now()
    write = EventWrite(
        reference=reference,
        anonymous_id=anonymous_id,
        name=name,
        data=data,
        timestamp=timestamp if timestamp is not None else now,
        dedupe_id=event_id,
        now=now,
    )
    stored = await services.store.write(write)
    _count_event(services, stored)


def _count_event(services: Services, stored: bool) -> None:
    if not stored:
        services.metrics.count_duplicate(events.TRACK)
    else:
        services.metrics.count_event(events.TRACK)


MERGE_KEYS = ("id", "email", "cio_id")


def _merge_party(body: dict, role: str, errors: list[str]) -> tuple[str, str] | None:
    party = body.get(role)
    if not isinstance(party, dict):
        errors.append(f"missing field {role!r}: send an object with one of {', '.join(MERGE_KEYS)}")
        return None
    present_keys = [key for key in MERGE_KEYS if key in party]
    if len(present_keys) != 1:
        errors.append(f"invalid {role!r}: give exactly one of {', '.join(MERGE_KEYS)}")
        return None
    key = present_keys[0]
    value = party[key]
    if not isinstance(value, str):
        errors.append(f"invalid {role}.{key}: expected a string, got {value!r:.60}")
        return None
    _check_id(value, f"{role}.{key}", errors)
    return key, value


@_endpoint
async def merge_customers(request: web.Request, services: Services) -> web.Response:
    """POST /api/v1/merge_customers: merge the secondary person into the primary."""
    body = await _read_object(request, services, optional=False)
    errors: list[str] = []
    primary = _merge_party(body, "primary", errors)
    secondary = _merge_party(body, "secondary", errors)
    _raise_if(errors)
    assert primary is not None and secondary is not None

    now = services.clock.wall_now()

    op = functools.partial(identity.merge_parties, primary=primary, secondary=secondary, now=now)
    try:
        await services.store.write(op)
    except identity.UnknownPartyError as error:
        raise TrackApiError(404, *error.messages) from None
    return _ok()


@_endpoint
async def push_metric(request: web.Request, services: Services) -> web.Response:
    """POST /api/v1/push/events: store a delivered, opened or converted metric of a push."""
    body = await _read_object(request, services, optional=False)
    errors: list[str] = []
    delivery_id = _string_field(body, "delivery_id", errors, required=True, max_bytes=ID_MAX_BYTES)
    metric = body.get("event")
    if metric not in events.DELIVERY_METRICS:
        errors.append(
            f"invalid 'event' {metric!r:.60}: use one of {', '.join(events.DELIVERY_METRICS)}"
        )
    device_token = _string_field(
        body, "device_id", errors, required=False, max_bytes=DEVICE_TOKEN_MAX_BYTES
    )
    timestamp = _timestamp_field(body, "timestamp", errors)
    _raise_if(errors)
    assert delivery_id is not None

    now = services.clock.wall_now()

    op = functools.partial(
        events.insert_delivery_metric,
        delivery_id=delivery_id,
        metric=str(metric),
        device_token=device_token,
        timestamp=timestamp if timestamp is not None else now,
        source=events.TRACK,
        now=now,
    )
    if not await services.store.write(op):
        services.metrics.count_duplicate(events.TRACK)
    return _ok()


def add_routes(app: web.Application) -> None:
    """Register the Track API routes on ``app``."""
    # aiohttp tries the routes under /customers in the order they were added, so the busiest,
    # a person's events, comes first. No two of these paths can match the same URL.
    app.router.add_post(PREFIX + "/customers/{identifier}/events", track_event)
    app.router.add_put(PREFIX + "/customers/{identifier}", identify)
    app.router.add_put(PREFIX + "/customers/{identifier}/devices", register_device)
    app.router.add_delete(PREFIX + "/customers/{identifier}/devices/{token}", delete_device)
    app.router.add_post(PREFIX + "/events", track_anonymous_event)
    app.router.add_post(PREFIX + "/merge_customers", merge_customers)
    app.router.add_post(PREFIX + "/push/events", push_metric)
