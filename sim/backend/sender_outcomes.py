"""Classifiers of APNs and FCM responses (deliver, retry, prune or fail) and pruning rules.

The classifiers read only the status and reason of one response. The pruning rules decide
whether a token the service reports gone may be deleted, given when the device registered it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

# Statuses both services use for overload and outages, which a later attempt may get through.
RETRYABLE_STATUSES = frozenset({429, 500, 503})

# Sender reasons for attempts that got no response. A timed-out request may have reached the
# service, so only attempts that surely did not are retried.
TIMEOUT = "timeout"
CONNECTION_ERROR = "connection_error"
OAUTH_ERROR = "oauth_error"
RETRYABLE_NO_RESPONSE = frozenset({CONNECTION_ERROR, OAUTH_ERROR})

# APNs reasons (Apple, "Handling notification responses from APNs") that mean the token will
# never work for this topic again.
APNS_GONE_REASONS = frozenset({"Unregistered", "ExpiredToken"})
APNS_BAD_TOKEN_REASONS = frozenset({"BadDeviceToken", "DeviceTokenNotForTopic"})

FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"
ERROR_INFO_TYPE = "type.googleapis.com/google.rpc.ErrorInfo"
FCM_TOKEN_FIELDS = frozenset({"message.token", "message.fid"})


class Action(enum.Enum):
    """The sender's next step after one attempt."""

    DELIVER = "deliver"  # accepted: report success
    RETRY = "retry"  # transient: send again after a backoff
    GONE = "gone"  # token no longer registered: prune it if the pruning rules allow
    PRUNE = "prune"  # token invalid for this app: prune it
    REAUTHENTICATE = "reauthenticate"  # FCM access token rejected: fetch a new one, send again
    FAIL = "fail"  # anything else: report a failure


@dataclass(frozen=True)
class AttemptResult:
    """The response to one send, or the reason none arrived.

    ``status`` is None when no response arrived. ``reason`` is the service's reason, or one of
    ``timeout``, ``connection_error`` and ``oauth_error``. ``action`` is what the transport's
    classifier decided. ``retry_after`` is in seconds. ``sent_at`` is the wall Unix time in
    seconds at which the attempt started. ``detail`` is free text for logs.
    """

    status: int | None
    reason: str
    action: Action
    sent_at: float
    message_id: str = ""
    timestamp_ms: int | None = None
    retry_after: float | None = None
    detail: str = ""


def classify_apns(status: int | None, reason: str) -> Action:
    """Return the action for an APNs response with ``status`` and ``reason``."""
    if status == 200:
        return Action.DELIVER
    if status == 410 or reason in APNS_GONE_REASONS:
        return Action.GONE
    if reason in APNS_BAD_TOKEN_REASONS:
        return Action.PRUNE
    if status in RETRYABLE_STATUSES or (status is None and reason in RETRYABLE_NO_RESPONSE):
        return Action.RETRY
    return Action.FAIL


@dataclass(frozen=True)
class FcmError:
    """The parts of a Google error body that decide what to do.

    ``code`` is the FCM ``errorCode`` when the body has one, else Google's canonical
    ``status``, else the HTTP status as text. ``token_field`` is true when the error points at
    the message's token, and ``auth_reason`` is the ErrorInfo reason of a 401.
    """

    code: str
    token_field: bool = False
    auth_reason: str = ""


def parse_fcm_error(http_status: int, body: Any) -> FcmError:
    """Read the FCM errorCode, token violation and ErrorInfo reason out of an error body."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return FcmError(str(http_status))

    code = error.get("status") if isinstance(error.get("status"), str) else str(http_status)
    token_field = False
    auth_reason = ""
    details = error.get("details") if isinstance(error.get("details"), list) else []
    for detail in details:
        if not isinstance(detail, dict):
            continue
        kind = detail.get("@type")
        if kind == FCM_ERROR_TYPE and isinstance(detail.get("errorCode"), str):
            code = detail["errorCode"]
        elif kind == BAD_REQUEST_TYPE:
            violations = detail.get("fieldViolations") or []
            token_field |= any(
                isinstance(violation, dict) and violation.get("field") in FCM_TOKEN_FIELDS
                for violation in violations
            )
        elif kind == ERROR_INFO_TYPE and isinstance(detail.get("reason"), str):
            auth_reason = detail["reason"]

    # FCM rejects a bad registration token with an FcmError INVALID_ARGUMENT and the message
    # "The registration token is not a valid FCM registration token", often with no
    # fieldViolation (bodies quoted in the firebase/firebase-admin-java tracker, issue 1064).
    message = error.get("message") if isinstance(error.get("message"), str) else ""
    if code == "INVALID_ARGUMENT" and "registration token" in message.lower():
        token_field = True
    return FcmError(code, token_field, auth_reason)


def classify_fcm(status: int | None, reason: str, error: FcmError | None = None) -> Action:
    """Return the action for an FCM response with HTTP ``status`` and its parsed error.

    With no response (``status`` None), ``reason`` is the cause.
    """
    if status == 200:
        return Action.DELIVER
    if status is None:
        return Action.RETRY if reason in RETRYABLE_NO_RESPONSE else Action.FAIL
    if error is None:
        return Action.RETRY if status in RETRYABLE_STATUSES else Action.FAIL

    if error.code == "UNREGISTERED":
        return Action.GONE
    if error.code == "SENDER_ID_MISMATCH":
        return Action.PRUNE
    if error.code == "INVALID_ARGUMENT" and error.token_field:
        return Action.PRUNE
    if status == 401 and error.code != "THIRD_PARTY_AUTH_ERROR":
        return Action.REAUTHENTICATE
    if status in RETRYABLE_STATUSES:
        return Action.RETRY
    return Action.FAIL


def prune_after_apns_gone(registered_at: float | None, timestamp_ms: int | None) -> bool:
    """Return whether to prune a token after APNs 410, given its registration time.

    APNs sends the wall time in ms at which it learned the token was invalid. A device that
    registered the token at or after that moment (a reinstall can bring the same token back)
    keeps it. ``registered_at`` is wall Unix seconds, or None when the device no longer has the
    token, which leaves nothing to prune. A 410 without a timestamp prunes.
    """
    if registered_at is None:
        return False
    if timestamp_ms is None:
        return True
    return registered_at * 1000.0 < timestamp_ms


def prune_after_fcm_gone(registered_at: float | None, sent_at: float) -> bool:
    """Return whether to prune a token after FCM UNREGISTERED, given its registration time.

    FCM gives no time with UNREGISTERED, so a registration after the send is the only sign
    that the device uses the token again. Both times are wall Unix seconds. ``registered_at``
    is None when the device no longer has the token, which leaves nothing to prune.
    """
    if registered_at is None:
        return False
    return registered_at <= sent_at
