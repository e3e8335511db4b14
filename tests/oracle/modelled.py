"""A truth ledger from the real model on a virtual clock, with a backend played in the test.

The backend watches the truth as the model writes it. It sends one push per abandoned cart at
trigger plus delay to the cart's phone when that phone can show it, and hands the push to the
world, so the phone reacts as it would in a live run. ``Flaws`` makes it worse on purpose.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import simpy

from sim.formats.epoch import Epoch
from sim.formats.truth import TruthWriter
from sim.model.ports import Delivery
from sim.model.recorder import PlanRecorder
from sim.model.world import World
from sim.oracle.inputs import RunInputs
from sim.scenario import load_scenario
from tests.oracle.ledgers import write_deliveries


@dataclass(frozen=True)
class Flaws:
    """Shares of pushes the test backend gets wrong; all zero plays a perfect backend."""

    skip: float = 0.0
    late: float = 0.0
    unavailable: float = 0.0
    seed: int = 5


PERFECT = Flaws()
SCENARIO = """
name: model-check
seed: 11
clock: {start: 2026-11-26T00:00:00Z, duration: 1d, time_scale: 1440, drain: 1h}
population: {installs: 500, multi_device: 0, shared_device: 0}
reactions: {open: {ios: 0.6, android: 0.6}, convert_after_open: 0.5}
journeys:
  - name: cart_recovery
    trigger: {event: added_to_cart}
    delay: 30m
    exit: {event: order_completed, match: cart_id}
    frequency_cap: {count: 0, per: 1d}
    link: shop://cart/{cart_id}
"""
WALL_T0 = 1_800_000_000.0


class PerfectBackend:
    """A truth sink that also plays a flawless backend: it watches the truth as it is written."""

    def __init__(
        self, writer: TruthWriter, epoch: Epoch, origin: float, delay: float, flaws: Flaws
    ):
        self.writer = writer
        self.flaws = flaws
        self.dice = random.Random(flaws.seed)
        self.epoch = epoch
        self.origin = origin
        self.delay = delay
        self.world: World | None = None
        self.token: dict[str, str | None] = {}
        self.installed: dict[str, bool] = {}
        self.permission: dict[str, str] = {}
        self.ordered: set[str] = set()
        self.triggered: set[str] = set()
        self.rows: list[dict] = []
        self.sent: dict[str, str] = {}  # cart_id -> delivery id

    def write(self, record: dict) -> None:
        self.writer.write(dict(record))
        kind = record["kind"]
        if kind == "token_issued":
            self.token[record["device"]] = record["token"]
        elif kind == "token_died" and self.token.get(record["device"]) == record["token"]:
            self.token[record["device"]] = None
        elif kind == "install":
            self.installed[record["device"]] = True
        elif kind == "uninstall":
            self.installed[record["device"]] = False
            self.permission[record["device"]] = "not_determined"
        elif kind == "permission":
            self.permission[record["device"]] = record["state"]
        elif kind == "order":
            self.ordered.add(record["cart_id"])
        elif kind == "sdk_call" and record.get("event") == "added_to_cart":
            cart_id = record["properties"]["cart_id"]
            if cart_id not in self.triggered:
                self.triggered.add(cart_id)
                self.world.env.process(self._send(cart_id, record["device"]))

    def _send(self, cart_id: str, device: str):
        yield self.world.env.timeout(self.delay)
        token = self.token.get(device)
        can_show = self.installed.get(device) and self.permission.get(device) == "granted"
        if cart_id in self.ordered or token is None or not can_show:
            return
        if self.dice.random() < self.flaws.skip:
            return
        if self.dice.random() < self.flaws.late:
            yield self.world.env.timeout(3600.0)
            token = self.token.get(device)
            if token is None:
                return
        if self.dice.random() < self.flaws.unavailable:
            self.rows.append(self._row(token, cart_id, None, 503, "ServiceUnavailable"))
        delivery_id = f"dl-{len(self.rows) + 1}"
        self.rows.append(self._row(token, cart_id, delivery_id, 200, None))
        self.sent[cart_id] = delivery_id
        self.world.deliver(Delivery(delivery_id, token, _payload(cart_id)))

    def _row(self, token: str, cart_id: str, delivery_id: str | None, status: int,
             reason: str | None) -> dict:  # fmt: skip
        now = self.world.env.now
        return {
            "wall_time": self.epoch.wall_at(self.origin + now), "sim_time": self.origin + now,
            "service": "apns", "connection_id": "c1", "token": token, "audience": "production",
            "message_id": f"m-{delivery_id}", "collapse_id": None, "priority": "10",
            "expiration": None, "push_type": "alert",
            "payload": json.dumps(_payload(cart_id)).encode(), "status": status,
            "reason": reason, "delivery_id": delivery_id, "timestamp_ms": None,
            "retry_after": None, "added_latency": 0.0, "retry_of": None, "duplicate_of": None,
            "shard": 0, "group_id": None,
        }  # fmt: skip


def _payload(cart_id: str) -> dict:
    return {
        "aps": {"alert": "Still thinking?"},
        "CIO": {"push": {"link": f"shop://cart/{cart_id}"}},
    }


def run_model(
    directory: Path, flaws: Flaws = PERFECT, scenario_text: str = SCENARIO
) -> tuple[RunInputs, PerfectBackend]:
    """Run the model with the test backend and write both ledgers under ``directory``."""
    scenario = load_scenario(text=scenario_text).scenario
    origin = scenario.clock.start.timestamp()
    epoch = Epoch(WALL_T0, origin, scenario.clock.time_scale)
    truth_path = directory / "truth-0.jsonl"
    with TruthWriter(truth_path) as writer:
        backend = PerfectBackend(writer, epoch, origin, scenario.journeys[0].delay, flaws)
        recorder = PlanRecorder(truth=backend)
        env = simpy.Environment()
        world = World(scenario, env, sdk=recorder, cloud=recorder, truth=backend)
        backend.world = world
        world.start()
        env.run(until=world.horizon)
    deliveries = directory / "deliveries.sqlite"
    write_deliveries(deliveries, backend.rows)
    inputs = RunInputs(scenario, epoch, [truth_path], deliveries)
    return inputs, backend
