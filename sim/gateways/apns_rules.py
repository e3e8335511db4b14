"""The APNs rule set: the response to one request, independent of sockets.

The server hands over a parsed request and gets back a response. Checks run in this order, and
the first failure names the reason:

1. a forced fault from the fault policy (a brown-out responds before any rule runs);
2. ``:method`` is POST (405 MethodNotAllowed), ``:path`` is ``/3/device/<token>`` (404 BadPath,
   400 MissingDeviceToken);
3. no header appears twice (400 DuplicateHeaders);
4. provider authentication (403 and 429 reasons, see ``apns_auth``);
5. the device token has the APNs shape of 64 hex characters (400 BadDeviceToken);
6. headers: ``apns-id`` is a UUID, ``apns-topic`` is present, well formed and allowed,
   ``apns-push-type`` is known and matches the topic suffix, ``apns-priority`` is 1, 5 or 10,
   ``apns-expiration`` is a non-negative integer, ``apns-collapse-id`` is at most 64 bytes;
7. the payload is not empty and at most 4096 bytes (5120 for voip);
8. the token policy: unknown, dead, wrong topic or throttled tokens.

A push that passes every check is accepted and gets a delivery id. The sink learns about an
response only when the server sends it (``record``), because a stream dropped by GOAWAY never gets
one.
"""

from __future__ import annotations

import itertools
import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field

from sim.formats.tokens import is_well_formed
from sim.gateways.apns_auth import PRODUCTION, SANDBOX, ApnsAuth, ConnectionAuth
from sim.gateways.apns_reasons import DEFAULT_REASON, Rejection, reject
from sim.gateways.hooks import (
    DeliverySink,
    DiscardSink,
    FaultAction,
    FaultPolicy,
    NoFaults,
    OpenTokenPolicy,
    Outcome,
    PushRequest,
    Service,
    TokenPolicy,
    TokenState,
)
from sim.gateways.ids import new_apns_id

DEVICE_PATH_PREFIX = "/3/device/"
MAX_PAYLOAD = 4096  # bytes, every push type but voip
MAX_VOIP_PAYLOAD = 5120  # bytes
MAX_COLLAPSE_ID = 64  # bytes of the UTF-8 header value
PRIORITIES = frozenset({"1", "5", "10"})

# apns-push-type values and the topic suffix each requires. Apple documents the suffixes in
# "Sending notification requests to APNs". An empty suffix means the bare bundle id.
PUSH_TYPE_SUFFIX: dict[str, str] = {
    "alert": "",
    "background": "",
    "location": ".location-query",
    "voip": ".voip",
    "complication": ".complication",
    "fileprovider": ".pushkit.fileprovider",
    "mdm": "",
    "liveactivity": ".push-type.liveactivity",
    "pushtotalk": ".voip-ptt",
    "widgets": ".push-type.widgets",
    # NOTE: the controls suffix is taken from APNs client code, not from Apple's page.
    "controls": ".push-type.controls",
}
# Longest suffixes first, so ".voip-ptt" is not read as ".voip".
_SUFFIXES = sorted({s for s in PUSH_TYPE_SUFFIX.values() if s}, key=len, reverse=True)

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_TOPIC = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")
_APNS_HOSTS = {
    "api.push.apple.com": PRODUCTION,
    "api.sandbox.push.apple.com": SANDBOX,
    "api.development.push.apple.com": SANDBOX,
}
# Request headers copied into the ledger's PushRequest.
_LEDGER_HEADERS = (
    "apns-id",
    "apns-topic",
    "apns-push-type",
    "apns-priority",
    "apns-expiration",
    "apns-collapse-id",
)


@dataclass
class ApnsRequest:
    """One complete request as the server received it.

    ``headers`` contains every regular header in arrival order with lower-case names, duplicates
    included. ``body`` may be cut short for an oversized payload; ``body_size`` is the full
    length in bytes. ``received_at`` is wall Unix seconds.
    """

    method: str
    path: str
    authority: str
    headers: list[tuple[str, str]]
    body: bytes
    body_size: int
    auth: ConnectionAuth
    connection_id: str
    received_at: float


@dataclass
class ApnsResponse:
    """The response to one request, with the ledger's record of it.

    ``delay`` is added latency in wall seconds. ``timestamp_ms`` is set for 410 responses.
    """

    status: int
    apns_id: str
    reason: str | None
    push: PushRequest
    outcome: Outcome
    timestamp_ms: int | None = None
    delay: float = 0.0

    def body(self) -> bytes:
        """Return the JSON error body, or empty bytes for a 200."""
        if self.reason is None:
            return b""
        document: dict[str, object] = {"reason": self.reason}
        if self.timestamp_ms is not None:
            document["timestamp"] = self.timestamp_ms
        return json.dumps(document, separators=(",", ":")).encode()


