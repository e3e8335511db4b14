"""The world behind the wire servers: registry, fault timeline, ledger, inbox and metrics.

A wire server is built from three seams of one ``GatewayWorld``:

    world = GatewayWorld.from_scenario(scenario, "run/deliveries.sqlite").start()
    rules = ApnsRules(auth=..., tokens=world.token_policy(Service.APNS),
                      faults=world.fault_policy, sink=world.sink)
    apns = ApnsGateway(rules, hooks=world.hooks(Service.APNS))

For each push, on its event loop, the server:

1. calls ``fault_policy.action(request)``, awaits ``asyncio.sleep(action.delay)``, and when
   ``action.status`` is set answers that status, reason and ``Retry-After`` without the rules;
2. otherwise runs its rules and ``token_policy.check(request)``, and gives an accepted push to an
   ALIVE token a fresh ``delivery_id`` (any unique string, such as a UUID);
3. calls ``sink.record(request, outcome)`` once, with ``added_latency=action.delay`` and
   ``fault=action.fault`` copied into the outcome, whatever the answer was.

Connection faults are polled: ``world.fault_policy.connection_directives(service, now)`` and
``goaway_due(service, now, interval)``. The servers keep ``world.metrics`` gauges current with
``connection_opened``/``connection_closed`` and ``stream_started``/``stream_ended``.
``world.hooks(service)`` bundles both for one service, and the servers take it as ``hooks=``.

The run's epoch, run key and shard count arrive later, over the control API (see control.py),
or through ``configure_run`` when the orchestrator runs in the same process.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import Counter
from pathlib import Path

from sim.gateways.faults import ConnectionDirectives, FaultTimeline
from sim.gateways.hooks import Outcome, PushRequest, Service
from sim.gateways.inbox import ACK_META_PREFIX, Inbox
from sim.gateways.ledger import DeliveryLedger
from sim.gateways.metrics import GatewayMetrics
from sim.gateways.registry import ServiceTokenPolicy, TokenRegistry
from sim.gateways.run import RunConfig, RunState
from sim.scenario.schema import Fault, Scenario

log = logging.getLogger(__name__)


class WorldSink:
    """DeliverySink that counts each answered push and hands it to the ledger."""

    def __init__(self, ledger: DeliveryLedger, metrics: GatewayMetrics) -> None:
        self.ledger = ledger
        self.metrics = metrics

    def record(self, request: PushRequest, outcome: Outcome) -> None:
        """Count and queue one answered push; never blocks."""
        self.metrics.observe(request, outcome)
        self.ledger.record(request, outcome)


# Wall seconds between a wire server's polls of the connection faults. A GOAWAY storm's rate is
# at most 1 per connection per second, so 0.1 s keeps each draw's chance under 10 %.
DEFAULT_POLL_INTERVAL = 0.1


class ServiceHooks:
    """WorldHooks of one service: the world's gauges and fault timeline, bound to ``service``."""

    def __init__(
        self,
        service: Service,
        timeline: FaultTimeline,
        metrics: GatewayMetrics,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
    ) -> None:
        if poll_interval <= 0:
            raise ValueError(
                f"invalid poll_interval {poll_interval!r}: use a positive number of wall seconds, "
                f"such as {DEFAULT_POLL_INTERVAL}"
            )
        self.service = service
        self.poll_interval = poll_interval
        self._timeline = timeline
        self._metrics = metrics

    def connection_opened(self) -> None:
        self._metrics.connection_opened(self.service)

    def connection_closed(self) -> None:
        self._metrics.connection_closed(self.service)

    def stream_started(self) -> None:
        self._metrics.stream_started(self.service)

    def stream_ended(self) -> None:
        self._metrics.stream_ended(self.service)

    def directives(self, now: float) -> ConnectionDirectives:
        return self._timeline.connection_directives(self.service, now)

    def goaway_due(self, now: float) -> bool:
        return self._timeline.goaway_due(self.service, now, self.poll_interval)


