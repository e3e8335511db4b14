"""Backend conduct read from the delivery ledger: retries, backoff, Retry-After, sends to
unregistered tokens and connection churn.
"""

from __future__ import annotations

import logging
import sqlite3
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from sim.formats.epoch import Epoch
from sim.formats.truth import read_records
from sim.oracle.ledger import TruthIndex
from sim.oracle.problems import EXAMPLES_KEPT
from sim.oracle.pushes import Push

# Responses after which a sender should retry later: APNs 429/503 and FCM QUOTA_EXCEEDED 429 and
# UNAVAILABLE 503.
RETRYABLE_STATUSES = frozenset({429, 503})
# A retry sooner than this many wall seconds after the error counts as a retry without backoff.
# The reference sender's first retry waits at least 0.25 s (equal jitter over 0.5 s), and an
# immediate retry comes back within a round trip, a few milliseconds on loopback.
MIN_BACKOFF_SECONDS = 0.2
# Retry-After is whole wall seconds. A retry this much earlier still counts as honouring it,
# which allows for clock reading and rounding on the sender's side.
RETRY_AFTER_SLACK_SECONDS = 0.05

log = logging.getLogger(__name__)


@dataclass
class Conduct:
    """The backend's conduct towards the push services, as counts and examples."""

    retryable_errors: int = 0
    retries: int = 0
    retries_without_backoff: int = 0
    retries_before_retry_after: int = 0
    errors_never_retried: int = 0
    unregistered_responses: int = 0
    sends_after_unregistered: int = 0
    connections: dict[str, int] = field(default_factory=dict)
    requests_per_connection: float | None = None
    pruning_checked: bool = False
    pruning_note: str = ""
    prunes_after_unregistered: int = 0
    prunes_against_timestamp: int = 0
    device_tokens_checked: int | None = None
    device_tokens_lost: int | None = None
    examples: dict[str, list[str]] = field(default_factory=dict)

    def example(self, kind: str, text: str) -> None:
        kept = self.examples.setdefault(kind, [])
        if len(kept) < EXAMPLES_KEPT:
            kept.append(text)


def judge_conduct(
    pushes: list[Push],
    index: TruthIndex,
    epoch: Epoch,
    origin: float,
    store_path: Path | None = None,
    truth_paths: list[Path] | None = None,
) -> Conduct:
    """Judge retries, Retry-After, sends after unregistered responses and connection use."""
    conduct = Conduct()
    ordered = sorted(pushes, key=lambda push: push.row.seq)
    _judge_retries(ordered, conduct)
    _judge_unregistered(ordered, index, epoch, origin, conduct)

    by_service: dict[str, set[str]] = defaultdict(set)
    for push in ordered:
        by_service[push.row.service].add(push.row.connection_id)
    conduct.connections = {service: len(ids) for service, ids in sorted(by_service.items())}
    total = sum(conduct.connections.values())
    conduct.requests_per_connection = len(ordered) / total if total else None

    if store_path is not None:
        _judge_pruning(ordered, store_path, conduct)
        if truth_paths:
            _judge_device_sync(truth_paths, store_path, conduct)
    else:
        conduct.pruning_note = "no backend store (backend.sqlite) in the run directory"
    return conduct


# Device-history actions of the embedded backend that register a token.
_REGISTRATIONS = ("registered", "reactivated", "moved")


def _judge_pruning(ordered: list[Push], store_path: Path, conduct: Conduct) -> None:
    """Check each prune after an APNs 410 against Apple's rule: prune only a token that was
    registered before the 410's ``timestamp``.

    It reads the embedded backend's ``device_history`` table (token, action, reason, and ``at`` in
    wall seconds). An external backend's store is not available, so the check is then skipped.
    """
    try:
        connection = sqlite3.connect(f"file:{store_path}?mode=ro", uri=True)
        try:
            history = connection.execute(
                "SELECT token, action, at FROM device_history ORDER BY at, id"
            ).fetchall()
        finally:
            connection.close()
    except sqlite3.Error as error:
        conduct.pruning_note = f"backend store {store_path} could not be read: {error}"
        return

    gone: dict[str, list[tuple[float, int]]] = defaultdict(list)
    for push in ordered:
        if push.row.service == "apns" and push.row.status == 410 and push.row.timestamp_ms:
            gone[push.row.token].append((push.row.wall_time, push.row.timestamp_ms))

    registered_at: dict[str, float] = {}
    for token, action, at in history:
        if action in _REGISTRATIONS:
            registered_at[token] = at
            continue
        if action != "pruned" or token not in gone:
            continue
        answers = [stamp for wall, stamp in gone[token] if wall <= at + 1.0]
        if not answers:
            continue
        conduct.prunes_after_unregistered += 1
        died_at = answers[-1] / 1000.0
        if registered_at.get(token, 0.0) > died_at:
            conduct.prunes_against_timestamp += 1
            conduct.example(
                "prune_against_timestamp",
                f"token {token[:12]}… registered at {registered_at[token]:.3f}, 410 timestamp "
                f"{died_at:.3f}",
            )
    conduct.pruning_checked = True
    conduct.pruning_note = (
        f"{conduct.prunes_after_unregistered} prunes after APNs 410 checked against the "
        "timestamp rule"
    )


