"""The contract between the journey engine and a push sender.

The engine hands each push to a ``PushSender`` as a ``PushJob``. The sender builds the APNs or FCM
payload, sends it with its own retries, and reports back to the ``PushListener`` it was built
with: one ``PushOutcome`` per job, and a ``PruneRequest`` when a gateway reports a token dead.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from sim.backend.config import BackendConfig

log = logging.getLogger(__name__)

Service = Literal["apns", "fcm"]

# Outcomes a sender reports. accepted: the gateway returned 200. rejected: the gateway rejected
# the push for good (bad or dead token, payload error). failed: retries ran out or the sender
# gave up, for example at shutdown.
ACCEPTED = "accepted"
REJECTED = "rejected"
FAILED = "failed"
OUTCOMES = (ACCEPTED, REJECTED, FAILED)

SERVICE_BY_PLATFORM: dict[str, Service] = {"ios": "apns", "android": "fcm"}


@dataclass(frozen=True)
class PushJob:
    """One push to one device token, with the text and deep link of the journey that sends it.

    ``delivery_id`` is unique per push and goes into the payload as Customer.io's delivery id, so
    the app's delivered/opened metrics and the gateways' ledger join back to it.
    ``registered_at`` is the wall time of the token's latest registration, which a sender needs
    to decide whether a later 410 or UNREGISTERED may prune it.
    """

    delivery_id: str
    service: Service
    token: str
    title: str
    body: str
    link: str
    journey: str
    profile_id: int
    trigger_event_id: int | None
    registered_at: float
    # Local path of the link inside the payload, such as CIO.push.link; empty for the default.
    payload_path: str = ""


@dataclass(frozen=True)
class PushOutcome:
    """The final outcome of one job: ``outcome`` is accepted, rejected or failed."""

    delivery_id: str
    outcome: str
    status_code: int | None = None
    reason: str | None = None
    attempts: int = 1
    finished_at: float | None = None


@dataclass(frozen=True)
class PruneRequest:
    """A sender's decision to prune a token, applied only if the token was not registered again.

    ``registered_before`` is a wall time: the token is pruned only if its latest registration
    happened before it (the APNs 410 ``timestamp``, or the send time after FCM UNREGISTERED).
    None prunes whatever the registration time.
    """

    token: str
    reason: str
    registered_before: float | None = None


class PushListener(Protocol):
    """Receiver of a sender's reports, and source of a token's latest registration time.

    ``push_outcome`` and ``prune`` return at once and never block the sender.
    ``registered_at`` returns the wall time of the token's latest registration, or None when
    no active device has it.
    """

    def push_outcome(self, outcome: PushOutcome) -> None: ...

    def prune(self, request: PruneRequest) -> None: ...

    async def registered_at(self, token: str) -> float | None: ...


class PushSender(Protocol):
    """A sender of push jobs to APNs and FCM, started and closed by the journey engine."""

    async def start(self) -> None:
        """Open connections and start workers."""

    async def submit(self, job: PushJob) -> None:
        """Queue one job; may wait while the sender's queue is full."""

    async def close(self) -> None:
        """Stop taking jobs and report an outcome for every job already submitted."""


SenderFactory = Callable[[BackendConfig, PushListener], PushSender]


class UnconfiguredSender:
    """A sender for a backend started without gateways: every push fails at once."""

    REASON = "no gateways configured: start the backend with a gateways config file"

    def __init__(self, config: BackendConfig, listener: PushListener) -> None:
        self._config = config
        self._listener = listener
        self._warned = False

    async def start(self) -> None:
        if self._config.journeys:
            log.warning("no push sender configured: journeys will record every push as failed")

    async def submit(self, job: PushJob) -> None:
        if not self._warned:
            log.warning("push %s not sent: %s", job.delivery_id, self.REASON)
            self._warned = True
        self._listener.push_outcome(
            PushOutcome(job.delivery_id, FAILED, reason=self.REASON, finished_at=time.time())
        )

    async def close(self) -> None:
        return None
