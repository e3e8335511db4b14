"""The reference backend's push sender: a bounded queue, workers, retries, pruning and metrics.

The sender takes ``PushJob`` objects and sends each to APNs or FCM through a transport. It
reports one ``SendResult`` per job to ``on_outcome`` and hands tokens the service rejects to
``on_prune``. It never reads or writes the store itself, so the journey engine decides how
results are recorded and how devices are pruned.

Example::

    sender = PushSender(SenderConfig(), apns=apns_settings, fcm=fcm_settings,
                        on_outcome=record, on_prune=prune_device)
    await sender.start()
    await sender.submit(PushJob(PushService.FCM, token, registered_at, title="Your cart"))
    await sender.close()
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from sim.backend.sender_apns import ApnsSettings, ApnsTransport
from sim.backend.sender_fcm import FcmSettings, FcmTransport
from sim.backend.sender_jobs import PushJob, PushService, SendOutcome, SendResult
from sim.backend.sender_metrics import LogLimiter, SenderMetrics
from sim.backend.sender_outcomes import (
    Action,
    AttemptResult,
    prune_after_apns_gone,
    prune_after_fcm_gone,
)
from sim.backend.sender_payloads import PayloadTooLarge
from sim.backend.sender_retry import RetryPolicy
from sim.formats.gateway_config import GatewayConfig

log = logging.getLogger(__name__)

OutcomeCallback = Callable[[SendResult], Awaitable[None] | None]
PruneCallback = Callable[[str, str], Awaitable[None] | None]
RegistrationLookup = Callable[[str], Awaitable[float | None] | float | None]


@dataclass(frozen=True)
class SenderConfig:
    """Queue, concurrency, retry and timeout settings, and the naive switches.

    ``queue_size`` bounds each service's queue. ``workers`` is the number of concurrent sends
    per service. ``attempt_timeout`` is the wall seconds one request may take.

    The naive switches reproduce real backend mistakes, and all are off by default:
    ``no_pruning_after_410`` never prunes after APNs 410 or FCM UNREGISTERED, and
    ``retry_without_backoff`` retries at once, ignoring the backoff and ``Retry-After``.
    """

    queue_size: int = 1000
    workers: int = 8
    attempt_timeout: float = 10.0
    retry: RetryPolicy = RetryPolicy()
    no_pruning_after_410: bool = False
    retry_without_backoff: bool = False

    def __post_init__(self) -> None:
        if self.queue_size < 1 or self.workers < 1:
            raise ValueError(
                f"invalid sender size (queue_size={self.queue_size!r}, "
                f"workers={self.workers!r}): use 1 or more for each"
            )
        if self.attempt_timeout <= 0:
            raise ValueError(f"invalid attempt_timeout {self.attempt_timeout!r}: use seconds > 0")


class Transport(Protocol):
    """The service-specific half of the sender: one request per call, classified."""

    service: PushService

    async def start(self) -> None: ...

    async def send(self, job: PushJob, timeout: float) -> AttemptResult: ...

    async def reauthenticate(self) -> None: ...

    async def close(self) -> None: ...


def settings_from_gateway_config(
    config: GatewayConfig | str | Path,
) -> tuple[ApnsSettings | None, FcmSettings | None]:
    """Build APNs and FCM settings from the gateways' config file, None for a missing service."""
    if not isinstance(config, GatewayConfig):
        config = GatewayConfig.read(config)
    ca_cert = config.ca_cert or None

    apns = None
    apns_port = config.apns.tls_no_alpn_port or config.apns.tls_port
    if config.apns.key_path and apns_port:
        apns = ApnsSettings(
            key_path=config.apns.key_path,
            key_id=config.apns.key_id,
            team_id=config.apns.team_id,
            topic=config.apns.topic,
            host=config.apns.host,
            port=apns_port,
            ca_cert=ca_cert,
        )

    fcm = None
    if config.fcm.service_account:
        send_url = config.fcm.send_url
        if not send_url and config.fcm.tls_port:
            send_url = (
                f"https://{config.fcm.host}:{config.fcm.tls_port}"
                f"/v1/projects/{config.fcm.project_id}/messages:send"
            )
        fcm = FcmSettings(
            service_account=config.fcm.service_account,
            project_id=config.fcm.project_id,
            send_url=send_url,
            token_uri=config.fcm.token_uri,
            ca_cert=ca_cert,
        )
    return apns, fcm


