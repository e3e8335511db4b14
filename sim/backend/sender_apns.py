"""Send pushes to APNs with aioapns and a provider token (ES256 .p8 key, key id, team id).

aioapns 4.0 opens each TLS connection to the class attribute ``APNS_SERVER`` on ``APNS_PORT``,
443 by default. ``ApnsKeyPool`` keeps those names for TLS (SNI, certificate check) and for the
``host`` header, and only replaces the TCP address it dials when one is given. So the same code
reaches Apple with real credentials, and the mock gateway when its host, port and CA are set,
without patching aioapns's classes for the whole process.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aioapns import NotificationRequest, PushType
from aioapns.connection import APNsBaseClientProtocol, APNsKeyConnectionPool
from aioapns.exceptions import ConnectionClosed, MaxAttemptsExceeded
from aioapns.exceptions import ConnectionError as ApnsConnectionError

from sim.backend.sender_jobs import PushJob, PushService
from sim.backend.sender_outcomes import (
    CONNECTION_ERROR,
    TIMEOUT,
    AttemptResult,
    classify_apns,
)
from sim.backend.sender_payloads import apns_payload

log = logging.getLogger(__name__)

# apns-priority 10 requests immediate delivery, which an alert push needs.
ALERT_PRIORITY = 10

# Namespace for apns-id values derived from job ids that are not UUIDs, because APNs rejects
# any other apns-id with BadMessageId.
APNS_ID_NAMESPACE = uuid.UUID("5d1c8f43-9b57-4c1e-8a4f-3f0d3c6a2b71")


def apns_id_for(job_id: str) -> str:
    """Return ``job_id`` if it is a UUID, else a UUID derived from it, for the apns-id header."""
    try:
        return str(uuid.UUID(job_id))
    except ValueError:
        return str(uuid.uuid5(APNS_ID_NAMESPACE, job_id))


@dataclass(frozen=True)
class ApnsSettings:
    """How to reach APNs and authenticate with a provider token.

    ``host`` and ``port`` are the TCP address to dial. None means Apple's own host (production
    or sandbox) on 443. ``ca_cert`` is a PEM file of CAs to trust instead of the system store.
    ``max_connections`` caps aioapns's pool, and ``max_connection_attempts`` is how many times
    aioapns tries to connect or re-send after a lost connection for one push.
    """

    key_path: str
    key_id: str
    team_id: str
    topic: str
    host: str | None = None
    port: int | None = None
    ca_cert: str | None = None
    use_sandbox: bool = False
    max_connections: int = 4
    max_connection_attempts: int = 3

    def ssl_context(self) -> ssl.SSLContext:
        """Return the client TLS context: the system CAs, or only ``ca_cert`` when set."""
        # aioapns offers no ALPN protocol, and neither does this context.
        if self.ca_cert:
            return ssl.create_default_context(cafile=self.ca_cert)
        return ssl.create_default_context()


class ApnsKeyPool(APNsKeyConnectionPool):
    """aioapns's provider-token connection pool, dialling ``address`` instead of Apple's host.

    TLS still names Apple's host, so the server certificate must be valid for it. pushsim's
    local CA signs one that is.
    """

    def __init__(self, *, address: tuple[str, int] | None = None, **pool_options) -> None:
        super().__init__(**pool_options)
        self.address = address

    async def _create_connection(self, apns_protocol_factory) -> APNsBaseClientProtocol:
        if self.address is None:
            return await super()._create_connection(apns_protocol_factory)

        host, port = self.address
        _, protocol = await self.loop.create_connection(
            protocol_factory=apns_protocol_factory,
            host=host,
            port=port,
            ssl=self.ssl_context,
            server_hostname=self.protocol_class.APNS_SERVER,
        )
        return protocol


class ApnsTransport:
    """One aioapns pool that sends jobs and classifies each APNs response."""

    service = PushService.APNS

    def __init__(self, settings: ApnsSettings, *, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.clock = clock
        self.pool: ApnsKeyPool | None = None

    async def start(self) -> None:
        """Create the connection pool. aioapns connects on the first send."""
        settings = self.settings
        try:
            key = Path(settings.key_path).read_text()
        except OSError as error:
            raise ValueError(
                f"cannot read the APNs signing key {settings.key_path!r}: {error.strerror}. "
                "Set key_path to the .p8 file from Apple (or pushsim's credentials directory)"
            ) from None

        address = None
        if settings.host or settings.port:
            address = (settings.host or "127.0.0.1", settings.port or 443)
        # aioapns's pool binds the running event loop when it is created, so build it here.
        self.pool = ApnsKeyPool(
            address=address,
            key=key,
            key_id=settings.key_id,
            team_id=settings.team_id,
            topic=settings.topic,
            max_connections=settings.max_connections,
            max_connection_attempts=settings.max_connection_attempts,
            use_sandbox=settings.use_sandbox,
            ssl_context=settings.ssl_context(),
        )
        target = f"{address[0]}:{address[1]}" if address else "Apple's host on 443"
        log.info(
            "APNs sender ready: %s via %s, topic %s",
            self.pool.protocol_class.APNS_SERVER,
            target,
            settings.topic,
        )

    async def send(self, job: PushJob, timeout: float) -> AttemptResult:
        """Send ``job`` once, waiting at most ``timeout`` seconds, and classify the response."""
        if self.pool is None:
            raise RuntimeError("the APNs transport is not started: call start() first")

        request = NotificationRequest(
            device_token=job.token,
            message=apns_payload(job),
            notification_id=apns_id_for(job.job_id),
            priority=ALERT_PRIORITY,
            push_type=PushType.ALERT,
        )
        sent_at = self.clock()
        try:
            # NOTE: aioapns re-sends every unanswered push when a connection drops, also without
            # a GOAWAY, so a push Apple accepted just before a reset can arrive twice.
            response = await asyncio.wait_for(self.pool.send_notification(request), timeout)
        except TimeoutError:
            return AttemptResult(None, TIMEOUT, classify_apns(None, TIMEOUT), sent_at)
        except (ApnsConnectionError, ConnectionClosed, MaxAttemptsExceeded, OSError) as error:
            detail = f"{type(error).__name__}: {error}"
            action = classify_apns(None, CONNECTION_ERROR)
            return AttemptResult(None, CONNECTION_ERROR, action, sent_at, detail=detail)

        status = int(response.status)
        reason = response.description or ""
        return AttemptResult(
            status,
            reason,
            classify_apns(status, reason),
            sent_at,
            message_id=response.notification_id if status == 200 else "",
            timestamp_ms=int(response.timestamp) if response.timestamp is not None else None,
        )

    async def reauthenticate(self) -> None:
        """Do nothing: aioapns signs a new provider token every 30 minutes by itself."""

    async def close(self) -> None:
        """Close every connection of the pool."""
        if self.pool is not None:
            self.pool.close()
            self.pool = None
