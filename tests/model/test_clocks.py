"""One model, two clocks: a real-time environment produces the same calls as the virtual one."""

from __future__ import annotations

import simpy
import simpy.rt
from model_support import scenario_from

from sim.model.recorder import PlanRecorder
from sim.model.world import World

SCENARIO = """
seed: 5
clock: {duration: 2h}
population: {installs: 400}
sessions: {per_day: 6.0}
"""

# Simulated seconds per wall second for the real-time run: 2 simulated hours in about 0.4 s.
SCALE = 18000.0


def _plan_hash(env: simpy.Environment) -> tuple[str, int]:
    recorder = PlanRecorder()
    world = World(scenario_from(SCENARIO), env, sdk=recorder, cloud=recorder)
    world.start()
    env.run(until=world.horizon)
    return recorder.finish(), recorder.total


def test_realtime_matches_virtual_clock():
    virtual_hash, calls = _plan_hash(simpy.Environment())
    realtime_hash, _ = _plan_hash(simpy.rt.RealtimeEnvironment(factor=1 / SCALE, strict=False))

    assert calls > 200
    assert realtime_hash == virtual_hash
