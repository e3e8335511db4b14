"""The fault timeline: scripted latency, errors, brown-outs, quotas, GOAWAYs and stream limits.

Faults come from the scenario's ``gateways.faults`` or arrive live over the control API. Their
``start`` and ``duration`` are simulated seconds from the run's start (the epoch's ``sim_t0``), so
each window is converted to wall time with the run's epoch. Latency is wall time and never scaled.
Every random draw comes from one seeded generator, so the same seed and the same push order give
the same faults.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy

from sim.gateways.hooks import NO_FAULT, FaultAction, PushRequest, Service
from sim.gateways.run import RunConfig, RunState
from sim.scenario.schema import Fault

# Documented status of each reason a fault may return, per service. APNs reasons are Apple's
# "reason" strings; FCM reasons are Google's error codes.
REASON_STATUS: dict[Service, dict[str, int]] = {
    Service.APNS: {
        "BadCollapseId": 400, "BadDeviceToken": 400, "BadExpirationDate": 400,
        "BadMessageId": 400, "BadPriority": 400, "BadTopic": 400,
        "DeviceTokenNotForTopic": 400, "DuplicateHeaders": 400, "IdleTimeout": 400,
        "InvalidPushType": 400, "MissingDeviceToken": 400, "MissingTopic": 400,
        "PayloadEmpty": 400, "TopicDisallowed": 400, "BadCertificate": 403,
        "BadCertificateEnvironment": 403, "ExpiredProviderToken": 403, "Forbidden": 403,
        "InvalidProviderToken": 403, "MissingProviderToken": 403, "BadPath": 404,
        "MethodNotAllowed": 405, "ExpiredToken": 410, "Unregistered": 410,
        "PayloadTooLarge": 413, "TooManyProviderTokenUpdates": 429, "TooManyRequests": 429,
        "InternalServerError": 500, "ServiceUnavailable": 503, "Shutdown": 503,
    },
    Service.FCM: {
        "INVALID_ARGUMENT": 400, "THIRD_PARTY_AUTH_ERROR": 401, "SENDER_ID_MISMATCH": 403,
        "UNREGISTERED": 404, "QUOTA_EXCEEDED": 429, "INTERNAL": 500, "UNAVAILABLE": 503,
    },
}  # fmt: skip

# The reason each service returns for a bare status, also used when a fault names a reason of the
# other service.
DEFAULT_REASON: dict[Service, dict[int, str]] = {
    Service.APNS: {
        400: "BadDeviceToken", 403: "Forbidden", 404: "BadPath", 405: "MethodNotAllowed",
        410: "Unregistered", 413: "PayloadTooLarge", 429: "TooManyRequests",
        500: "InternalServerError", 503: "ServiceUnavailable",
    },
    Service.FCM: {
        400: "INVALID_ARGUMENT", 401: "THIRD_PARTY_AUTH_ERROR", 403: "SENDER_ID_MISMATCH",
        404: "UNREGISTERED", 429: "QUOTA_EXCEEDED", 500: "INTERNAL", 503: "UNAVAILABLE",
    },
}  # fmt: skip

QUOTA_WINDOW = 60.0  # wall seconds: FCM's quota is per rolling minute


def resolve_reason(service: Service, reason: str) -> tuple[int, str]:
    """Return ``(status, reason)`` that ``service`` sends for a fault's reason or bare status.

    A reason of the other service maps through its status, so one ``both`` fault with
    ServiceUnavailable makes FCM return UNAVAILABLE. Raises ValueError naming the allowed values.
    """
    table = REASON_STATUS[service]
    if reason in table:
        return table[reason], reason

    status = None
    if reason.isdigit():
        status = int(reason)
    else:
        for other in Service:
            status = REASON_STATUS[other].get(reason, status)
    if status is not None and status in DEFAULT_REASON[service]:
        return status, DEFAULT_REASON[service][status]

    allowed = ", ".join(sorted(table))
    statuses = ", ".join(str(code) for code in sorted(DEFAULT_REASON[service]))
    raise ValueError(
        f"invalid reason {reason!r} for {service.value}: use one of {allowed}, "
        f"or a status among {statuses}"
    )


@dataclass(frozen=True)
class ConnectionDirectives:
    """Connection-level orders of the active faults, which a wire server polls.

    ``goaway_rate`` is GOAWAYs per connection per wall second; ``max_streams`` is the
    SETTINGS_MAX_CONCURRENT_STREAMS to announce, or None for the server's own default.
    """

    goaway_rate: float = 0.0
    max_streams: int | None = None


NO_DIRECTIVES = ConnectionDirectives()


class SlidingWindowCounter:
    """Count events over a rolling window whose edges start at ``origin``, not at clock minutes.

    It keeps the current and the previous window's count and weighs the previous one by the share
    still inside the rolling window, which is the usual sliding-window estimate in O(1) memory.
    """

    def __init__(self, window: float, origin: float) -> None:
        self.window = window
        self.origin = origin
        self._index = 0
        self._previous = 0
        self._current = 0

    def estimate(self, now: float) -> float:
        """Return the estimated count in the window ending at wall time ``now``."""
        position = (now - self.origin) / self.window
        index = math.floor(position)
        if index < self._index:
            # A push received slightly out of order counts in the newest window.
            index, position = self._index, float(self._index)
        if index == self._index + 1:
            self._index, self._previous, self._current = index, self._current, 0
        elif index > self._index + 1:
            self._index, self._previous, self._current = index, 0, 0
        return self._previous * (1.0 - (position - index)) + self._current

    def add(self) -> None:
        self._current += 1

    def seconds_to_next_window(self, now: float) -> float:
        return self.window - ((now - self.origin) % self.window)


@dataclass
class _Window:
    """One fault converted to wall time for one run: active on ``[start, end)``."""

    fault: Fault
    services: tuple[Service, ...]
    start: float
    end: float
    # Per service (status, reason) for errors and brown-outs.
    answers: dict[Service, tuple[int, str]]
    quota: SlidingWindowCounter | None = None

    def covers(self, service: Service, now: float) -> bool:
        return service in self.services and self.start <= now < self.end


def _services(fault: Fault) -> tuple[Service, ...]:
    if fault.service == "both":
        return (Service.APNS, Service.FCM)
    return (Service(fault.service),)


def _answers(fault: Fault, services: Iterable[Service]) -> dict[Service, tuple[int, str]]:
    if fault.kind == "brownout":
        return {service: (503, DEFAULT_REASON[service][503]) for service in services}
    if fault.kind == "errors":
        return {service: resolve_reason(service, fault.reason) for service in services}
    return {}


def check_faults(faults: Iterable[Fault]) -> None:
    """Raise ValueError for the first fault the timeline cannot run, naming its index and fix."""
    for index, fault in enumerate(faults):
        try:
            _answers(fault, _services(fault))
        except ValueError as error:
            raise ValueError(f"faults[{index}]: {error}") from None
        if fault.kind in ("quota", "stream_limit") and fault.limit < 1:
            raise ValueError(f"faults[{index}]: a {fault.kind} fault needs a limit of at least 1")


class FaultTimeline:
    """Fault policy that returns the scripted timeline's action at each push's received time.

    ``action`` does no I/O and never sleeps: a delay is returned for the server to await.
    Connection faults are not per push, so servers poll ``connection_directives`` instead.
    """

    def __init__(
        self,
        run: RunState,
        faults: Iterable[Fault] = (),
        *,
        seed: int = 0,
        on_action: Callable[[Service, str], None] | None = None,
    ) -> None:
        self.run = run
        self._faults = list(faults)
        check_faults(self._faults)
        self._rng = numpy.random.default_rng(numpy.random.SeedSequence([seed, 0xFA017]))
        self._lock = threading.Lock()
        self._windows: list[_Window] = []
        self._on_action = on_action
        run.subscribe(self._compile)
        if run.config is not None:
            self._compile(run.config)

    @property
    def faults(self) -> list[Fault]:
        return list(self._faults)

    def replace(self, faults: Iterable[Fault]) -> None:
        """Replace every fault with ``faults``, raising ValueError before changing anything."""
        faults = list(faults)
        check_faults(faults)
        with self._lock:
            self._faults = faults
        if self.run.config is not None:
            self._compile(self.run.config)

    def add(self, faults: Iterable[Fault]) -> None:
        """Add ``faults`` to the timeline, raising ValueError before changing anything."""
        faults = list(faults)
        check_faults(faults)
        with self._lock:
            self._faults = self._faults + faults
        if self.run.config is not None:
            self._compile(self.run.config)

    def _compile(self, config: RunConfig) -> None:
        epoch = config.epoch
        windows = []
        for fault in self._faults:
            services = _services(fault)
            start = epoch.wall_at(epoch.sim_t0 + fault.start)
            end = start + epoch.wall_duration(fault.duration)
            quota = SlidingWindowCounter(QUOTA_WINDOW, start) if fault.kind == "quota" else None
            windows.append(_Window(fault, services, start, end, _answers(fault, services), quota))
        with self._lock:
            self._windows = windows

    def active(self, service: Service, now: float) -> list[Fault]:
        """Return the faults that hit ``service`` at wall time ``now``."""
        return [window.fault for window in self._windows if window.covers(service, now)]

    def action(self, request: PushRequest) -> FaultAction:
        """Return the fault to apply to ``request``, or ``NO_FAULT`` when there is none."""
        service, now = request.service, request.received_at
        windows = [window for window in self._windows if window.covers(service, now)]
        if not windows:
            return NO_FAULT

        with self._lock:
            delay = 0.0
            for window in windows:
                if window.fault.kind == "latency":
                    latency = window.fault.latency
                    delay += float(self._rng.lognormal(math.log(latency.median), latency.sigma))
            rejection = self._rejection(windows, service, now)

        if rejection is not None:
            kind, status, reason, retry_after = rejection
            self._report(service, kind)
            return FaultAction(delay, status, reason, retry_after, fault=kind)
        if delay > 0:
            self._report(service, "latency")
            return FaultAction(delay=delay, fault="latency")
        return NO_FAULT

    def _rejection(
        self, windows: list[_Window], service: Service, now: float
    ) -> tuple[str, int, str, int | None] | None:
        # A brown-out rejects everything, a quota rejects what is over it, and error rates draw
        # last, so each push is charged to one cause.
        brownouts = [window for window in windows if window.fault.kind == "brownout"]
        if brownouts:
            # Overlapping brown-outs keep the service down until the last one ends.
            last = max(brownouts, key=lambda window: window.end)
            status, reason = last.answers[service]
            return "brownout", status, reason, max(1, math.ceil(last.end - now))

        for window in windows:
            if window.quota is None:
                continue
            if window.quota.estimate(now) >= window.fault.limit:
                retry_after = max(1, math.ceil(window.quota.seconds_to_next_window(now)))
                return "quota", 429, DEFAULT_REASON[service][429], retry_after
            window.quota.add()

        for window in windows:
            if window.fault.kind == "errors" and self._rng.random() < window.fault.rate:
                status, reason = window.answers[service]
                return "errors", status, reason, None
        return None

    def _report(self, service: Service, kind: str) -> None:
        if self._on_action is not None:
            self._on_action(service, kind)

    def connection_directives(self, service: Service, now: float) -> ConnectionDirectives:
        """Return the GOAWAY rate and stream limit that apply to ``service`` at wall ``now``.

        Overlapping GOAWAY faults add their rates, and the lowest stream limit wins.
        """
        goaway_rate = 0.0
        max_streams = None
        for window in self._windows:
            if not window.covers(service, now):
                continue
            if window.fault.kind == "goaway":
                goaway_rate += window.fault.rate
            elif window.fault.kind == "stream_limit":
                limit = window.fault.limit
                max_streams = limit if max_streams is None else min(max_streams, limit)
        if goaway_rate == 0.0 and max_streams is None:
            return NO_DIRECTIVES
        return ConnectionDirectives(goaway_rate, max_streams)

    def goaway_due(self, service: Service, now: float, interval: float) -> bool:
        """Draw whether one connection should send GOAWAY in the last ``interval`` wall seconds.

        A server polling each connection every ``interval`` seconds gets GOAWAYs as a Poisson
        process at the fault's rate.
        """
        rate = self.connection_directives(service, now).goaway_rate
        if rate <= 0.0:
            return False
        with self._lock:
            due = self._rng.random() < -math.expm1(-rate * interval)
        if due:
            self._report(service, "goaway")
        return due