class GatewayWorld:
    """Everything the gateways know about the simulated phones, wired together.

    ``mode``, ``topic`` and ``project`` are the defaults a posted run may override.
    ``control_token`` is the bearer token of the control and inbox APIs. A random one is made
    when none is given. The code that writes the gateways' config file reads it from here.
    """

    def __init__(
        self,
        ledger_path: str | Path,
        *,
        mode: str = "registry",
        topic: str = "",
        project: str = "",
        faults: list[Fault] | tuple[Fault, ...] = (),
        seed: int = 0,
        flush_interval: float = 0.1,
        throttle_limit: int = 0,
        throttle_window: float = 60.0,
        max_inbox_tail: int = 10_000,
        control_token: str | None = None,
    ) -> None:
        self.default_mode = mode
        self.default_topic = topic
        self.default_project = project
        # The throttle that a run posted without one gets, so that no run inherits another's.
        self.default_throttle = (throttle_limit, throttle_window)
        # Hex, so that the token never starts with "-" when a command line passes it on.
        self.control_token = control_token or secrets.token_hex(32)
        self.run = RunState()
        self.metrics = GatewayMetrics()
        self.registry = TokenRegistry(
            self.run,
            throttle_limit=throttle_limit,
            throttle_window=throttle_window,
            default_mode=mode,
            default_topic=topic,
            default_project=project,
        )
        self.timeline = FaultTimeline(
            self.run, faults, seed=seed, on_action=self.metrics.fault_applied
        )
        self.ledger = DeliveryLedger(ledger_path, self.run, flush_interval=flush_interval)

        acks = {
            int(key[len(ACK_META_PREFIX) :]): int(value)
            for key, value in self.ledger.meta_items(ACK_META_PREFIX).items()
        }
        self.inbox = Inbox(
            ledger_path,
            last_seq=self.ledger.next_seq - 1,
            acks=acks,
            max_tail=max_inbox_tail,
            store_ack=self._store_ack,
        )
        self.ledger.on_commit = self.inbox.publish
        self.sink = WorldSink(self.ledger, self.metrics)
        self.metrics.add_collector(self._collect)

    @classmethod
    def from_scenario(cls, scenario: Scenario, ledger_path: str | Path, **options) -> GatewayWorld:
        """Build the world a scenario describes: its mode, its fault timeline and its seed."""
        options.setdefault("mode", scenario.gateways.mode)
        options.setdefault("seed", scenario.seed)
        return cls(ledger_path, faults=scenario.gateways.faults, **options)

    @property
    def fault_policy(self) -> FaultTimeline:
        return self.timeline

    def token_policy(self, service: Service) -> ServiceTokenPolicy:
        """Return the token policy a wire server of ``service`` is constructed with."""
        return self.registry.for_service(service)

    def hooks(self, service: Service, poll_interval: float = DEFAULT_POLL_INTERVAL) -> ServiceHooks:
        """Return the connection hooks a wire server of ``service`` is constructed with."""
        return ServiceHooks(service, self.timeline, self.metrics, poll_interval)

    def configure_run(self, config: RunConfig) -> None:
        """Install the run's epoch, key and shard count for every part at once."""
        self.run.set(config)
        # Every push of a run follows its first action, so an earlier delivery belongs to an
        # earlier run on these gateways. Posting the same run again, after a restart, hides
        # nothing of it.
        self.inbox.start_run(config.epoch.wall_t0)
        log.info(
            "run configured: mode %s, %d shards, time_scale %g, wall_t0 %.3f",
            config.mode,
            config.shard_count,
            config.epoch.time_scale,
            config.epoch.wall_t0,
        )

    def _store_ack(self, shard: int, seq: int) -> None:
        self.ledger.set_meta(f"{ACK_META_PREFIX}{shard}", str(seq))

    def start(self) -> GatewayWorld:
        """Start the ledger's writer; return the world so construction and start chain."""
        self.ledger.start()
        return self

    def close(self) -> None:
        """Write what is queued, close the ledger cleanly and release the inbox's files."""
        self.ledger.close()
        self.inbox.close()

    def _collect(self, now: float):
        counts = self.registry.counts(now)
        yield (
            "pushsim_gateway_tokens",
            "gauge",
            "Tokens by state: dead (reported gone), dying (invalidated, still accepted), and "
            "with the per-token throttle on, active (pushed within about two throttle windows).",
            [
                ("pushsim_gateway_tokens", {"state": state}, value)
                for state, value in counts.items()
            ],
        )
        yield (
            "pushsim_ledger_backlog",
            "gauge",
            "Answered pushes queued for the ledger's writer.",
            [("pushsim_ledger_backlog", {}, self.ledger.backlog)],
        )
        yield (
            "pushsim_ledger_rows_committed_total",
            "counter",
            "Ledger rows committed since the gateways started.",
            [("pushsim_ledger_rows_committed_total", {}, self.ledger.committed)],
        )
        yield (
            "pushsim_ledger_write_errors_total",
            "counter",
            "Batches of ledger rows lost because SQLite failed to write them.",
            [("pushsim_ledger_write_errors_total", {}, self.ledger.write_errors)],
        )
        gap = self.ledger.possible_gap
        yield (
            "pushsim_ledger_possible_gap_seconds",
            "gauge",
            "Wall seconds of pushes a crash before this start may have lost (0 after a clean "
            "shutdown).",
            [("pushsim_ledger_possible_gap_seconds", {}, gap.seconds if gap else 0.0)],
        )
        yield (
            "pushsim_inbox_memory_entries",
            "gauge",
            "Deliveries the inboxes hold in memory.",
            [("pushsim_inbox_memory_entries", {}, self.inbox.memory_entries())],
        )

        active: Counter[tuple[str, str]] = Counter()
        directives = []
        for service in Service:
            for fault in self.timeline.active(service, now):
                active[(service.value, fault.kind)] += 1
            directive = self.timeline.connection_directives(service, now)
            directives.append(
                ("pushsim_gateway_goaway_rate", {"service": service.value}, directive.goaway_rate)
            )
            if directive.max_streams is not None:
                directives.append(
                    ("pushsim_gateway_max_streams", {"service": service.value},
                     directive.max_streams)
                )  # fmt: skip
        yield (
            "pushsim_gateway_fault_active",
            "gauge",
            "Scripted faults active now, by service and kind.",
            [
                ("pushsim_gateway_fault_active", {"service": service, "kind": kind}, count)
                for (service, kind), count in sorted(active.items())
            ],
        )
        yield (
            "pushsim_gateway_goaway_rate",
            "gauge",
            "GOAWAYs per connection per wall second that the timeline asks for now.",
            [sample for sample in directives if sample[0] == "pushsim_gateway_goaway_rate"],
        )
        yield (
            "pushsim_gateway_max_streams",
            "gauge",
            "Concurrent-stream limit a stream_limit fault imposes now.",
            [sample for sample in directives if sample[0] == "pushsim_gateway_max_streams"],
        )

    def render_metrics(self) -> str:
        return self.metrics.render(time.time())
