"""The truth ledger: what really happened in a run, one JSON object per line.

The model writes it through a sink; the driver and the oracle read it back. Every record carries
``v`` (the schema version), ``kind``, ``at`` (simulated seconds since the run's start), ``group``
and ``seq`` (the group's own counter), so ``(at, group, seq)`` is the canonical order of records
from any number of shards. Kinds and their extra fields:

- ``sdk_call``: ``method``, ``status`` (sent, dropped, unsent, local or planned; unsent is a
  call a stopped run held back before it was late), ``device``, ``person``
  (the true person at the phone), ``anonymous_id``, ``user_id`` (the identity the SDK sent, or
  null), ``token``, ``event``, ``properties``, ``attributes``, ``fault`` (injected fault label,
  several joined with commas, or null). The driver adds ``http_status`` to a sent call: the
  first status outside 2xx of its requests, else the last one, and 0 for no response. It adds
  ``lag_ms`` to sent and dropped calls, and ``sent_wall`` to sent ones.
- ``install`` and ``uninstall``: ``device``, ``platform``, ``anonymous_id``. An install also
  has ``reinstall`` (true for a reinstall) and ``timezone``, the IANA zone of the shopper's
  group, in which the report reads quiet hours.
- ``token_issued``: ``device``, ``token``, ``platform``, ``reason`` (install, reinstall,
  fcm_refresh, os_update, restore), and for an iOS token ``environment`` (production, or
  sandbox for a development build).
- ``token_died``: ``device``, ``token``, ``reason`` (rotation, restore, reinstall, uninstall),
  ``cause`` (fcm_refresh or os_update for a rotation, else the reason), ``reported_at`` (when
  the push service starts reporting the token as unregistered).
- ``permission``: ``device``, ``state`` (granted, denied, not_determined), ``prompted``.
- ``device_user``: ``device``, ``person`` (who uses the phone from ``at`` on). The record of a
  second phone is written when its owner's group arrives, ahead of ``at``.
- ``cart``: ``cart_id``, ``device``, ``person``, ``origin``. The origin is organic, reorder for
  the cart a reorder opens, or reorder_visit for later carts of that visit.
- ``cart_closed``: ``cart_id``, ``outcome`` (ordered or abandoned).
- ``order``: ``order_id``, ``cart_id``, ``value``, ``via`` (organic, push or buy_anyway).
- ``latent``: ``cart_id``, ``buy_anyway_at`` (simulated seconds, or null for never).
- ``reaction``: ``delivery_id``, ``token``, ``device``, ``person``, ``step`` (received,
  displayed, suppressed, opened, converted), ``detail``.

Example::

    with TruthWriter("truth.jsonl.gz") as ledger:
        ledger.write({"kind": "install", "at": 0.0, "group": 1, "seq": 0, "device": "d1-0"})
    view = TruthView.load(["truth.jsonl.gz"])
    view.token_owner(token, at=3600.0)
"""

from __future__ import annotations

import bisect
import gzip
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from json.encoder import c_make_encoder, encode_basestring
from pathlib import Path
from typing import IO, Any

from sim.formats.tokens import is_well_formed

SCHEMA_VERSION = 1

KINDS = (
    "sdk_call",
    "install",
    "uninstall",
    "token_issued",
    "token_died",
    "permission",
    "device_user",
    "cart",
    "cart_closed",
    "order",
    "latent",
    "reaction",
)


def canonical_key(record: dict) -> tuple[float, int, int]:
    """Return the sort key that orders records of any set of shards the same way."""
    return (record["at"], record["group"], record["seq"])


# One encoder for every line: json.dumps with non-default options builds a new one per call.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_STRING = encode_basestring  # ensure_ascii=False, as _ENCODER


def _not_serializable(value: Any) -> Any:
    raise TypeError(f"Object of type {value.__class__.__name__} is not JSON serializable")


# JSONEncoder.encode makes a new C encoder for every call, which took about a fifth of the
# time of encoding an sdk_call record. This one is made once with _ENCODER's settings, except
# that it keeps no set of containers in progress: a record has no reference cycle, and one
# would raise RecursionError instead of ValueError.
_C_ENCODE = (
    c_make_encoder(None, _not_serializable, _STRING, None, ":", ",", False, False, True)
    if c_make_encoder is not None
    else None
)


def encode(record: dict) -> str:
    """Return the record as one compact JSON line without the newline."""
    if _C_ENCODE is None:
        return _ENCODER.encode(record)
    return "".join(_C_ENCODE(record, 0))


def fragment(value: Any) -> str:
    """Return ``value`` as JSON text, exactly as ``encode`` writes it inside a record.

    Writers that build a line from pre-encoded keys use it for each value: ids and numbers
    skip the encoder's dispatch, which costs more than the encoding itself for a short value.
    """
    if value is None:
        return "null"
    kind = value.__class__
    if kind is str:
        return _STRING(value)
    if kind is int:
        return int.__repr__(value)
    if kind is float and value - value == 0.0:
        # Finite: infinities and NaN fall through to the encoder, which spells them.
        return float.__repr__(value)
    return encode(value)


