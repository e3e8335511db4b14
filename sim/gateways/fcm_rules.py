"""The rules of the FCM HTTP v1 send method, separate from the server that carries them.

``FcmRules.decide`` takes the body of ``POST /v1/projects/{project}/messages:send`` and returns
the response Google would send: ``{"name": "projects/P/messages/ID"}`` on success, or Google's
error body with a canonical ``status`` and a ``details`` list naming the FCM ``errorCode``.
Error codes, HTTP statuses and the payload limits follow the FCM v1 REST reference
(https://firebase.google.com/docs/reference/fcm/rest/v1/ErrorCode).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sim.formats.tokens import is_well_formed
from sim.gateways.hooks import (
    FaultAction,
    FaultPolicy,
    NoFaults,
    OpenTokenPolicy,
    PushRequest,
    Service,
    TokenPolicy,
    TokenState,
)
from sim.gateways.ids import new_hex

FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"
ERROR_INFO_TYPE = "type.googleapis.com/google.rpc.ErrorInfo"

# FCM's ErrorCode reference limits "the total size of the payload data" to 4096 bytes, or 2048
# for a message to a topic, keys and values included, and its message-type guide applies the
# limit to notification and data messages alike. Google does not document its accounting, so
# the mock counts the UTF-8 keys and string values of data and notification, at the message
# level and under android.
PAYLOAD_LIMIT_BYTES = 4096
TOPIC_PAYLOAD_LIMIT_BYTES = 2048
PAYLOAD_PARTS = (("data",), ("notification",), ("android", "data"), ("android", "notification"))

# The Message.data reference reserves "from", "message_type" and keys starting with "google." or
# "gcm.notification.". Its ErrorCode page adds that some words FCM uses, such as collapse_key,
# are allowed in data and overridden by FCM's own value.
RESERVED_DATA_KEYS = frozenset({"from", "message_type"})
RESERVED_DATA_PREFIXES = ("google.", "gcm.notification.")

TARGET_FIELDS = ("token", "topic", "condition", "fid")
MESSAGE_FIELDS = frozenset(
    {"name", "data", "notification", "android", "webpush", "apns", "fcm_options", "fcmOptions"}
    | set(TARGET_FIELDS)
)
REQUEST_FIELDS = frozenset({"message", "validate_only", "validateOnly"})
NOTIFICATION_FIELDS = frozenset({"title", "body", "image"})
ANDROID_FIELDS = frozenset(
    {
        "collapse_key",
        "collapseKey",
        "priority",
        "ttl",
        "restricted_package_name",
        "restrictedPackageName",
        "data",
        "notification",
        "fcm_options",
        "fcmOptions",
        "direct_boot_ok",
        "directBootOk",
        "restricted_satellite_ok",
        "restrictedSatelliteOk",
        "bandwidth_constrained_ok",
        "bandwidthConstrainedOk",
    }
)
ANDROID_PRIORITIES = frozenset({"NORMAL", "HIGH"})

# A protobuf Duration in JSON: seconds with up to nine fractional digits and an "s" suffix.
_DURATION = re.compile(r"^\d{1,11}(\.\d{1,9})?s$")
# FCM caps android.ttl at four weeks.
MAX_TTL_SECONDS = 28 * 24 * 3600
# Topic names as the REST reference allows them, with or without the "/topics/" prefix.
_TOPIC = re.compile(r"^(/topics/)?[a-zA-Z0-9\-_.~%]{1,900}$")
# A Firebase Installation ID is 22 characters of URL-safe base64.
_FID = re.compile(r"^[A-Za-z0-9_-]{22}$")

# Google's canonical status for each HTTP status the FCM send method returns.
CANONICAL_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "INVALID_ARGUMENT",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}

# The FCM errorCode that each FCM error carries, with its HTTP status.
FCM_ERROR_STATUS = {
    "INVALID_ARGUMENT": 400,
    "UNREGISTERED": 404,
    "SENDER_ID_MISMATCH": 403,
    "QUOTA_EXCEEDED": 429,
    "UNAVAILABLE": 503,
    "INTERNAL": 500,
    "THIRD_PARTY_AUTH_ERROR": 401,
}
_DEFAULT_FAULT_CODE = {status: code for code, status in FCM_ERROR_STATUS.items()}
# The ErrorCode reference names the project's message rate among the causes of QUOTA_EXCEEDED.
QUOTA_FAULT_MESSAGE = "Quota exceeded for the project's message rate; retry after the backoff."

_FCM_ERROR_MESSAGES = {
    "INVALID_ARGUMENT": "The registration token is not a valid FCM registration token",
    "UNREGISTERED": "Requested entity was not found.",
    "SENDER_ID_MISMATCH": "SenderId mismatch",
    "QUOTA_EXCEEDED": "Quota exceeded for sending messages to this device.",
    "UNAVAILABLE": "The service is currently unavailable.",
    "INTERNAL": "Internal error encountered.",
    "THIRD_PARTY_AUTH_ERROR": "Auth error from APNS or Web Push Service",
}


@dataclass
class FcmResponse:
    """One HTTP response: status, JSON body, extra headers, and what the ledger records.

    ``reason`` is the FCM errorCode or canonical status of an error and None on success.
    ``delay`` is the latency to add before answering, in wall seconds.
    """

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    reason: str | None = None
    delivery_id: str | None = None
    retry_after: int | None = None
    delay: float = 0.0
    validate_only: bool = False
    fault: str | None = None  # kind of the fault that acted, copied into the ledger's Outcome


def google_error(
    http_status: int, message: str, details: list[dict] | None = None, status: str | None = None
) -> dict[str, Any]:
    """Build Google's JSON error body for ``http_status``."""
    error: dict[str, Any] = {
        "code": http_status,
        "message": message,
        "status": status or CANONICAL_STATUS.get(http_status, "UNKNOWN"),
    }
    if details:
        error["details"] = details
    return {"error": error}


