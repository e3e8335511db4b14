"""Build small truth and delivery ledgers by hand, one shopper story at a time."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

from sim.formats.delivery import COLUMNS, create_schema
from sim.formats.epoch import Epoch
from sim.formats.truth import TruthWriter
from sim.oracle.inputs import RunInputs
from sim.scenario import load_scenario
from sim.scenario.dump import dump_scenario

SCENARIO = """
name: hand
seed: 3
clock:
  start: 2026-11-26T00:00:00Z
  duration: 1d
  time_scale: 1440
  drain: 1h
journeys:
  - name: cart_recovery
    kind: event
    trigger: {event: added_to_cart}
    delay: 30m
    exit: {event: order_completed, match: cart_id}
    frequency_cap: {count: 0, per: 1d}
    link: shop://cart/{cart_id}
gates:
  - wrong_person_pushes == 0
  - delivery_rate >= 0.5
"""
QUIET_SCENARIO_TEXT = SCENARIO.replace(
    "link: shop://cart/{cart_id}",
    "link: shop://cart/{cart_id}\n    quiet_hours: {start: '22:00', end: '08:00'}",
)
ORIGIN = 1795651200.0  # 2026-11-26T00:00:00Z
WALL_T0 = 1_800_000_000.0
TIME_SCALE = 1440.0
DELAY = 1800.0


def apns_token(n: int) -> str:
    return f"{n:064x}"


class Story:
    """A truth ledger under construction, with the delivery rows of a backend's push requests."""

    def __init__(self) -> None:
        self.records: list[dict] = []
        self.rows: list[dict] = []
        self._seq = 0
        self._delivery = 0

    def record(self, kind: str, at: float, group: int = 1, **fields) -> None:
        self._seq += 1
        self.records.append({"kind": kind, "at": at, "group": group, "seq": self._seq, **fields})

    def call(self, method: str, at: float, device: str, person: str, *, user_id=None,
             anonymous_id="anon-1", status="sent", **fields) -> None:  # fmt: skip
        base = {"token": None, "event": None, "properties": None, "attributes": None,
                "fault": None}  # fmt: skip
        base.update(fields)
        self.record("sdk_call", at, method=method, status=status, device=device, person=person,
                    anonymous_id=anonymous_id, user_id=user_id, **base)  # fmt: skip

    def shopper(self, at: float = 0.0, *, device="d1-0", person="p1-0", token=1,
                permission="granted", user_id="p1-0", register=True,
                anonymous_id="anon-1") -> str:  # fmt: skip
        """Install, issue a token, set permission, identify and register the token."""
        self.record("device_user", at, device=device, person=person)
        self.record("install", at, device=device, platform="ios", anonymous_id=anonymous_id)
        self.record("token_issued", at, device=device, token=apns_token(token), platform="ios",
                    reason="install")  # fmt: skip
        self.record("permission", at, device=device, state=permission, prompted=True)
        if user_id:
            self.call("identify", at, device, person, user_id=user_id, anonymous_id=anonymous_id)
        if register:
            # The SDK sends the device's permission with its token, as the model's apps do.
            attributes = {"platform": "ios", "push_enabled": permission == "granted"}
            self.call("register_token", at, device, person, user_id=user_id,
                      anonymous_id=anonymous_id, token=apns_token(token),
                      attributes=attributes)  # fmt: skip
        return apns_token(token)

    def add_to_cart(self, at: float, cart: str = "c1-1", *, device="d1-0", person="p1-0",
                    user_id="p1-0", status="sent", **fields) -> None:  # fmt: skip
        self.record("cart", at, cart_id=cart, device=device, person=person, origin="organic")
        self.call("track" if user_id else "anonymous_track", at, device, person, user_id=user_id,
                  event="added_to_cart", status=status,
                  properties={"sku": "SKU-1", "qty": 1, "cart_id": cart}, **fields)  # fmt: skip

    def calls_renamed(self, event: str, sent_as: str) -> None:
        """Make every call of ``event`` go out as ``sent_as``, as a drifted app sends it."""
        for record in self.records:
            if record["kind"] == "sdk_call" and record.get("event") == event:
                record["event"] = sent_as

    def abandon(self, at: float, cart: str = "c1-1", buy_anyway_at=None) -> None:
        self.record("cart_closed", at, cart_id=cart, outcome="abandoned")
        self.record("latent", at, cart_id=cart, buy_anyway_at=buy_anyway_at)

    def order(self, at: float, cart: str = "c1-1", *, device="d1-0", person="p1-0",
              user_id="p1-0", via="organic", status="sent") -> None:  # fmt: skip
        self.record("cart_closed", at, cart_id=cart, outcome="ordered")
        self.record("order", at, order_id="o1", cart_id=cart, value=10.0, via=via)
        self.call("track", at, device, person, user_id=user_id, event="order_completed",
                  properties={"order_id": "o1", "cart_id": cart, "order_value": 10.0,
                              "items": 1}, status=status)  # fmt: skip

    def push(self, at: float, token: str, cart: str = "c1-1", *, status=200, reason=None,
             live=True, message_id=None, wall=None, retry_after=None, timestamp_ms=None,
             connection="conn-1", service="apns") -> str | None:  # fmt: skip
        """Record a push request at simulated ``at`` and return its delivery id."""
        self._delivery += 1
        delivery_id = f"dl-{self._delivery}" if status == 200 and live else None
        payload = {"aps": {"alert": "x"}, "CIO": {"push": {"link": f"shop://cart/{cart}"}}}
        self.rows.append({
            "wall_time": wall if wall is not None else WALL_T0 + at / TIME_SCALE,
            "sim_time": ORIGIN + at, "service": service, "connection_id": connection,
            "token": token, "audience": "production",
            "message_id": message_id or f"m-{self._delivery}", "collapse_id": None,
            "priority": "10", "expiration": None, "push_type": "alert",
            "payload": json.dumps(payload).encode(), "status": status, "reason": reason,
            "delivery_id": delivery_id, "timestamp_ms": timestamp_ms,
            "retry_after": retry_after, "added_latency": 0.0, "retry_of": None,
            "duplicate_of": None, "shard": 0, "group_id": 1,
        })  # fmt: skip
        return delivery_id

    def react(self, at: float, delivery_id: str, step: str, *, token=None, device="d1-0",
              person="p1-0", detail=None) -> None:  # fmt: skip
        self.record("reaction", at, delivery_id=delivery_id, token=token, device=device,
                    person=person, step=step, detail=detail)  # fmt: skip

    def write(self, directory: Path, scenario_text: str = SCENARIO) -> RunInputs:
        """Write both ledgers under ``directory`` and return the oracle's inputs."""
        directory.mkdir(parents=True, exist_ok=True)
        truth = directory / "truth-0.jsonl"
        with TruthWriter(truth) as writer:
            for record in self.records:
                writer.write(dict(record))
        deliveries = directory / "deliveries.sqlite"
        write_deliveries(deliveries, self.rows)
        return RunInputs(
            scenario=load_scenario(text=scenario_text).scenario,
            epoch=Epoch(WALL_T0, ORIGIN, TIME_SCALE),
            truth_paths=[truth],
            delivery_path=deliveries,
        )


def write_deliveries(path: Path, rows: list[dict]) -> None:
    connection = sqlite3.connect(path)
    create_schema(connection)
    connection.executemany(
        f"INSERT INTO deliveries ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
        [tuple(row.get(column) for column in COLUMNS) for row in rows],
    )
    connection.commit()
    connection.close()


def write_run_dir(story: Story, tmp_path: Path, scenario_text: str = SCENARIO):
    """Write the story's ledgers, then a run directory without truth ledgers under ``tmp_path``."""
    inputs = story.write(tmp_path / "ledgers", scenario_text)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "scenario.yaml").write_text(dump_scenario(inputs.scenario))
    epoch = inputs.epoch
    (run_dir / "epoch.json").write_text(
        json.dumps(
            {"wall_t0": epoch.wall_t0, "sim_t0": epoch.sim_t0, "time_scale": epoch.time_scale}
        )
    )
    shutil.copy(inputs.delivery_path, run_dir / "deliveries.sqlite")
    return inputs, run_dir
