"""One worker's live run: the shopper model on the scaled clock, bound to HTTP and the inbox.

The model is the same code ``pushsim plan`` runs. Only its ports differ: SDK calls become
requests queued on device lanes, token invalidations go to the gateways' control API in batches,
and pushes from the gateways' inbox are handed to the phones that own their tokens.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gevent

from sim import catalogue
from sim.driver.cdp_batch import FLUSH_INTERVAL, CdpBatchAdapter
from sim.driver.clock import ScaledEnvironment
from sim.driver.control import ControlClient, ControlError
from sim.driver.heap import freeze_survivors, release_frozen
from sim.driver.http import LaneClient
from sim.driver.lanes import Action, DeviceLanes
from sim.driver.sdk_records import call_status, sdk_call_line
from sim.driver.timing import TRIGGER_TO_GATEWAY, TimingTable
from sim.driver.track_v1 import TrackV1Adapter
from sim.driver.wire import HttpRequest
from sim.formats.epoch import Epoch
from sim.formats.payload import find_link, link_fields
from sim.formats.truth import TruthWriter
from sim.model.ports import Delivery, SdkCall, TokenInvalidation
from sim.model.world import World
from sim.oracle.generator import falling_behind
from sim.oracle.ledger import UNSENT
from sim.oracle.outcomes import late_tolerance
from sim.scenario import Scenario

log = logging.getLogger(__name__)

# Statuses that an SDK retries with the same body, and how often, with waits in wall seconds.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
RETRY_WAITS = (0.25, 1.0)
INVALIDATION_FLUSH = 0.5  # wall seconds between batches of token invalidations
TRUTH_FLUSH = 1.0  # wall seconds between flushes of the truth ledger
HEAP_FREEZE = 2.0  # wall seconds between freezes of the objects that survived young collections
INBOX_WAIT = 1.0  # wall seconds a long poll of the inbox may wait


@dataclass(frozen=True)
class RunPlan:
    """The epoch and shard that a worker receives before the first action."""

    epoch: Epoch
    shard_index: int
    shard_count: int

    def to_message(self) -> dict:
        return {
            "epoch": {
                "wall_t0": self.epoch.wall_t0,
                "sim_t0": self.epoch.sim_t0,
                "time_scale": self.epoch.time_scale,
            },
            "shard_index": self.shard_index,
            "shard_count": self.shard_count,
        }

    @classmethod
    def from_message(cls, data: dict) -> RunPlan:
        return cls(Epoch.from_mapping(data["epoch"]), int(data["shard_index"]),
                   int(data["shard_count"]))  # fmt: skip


class TriggerClock:
    """Wall times at which journey triggers were sent, keyed by the journey's match value.

    They let the driver report ``trigger_to_gateway``: the wall time from the SDK call that
    triggered a journey to its push reaching the gateway, net of the journey's scaled delay.
    Each journey also keeps its late tolerance in wall ms, which an early push must exceed to
    count as early, as the report counts it.
    """

    def __init__(self, scenario: Scenario):
        self.journeys = []
        self.tolerance_ms: dict[str, float] = {}
        scale = scenario.clock.time_scale
        for journey in scenario.journeys:
            if journey.kind not in ("event", "repeated_event", "delay_range"):
                continue
            key = journey.exit.match or journey.trigger.same or "cart_id"
            delay = journey.delay / scale
            self.journeys.append((journey, key, delay))
            self.tolerance_ms[journey.name] = late_tolerance(journey) / scale * 1000.0
        self.sent: dict[tuple[str, str], float] = {}

    def note(self, call: SdkCall, wall: float) -> None:
        name = catalogue.canonical_name(call.event or "")
        for journey, key, _ in self.journeys:
            if name == journey.trigger.event and call.properties:
                value = call.properties.get(key)
                if isinstance(value, str):
                    self.sent.setdefault((journey.name, value), wall)

    def lateness_ms(self, payload: Any, gateway_wall: float) -> tuple[float, bool] | None:
        """Return a push's lateness in wall ms and whether it came early beyond tolerance."""
        for journey, key, delay in self.journeys:
            fields = link_fields(journey.link, find_link(payload, journey.payload_path))
            sent = self.sent.get((journey.name, fields.get(key, "")))
            if sent is not None:
                lateness = (gateway_wall - sent - delay) * 1000.0
                return lateness, lateness < -self.tolerance_ms[journey.name]
        return None


