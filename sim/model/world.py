"""The world: one run's population on a SimPy environment, bound to its two ports.

Example::

    env = simpy.Environment()
    recorder = PlanRecorder()
    world = World(scenario, env, sdk=recorder, cloud=recorder)
    world.start()
    env.run(until=world.horizon)
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from sim.catalogue import canonical_name
from sim.formats.tokens import derive_run_key
from sim.model import reactions
from sim.model.arrivals import LocalClock, schedule
from sim.model.audience import Audience, audience_for
from sim.model.clock import ModelClock
from sim.model.faults import FaultDice
from sim.model.funnel import FunnelChain
from sim.model.group import ShopperGroup
from sim.model.ports import SDK_METHODS, Delivery, DeviceCloudPort, SdkPort, TruthSink
from sim.model.products import build_catalogue
from sim.model.stats import RunStats
from sim.scenario.schema import Scenario


class World:
    """Every shopper group of one shard, on one environment, bound to its ports.

    ``env`` is any ``ModelClock``: a ``simpy.Environment`` for a virtual clock, or a scaled
    real-time one. The model reads time only from it.
    """

    def __init__(
        self,
        scenario: Scenario,
        env: ModelClock,
        sdk: SdkPort,
        cloud: DeviceCloudPort,
        truth: TruthSink | None = None,
        shard: tuple[int, int] = (0, 1),
    ):
        self.scenario = scenario
        self.env = env
        self.sdk = sdk
        self.sdk_methods = {method: getattr(sdk, method) for method in SDK_METHODS}
        self.cloud = cloud
        self.truth = truth
        self.keep_truth = truth is not None
        self.shard = shard
        self.horizon = scenario.clock.duration
        self.run_key = derive_run_key(scenario.seed)

        self.local_clock = LocalClock(scenario)
        self.timezone_names = list(scenario.population.timezones)
        self.schedule = schedule(scenario, self.local_clock)
        self.catalogue = build_catalogue(scenario.funnel.products, scenario.seed)
        self.chain = FunnelChain(scenario.funnel)
        # The event after which the prompt appears, or None when it appears at first open.
        permission = scenario.permission
        self.value_moment = (
            canonical_name(permission.value_moment) if permission.prompt == "value_moment" else None
        )
        self.faults = FaultDice(scenario.sdk_faults)
        self.stats = RunStats(self.horizon)
        self.audiences = [audience_for(self, journey) for journey in scenario.journeys]
        # Audiences by the event names they watch, so other events cost one dict lookup.
        self.watchers: dict[str, list[Audience]] = {}
        for audience in self.audiences:
            for name in audience.watched():
                self.watchers.setdefault(name, []).append(audience)
        # NOTE: groups stay here until the run ends, so that a push to an old token still finds
        # its phone. At about 3.5 kB each (tests/bench), a run of millions needs gigabytes.
        self.groups: dict[int, ShopperGroup] = {}

    def start(self) -> None:
        """Start the arrival process, in which groups join as their installs come due."""
        self.env.process(self._arrive())
        for audience in self.audiences:
            audience.start()

    def _arrive(self) -> Generator[Any, Any, None]:
        index, count = self.shard
        for arrival in self.schedule.arrivals(index, count):
            if arrival.at >= self.horizon:
                return
            if arrival.at > self.env.now:
                yield self.env.timeout(arrival.at - self.env.now)
            group = ShopperGroup(self, arrival)
            self.groups[arrival.group_id] = group
            group.start(arrival.at)

    def observe(self, device, at: float, name: str, properties: dict | None) -> None:
        """Show one tracked event, under its true name, to the journey audiences watching it."""
        for audience in self.watchers.get(name, ()):
            audience.observe(device, at, name, properties)

    def deliver(self, delivery: Delivery) -> str:
        """Hand a push to the phone that owns its token now; see ``reactions.deliver``."""
        return reactions.deliver(self, delivery)
