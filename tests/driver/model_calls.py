"""The SDK calls of a short model run, for tests that check what the driver makes of them."""

from __future__ import annotations

import simpy

from sim.model.ports import SDK_METHODS, NullTruth, SdkCall
from sim.model.world import World
from sim.scenario import load_scenario


class Calls:
    """Both of the model's ports: keeps every SDK call, ignores token invalidations."""

    def __init__(self) -> None:
        self.calls: list[SdkCall] = []

    def __getattr__(self, method: str):
        if method not in SDK_METHODS:
            raise AttributeError(method)
        return self.calls.append

    def invalidate(self, invalidation) -> None:
        pass


def model_calls(installs: int = 150, duration: str = "6h") -> list[SdkCall]:
    """Return the SDK calls of the minimal scenario with ``installs``, in the order made."""
    overrides = [f"population.installs={installs}", f"clock.duration={duration}"]
    scenario = load_scenario("minimal", overrides).scenario
    ports = Calls()
    env = simpy.Environment()
    World(scenario, env, sdk=ports, cloud=ports, truth=NullTruth()).start()
    env.run(until=scenario.clock.duration)
    return ports.calls
