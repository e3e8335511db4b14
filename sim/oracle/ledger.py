"""The truth ledger indexed for the oracle: calls, carts, registrations, reactions and timelines.

One pass over every shard's records, in canonical order, builds the index. Times are simulated
seconds since the run's start, as in the ledger.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from sim.catalogue import canonical_name
from sim.formats.truth import TruthView, canonical_key, read_records

# SDK call statuses that reached the backend, or would have in a virtual run.
DELIVERED_STATUSES = frozenset({"sent", "planned"})
DROPPED = "dropped"
# A call that a stopped run held back while it was still within the lag budget or not yet due.
UNSENT = "unsent"


def _only_counted(record: dict, events: Collection[str]) -> bool:
    """Tell whether a record is a track call of an event outside ``events``."""
    if record["kind"] != "sdk_call" or record["method"] not in ("track", "anonymous_track"):
        return False
    return canonical_name(record.get("event") or "") not in events


ANONYMOUS_PREFIX = "anonymous:"


def profile_of(call: dict) -> str:
    """Return the backend profile an SDK call lands on: the user id, else the anonymous id."""
    if call.get("user_id"):
        return f"user:{call['user_id']}"
    return f"{ANONYMOUS_PREFIX}{call.get('anonymous_id')}"


@dataclass
class Registrations:
    """Profiles a device token was registered on over time; None marks a deletion."""

    times: list[float] = field(default_factory=list)
    profiles: list[str | None] = field(default_factory=list)
    ever_identified: list[bool] = field(default_factory=list)

    def add(self, at: float, profile: str | None) -> None:
        identified = profile is not None and profile.startswith("user:")
        before = self.ever_identified[-1] if self.ever_identified else False
        self.times.append(at)
        self.profiles.append(profile)
        self.ever_identified.append(before or identified)

    def profile_at(self, at: float) -> str | None:
        """Return the profile holding the token at ``at``, or None when none does."""
        index = bisect.bisect_right(self.times, at) - 1
        return self.profiles[index] if index >= 0 else None

    def registered_before(self, at: float) -> bool:
        return bisect.bisect_right(self.times, at) > 0

    def identified_before(self, at: float) -> bool:
        """Tell whether the token was registered on an identified profile by ``at``."""
        index = bisect.bisect_right(self.times, at) - 1
        return self.ever_identified[index] if index >= 0 else False

    def deleted_at(self, at: float) -> float | None:
        """Return when the token was deleted, if a deletion is its last change by ``at``."""
        index = bisect.bisect_right(self.times, at) - 1
        if index >= 0 and self.profiles[index] is None:
            return self.times[index]
        return None

    def registered_after(self, at: float) -> bool:
        """Tell whether the token was registered again after ``at``."""
        index = bisect.bisect_right(self.times, at)
        return any(p is not None for p in self.profiles[index:])


class TruthIndex:
    """Index of the truth ledger for the oracle's queries, built in one pass."""

    def __init__(self) -> None:
        self.view = TruthView()
        self.calls: list[dict] = []
        self.status_counts: dict[str, int] = defaultdict(int)
        # Sent SDK calls by ``http_status``, with None for a sent line that records no status.
        self.sent_responses: dict[int | None, int] = defaultdict(int)
        self.lags_ms: list[float] = []
        self.carts: dict[str, dict] = {}
        self.orders: dict[str, list[dict]] = defaultdict(list)
        self.latent: dict[str, float | None] = {}
        self.reactions: dict[str, list[dict]] = defaultdict(list)
        self.registrations: dict[str, Registrations] = defaultdict(Registrations)
        self.device_tokens: dict[str, list[str]] = defaultdict(list)
        self.device_group: dict[str, int] = {}
        self.person_devices: dict[str, set[str]] = defaultdict(set)
        self.identified_at: dict[str, float] = {}
        self.anonymous_ids: dict[str, list[tuple[float, str]]] = defaultdict(list)
        # Identify calls per anonymous id: (at, user id), for merging anonymous activity.
        self.merges: dict[str, list[tuple[float, str]]] = defaultdict(list)
        self.end = 0.0
        # The simulated time every shard's model reached: the least of the shards' last record
        # times. None when the index was built without shard files.
        self.reached: float | None = None

    @classmethod
    def load(cls, paths: Iterable[str | Path], events: Collection[str] | None = None) -> TruthIndex:
        """Read and index the ledgers of every shard of a run.

        With ``events`` (catalogue names), track calls of other events are counted for the
        generator's health but not kept, so memory grows with the calls the oracle reads.
        """
        index = cls()
        kept = []
        for path in paths:
            last = 0.0
            for record in read_records(path):
                if _marks_progress(record):
                    last = max(last, record["at"])
                if events is not None and _only_counted(record, events):
                    index._count_call(record)
                    continue
                kept.append(record)
            index.reached = last if index.reached is None else min(index.reached, last)
        for record in sorted(kept, key=canonical_key):
            index.add(record)
        return index

    @classmethod
    def build(cls, records: list[dict]) -> TruthIndex:
        """Index records of any shards; they are sorted into canonical order first."""
        index = cls()
        for record in sorted(records, key=canonical_key):
            index.add(record)
        return index

    def add(self, record: dict) -> None:
        """Fold one record into the index; records must come in canonical order."""
        kind, at = record["kind"], record["at"]
        self.end = max(self.end, at)
        device = record.get("device")
        if device is not None:
            self.device_group.setdefault(device, record.get("group"))
        if kind != "sdk_call":
            self.view.add(record)

        if kind == "sdk_call":
            self._add_call(record)
        elif kind == "token_issued":
            self.device_tokens[device].append(record["token"])
        elif kind == "device_user":
            self.person_devices[record["person"]].add(device)
        elif kind == "install":
            self.anonymous_ids[device].append((at, record.get("anonymous_id")))
        elif kind == "cart":
            self.carts[record["cart_id"]] = record
        elif kind == "order":
            self.orders[record["cart_id"]].append(record)
        elif kind == "latent":
            self.latent[record["cart_id"]] = record.get("buy_anyway_at")
        elif kind == "reaction":
            self.reactions[record["delivery_id"]].append(record)

    def _count_call(self, call: dict) -> None:
        """Count an SDK call's status, response and lag, and note who used which device."""
        status = call.get("status", "planned")
        self.status_counts[status] += 1
        if status == "sent":
            self.sent_responses[call.get("http_status")] += 1
        if call.get("lag_ms") is not None:
            self.lags_ms.append(float(call["lag_ms"]))
        if call.get("person") and call.get("device"):
            self.person_devices[call["person"]].add(call["device"])
        self.end = max(self.end, call["at"])

    def _add_call(self, call: dict) -> None:
        self._count_call(call)
        self.calls.append(call)
        if call.get("status", "planned") not in DELIVERED_STATUSES:
            return

        method = call["method"]
        if method == "register_token" and call.get("token"):
            self.registrations[call["token"]].add(call["at"], profile_of(call))
        elif method == "delete_token" and call.get("token"):
            # A delete removes the token only from the profile it is sent for.
            if self.token_profile(call["token"], call["at"]) == profile_of(call):
                self.registrations[call["token"]].add(call["at"], None)
        elif method == "identify" and call.get("user_id"):
            self.identified_at.setdefault(call["user_id"], call["at"])
            if call.get("anonymous_id"):
                self.merges[call["anonymous_id"]].append((call["at"], call["user_id"]))

    def profile_at(self, call: dict, at: float) -> str:
        """Return the profile that contains an SDK call's event at ``at``.

        The oracle expects an identify to merge the activity its anonymous id sent before it
        into the identified profile. Events sent with that anonymous id after the identify stay
        on the anonymous profile.
        """
        if call.get("user_id") or not call.get("anonymous_id"):
            return profile_of(call)
        for merged_at, user_id in self.merges.get(call["anonymous_id"], []):
            if call["at"] <= merged_at <= at:
                return f"user:{user_id}"
        return profile_of(call)

    def token_profile(self, token: str, at: float) -> str | None:
        """Return the profile holding ``token`` at ``at``, after the merges a backend makes.

        A token registered on an anonymous profile moves with it when an identify with that
        anonymous id later merges the profile into a person, since a merge moves the devices
        too. None means the token is on no profile.
        """
        registrations = self.registrations.get(token)
        if registrations is None:
            return None
        position = bisect.bisect_right(registrations.times, at) - 1
        if position < 0:
            return None
        profile = registrations.profiles[position]
        if profile is None or not profile.startswith(ANONYMOUS_PREFIX):
            return profile
        since = registrations.times[position]
        for merged_at, user_id in self.merges.get(profile.removeprefix(ANONYMOUS_PREFIX), []):
            if since <= merged_at <= at:
                return f"user:{user_id}"
        return profile

    def live_token(self, device: str, at: float) -> str | None:
        """Return the device's token that is alive at ``at`` by truth, or None."""
        for token in reversed(self.device_tokens.get(device, [])):
            for owner_device, life in self.view.token_lives.get(token, []):
                if owner_device == device and life.contains(at):
                    return token
        return None

    def token_alive(self, token: str, at: float) -> bool:
        return bool(self.view.token_owners(token, at))

    def devices_of(self, person: str, at: float) -> list[str]:
        """Return the devices that ``person`` is using at ``at``."""
        return sorted(
            device
            for device in self.person_devices.get(person, ())
            if self.view.person_using(device, at) in (person, None)
        )

    def anonymous_id(self, device: str, at: float) -> str | None:
        """Return the anonymous id of the device's install that is current at ``at``."""
        current = None
        for since, anonymous_id in self.anonymous_ids.get(device, []):
            if since <= at:
                current = anonymous_id
        return current


def _marks_progress(record: dict) -> bool:
    """Tell whether a record shows that its shard's model reached its time.

    A second phone's device_user record is written ahead, when its group arrives, and calls
    given up when a run stops may lie ahead of where the model stood, so neither counts.
    """
    if record["kind"] == "device_user":
        return False
    return record["kind"] != "sdk_call" or record.get("status") not in (DROPPED, UNSENT)