def fcm_error_response(error_code: str, message: str | None = None) -> FcmResponse:
    """Build the response for one FCM ``errorCode`` such as ``UNREGISTERED``."""
    http_status = FCM_ERROR_STATUS[error_code]
    details = [{"@type": FCM_ERROR_TYPE, "errorCode": error_code}]
    body = google_error(http_status, message or _FCM_ERROR_MESSAGES[error_code], details)
    return FcmResponse(http_status, body, reason=error_code)


def bad_request_response(violations: list[tuple[str, str]]) -> FcmResponse:
    """Build a 400 INVALID_ARGUMENT response listing ``(field, description)`` violations."""
    message = violations[0][1]
    field_violations = [
        {"field": name, "description": description} if name else {"description": description}
        for name, description in violations
    ]
    details = [{"@type": BAD_REQUEST_TYPE, "fieldViolations": field_violations}]
    return FcmResponse(400, google_error(400, message, details), reason="INVALID_ARGUMENT")


def unauthenticated_response(reason: str, message: str) -> FcmResponse:
    """Build a 401 UNAUTHENTICATED response with Google's ErrorInfo ``reason``.

    pyfcm 2.1 fetches a new access token when the reason is ``ACCESS_TOKEN_EXPIRED``.
    """
    details = [
        {
            "@type": ERROR_INFO_TYPE,
            "reason": reason,
            "domain": "googleapis.com",
            "metadata": {"service": "fcm.googleapis.com"},
        }
    ]
    return FcmResponse(401, google_error(401, message, details), reason="UNAUTHENTICATED")


def _data_violations(data: Any, path: str) -> list[tuple[str, str]]:
    if not isinstance(data, dict):
        return [(path, f"Invalid value at '{path}': expected a map of strings")]

    violations = []
    for key, value in data.items():
        if not isinstance(value, str):
            violations.append(
                (f"{path}[{key}]", f"Invalid value at '{path}[{key}]': expected a string")
            )
            continue
        try:
            key.encode()
            value.encode()
        except UnicodeEncodeError:
            # JSON escapes can carry lone surrogates, which have no UTF-8 form.
            violations.append((path, f"Invalid value at '{path}': {key!r} is not valid UTF-8"))
            continue
        lowered = key.lower()
        if lowered in RESERVED_DATA_KEYS or lowered.startswith(RESERVED_DATA_PREFIXES):
            violations.append(
                (
                    path,
                    f"Invalid data payload key: {key!r} is reserved; rename it "
                    "(reserved: from, message_type, and keys starting with google. or "
                    "gcm.notification.)",
                )
            )
    return violations