class TruthWriter:
    """Append-only JSON Lines file of truth records, gzip-compressed when the name ends in .gz.

    Records are written as they come and never held, so a long run uses constant memory.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        raw: IO[Any]
        if self.path.suffix == ".gz":
            # mtime=0 keeps the compressed bytes the same for the same records.
            raw = gzip.GzipFile(self.path, "wb", mtime=0)
        else:
            raw = open(self.path, "wb")  # noqa: SIM115 - closed in close()
        self._stream = io.TextIOWrapper(raw, encoding="utf-8", newline="\n")
        self.count = 0

    def write(self, record: dict) -> None:
        record.setdefault("v", SCHEMA_VERSION)
        self._stream.write(encode(record))
        self._stream.write("\n")
        self.count += 1

    def write_line(self, line: str) -> None:
        """Append one record already encoded as ``encode`` would, ``v`` included."""
        self._stream.write(line)
        self._stream.write("\n")
        self.count += 1

    def flush(self) -> None:
        """Push buffered records to the file, so a killed process loses at most what came since."""
        self._stream.flush()

    def close(self) -> None:
        self._stream.close()

    def __enter__(self) -> TruthWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def read_records(path: str | Path) -> Iterator[dict]:
    """Yield the records of one ledger file, raising ValueError on a newer schema version."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            record = json.loads(line)
            version = record.get("v", SCHEMA_VERSION)
            if version > SCHEMA_VERSION:
                raise ValueError(
                    f"{path}:{number}: truth schema version {version} is newer than "
                    f"{SCHEMA_VERSION}: upgrade pushsim to read this ledger"
                )
            yield record


@dataclass
class _Interval:
    """A span of simulated time, open at the end while ``end`` is None."""

    start: float
    end: float | None = None

    def contains(self, at: float) -> bool:
        return self.start <= at and (self.end is None or at < self.end)


@dataclass
class _Timeline:
    """Values that hold from each change time until the next, searchable by time."""

    times: list[float] = field(default_factory=list)
    values: list[Any] = field(default_factory=list)

    def set(self, at: float, value: Any) -> None:
        self.times.append(at)
        self.values.append(value)

    def at(self, at: float, default: Any = None) -> Any:
        index = bisect.bisect_right(self.times, at) - 1
        return self.values[index] if index >= 0 else default


@dataclass(frozen=True)
class TokenOwner:
    """The device holding a token at an instant, and the person using that device."""

    device: str
    person: str | None


class TruthView:
    """Questions over a truth ledger: token ownership, installs and permission at a time.

    It indexes token lifetimes, installs, permission and device users, not SDK calls, so it
    stays small next to the ledger it reads.
    """

    def __init__(self) -> None:
        self.token_lives: dict[str, list[tuple[str, _Interval]]] = {}
        # Tokens of development builds, which work only with the APNs sandbox.
        self.sandbox_tokens: set[str] = set()
        self.installs: dict[str, list[_Interval]] = {}
        self.permission: dict[str, _Timeline] = {}
        self.users: dict[str, _Timeline] = {}

    @classmethod
    def load(cls, paths: Iterable[str | Path]) -> TruthView:
        """Index the ledgers of every shard of a run, in canonical order."""
        records = [r for path in paths for r in read_records(path) if r["kind"] != "sdk_call"]
        records.sort(key=canonical_key)
        view = cls()
        for record in records:
            view.add(record)
        return view

    def add(self, record: dict) -> None:
        """Fold one record into the index; records must come in canonical order."""
        kind, at = record["kind"], record["at"]
        if kind == "token_issued":
            self.token_lives.setdefault(record["token"], []).append(
                (record["device"], _Interval(at))
            )
            if record.get("environment") == "sandbox":
                self.sandbox_tokens.add(record["token"])
        elif kind == "token_died":
            lives = self.token_lives.get(record["token"], [])
            if lives and lives[-1][1].end is None:
                lives[-1][1].end = at
        elif kind == "install":
            self.installs.setdefault(record["device"], []).append(_Interval(at))
        elif kind == "uninstall":
            spans = self.installs.get(record["device"], [])
            if spans and spans[-1].end is None:
                spans[-1].end = at
            self.permission.setdefault(record["device"], _Timeline()).set(at, "not_determined")
        elif kind == "permission":
            self.permission.setdefault(record["device"], _Timeline()).set(at, record["state"])
        elif kind == "device_user":
            self.users.setdefault(record["device"], _Timeline()).set(at, record["person"])

    def token_owners(self, token: str, at: float) -> list[TokenOwner]:
        """Return every device that held ``token`` at ``at``; a sound ledger has at most one."""
        owners = []
        for device, life in self.token_lives.get(token, []):
            if life.contains(at):
                owners.append(TokenOwner(device, self.person_using(device, at)))
        return owners

    def token_owner(self, token: str, at: float) -> TokenOwner | None:
        """Return the device and person that held ``token`` at ``at``, or None."""
        owners = self.token_owners(token, at)
        return owners[0] if owners else None

    def last_holder(self, token: str, at: float) -> TokenOwner | None:
        """Return the device that held ``token`` last at or before ``at``, dead or alive.

        The person is the one using that device at ``at``. None for a token not issued by then.
        """
        holder = None
        for device, life in self.token_lives.get(token, []):
            if life.start <= at:
                holder = device
        if holder is None:
            return None
        return TokenOwner(holder, self.person_using(holder, at))

    def environment(self, token: str) -> str | None:
        """Return the APNs environment an issued iOS token works with, else None."""
        if token in self.sandbox_tokens:
            return "sandbox"
        if token in self.token_lives and is_well_formed(token, "ios"):
            return "production"
        return None

    def installed(self, device: str, at: float) -> bool:
        """Tell whether the app was installed on ``device`` at ``at``."""
        return any(span.contains(at) for span in self.installs.get(device, []))

    def permission_granted(self, device: str, at: float) -> bool:
        """Tell whether ``device`` had push permission at ``at``."""
        timeline = self.permission.get(device)
        return timeline is not None and timeline.at(at) == "granted"

    def person_using(self, device: str, at: float) -> str | None:
        """Return the person using ``device`` at ``at``, or None before its first user."""
        timeline = self.users.get(device)
        return timeline.at(at) if timeline else None
