"""The token registry: what Apple and Google know about each device token of a run.

Issued tokens are recognised by their MAC under the run key, so the model reports nothing when it
issues one. Only invalidations are reported: the token, why it died, the simulated moment it
died, and the simulated moment the service starts reporting it gone. Until that second moment a
dead token gets ALIVE, because a real service keeps accepting pushes for a while after an
uninstall.
"""

from __future__ import annotations

import heapq
import logging
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache

from sim.formats.epoch import Epoch
from sim.formats.tokens import TokenInfo, parse_token
from sim.gateways.hooks import ALIVE, PushRequest, Service, TokenState, TokenVerdict
from sim.gateways.logs import RepeatLimiter
from sim.gateways.run import RunConfig, RunState

log = logging.getLogger(__name__)

REASONS = ("rotation", "reinstall", "restore", "uninstall")
PLATFORM_OF_SERVICE = {Service.APNS: "ios", Service.FCM: "android"}

UNKNOWN = TokenVerdict(TokenState.UNKNOWN)
WRONG_AUDIENCE = TokenVerdict(TokenState.WRONG_AUDIENCE)
WRONG_ENVIRONMENT = TokenVerdict(TokenState.WRONG_ENVIRONMENT)
THROTTLED = TokenVerdict(TokenState.THROTTLED)
# The clock of open mode with no run posted: simulated Unix time is wall Unix time.
WALL_CLOCK = Epoch(wall_t0=0.0, sim_t0=0.0, time_scale=1.0)


# About 400 bytes per entry for an FCM token, so the cache stays near 6 MiB at most.
@lru_cache(maxsize=16384)
def locate_token(run_key: bytes, token: str) -> TokenInfo | None:
    """Return what an issued token carries, caching the MAC check for tokens pushed often."""
    return parse_token(run_key, token)


@dataclass(frozen=True)
class Invalidation:
    """A reported token death. Times are simulated Unix seconds."""

    token: str
    reason: str
    died_at: float
    reported_at: float

    def __post_init__(self) -> None:
        if self.reason not in REASONS:
            raise ValueError(f"invalid reason {self.reason!r}: use one of {', '.join(REASONS)}")
        for name in ("died_at", "reported_at"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"invalid {name} {value!r}: send simulated Unix seconds")
        if self.reported_at < self.died_at:
            raise ValueError(
                f"invalid reported_at {self.reported_at}: it must not be before died_at "
                f"{self.died_at}, because a service reports a token gone only after it died"
            )


class DeviceThrottle:
    """Per-token push limit over a sliding wall-time window, in bounded memory.

    Each token keeps two counters, the current window and the one before it. The estimate weighs
    the previous window by the part of it still inside the sliding window. Tokens not pushed for
    two windows are forgotten, and at most ``max_tokens`` are tracked (least recently pushed
    dropped first), so memory follows the tokens active now, not the run's history. Tokens are
    keyed by their in-process hash, which keeps an entry near 200 bytes (CPython 3.11 estimate)
    however long an FCM token is.
    """

    def __init__(self, limit: int, window: float, max_tokens: int = 100_000) -> None:
        if limit < 0 or window <= 0:
            raise ValueError(
                f"invalid throttle limit {limit} per {window} s: use limit >= 0 (0 turns it off) "
                "and a window above 0 wall seconds"
            )
        self.limit = limit
        self.window = window
        self.max_tokens = max_tokens
        self._entries: OrderedDict[int, list[float]] = OrderedDict()
        self._lock = threading.Lock()

    def over_limit(self, token: str, now: float) -> bool:
        """Count one push to ``token`` at wall time ``now``, or return True when it is over."""
        if self.limit == 0:
            return False
        key = hash(token)
        position = now / self.window
        index = math.floor(position)

        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                entry = [index, 0, 0]
                self._entries[key] = entry
            elif index < entry[0]:
                # Pushes from several connections can arrive slightly out of order. Count a late
                # one in the newest window rather than weigh a window that already passed.
                index, position = entry[0], float(entry[0])
            elif index == entry[0] + 1:
                entry[0], entry[1], entry[2] = index, entry[2], 0
            elif index > entry[0] + 1:
                entry[0], entry[1], entry[2] = index, 0, 0
            self._entries.move_to_end(key)

            estimate = entry[1] * (1.0 - (position - index)) + entry[2]
            if estimate >= self.limit:
                return True
            entry[2] += 1

            self._forget(index)
            return False

    def _forget(self, index: int) -> None:
        # The dict is ordered by last push, so stale tokens sit at the front.
        entries = self._entries
        while entries:
            key, oldest = next(iter(entries.items()))
            if oldest[0] >= index - 1 and len(entries) <= self.max_tokens:
                break
            del entries[key]

    def active(self) -> int:
        """Return how many tokens were pushed within the last two windows (approximately)."""
        return len(self._entries)