async def _call(callback: Callable, *args: object) -> object:
    result = callback(*args)
    if inspect.isawaitable(result):
        result = await result
    return result


class PushSender:
    """Send push jobs to APNs and FCM with bounded queues and ``workers`` sends per service.

    ``submit`` waits while the service's queue is full, and ``try_submit`` drops the job
    instead and reports it as not sent. ``registration_lookup(token)`` returns the wall Unix
    time in seconds at which the device last registered the token, or None when no device has
    it. Without one, the job's own ``registered_at`` is used. Callbacks may be plain functions
    or coroutines.
    """

    def __init__(
        self,
        config: SenderConfig | None = None,
        *,
        apns: ApnsSettings | None = None,
        fcm: FcmSettings | None = None,
        transports: list[Transport] | None = None,
        on_outcome: OutcomeCallback | None = None,
        on_prune: PruneCallback | None = None,
        registration_lookup: RegistrationLookup | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config or SenderConfig()
        self.metrics = SenderMetrics()
        self.on_outcome = on_outcome
        self.on_prune = on_prune
        self.registration_lookup = registration_lookup
        self.rng = rng or random.Random()

        self.transports: dict[PushService, Transport] = {}
        if apns is not None:
            self.transports[PushService.APNS] = ApnsTransport(apns)
        if fcm is not None:
            self.transports[PushService.FCM] = FcmTransport(fcm)
        for transport in transports or []:
            self.transports[transport.service] = transport

        self._queues: dict[PushService, asyncio.Queue[PushJob]] = {}
        self._workers: list[asyncio.Task] = []
        self._background: set[asyncio.Task] = set()
        self._in_flight: dict[PushService, int] = {}
        self._started = False
        self._closed = False
        self._log = LogLimiter(log)

    async def start(self) -> None:
        """Start the transports and the workers."""
        if self._started:
            raise RuntimeError("the push sender is already started")
        if not self.transports:
            raise ValueError("no push service configured: pass apns=, fcm= or transports=")
        self._started = True

        for service, transport in self.transports.items():
            await transport.start()
            self._queues[service] = asyncio.Queue(self.config.queue_size)
            self._in_flight[service] = 0
            self._update_gauges(service)
            for number in range(self.config.workers):
                name = f"push-sender-{service}-{number}"
                self._workers.append(asyncio.create_task(self._work(service), name=name))
        log.info(
            "push sender started: %s, %d workers and a queue of %d per service",
            ", ".join(sorted(self.transports)),
            self.config.workers,
            self.config.queue_size,
        )

    async def __aenter__(self) -> PushSender:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _queue_for(self, job: PushJob) -> asyncio.Queue[PushJob]:
        if not self._started or self._closed:
            state = "closed" if self._closed else "not started"
            raise RuntimeError(f"cannot queue job {job.job_id}: the push sender is {state}")
        queue = self._queues.get(job.service)
        if queue is None:
            raise ValueError(
                f"cannot queue job {job.job_id}: no {job.service} settings were given to the "
                f"push sender"
            )
        return queue

    async def submit(self, job: PushJob) -> None:
        """Queue ``job``, waiting while its service's queue is full."""
        queue = self._queue_for(job)
        await queue.put(job)
        self._update_gauges(job.service)

    def try_submit(self, job: PushJob) -> bool:
        """Queue ``job`` and return True, or count and report a drop if the queue is full."""
        queue = self._queue_for(job)
        try:
            queue.put_nowait(job)
        except asyncio.QueueFull:
            self.metrics.inc("drops_total", service=job.service)
            self._log.log(
                logging.WARNING,
                f"drop-{job.service}",
                "dropped job %s for %s token %s: the queue of %d is full",
                job.job_id,
                job.service,
                job.token_prefix,
                self.config.queue_size,
            )
            result = SendResult(job, SendOutcome.NOT_SENT, reason="queue_full")
            task = asyncio.create_task(self._report(result))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            return False
        self._update_gauges(job.service)
        return True

    async def close(self, *, drain: bool = True, timeout: float | None = None) -> None:
        """Stop taking jobs, finish the sends in flight, and close the transports.

        With ``drain`` the queued jobs are sent first. Without it they are reported as not
        sent. After ``timeout`` seconds the remaining sends are cancelled and reported as failed.
        """
        if self._closed or not self._started:
            self._closed = True
            return
        self._closed = True

        if not drain:
            for service, queue in self._queues.items():
                while not queue.empty():
                    job = queue.get_nowait()
                    await self._report(SendResult(job, SendOutcome.NOT_SENT, reason="shutdown"))
                    queue.task_done()
                self._update_gauges(service)

        joins = asyncio.gather(*(queue.join() for queue in self._queues.values()))
        try:
            await asyncio.wait_for(joins, timeout)
        except TimeoutError:
            log.warning("push sender cancels the sends still running after %s s", timeout)

        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        for transport in self.transports.values():
            await transport.close()
        log.info(
            "push sender stopped: %d jobs finished, %d dropped",
            self.metrics.value("sends_total"),
            self.metrics.value("drops_total"),
        )

    def _update_gauges(self, service: PushService) -> None:
        queue = self._queues.get(service)
        self.metrics.set("queue_depth", queue.qsize() if queue else 0, service=service)
        self.metrics.set("in_flight", self._in_flight.get(service, 0), service=service)

    async def _work(self, service: PushService) -> None:
        queue = self._queues[service]
        while True:
            job = await queue.get()
            self._in_flight[service] += 1
            self._update_gauges(service)
            try:
                try:
                    result = await self._process(job)
                except asyncio.CancelledError:
                    await self._report(SendResult(job, SendOutcome.FAILED, reason="shutdown"))
                    raise
                except Exception as error:
                    # A bug in a transport costs this job, never the worker.
                    log.exception(
                        "job %s for token %s failed: %s", job.job_id, job.token_prefix, error
                    )
                    result = SendResult(job, SendOutcome.FAILED, reason="internal_error")
                await self._report(result)
            finally:
                self._in_flight[service] -= 1
                queue.task_done()
                self._update_gauges(service)

    async def _process(self, job: PushJob) -> SendResult:
        transport = self.transports[job.service]
        policy = self.config.retry
        started = time.monotonic()
        attempts = 0

        while True:
            attempts += 1
            try:
                attempt = await transport.send(job, self.config.attempt_timeout)
            except PayloadTooLarge as error:
                self._log.log(logging.WARNING, "payload-too-large", "%s", error)
                return SendResult(job, SendOutcome.NOT_SENT, reason="payload_too_large")
            status_label = attempt.status if attempt.status is not None else attempt.reason
            self.metrics.inc("attempts_total", service=job.service, status=status_label)
            elapsed = time.monotonic() - started

            if attempt.action not in (Action.RETRY, Action.REAUTHENTICATE):
                return await self._finish(job, attempt, attempts, elapsed)

            delay = self._retry_delay(attempt, attempts)
            if attempts >= policy.max_attempts or elapsed + delay > policy.max_elapsed:
                self._log.log(
                    logging.WARNING,
                    f"give-up-{job.service}-{attempt.reason}",
                    "giving up on job %s for %s token %s after %d attempts in %.1f s: "
                    "last answer %s %s %s",
                    job.job_id,
                    job.service,
                    job.token_prefix,
                    attempts,
                    elapsed,
                    attempt.status,
                    attempt.reason,
                    attempt.detail,
                )
                return self._result(job, SendOutcome.FAILED, attempt, attempts, elapsed)

            self.metrics.inc("retries_total", service=job.service, reason=attempt.reason)
            self._log.log(
                logging.INFO,
                f"retry-{job.service}-{attempt.reason}",
                "retrying job %s for %s token %s in %.2f s after %s %s (attempt %d) %s",
                job.job_id,
                job.service,
                job.token_prefix,
                delay,
                attempt.status,
                attempt.reason,
                attempts,
                attempt.detail,
            )
            if attempt.action is Action.REAUTHENTICATE:
                await transport.reauthenticate()
            await asyncio.sleep(delay)

    def _retry_delay(self, attempt: AttemptResult, attempts: int) -> float:
        """Return the wait in seconds before the next attempt of a job."""
        if self.config.retry_without_backoff:
            return 0.0
        # A fresh access token fixes a rejected one, so there is nothing to wait for, once.
        if attempt.action is Action.REAUTHENTICATE and attempts == 1:
            return 0.0
        backoff = self.config.retry.backoff(attempts, self.rng)
        if attempt.retry_after is not None:
            return max(attempt.retry_after, backoff)
        return backoff

    async def _finish(
        self, job: PushJob, attempt: AttemptResult, attempts: int, elapsed: float
    ) -> SendResult:
        if attempt.action is Action.DELIVER:
            return self._result(job, SendOutcome.DELIVERED, attempt, attempts, elapsed)

        if attempt.action is Action.PRUNE:
            await self._prune(job, attempt.reason)
            return self._result(job, SendOutcome.PRUNED, attempt, attempts, elapsed)

        if attempt.action is Action.GONE:
            keep_reason = await self._keep_reason(job, attempt)
            if keep_reason is None:
                await self._prune(job, attempt.reason)
                return self._result(job, SendOutcome.PRUNED, attempt, attempts, elapsed)
            self.metrics.inc("kept_total", service=job.service, why=keep_reason)
            return self._result(job, SendOutcome.KEPT, attempt, attempts, elapsed)

        self._log.log(
            logging.WARNING,
            f"failed-{job.service}-{attempt.reason}",
            "job %s for %s token %s failed: %s %s %s",
            job.job_id,
            job.service,
            job.token_prefix,
            attempt.status,
            attempt.reason,
            attempt.detail,
        )
        return self._result(job, SendOutcome.FAILED, attempt, attempts, elapsed)

    async def _keep_reason(self, job: PushJob, attempt: AttemptResult) -> str | None:
        """Return why a gone token is kept, or None to prune it."""
        if self.config.no_pruning_after_410:
            return "pruning_disabled"

        registered_at: float | None = job.registered_at
        if self.registration_lookup is not None:
            try:
                registered_at = await _call(self.registration_lookup, job.token)
            except Exception as error:
                self.metrics.inc("callback_errors_total", callback="registration_lookup")
                log.exception(
                    "registration lookup failed for job %s, token %s: %s. Using the job's "
                    "registration time instead",
                    job.job_id,
                    job.token_prefix,
                    error,
                )
                registered_at = job.registered_at

        if registered_at is None:
            return "no_device"
        if job.service is PushService.APNS:
            prune = prune_after_apns_gone(registered_at, attempt.timestamp_ms)
        else:
            prune = prune_after_fcm_gone(registered_at, attempt.sent_at)
        return None if prune else "registered_again"

    async def _prune(self, job: PushJob, reason: str) -> None:
        self.metrics.inc("prunes_total", service=job.service, reason=reason)
        if self.on_prune is None:
            return
        try:
            await _call(self.on_prune, job.token, reason)
        except Exception as error:
            self.metrics.inc("callback_errors_total", callback="on_prune")
            log.exception(
                "on_prune failed for job %s, token %s (%s): %s",
                job.job_id,
                job.token_prefix,
                reason,
                error,
            )

    def _result(
        self,
        job: PushJob,
        outcome: SendOutcome,
        attempt: AttemptResult,
        attempts: int,
        elapsed: float,
    ) -> SendResult:
        return SendResult(
            job,
            outcome,
            reason=attempt.reason,
            status=attempt.status,
            message_id=attempt.message_id,
            timestamp_ms=attempt.timestamp_ms,
            attempts=attempts,
            sent_at=attempt.sent_at,
            elapsed=elapsed,
        )

    async def _report(self, result: SendResult) -> None:
        self.metrics.inc(
            "sends_total",
            service=result.job.service,
            outcome=result.outcome,
            reason=result.reason,
        )
        if self.on_outcome is None:
            return
        try:
            await _call(self.on_outcome, result)
        except Exception as error:
            self.metrics.inc("callback_errors_total", callback="on_outcome")
            log.exception(
                "on_outcome failed for job %s, token %s: %s",
                result.job.job_id,
                result.job.token_prefix,
                error,
            )
