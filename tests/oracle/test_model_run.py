"""The oracle on a truth ledger from the real model, against a perfect backend built in the test.

The model runs on a virtual clock. The test's backend sends one push per abandoned cart at
trigger plus delay to the cart's phone when that phone can show it, and hands the push to the
world, so the phone reacts as it would in a live run. The expected waterfall comes from
``expected_outcomes``, which reads only the truth records and the test's own send log.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import simpy

from sim.formats.epoch import Epoch
from sim.formats.truth import TruthWriter, read_records
from sim.model.ports import Delivery
from sim.model.recorder import PlanRecorder
from sim.model.world import World
from sim.oracle.inputs import RunInputs
from sim.oracle.judge import judge_run
from sim.oracle.outcomes import OUTCOMES
from sim.scenario import load_scenario
from tests.oracle.ledgers import write_deliveries

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

    def __init__(self, writer: TruthWriter, epoch: Epoch, origin: float, delay: float):
        self.writer = writer
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
        now = self.world.env.now
        delivery_id = f"dl-{len(self.rows) + 1}"
        payload = {"aps": {"alert": "Still thinking?"},
                   "CIO": {"push": {"link": f"shop://cart/{cart_id}"}}}  # fmt: skip
        self.rows.append({
            "wall_time": self.epoch.wall_at(self.origin + now), "sim_time": self.origin + now,
            "service": "apns", "connection_id": "c1", "token": token, "audience": "production",
            "message_id": f"m-{delivery_id}", "collapse_id": None, "priority": "10",
            "expiration": None, "push_type": "alert", "payload": json.dumps(payload).encode(),
            "status": 200, "reason": None, "delivery_id": delivery_id, "timestamp_ms": None,
            "retry_after": None, "added_latency": 0.0, "retry_of": None, "duplicate_of": None,
            "shard": 0, "group_id": None,
        })  # fmt: skip
        self.sent[cart_id] = delivery_id
        self.world.deliver(Delivery(delivery_id, token, payload))


def run_model(directory: Path) -> tuple[RunInputs, PerfectBackend]:
    scenario = load_scenario(text=SCENARIO).scenario
    origin = scenario.clock.start.timestamp()
    epoch = Epoch(WALL_T0, origin, scenario.clock.time_scale)
    truth_path = directory / "truth-0.jsonl"
    with TruthWriter(truth_path) as writer:
        backend = PerfectBackend(writer, epoch, origin, scenario.journeys[0].delay)
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


def expected_outcomes(truth_path: Path, sent: dict[str, str], scenario) -> Counter:
    """Count outcomes by replaying the truth records alone, with the backend's send log."""
    records = sorted(read_records(truth_path), key=lambda r: (r["at"], r["group"], r["seq"]))
    delay = scenario.journeys[0].delay
    end = scenario.clock.duration - scenario.clock.drain

    triggers: dict[str, dict] = {}
    orders: dict[str, float] = {}
    steps: dict[str, set[str]] = {}
    for record in records:
        if record["kind"] == "sdk_call" and record.get("event") == "added_to_cart":
            triggers.setdefault(record["properties"]["cart_id"], record)
        elif record["kind"] == "order":
            orders.setdefault(record["cart_id"], record["at"])
        elif record["kind"] == "reaction":
            steps.setdefault(record["delivery_id"], set()).add(record["step"])

    counts: Counter = Counter()
    for cart_id, call in triggers.items():
        due = call["at"] + delay
        if due > end:
            counts["excluded"] += 1
        elif cart_id in orders and orders[cart_id] <= due:
            counts["converted_before_delay"] += 1
        elif cart_id in sent:
            seen = steps.get(sent[cart_id], set())
            for step in ("converted", "opened", "displayed"):
                if step in seen:
                    counts[step] += 1
                    break
            else:
                counts["delivered"] += 1
        else:
            counts[_unreachable(records, call["device"], due)] += 1
    return counts


def _unreachable(records: list[dict], device: str, at: float) -> str:
    """Return why the cart's phone got no push, from the device's records up to ``at``."""
    installed, token, permission = False, None, None
    for record in records:
        if record["at"] > at:
            break
        if record.get("device") != device:
            continue
        kind = record["kind"]
        if kind == "install":
            installed = True
        elif kind == "uninstall":
            installed, permission = False, None
        elif kind == "token_issued":
            token = record["token"]
        elif kind == "token_died" and record["token"] == token:
            token = None
        elif kind == "permission":
            permission = record["state"]
    if not installed or token is None:
        return "no_device"
    # The perfect backend skips only devices that cannot show the push.
    return "no_permission" if permission != "granted" else "not_sent"


def test_perfect_backend_waterfall(tmp_path):
    inputs, backend = run_model(tmp_path)
    result = judge_run(inputs)
    expected = expected_outcomes(inputs.truth_paths[0], backend.sent, inputs.scenario)
    journey = result.journeys[0]

    assert journey.excluded == expected["excluded"]
    for outcome in OUTCOMES:
        assert journey.outcomes[outcome] == expected[outcome], outcome
    assert sum(journey.outcomes.values()) == journey.eligible
    # The run must exercise the funnel, or the comparison proves little.
    assert expected["displayed"] + expected["opened"] > 10
    assert expected["converted"] > 0
    assert expected["no_permission"] > 0


def test_perfect_backend_has_no_problems(tmp_path):
    inputs, _ = run_model(tmp_path)
    result = judge_run(inputs)
    for kind, problem in result.problems.items():
        assert problem.count == 0, (kind, problem.examples)
    assert result.metrics["delivery_rate"] == 1.0
    assert abs(result.lateness_s["max"]) < 1e-3
    assert abs(result.lateness_wall_ms["max"]) < 1e-3
    assert result.unattributed_pushes == 0


def test_conversions_split_by_latent_draw(tmp_path):
    inputs, _ = run_model(tmp_path)
    result = judge_run(inputs)
    latent = {
        r["cart_id"]: r["buy_anyway_at"]
        for r in read_records(inputs.truth_paths[0])
        if r["kind"] == "latent"
    }
    converted = [row for row in result.rows if row.outcome == "converted"]
    pulled = sum(1 for row in converted if latent.get(row.value) is not None)
    journey = result.journeys[0]
    assert journey.conversions["pulled_forward"] == pulled
    assert journey.conversions["incremental"] == len(converted) - pulled