class TokenRegistry:
    """Token policy of registry mode (issued tokens) and open mode (any well-formed token).

    ``check`` runs on a wire server's event loop and does no I/O: it checks a MAC (cached per
    token), reads dicts and converts times with the run's epoch.
    """

    def __init__(
        self,
        run: RunState,
        *,
        throttle_limit: int = 0,
        throttle_window: float = 60.0,
        max_throttle_tokens: int = 100_000,
        default_mode: str = "registry",
        default_topic: str = "",
        default_project: str = "",
    ) -> None:
        self.run = run
        # Open mode must work for a team that never posts a run, so it needs no run key.
        self.default_mode = default_mode
        self.default_topic = default_topic
        self.default_project = default_project
        self.throttle = DeviceThrottle(throttle_limit, throttle_window, max_throttle_tokens)
        self._invalidations: dict[str, Invalidation] = {}
        # Reported moments not yet passed, as (reported_at, token), to count dead tokens cheaply.
        self._pending: list[tuple[float, str]] = []
        self._dead = 0
        self._lock = threading.Lock()
        self._repeats = RepeatLimiter(log)

    def set_throttle(self, limit: int, window: float) -> None:
        """Replace the per-token limit, forgetting the counts so far; raises ValueError."""
        self.throttle = DeviceThrottle(limit, window, self.throttle.max_tokens)

    def for_service(self, service: Service) -> ServiceTokenPolicy:
        """Return the token policy a wire server of ``service`` is constructed with."""
        return ServiceTokenPolicy(self, service)

    def report(self, invalidations: list[Invalidation]) -> None:
        """Store a batch of invalidations; a later report for the same token replaces it."""
        with self._lock:
            for invalidation in invalidations:
                previous = self._invalidations.get(invalidation.token)
                self._invalidations[invalidation.token] = invalidation
                # A repeated report with the same moment must not be counted dead twice.
                if previous is None or previous.reported_at != invalidation.reported_at:
                    heapq.heappush(self._pending, (invalidation.reported_at, invalidation.token))

    def invalidation(self, token: str) -> Invalidation | None:
        return self._invalidations.get(token)

    def check(self, request: PushRequest) -> TokenVerdict:
        """Return what the push service knows about ``request.token`` at ``request.received_at``."""
        config = self.run.config
        if config is None and self.default_mode == "open":
            expected = (
                self.default_topic if request.service is Service.APNS else self.default_project
            )
            if expected and request.audience != expected:
                return WRONG_AUDIENCE
            verdict = self._invalidated(request, WALL_CLOCK)
        elif config is None:
            self._repeats.log(
                logging.WARNING,
                "no-run",
                "push %s on connection %s arrived before the run was posted to "
                "/control/run: answering UNKNOWN",
                request.message_id,
                request.connection_id,
            )
            return UNKNOWN
        else:
            verdict = self._verdict(config, request)

        if verdict.state is TokenState.ALIVE and self.throttle.over_limit(
            request.token, request.received_at
        ):
            return THROTTLED
        return verdict

    def _verdict(self, config: RunConfig, request: PushRequest) -> TokenVerdict:
        expected = config.audience(request.service)
        audience_ok = not expected or request.audience == expected
        if config.mode == "open":
            if not audience_ok:
                return WRONG_AUDIENCE
            return self._invalidated(request, config.epoch)

        info = locate_token(config.run_key, request.token)
        if info is None or info.platform != PLATFORM_OF_SERVICE[request.service]:
            return UNKNOWN
        if not audience_ok:
            return WRONG_AUDIENCE
        # A development build's token works only with the sandbox, and a store build's only
        # with production, so APNs rejects a token sent to the other environment's host.
        if request.environment is not None and request.environment != info.environment:
            return WRONG_ENVIRONMENT
        return self._invalidated(request, config.epoch)

    def _invalidated(self, request: PushRequest, epoch: Epoch) -> TokenVerdict:
        """Return DEAD once the token's invalidation has been reported, else ALIVE."""
        invalidation = self._invalidations.get(request.token)
        if invalidation is None:
            return ALIVE
        if epoch.sim_at(request.received_at) < invalidation.reported_at:
            return ALIVE
        died_at_ms = round(epoch.wall_at(invalidation.died_at) * 1000)
        return TokenVerdict(TokenState.DEAD, died_at_ms=died_at_ms)

    def counts(self, now: float) -> dict[str, int]:
        """Return token counts at wall time ``now``: dead (reported), dying (not yet reported),
        and with the throttle on, active (pushed within about two throttle windows)."""
        config = self.run.config
        with self._lock:
            if config is not None:
                sim_now = config.epoch.sim_at(now)
                while self._pending and self._pending[0][0] <= sim_now:
                    reported_at, token = heapq.heappop(self._pending)
                    current = self._invalidations.get(token)
                    # A replaced report leaves a stale heap entry behind. Count only the live one.
                    if current is not None and current.reported_at == reported_at:
                        self._dead += 1
            dead = self._dead
            total = len(self._invalidations)
        counts = {"dead": dead, "dying": total - dead}
        if self.throttle.limit > 0:
            counts["active"] = self.throttle.active()
        return counts


class ServiceTokenPolicy:
    """The registry seen from one wire server: a TokenPolicy bound to its service."""

    def __init__(self, registry: TokenRegistry, service: Service) -> None:
        self.registry = registry
        self.service = service

    def check(self, request: PushRequest) -> TokenVerdict:
        """Return the registry's verdict, or UNKNOWN for a push that reached the wrong service."""
        if request.service is not self.service:
            return UNKNOWN
        return self.registry.check(request)
