"""Connect the journey engine to the APNs/FCM ``PushSender`` and through it to the gateways.

``GatewaySender`` implements the engine's sender protocol (``sim.backend.push``) on top of
``sim.backend.sender.PushSender``: it converts jobs, maps each ``SendResult`` to a
``PushOutcome``, and forwards the sender's prune decisions to the engine, which applies them.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

from sim.backend import push
from sim.backend.config import BackendConfig
from sim.backend.push import PruneRequest, PushListener, PushOutcome, SenderFactory
from sim.backend.sender import PushSender, SenderConfig, settings_from_gateway_config
from sim.backend.sender_apns import ApnsSettings
from sim.backend.sender_fcm import FcmSettings
from sim.backend.sender_jobs import PushJob, PushService, SendOutcome, SendResult
from sim.formats.gateway_config import GatewayConfig

log = logging.getLogger(__name__)

# A gone token (pruned, or kept because it was registered again) is a rejected push, and a push
# the sender never got through, or dropped, is a failed one.
OUTCOME_OF = {
    SendOutcome.DELIVERED: push.ACCEPTED,
    SendOutcome.PRUNED: push.REJECTED,
    SendOutcome.KEPT: push.REJECTED,
    SendOutcome.FAILED: push.FAILED,
    SendOutcome.NOT_SENT: push.FAILED,
}

# Wall seconds that a stop lets the sender finish its queue before it cancels the sends left;
# every cancelled send is still reported as failed.
DRAIN_TIMEOUT_SECONDS = 10.0


class GatewaySender:
    """The engine's push sender, backed by ``PushSender`` with the backend's naive switches."""

    def __init__(
        self,
        config: BackendConfig,
        listener: PushListener,
        *,
        apns: ApnsSettings | None,
        fcm: FcmSettings | None,
        sender_config: SenderConfig | None = None,
    ) -> None:
        base = sender_config or SenderConfig()
        sender_config = SenderConfig(
            queue_size=base.queue_size,
            workers=base.workers,
            attempt_timeout=base.attempt_timeout,
            retry=base.retry,
            no_pruning_after_410=config.no_pruning_after_410,
            retry_without_backoff=config.retry_without_backoff,
        )
        if apns is not None and config.apns_sandbox_host:
            apns = dataclasses.replace(apns, use_sandbox=True)
        self._listener = listener
        self._services = {
            service for service, settings in (("apns", apns), ("fcm", fcm)) if settings
        }
        self.sender = PushSender(
            sender_config,
            apns=apns,
            fcm=fcm,
            on_outcome=self._report,
            on_prune=self._prune,
            registration_lookup=listener.registered_at,
        )

    def render_metrics(self) -> str:
        """Return the sender's counters in the Prometheus text format, for ``/metrics``."""
        return self.sender.metrics.render_prometheus()

    async def start(self) -> None:
        if not self._services:
            log.warning("the gateways config names neither APNs nor FCM: every push will fail")
            return
        await self.sender.start()

    async def submit(self, job: push.PushJob) -> None:
        if job.service not in self._services:
            reason = f"no {job.service} gateway in the gateways config"
            self._listener.push_outcome(
                PushOutcome(job.delivery_id, push.FAILED, reason=reason, finished_at=time.time())
            )
            return
        # NOTE: job.payload_path is not applied. The sender always puts the link where
        # Customer.io does (CIO.push.link, message.data.link), which is what an empty
        # payload_path means to the oracle.
        await self.sender.submit(
            PushJob(
                service=PushService(job.service),
                token=job.token,
                registered_at=job.registered_at,
                title=job.title,
                body=job.body,
                link=job.link,
                delivery_id=job.delivery_id,
                # NOTE: the delivery token is taken to be the device token the push went to, which
                # is what the app reports its metrics with; Customer.io's own value is not public.
                delivery_token=job.token,
            )
        )

    async def close(self) -> None:
        if self._services:
            await self.sender.close(drain=True, timeout=DRAIN_TIMEOUT_SECONDS)

    def _report(self, result: SendResult) -> None:
        self._listener.push_outcome(
            PushOutcome(
                delivery_id=result.job.delivery_id,
                outcome=OUTCOME_OF[result.outcome],
                status_code=result.status,
                reason=result.reason or None,
                attempts=result.attempts,
                finished_at=result.sent_at,
            )
        )

    def _prune(self, token: str, reason: str) -> None:
        # The sender already applied the registration-time rules, so the engine prunes at once.
        self._listener.prune(PruneRequest(token, reason))


def gateway_sender_factory(
    *,
    apns: ApnsSettings | None = None,
    fcm: FcmSettings | None = None,
    sender_config: SenderConfig | None = None,
) -> SenderFactory:
    """Return a sender factory for ``create_app`` that sends to the given APNs and FCM."""

    def make(config: BackendConfig, listener: PushListener) -> GatewaySender:
        return GatewaySender(config, listener, apns=apns, fcm=fcm, sender_config=sender_config)

    return make


def sender_factory_from_file(path: str | Path) -> SenderFactory:
    """Return a sender factory configured from the gateways' config file at ``path``."""
    apns, fcm = settings_from_gateway_config(GatewayConfig.read(path))
    return gateway_sender_factory(apns=apns, fcm=fcm)