class LiveRun:
    """The model of one shard, running against a backend and the gateways."""

    def __init__(
        self,
        scenario: Scenario,
        plan: RunPlan,
        run_dir: Path,
        *,
        timing: TimingTable,
        gateways: ControlClient | None,
    ) -> None:
        self.scenario = scenario
        self.plan = plan
        self.timing = timing
        self.gateways = gateways
        self.run_start = scenario.clock.start.timestamp()
        self.lanes = DeviceLanes(scenario.clock.lag_budget, timing)
        self.env = ScaledEnvironment(
            plan.epoch, run_start=self.run_start, backlogged=self.lanes.backlogged
        )
        self.truth = TruthWriter(run_dir / f"truth-{plan.shard_index}.jsonl")
        self.triggers = TriggerClock(scenario)
        self.counters: Counter[str] = Counter()
        self._behind_warned = False
        self._invalidations: list[dict] = []
        self._greenlets: list[gevent.Greenlet] = []
        self._stopping = False
        # finished: the model makes no more calls; completed: it got there by reaching its
        # horizon, not because the run was stopped or the model failed.
        self.finished = False
        self.completed = False

        target = scenario.target
        if target.protocol == "cdp_batch":
            self.cdp: CdpBatchAdapter | None = CdpBatchAdapter(target.write_key, self._call_wall)
            self.track_v1: TrackV1Adapter | None = None
        else:
            self.cdp = None
            self.track_v1 = TrackV1Adapter(target.site_id, target.api_key, self._call_wall)

        self.world = World(
            scenario,
            self.env,
            sdk=self,
            cloud=self,
            truth=self.truth,
            shard=(plan.shard_index, plan.shard_count),
        )

    # The SDK port: every method queues the call on its device's lane.

    def _call_wall(self, call: SdkCall) -> float:
        return self.env.wall_at(call.at)

    def _sdk_call(self, call: SdkCall) -> None:
        self.counters[f"sdk:{call.method}"] += 1
        due = self.env.wall_at(call.at)

        if self.cdp is not None:
            batch = self.cdp.add(call)
            if batch is not None:
                self._submit(call.device, due, *batch)
            elif self.cdp.is_first(call.device):
                self.env.process(self._flush_later(call.device))
            elif call.method == "clear_identity":
                self._write_truth([call], "local", None)
            return

        requests = self.track_v1.requests_for(call)
        if not requests:
            # Logging out, or a token held until identify: nothing leaves the phone yet.
            self._write_truth([call], "local", None)
            return
        self._submit(call.device, due, requests, [call])

    identify = register_token = delete_token = track = _sdk_call
    anonymous_track = clear_identity = push_metric = _sdk_call

    def _flush_later(self, device: str):
        yield self.env.timeout(FLUSH_INTERVAL)
        batch = self.cdp.flush(device, sent_at=self.env.wall_at(self.env.now))
        if batch is not None:
            self._submit(device, self.env.wall_at(self.env.now), *batch)

    def _submit(
        self, device: str, due: float, requests: list[HttpRequest] | HttpRequest, calls: list
    ) -> None:
        if isinstance(requests, HttpRequest):
            requests = [requests]
        self.lanes.submit(
            Action(
                device,
                due,
                send=lambda client: self._send(client, requests, calls, due),
                dropped=lambda lag: self._write_truth(calls, "dropped", None, lag=lag),
                unsent=lambda lag: self._write_truth(calls, UNSENT, None),
            )
        )

    def _send(
        self, client: LaneClient, requests: list[HttpRequest], calls: list[SdkCall], due: float
    ) -> None:
        sent_at = time.time()
        for call in calls:
            self.triggers.note(call, sent_at)
        statuses = [self._send_one(client, request) for request in requests]
        status = call_status(statuses)
        self._write_truth(calls, "sent", status, lag=max(0.0, sent_at - due), sent_at=sent_at)

    def _send_one(self, client: LaneClient, request: HttpRequest) -> int | None:
        status = None
        for wait in (*RETRY_WAITS, None):
            status = client.send(request)
            if status not in RETRY_STATUSES or wait is None or self._stopping:
                return status
            self.counters["sdk_retries"] += 1
            gevent.sleep(wait)
        return status

    def _write_truth(
        self,
        calls: list[SdkCall],
        status: str,
        http_status: int | None,
        *,
        lag: float | None = None,
        sent_at: float | None = None,
    ) -> None:
        lag_ms = None if lag is None else round(lag * 1000.0, 1)
        sent_wall = None if sent_at is None else round(sent_at, 4)
        for call in calls:
            self.truth.write_line(sdk_call_line(call, status, http_status, lag_ms, sent_wall))
        self.counters[f"truth:{status}"] += len(calls)
        if status == "dropped" and not self._behind_warned:
            self._warn_if_behind()

    def _warn_if_behind(self) -> None:
        """Log once that this shard drops SDK calls, as pushsim run warns from the ledgers."""
        sent, dropped = self.counters["truth:sent"], self.counters["truth:dropped"]
        if not falling_behind(sent, dropped):
            return
        self._behind_warned = True
        log.warning(
            "pushsim: shard %d dropped %d of %d SDK calls so far (%.1f%%), each more than "
            "clock.lag_budget late, so the backend gets less load than the scenario describes; "
            "add Locust users (-u) when every lane waits for slow responses, or worker "
            "processes when the CPU is short",
            self.plan.shard_index,
            dropped,
            sent + dropped,
            100.0 * dropped / (sent + dropped),
        )

    # The device-cloud port.

    def invalidate(self, invalidation: TokenInvalidation) -> None:
        self._invalidations.append(
            {
                "token": invalidation.token,
                "platform": invalidation.platform,
                "group_id": invalidation.group_id,
                "reason": invalidation.reason,
                "died_at": self.run_start + invalidation.died_at,
                "reported_at": self.run_start + invalidation.reported_at,
            }
        )

    def _flush_invalidations(self) -> None:
        if not self._invalidations or self.gateways is None:
            self._invalidations.clear()
            return
        batch, self._invalidations = self._invalidations, []
        try:
            self.gateways.request("POST", "/control/invalidations", {"invalidations": batch})
            self.counters["invalidations_sent"] += len(batch)
        except ControlError as error:
            # Put them back: each has the whole 200-window to arrive, so the next try is in time.
            log.warning("sending %d token invalidations failed: %s", len(batch), error)
            self._invalidations = batch + self._invalidations

    # Pushes from the gateways.

    def _poll_inbox(self) -> None:
        cursor = 0
        path = f"/inbox/{self.plan.shard_index}"
        while not self._stopping:
            try:
                page = self.gateways.request(
                    "GET", f"{path}?after={cursor}&wait={INBOX_WAIT}&limit=500"
                )
            except ControlError as error:
                log.warning("polling the inbox failed: %s", error)
                gevent.sleep(0.5)
                continue
            deliveries = page.get("deliveries", [])
            for item in deliveries:
                self._receive(item)
            if deliveries:
                cursor = page.get("cursor", deliveries[-1]["seq"])
                try:
                    self.gateways.request("POST", f"{path}/ack", {"cursor": cursor})
                except ControlError as error:
                    log.warning("acknowledging inbox cursor %s failed: %s", cursor, error)

    def _receive(self, item: dict) -> None:
        payload = item.get("payload")
        gateway_wall = float(item.get("wall_time", time.time()))
        self.counters["pushes_received"] += 1
        timing = self.triggers.lateness_ms(payload, gateway_wall)
        if timing is not None:
            lateness, early = timing
            # Locust's response-time histogram has no negative times, so an early push
            # counts 0 ms there and is counted apart.
            self.timing.get(TRIGGER_TO_GATEWAY).add(max(0.0, lateness))
            self.counters["pushes_early"] += early
        delivery = Delivery(item["delivery_id"], item["token"], payload or {})
        self.env.process(self._deliver_at(delivery, self.env.sim_offset_at(gateway_wall)))

    def _deliver_at(self, delivery: Delivery, at: float):
        if at > self.env.now:
            yield self.env.timeout(at - self.env.now)
        outcome = self.world.deliver(delivery)
        self.counters[f"push:{outcome}"] += 1

    # Lifecycle.

    def _run_model(self) -> None:
        try:
            self.world.start()
            self.env.run_scaled(until=self.horizon)
            self.completed = not self._stopping
        except Exception:
            log.exception("the shopper model of shard %d failed", self.plan.shard_index)
            raise
        finally:
            self.finished = True
            # The model makes no more calls, so the lanes end once the queued ones left.
            self.lanes.finish()

    def _every(self, seconds: float, function) -> None:
        while not self._stopping:
            gevent.sleep(seconds)
            function()

    def start(self) -> None:
        """Start the model, the invalidation sender, the inbox poller and the truth flusher."""
        self._greenlets.append(gevent.spawn(self._run_model))
        self._greenlets.append(gevent.spawn(self._every, TRUTH_FLUSH, self.truth.flush))
        self._greenlets.append(gevent.spawn(self._every, HEAP_FREEZE, freeze_survivors))
        if self.gateways is not None:
            self._greenlets.append(
                gevent.spawn(self._every, INVALIDATION_FLUSH, self._flush_invalidations)
            )
            self._greenlets.append(gevent.spawn(self._poll_inbox))

    def stop(self) -> None:
        """Stop every greenlet, send what is pending and close the truth ledger."""
        if self._stopping:
            return
        self._stopping = True
        self.env.stop()
        self._flush_invalidations()
        gevent.killall(self._greenlets, timeout=5)
        dropped, unsent = self.lanes.abandon()
        if dropped or unsent:
            log.warning(
                "pushsim: shard %d ends with %d SDK calls that no lane sent: the truth ledger "
                "counts %d, later than clock.lag_budget, as dropped, and %d, not late yet when "
                "the run stopped, as unsent",
                self.plan.shard_index,
                dropped + unsent,
                dropped,
                unsent,
            )
        release_frozen()
        self.truth.close()

    @property
    def horizon(self) -> float:
        """Simulated seconds from the run's start at which the model ends: duration and drain."""
        return self.scenario.clock.duration + self.scenario.clock.drain

    def live_counters(self) -> dict[str, int]:
        """Return the counters shown beside Locust's request statistics."""
        stats = self.world.stats
        reactions = stats.reactions
        return {
            "devices": sum(stats.devices.values()),
            "tokens": sum(stats.tokens_issued.values()),
            "pushes_received": self.counters["pushes_received"],
            "pushes_early": self.counters["pushes_early"],
            "displayed": reactions.get("displayed", 0),
            "opened": reactions.get("opened", 0),
            "converted": reactions.get("converted", 0),
            "suppressed": sum(v for k, v in reactions.items() if k.startswith("suppressed_")),
            "sent_calls": self.counters["truth:sent"],
            "dropped_calls": self.counters["truth:dropped"],
        }
