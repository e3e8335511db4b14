"""Run the model on a virtual clock with both ports bound to a recorder.

Example::

    result = run_plan(scenario, shard=(0, 2), events_path=Path("out/events.jsonl"))
    print(result.summary["plan_hash"])
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import simpy

from sim.formats.truth import TruthWriter
from sim.model.recorder import PlanRecorder, write_events
from sim.model.summary import summarise
from sim.model.world import World
from sim.scenario.schema import Scenario

# The run advances in steps of this many simulated seconds between progress callbacks.
PROGRESS_STEP = 600.0


@dataclass
class PlanResult:
    """A finished plan: its summary, and the world for callers that inspect it."""

    summary: dict[str, Any]
    world: World
    recorder: PlanRecorder


def run_plan(
    scenario: Scenario,
    shard: tuple[int, int] = (0, 1),
    events_path: Path | None = None,
    truth_path: Path | None = None,
    progress: Callable[[World, PlanRecorder], None] | None = None,
    before_run: Callable[[World], None] | None = None,
) -> PlanResult:
    """Simulate the shard's groups over the scenario's duration and summarise them.

    ``progress`` is called after every 10 simulated minutes; ``before_run`` may start extra
    processes on ``world.env``, such as test pushes into the inbox.
    """
    events = write_events(events_path) if events_path else None
    truth = TruthWriter(truth_path) if truth_path else None
    try:
        recorder = PlanRecorder(events=events, truth=truth)
        env = simpy.Environment()
        world = World(scenario, env, sdk=recorder, cloud=recorder, truth=truth, shard=shard)
        world.start()
        if before_run is not None:
            before_run(world)

        until = 0.0
        while until < world.horizon:
            until = min(until + PROGRESS_STEP, world.horizon)
            env.run(until=until)
            if progress is not None:
                progress(world, recorder)
        plan_hash = recorder.finish()
    finally:
        if events is not None:
            events.close()
        if truth is not None:
            truth.close()
    return PlanResult(summarise(world, recorder, plan_hash), world, recorder)
