"""The APNs error reasons and the HTTP status each one comes with.

The names and statuses follow Apple's "Handling notification responses from APNs". A rejection
anywhere in the mock APNs gateway is one of these names, never free text.
"""

from __future__ import annotations

from typing import NamedTuple

REASON_STATUS: dict[str, int] = {
    "BadCollapseId": 400,
    "BadDeviceToken": 400,
    "BadExpirationDate": 400,
    "BadMessageId": 400,
    "BadPriority": 400,
    "BadTopic": 400,
    "DeviceTokenNotForTopic": 400,
    "DuplicateHeaders": 400,
    "IdleTimeout": 400,
    "InvalidPushType": 400,
    "MissingDeviceToken": 400,
    "MissingTopic": 400,
    "PayloadEmpty": 400,
    "TopicDisallowed": 400,
    "BadCertificate": 403,
    "BadCertificateEnvironment": 403,
    "ExpiredProviderToken": 403,
    "Forbidden": 403,
    "InvalidProviderToken": 403,
    "MissingProviderToken": 403,
    "UnrelatedKeyIdInToken": 403,
    "BadEnvironmentKeyIdInToken": 403,
    "BadPath": 404,
    "MethodNotAllowed": 405,
    "ExpiredToken": 410,
    "Unregistered": 410,
    "PayloadTooLarge": 413,
    "TooManyProviderTokenUpdates": 429,
    "TooManyRequests": 429,
    "InternalServerError": 500,
    "ServiceUnavailable": 503,
    "Shutdown": 503,
}

# The reason a fault gets when it forces a status without naming one.
DEFAULT_REASON: dict[int, str] = {
    400: "BadDeviceToken",
    403: "Forbidden",
    404: "BadPath",
    405: "MethodNotAllowed",
    410: "Unregistered",
    413: "PayloadTooLarge",
    429: "TooManyRequests",
    500: "InternalServerError",
    503: "ServiceUnavailable",
}


class Rejection(NamedTuple):
    """A named APNs error reason with its HTTP status."""

    status: int
    reason: str


def reject(reason: str) -> Rejection:
    """Return the rejection for one of Apple's reason names.

    Raises ``ValueError`` for a name outside Apple's list, so a typo never reaches the wire.
    """
    try:
        return Rejection(REASON_STATUS[reason], reason)
    except KeyError:
        known = ", ".join(sorted(REASON_STATUS))
        raise ValueError(f"unknown APNs reason {reason!r}: use one of {known}") from None