def payload_size(message: dict) -> int:
    """Return the UTF-8 bytes of the keys and string values of the message's payload parts."""
    size = 0
    for part in PAYLOAD_PARTS:
        node: Any = message
        for name in part:
            node = node.get(name) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            continue
        for key, value in node.items():
            if isinstance(key, str) and isinstance(value, str):
                size += len(key.encode(errors="replace")) + len(value.encode(errors="replace"))
    return size


def _size_violations(message: dict) -> list[tuple[str, str]]:
    limit = TOPIC_PAYLOAD_LIMIT_BYTES if "topic" in message else PAYLOAD_LIMIT_BYTES
    size = payload_size(message)
    if size <= limit:
        return []
    target = "a topic message" if "topic" in message else "a message"
    return [
        (
            "message",
            f"Message is too big: its data and notification keys and values are {size} bytes, "
            f"and the limit for {target} is {limit} bytes",
        )
    ]


def _notification_violations(notification: Any, path: str) -> list[tuple[str, str]]:
    if not isinstance(notification, dict):
        return [(path, f"Invalid value at '{path}': expected an object")]

    violations = []
    for key, value in notification.items():
        if key not in NOTIFICATION_FIELDS:
            violations.append(
                (
                    path,
                    f'Invalid JSON payload received. Unknown name "{key}" at '
                    f"'{path}': Cannot find field.",
                )
            )
        elif not isinstance(value, str):
            violations.append(
                (f"{path}.{key}", f"Invalid value at '{path}.{key}': expected a string")
            )
    return violations


def _android_violations(android: Any) -> list[tuple[str, str]]:
    path = "message.android"
    if not isinstance(android, dict):
        return [(path, f"Invalid value at '{path}': expected an object")]

    violations = []
    unknown = sorted(set(android) - ANDROID_FIELDS)
    for key in unknown:
        violations.append(
            (
                path,
                f'Invalid JSON payload received. Unknown name "{key}" at '
                f"'{path}': Cannot find field.",
            )
        )

    # firebase-admin sends "high" and "normal" in lower case, and FCM accepts enum names in
    # either case.
    priority = android.get("priority")
    if priority is not None and (
        not isinstance(priority, str) or priority.upper() not in ANDROID_PRIORITIES
    ):
        violations.append(
            (
                f"{path}.priority",
                f"Invalid value at '{path}.priority' ({priority!r}): use NORMAL or HIGH",
            )
        )

    ttl = android.get("ttl")
    if ttl is not None:
        if not isinstance(ttl, str) or not _DURATION.match(ttl):
            violations.append(
                (
                    f"{path}.ttl",
                    f"Invalid value at '{path}.ttl' ({ttl!r}): use a duration "
                    "in seconds with an 's' suffix, such as \"3.5s\"",
                )
            )
        elif float(ttl[:-1]) > MAX_TTL_SECONDS:
            violations.append(
                (
                    f"{path}.ttl",
                    f"Invalid value at '{path}.ttl' ({ttl}): the maximum is "
                    f"{MAX_TTL_SECONDS}s (4 weeks)",
                )
            )

    if "data" in android:
        violations += _data_violations(android["data"], f"{path}.data")
    notification = android.get("notification")
    if notification is not None and not isinstance(notification, dict):
        violations.append(
            (f"{path}.notification", f"Invalid value at '{path}.notification': expected an object")
        )
    return violations


def _target_violations(message: dict) -> list[tuple[str, str]]:
    targets = [name for name in TARGET_FIELDS if name in message]
    if len(targets) != 1:
        found = ", ".join(targets) if targets else "none"
        return [
            (
                "message",
                f"Invalid value at 'message': exactly one of token, topic, condition or fid "
                f"must be set (found: {found})",
            )
        ]

    name = targets[0]
    value = message[name]
    if not isinstance(value, str) or not value:
        return [
            (f"message.{name}", f"Invalid value at 'message.{name}': expected a non-empty string")
        ]
    if name == "topic" and not _TOPIC.match(value):
        return [
            (
                f"message.{name}",
                f"Invalid value at 'message.topic' ({value!r}): use letters, digits and -_.~% only",
            )
        ]
    return []