def environment_for(authority: str, default: str) -> str:
    """Return the APNs environment a request addresses, from its host name."""
    return named_environment(authority) or default


def named_environment(authority: str) -> str | None:
    """Return the environment of Apple's host that ``authority`` names, or None for others."""
    return _APNS_HOSTS.get(authority.partition(":")[0].lower())


def _split_topic(topic: str) -> tuple[str, str]:
    for suffix in _SUFFIXES:
        if topic.endswith(suffix) and len(topic) > len(suffix):
            return topic[: -len(suffix)], suffix
    return topic, ""


@dataclass
class ApnsRules:
    """Apple's request rules, consulting a token policy and a fault policy.

    ``topics`` maps a team id to the bundle ids its keys may push to; None allows any
    well-formed topic. ``environment`` applies when the request's host is not one of Apple's.
    """

    auth: ApnsAuth
    tokens: TokenPolicy = field(default_factory=OpenTokenPolicy)
    faults: FaultPolicy = field(default_factory=NoFaults)
    sink: DeliverySink = field(default_factory=DiscardSink)
    topics: Mapping[str, frozenset[str]] | None = None
    environment: str = SANDBOX
    _delivery_prefix: str = field(init=False, repr=False)
    _delivery_numbers: itertools.count = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # A random prefix keeps delivery ids unique across gateways and restarts.
        self._delivery_prefix = f"apns-{secrets.token_hex(6)}-"
        self._delivery_numbers = itertools.count(1)

    def evaluate(self, request: ApnsRequest) -> ApnsResponse:
        """Evaluate ``request`` and return the response, updating the connection's auth state."""
        headers: dict[str, str] = {}
        duplicated = False
        for name, value in request.headers:
            if name in headers:
                duplicated = True
            headers[name] = value

        apns_id_header = headers.get("apns-id")
        valid_id = apns_id_header is not None and _UUID.match(apns_id_header) is not None
        apns_id = apns_id_header if valid_id else new_apns_id()

        token = ""
        if request.path.startswith(DEVICE_PATH_PREFIX):
            token = request.path[len(DEVICE_PATH_PREFIX) :]
        push = PushRequest(
            service=Service.APNS,
            token=token,
            # A device token belongs to the app's bundle id, which a VoIP or Live Activity topic
            # carries with its suffix.
            audience=_split_topic(headers.get("apns-topic", ""))[0],
            headers={name: headers[name] for name in _LEDGER_HEADERS if name in headers},
            payload=request.body,
            connection_id=request.connection_id,
            received_at=request.received_at,
            message_id=apns_id,
            environment=named_environment(request.authority),
        )

        fault = self.faults.action(push)
        response = self._answer(request, push, fault, headers, token, duplicated, valid_id)
        response.outcome.fault = fault.fault
        return response

    def _answer(
        self,
        request: ApnsRequest,
        push: PushRequest,
        fault: FaultAction,
        headers: dict[str, str],
        token: str,
        duplicated: bool,
        valid_id: bool,
    ) -> ApnsResponse:
        apns_id = push.message_id
        apns_id_header = headers.get("apns-id")
        if fault.status is not None:
            reason = fault.reason or DEFAULT_REASON.get(fault.status, "InternalServerError")
            reject(reason)  # raises for a name outside Apple's list
            rejection = Rejection(fault.status, reason)
            return self._reject(push, apns_id, rejection, fault.delay, fault.retry_after)

        rejection = self._check(request, headers, token, duplicated, valid_id, apns_id_header)
        if rejection is not None:
            return self._reject(push, apns_id, rejection, fault.delay)

        verdict = self.tokens.check(push)
        if verdict.state is TokenState.ALIVE:
            delivery_id = f"{self._delivery_prefix}{next(self._delivery_numbers)}"
            outcome = Outcome(200, delivery_id=delivery_id, added_latency=fault.delay)
            return ApnsResponse(200, apns_id, None, push, outcome, delay=fault.delay)
        if verdict.state is TokenState.DEAD:
            response = self._reject(push, apns_id, reject("Unregistered"), fault.delay)
            if verdict.died_at_ms is not None:
                response.timestamp_ms = verdict.died_at_ms
                response.outcome.timestamp_ms = verdict.died_at_ms
            return response
        token_reasons = {
            TokenState.UNKNOWN: "BadDeviceToken",
            TokenState.WRONG_ENVIRONMENT: "BadDeviceToken",
            TokenState.WRONG_AUDIENCE: "DeviceTokenNotForTopic",
            TokenState.THROTTLED: "TooManyRequests",
        }
        return self._reject(push, apns_id, reject(token_reasons[verdict.state]), fault.delay)

    def internal_error(self, request: ApnsRequest) -> ApnsResponse:
        """Return a 500 InternalServerError response, for when evaluating ``request`` failed."""
        push = PushRequest(
            service=Service.APNS,
            token=request.path.removeprefix(DEVICE_PATH_PREFIX),
            audience="",
            headers={},
            payload=request.body,
            connection_id=request.connection_id,
            received_at=request.received_at,
        )
        push.message_id = new_apns_id()
        return self._reject(push, push.message_id, reject("InternalServerError"), 0.0)

    def record(self, response: ApnsResponse) -> None:
        """Report a sent response to the delivery sink."""
        self.sink.record(response.push, response.outcome)

    def _reject(
        self,
        push: PushRequest,
        apns_id: str,
        rejection: Rejection,
        delay: float,
        retry_after: int | None = None,
    ) -> ApnsResponse:
        # Apple documents no Retry-After header. The server still sends a fault's retry_after,
        # as any HTTP 429 or 503 may carry it, and clients that do not read it ignore it.
        outcome = Outcome(
            rejection.status, rejection.reason, retry_after=retry_after, added_latency=delay
        )
        response = ApnsResponse(
            rejection.status, apns_id, rejection.reason, push, outcome, delay=delay
        )
        # Every 410 carries the wall time in ms at which the token stopped being valid. Without
        # a known moment of death, the time of the request is used.
        if rejection.status == 410:
            response.timestamp_ms = int(push.received_at * 1000)
            outcome.timestamp_ms = response.timestamp_ms
        return response

    def _check(
        self,
        request: ApnsRequest,
        headers: dict[str, str],
        token: str,
        duplicated: bool,
        valid_id: bool,
        apns_id_header: str | None,
    ) -> Rejection | None:
        if request.method != "POST":
            return reject("MethodNotAllowed")
        if request.path.rstrip("/") == DEVICE_PATH_PREFIX.rstrip("/"):
            return reject("MissingDeviceToken")
        if not request.path.startswith(DEVICE_PATH_PREFIX) or "/" in token or "?" in token:
            return reject("BadPath")
        if duplicated:
            return reject("DuplicateHeaders")

        environment = environment_for(request.authority, self.environment)
        auth = request.auth
        rejection = self.auth.authorize(
            auth, headers.get("authorization"), environment, request.received_at
        )
        if rejection is not None:
            return rejection

        if not is_well_formed(token, "ios"):
            return reject("BadDeviceToken")
        if apns_id_header is not None and not valid_id:
            return reject("BadMessageId")

        rejection = self._check_topic(headers, auth)
        if rejection is not None:
            return rejection

        priority = headers.get("apns-priority")
        if priority is not None and priority not in PRIORITIES:
            return reject("BadPriority")
        # Apple: a background push must use priority 5 (10 is an error).
        if headers.get("apns-push-type") == "background" and priority == "10":
            return reject("BadPriority")

        expiration = headers.get("apns-expiration")
        if expiration is not None and not (expiration.isascii() and expiration.isdigit()):
            return reject("BadExpirationDate")

        collapse_id = headers.get("apns-collapse-id")
        if (
            collapse_id is not None
            and len(collapse_id.encode("utf-8", "surrogateescape")) > MAX_COLLAPSE_ID
        ):
            return reject("BadCollapseId")

        if request.body_size == 0:
            return reject("PayloadEmpty")
        is_voip = headers.get("apns-push-type") == "voip" or headers.get("apns-topic", "").endswith(
            ".voip"
        )
        limit = MAX_VOIP_PAYLOAD if is_voip else MAX_PAYLOAD
        if request.body_size > limit:
            return reject("PayloadTooLarge")
        return None

    def _check_topic(self, headers: dict[str, str], auth: ConnectionAuth) -> Rejection | None:
        topic = headers.get("apns-topic")
        certificate = auth.certificate
        if topic is None:
            # A certificate for a single topic implies it; tokens and multi-topic certificates
            # require the header.
            if certificate is not None and len(certificate.topics) == 1:
                topic = next(iter(certificate.topics))
            else:
                return reject("MissingTopic")
        if not _TOPIC.match(topic) or topic.endswith(".") or ".." in topic:
            return reject("BadTopic")

        bundle_id, suffix = _split_topic(topic)
        push_type = headers.get("apns-push-type")
        if push_type is not None:
            if push_type not in PUSH_TYPE_SUFFIX:
                return reject("InvalidPushType")
            # Apple documents the suffix each push type needs but no reason for a mismatch;
            # the mock responds InvalidPushType.
            if push_type != "mdm" and PUSH_TYPE_SUFFIX[push_type] != suffix:
                return reject("InvalidPushType")

        if certificate is not None:
            if topic not in certificate.topics:
                return reject("TopicDisallowed")
        elif self.topics is not None:
            allowed = self.topics.get(auth.team_id or "", frozenset())
            if bundle_id not in allowed:
                return reject("TopicDisallowed")
        return None
