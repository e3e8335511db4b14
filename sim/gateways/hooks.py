"""Seams between the gateways' wire servers and the world behind them.

A wire server parses a push, gets its response from the rule set, and records what it sent. The
rule set consults a token policy (open mode, or the registry of issued tokens) and a fault policy
(nothing, or a scripted timeline). Each seam is a small protocol with a do-nothing default, so the
registry, the ledger and the fault timeline plug in without touching the servers.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from sim.gateways.faults import ConnectionDirectives


class Service(enum.StrEnum):
    APNS = "apns"
    FCM = "fcm"


@dataclass
class PushRequest:
    """One push as a gateway received it, before any rule ran.

    ``audience`` is the APNs topic or the FCM project id. ``headers`` contains the request headers
    that matter for the ledger (lower-case names). ``received_at`` is wall Unix time in seconds.
    """

    service: Service
    token: str
    audience: str
    headers: dict[str, str]
    payload: bytes
    connection_id: str
    received_at: float
    message_id: str = ""
    # Delivery options the ledger records. The APNs server may leave them empty, because the
    # ledger falls back to the apns-collapse-id, apns-priority, apns-expiration and
    # apns-push-type headers. The FCM server fills them from the message body (collapse_key,
    # priority, ttl) since FCM carries them there.
    collapse_id: str | None = None
    priority: str | None = None
    expiration: str | None = None
    push_type: str | None = None
    # The APNs environment (production or sandbox) the request's host names, or None when the
    # host is not one of Apple's and so does not say which environment the client meant.
    environment: str | None = None


class TokenState(enum.Enum):
    """State of a device token at the push service, independent of wire reasons."""

    ALIVE = "alive"
    UNKNOWN = "unknown"  # well formed, but never issued to a device of this run
    WRONG_ENVIRONMENT = "wrong_environment"  # issued for the other APNs environment
    DEAD = "dead"  # invalidated, and the service already reports it gone
    WRONG_AUDIENCE = "wrong_audience"  # issued for another APNs topic or FCM project
    THROTTLED = "throttled"  # too many pushes to this one device in the window


@dataclass(frozen=True)
class TokenVerdict:
    """A token policy's verdict. ``died_at_ms`` is the wall Unix time in ms the token died."""

    state: TokenState
    died_at_ms: int | None = None


ALIVE = TokenVerdict(TokenState.ALIVE)


class TokenPolicy(Protocol):
    def check(self, request: PushRequest) -> TokenVerdict:
        """Return the state of ``request.token`` at ``request.received_at``."""


class OpenTokenPolicy:
    """Open mode: every well-formed token is alive. The rule set checks the shape first."""

    def check(self, request: PushRequest) -> TokenVerdict:
        return ALIVE


@dataclass(frozen=True)
class FaultAction:
    """Fault applied by the timeline to one push.

    ``delay`` is added latency in wall seconds. When ``status`` is set the push is rejected with
    that status and the service's ``reason`` instead of running the rules. ``retry_after`` is in
    whole wall seconds.
    """

    delay: float = 0.0
    status: int | None = None
    reason: str | None = None
    retry_after: int | None = None
    fault: str | None = None  # kind of the fault that acted (latency, errors, ...), for labels


NO_FAULT = FaultAction()


class FaultPolicy(Protocol):
    def action(self, request: PushRequest) -> FaultAction:
        """Return the fault to apply to ``request``; ``NO_FAULT`` when there is none."""


class NoFaults:
    def action(self, request: PushRequest) -> FaultAction:
        return NO_FAULT


@dataclass
class Outcome:
    """Response a gateway sent for one push, as the ledger records it.

    ``delivery_id`` is set only for an accepted push to a live token. ``timestamp_ms`` is the
    APNs 410 timestamp. ``added_latency`` is in wall seconds.
    """

    status: int
    reason: str | None = None
    delivery_id: str | None = None
    timestamp_ms: int | None = None
    retry_after: int | None = None
    added_latency: float = 0.0
    extra: dict[str, str] = field(default_factory=dict)
    fault: str | None = None  # FaultAction.fault of the action applied, copied by the server


class DeliverySink(Protocol):
    def record(self, request: PushRequest, outcome: Outcome) -> None:
        """Record one push and its response. Called on the event loop, so it must not block."""


class DiscardSink:
    def record(self, request: PushRequest, outcome: Outcome) -> None:
        return None


class WorldHooks(Protocol):
    """Connection-level seam of one service: the gauges and the connection faults of a server.

    A server calls ``directives`` and ``goaway_due`` about every ``poll_interval`` wall seconds
    and applies what they return to its live connections.
    """

    service: Service
    poll_interval: float

    def connection_opened(self) -> None: ...

    def connection_closed(self) -> None: ...

    def stream_started(self) -> None: ...

    def stream_ended(self) -> None: ...

    def directives(self, now: float) -> ConnectionDirectives:
        """Return the GOAWAY rate and stream limit in force at wall time ``now``."""

    def goaway_due(self, now: float) -> bool:
        """Draw whether one connection should send GOAWAY in the poll interval ending ``now``."""