def message_violations(request: Any) -> list[tuple[str, str]]:
    """List the ``(field, description)`` problems of a send request body, empty when valid."""
    if not isinstance(request, dict):
        return [("", "Invalid JSON payload received. Expected an object at the top level.")]

    violations = []
    for key in sorted(set(request) - REQUEST_FIELDS):
        violations.append(
            ("", f'Invalid JSON payload received. Unknown name "{key}": Cannot find field.')
        )
    validate_only = request.get("validate_only", request.get("validateOnly", False))
    if not isinstance(validate_only, bool):
        violations.append(
            ("validate_only", "Invalid value at 'validate_only': expected true or false")
        )

    message = request.get("message")
    if not isinstance(message, dict):
        violations.append(
            ("message", "Invalid value at 'message': the request needs a message object")
        )
        return violations

    for key in sorted(set(message) - MESSAGE_FIELDS):
        violations.append(
            (
                "message",
                f'Invalid JSON payload received. Unknown name "{key}" '
                "at 'message': Cannot find field.",
            )
        )
    violations += _target_violations(message)
    if "data" in message:
        violations += _data_violations(message["data"], "message.data")
    if "notification" in message:
        violations += _notification_violations(message["notification"], "message.notification")
    if "android" in message:
        violations += _android_violations(message["android"])
    violations += _size_violations(message)
    for name in ("apns", "webpush", "fcm_options"):
        if name in message and not isinstance(message[name], dict):
            violations.append(
                (f"message.{name}", f"Invalid value at 'message.{name}': expected an object")
            )
    return violations


def parse_target(body: bytes) -> tuple[Any, str, str]:
    """Parse a send body into ``(request, target field, target value)``, tolerating bad input.

    ``request`` is None when the body is not JSON. The target is empty when there is no single
    string target, so a fault policy can still see every push.
    """
    try:
        request = json.loads(body)
    except (ValueError, RecursionError):
        return None, "", ""

    message = request.get("message") if isinstance(request, dict) else None
    if not isinstance(message, dict):
        return request, "", ""
    targets = [name for name in TARGET_FIELDS if isinstance(message.get(name), str)]
    if len(targets) != 1:
        return request, "", ""
    return request, targets[0], message[targets[0]]


def _string_field(mapping: Any, name: str) -> str | None:
    value = mapping.get(name) if isinstance(mapping, dict) else None
    return value if isinstance(value, str) else None


def delivery_options(request: Any) -> tuple[str | None, str | None, str | None, str | None]:
    """Return ``(collapse_id, priority, expiration, push_type)`` of a parsed send body.

    They come from ``android.collapse_key`` (or ``collapseKey``), ``android.priority``
    (upper-cased) and ``android.ttl``. ``push_type`` is ``notification`` when the message or its
    ``android`` block has a notification, which the phone displays, and ``data`` otherwise.
    Malformed fields give None, since the rules reject them later.
    """
    message = request.get("message") if isinstance(request, dict) else None
    if not isinstance(message, dict):
        return None, None, None, None
    android = message.get("android")
    priority = _string_field(android, "priority")
    displayed = isinstance(message.get("notification"), dict) or (
        isinstance(android, dict) and isinstance(android.get("notification"), dict)
    )
    return (
        _string_field(android, "collapse_key") or _string_field(android, "collapseKey"),
        priority.upper() if priority is not None else None,
        _string_field(android, "ttl"),
        "notification" if displayed else "data",
    )


def _new_message_id() -> str:
    # Real message ids are opaque strings, often 0: followed by digits and a hex suffix.
    return f"0:{time.time_ns() // 1000}%{new_hex(16)}"