def _judge_retries(ordered: list[Push], conduct: Conduct) -> None:
    """Pair each 429/503 with its retry: the next request of the same chain of attempts.

    The gateway sets ``retry_of`` on every later APNs request with the same apns-id to the seq
    of the first one, so that first request and the requests naming it form one chain, in
    order. Any other request belongs to the chain of every request for its token and payload.
    """
    named = {push.row.retry_of for push in ordered if push.row.retry_of is not None}
    chains: dict[tuple, list[Push]] = defaultdict(list)
    for push in ordered:
        row = push.row
        if row.retry_of is not None:
            chains[("retry_of", row.retry_of)].append(push)
        elif row.seq in named:
            chains[("retry_of", row.seq)].append(push)
        else:
            chains[("payload", row.token, row.payload)].append(push)

    for chain in chains.values():
        for position, push in enumerate(chain):
            if push.row.status not in RETRYABLE_STATUSES:
                continue
            conduct.retryable_errors += 1
            if position + 1 == len(chain):
                conduct.errors_never_retried += 1
                continue
            retry = chain[position + 1]
            conduct.retries += 1
            gap = retry.row.wall_time - push.row.wall_time
            if gap < MIN_BACKOFF_SECONDS:
                conduct.retries_without_backoff += 1
                conduct.example(
                    "retry_without_backoff",
                    f"push request seq {retry.row.seq} sent {gap:.3f} s after the error",
                )
            # Only FCM documents Retry-After. Apple documents none for APNs, and clients such as
            # aioapns never show it to the backend, so an APNs retry is judged on backoff alone.
            honours_retry_after = push.row.service == "fcm"
            if (
                honours_retry_after
                and push.row.retry_after
                and gap < push.row.retry_after - RETRY_AFTER_SLACK_SECONDS
            ):
                conduct.retries_before_retry_after += 1
                conduct.example(
                    "retry_before_retry_after",
                    f"push request seq {retry.row.seq} sent {gap:.2f} s after the error, "
                    f"Retry-After {push.row.retry_after} s",
                )


def _judge_unregistered(
    ordered: list[Push], index: TruthIndex, epoch: Epoch, origin: float, conduct: Conduct
) -> None:
    """Count sends to a token after the push service responded that it is unregistered.

    A send is fine when the app registered the token again after the token's 410 ``timestamp``
    (APNs) or after the rejected send (FCM, whose response carries no timestamp).
    """
    gone: dict[str, float] = {}
    counts: Counter[str] = Counter()
    for push in ordered:
        token = push.row.token
        if token in gone:
            registrations = index.registrations.get(token)
            if registrations is None or not registrations.registered_after(gone[token]):
                conduct.sends_after_unregistered += 1
                counts[token] += 1
                if counts[token] == 1:
                    conduct.example(
                        "send_after_unregistered",
                        f"push request seq {push.row.seq} to {token[:16]}…",
                    )
            else:
                del gone[token]
        if push.unregistered:
            conduct.unregistered_responses += 1
            if push.row.timestamp_ms is not None:
                gone[token] = epoch.sim_at(push.row.timestamp_ms / 1000.0) - origin
            else:
                gone[token] = push.at


def _judge_device_sync(truth_paths: list[Path], store_path: Path, conduct: Conduct) -> None:
    """Count device tokens the app registered and never deleted that the backend no longer has.

    A token's registration counts when its SDK call was sent; a later sent ``delete_token``
    releases it. The backend may prune a token after the push service reported it gone, so only
    tokens it deleted, or never stored, are lost: a backend that keeps one device per person
    loses the other phone's token this way.
    """
    registered: set[str] = set()
    for path in truth_paths:
        for record in read_records(path):
            if record.get("kind") != "sdk_call" or record.get("status") != "sent":
                continue
            token = record.get("token")
            if record.get("method") == "register_token" and token:
                registered.add(token)
            elif record.get("method") == "delete_token" and token:
                registered.discard(token)

    try:
        connection = sqlite3.connect(f"file:{store_path}?mode=ro", uri=True)
        try:
            status = dict(connection.execute("SELECT token, status FROM devices").fetchall())
        finally:
            connection.close()
    except sqlite3.Error as error:
        log.warning("backend store %s could not be read: %s", store_path, error)
        return

    lost = sorted(token for token in registered if status.get(token) in (None, "deleted"))
    conduct.device_tokens_checked = len(registered)
    conduct.device_tokens_lost = len(lost)
    for token in lost:
        conduct.example("device_token_lost", f"token {token[:12]}… {status.get(token) or 'absent'}")
