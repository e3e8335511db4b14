"""The push sender's vocabulary: a job to send, and the result reported for it.

A job names one device token and the message for it. The sender reports exactly one
``SendResult`` per job it accepted or dropped, so the journey engine can record every push.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field


class PushService(enum.StrEnum):
    """The push service that owns a device token."""

    APNS = "apns"
    FCM = "fcm"


class SendOutcome(enum.StrEnum):
    """The final state of one job.

    ``KEPT`` is a token the service reported gone that the sender did not prune: the device
    registered it again, no device has it any more, or pruning is switched off. ``NOT_SENT``
    covers jobs dropped at a full queue, jobs still queued at shutdown and payloads over the
    size limit.
    """

    DELIVERED = "delivered"
    PRUNED = "pruned"
    KEPT = "kept"
    FAILED = "failed"
    NOT_SENT = "not_sent"


@dataclass(frozen=True)
class PushJob:
    """One push to one device token.

    ``registered_at`` is the wall Unix time in seconds at which the device last registered
    this token, as the caller knew it when making the job. A ``job_id`` that is a UUID, as the
    default is, also becomes the APNs ``apns-id``. Other ids get a UUID derived from them.
    """

    service: PushService
    token: str
    registered_at: float
    title: str = ""
    body: str = ""
    link: str = ""
    delivery_id: str = ""
    delivery_token: str = ""
    job_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    @property
    def token_prefix(self) -> str:
        """The first 8 characters of the token, which is all that logs show of it."""
        return self.token[:8] + "…"


@dataclass(frozen=True)
class SendResult:
    """The result of one job.

    ``reason`` is the service's own reason (``Unregistered``, ``UNREGISTERED``, ``QUOTA_EXCEEDED``)
    or a sender reason such as ``timeout``, ``queue_full`` or ``shutdown``. ``message_id`` is the
    ``apns-id`` or the FCM message name of an accepted push. ``timestamp_ms`` is the APNs 410
    ``timestamp``. ``sent_at`` is the wall Unix time in seconds of the last attempt, and
    ``elapsed`` the wall seconds from the first attempt to the result.
    """

    job: PushJob
    outcome: SendOutcome
    reason: str = ""
    status: int | None = None
    message_id: str = ""
    timestamp_ms: int | None = None
    attempts: int = 0
    sent_at: float | None = None
    elapsed: float = 0.0