class FcmRules:
    """Decide the response to one FCM send, consulting the token and fault policies.

    Example::

        rules = FcmRules()
        response = rules.decide(push_request, "my-project")
        response.status, response.body
    """

    def __init__(
        self,
        token_policy: TokenPolicy | None = None,
        fault_policy: FaultPolicy | None = None,
        new_message_id: Callable[[], str] = _new_message_id,
    ) -> None:
        self.token_policy = token_policy or OpenTokenPolicy()
        self.fault_policy = fault_policy or NoFaults()
        self._new_message_id = new_message_id

    @staticmethod
    def push_request(
        project: str,
        body: bytes,
        headers: dict[str, str],
        connection_id: str,
        received_at: float | None = None,
    ) -> PushRequest:
        """Build the ledger's view of one send: the target becomes ``token``.

        A topic target is stored as ``/topics/NAME`` and a condition as written, so a reader can
        tell them from device tokens.
        """
        request, target_field, target = parse_target(body)
        if target_field == "topic" and not target.startswith("/topics/"):
            target = f"/topics/{target}"
        collapse_id, priority, expiration, push_type = delivery_options(request)
        return PushRequest(
            service=Service.FCM,
            token=target,
            audience=project,
            headers=headers,
            payload=body,
            connection_id=connection_id,
            received_at=time.time() if received_at is None else received_at,
            collapse_id=collapse_id,
            priority=priority,
            expiration=expiration,
            push_type=push_type,
        )

    def decide(self, push: PushRequest, project: str) -> FcmResponse:
        """Return the response to ``push``: a fault first, then the payload and token rules."""
        fault = self.fault_policy.action(push)
        if fault.status is not None:
            response = self._fault_response(fault)
        else:
            response = self._rule_response(push, project)
        response.delay = max(0.0, fault.delay)
        response.fault = fault.fault
        return response

    @staticmethod
    def _fault_response(fault: FaultAction) -> FcmResponse:
        status = fault.status or 500
        code = fault.reason or _DEFAULT_FAULT_CODE.get(status)
        if fault.fault == "quota" and code == "QUOTA_EXCEEDED":
            # The quota fault stands for the project's message rate, not one device's.
            response = fcm_error_response(code, QUOTA_FAULT_MESSAGE)
        elif code in FCM_ERROR_STATUS and FCM_ERROR_STATUS[code] == status:
            response = fcm_error_response(code)
        else:
            message = f"Injected fault: HTTP {status}" + (f" ({code})" if code else "")
            response = FcmResponse(status, google_error(status, message), reason=code)
        if fault.retry_after is not None:
            response.retry_after = fault.retry_after
            response.headers["Retry-After"] = str(fault.retry_after)
        return response

    def _rule_response(self, push: PushRequest, project: str) -> FcmResponse:
        request, target_field, target = parse_target(push.payload)
        if request is None:
            return bad_request_response(
                [("", "Invalid JSON payload received. The body is not valid JSON.")]
            )
        violations = message_violations(request)
        if violations:
            return bad_request_response(violations)

        if target_field in ("token", "fid"):
            response = self._token_response(push, target_field, target)
            if response is not None:
                return response

        validate_only = bool(request.get("validate_only", request.get("validateOnly", False)))
        if validate_only:
            # FCM returns this fixed name for a dry run and delivers nothing.
            body = {"name": f"projects/{project}/messages/fake_message_id"}
            return FcmResponse(200, body, validate_only=True)
        message_id = self._new_message_id()
        body = {"name": f"projects/{project}/messages/{message_id}"}
        return FcmResponse(200, body, delivery_id=message_id)

    def _token_response(
        self, push: PushRequest, target_field: str, target: str
    ) -> FcmResponse | None:
        # A FID target may be an installation id or, from older senders, a registration token.
        well_formed = is_well_formed(target, "android") or (
            target_field == "fid" and bool(_FID.match(target))
        )
        if not well_formed:
            return fcm_error_response(
                "INVALID_ARGUMENT",
                f"The registration token is not a valid FCM registration token: "
                f"message.{target_field} has the wrong shape",
            )

        state = self.token_policy.check(push).state
        if state is TokenState.UNKNOWN:
            return fcm_error_response("INVALID_ARGUMENT")
        if state is TokenState.DEAD:
            return fcm_error_response("UNREGISTERED")
        if state is TokenState.WRONG_AUDIENCE:
            return fcm_error_response("SENDER_ID_MISMATCH")
        if state is TokenState.THROTTLED:
            return fcm_error_response("QUOTA_EXCEEDED")
        return None


__all__ = [
    "FcmResponse",
    "FcmRules",
    "bad_request_response",
    "delivery_options",
    "fcm_error_response",
    "google_error",
    "message_violations",
    "unauthenticated_response",
]
