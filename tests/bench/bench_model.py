"""Benchmark of the shopper model on the virtual clock; prints figures, asserts nothing.

Run it from the repository root::

    python tests/bench/bench_model.py [--installs 20000] [--days 2]

It prints, from one process, with CPU time of this process (``time.process_time``) so that
other load on a shared machine does not count:

- the model's SimPy events per second (``env.step()`` calls) against a bare loop of
  timeouts over the same number of steps, and their ratio (target: at least 0.4);
- for scale, a loop whose every step draws one lognormal gap and makes one ``SdkCall``, the
  least work a step that sends an SDK call can do;
- SDK calls generated per second;
- traced memory per group and per installed app at simulated day 7 against day 1
  (target: at most 1.3 times), measured with tracemalloc in a second run.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import simpy

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from sim.model.ports import SdkCall  # noqa: E402
from sim.model.recorder import PlanRecorder  # noqa: E402
from sim.model.streams import Stream  # noqa: E402
from sim.model.world import World  # noqa: E402
from sim.scenario import load_scenario  # noqa: E402

DAY = 86400.0


class CountingPort:
    """SDK and device-cloud port that only counts, to show the model's cost without recording."""

    def __init__(self) -> None:
        self.total = 0

    def _count(self, call) -> None:
        self.total += 1

    identify = register_token = delete_token = track = _count
    anonymous_track = clear_identity = push_metric = _count

    def invalidate(self, invalidation) -> None:
        pass

    def finish(self) -> str:
        return ""


def scenario_for(installs: int, days: float):
    text = f"seed: 5\nclock: {{duration: {days}d}}\npopulation: {{installs: {installs}}}\n"
    return load_scenario(text=text).scenario


def step_model(installs: int, days: float, counting: bool = False) -> tuple[int, float, int]:
    """Run the model with manual steps; return (steps, seconds, SDK calls).

    The plan's recorder encodes and hashes every call; ``counting`` binds a port that only
    counts instead.
    """
    scenario = scenario_for(installs, days)
    env = simpy.Environment()
    recorder = CountingPort() if counting else PlanRecorder()
    world = World(scenario, env, sdk=recorder, cloud=recorder)
    world.start()
    steps = 0
    started = time.process_time()
    while env.peek() < world.horizon:
        env.step()
        steps += 1
    recorder.finish()
    return steps, time.process_time() - started, recorder.total


def step_bare(steps: int, processes: int = 1000) -> float:
    """Run ``steps`` steps of processes that only yield timeouts; return seconds."""
    env = simpy.Environment()

    def ticker(env: simpy.Environment, period: float):
        while True:
            yield env.timeout(period)

    for number in range(processes):
        env.process(ticker(env, 1.0 + number / processes))
    started = time.process_time()
    for _ in range(steps):
        env.step()
    return time.process_time() - started


def step_floor(steps: int, processes: int = 1000) -> float:
    """Run ``steps`` steps that each draw a gap and make one SdkCall; return seconds."""
    env = simpy.Environment()
    made = [0]

    def port(call: SdkCall) -> None:
        made[0] += 1

    def shopper(env: simpy.Environment, stream: Stream):
        now, seq = 0.0, 0
        properties = {"sku": "SKU-00001", "category": "category-01", "price": 35.0}
        while True:
            now += stream.lognormal(20.0, 0.8)
            yield env.timeout(max(0.0, now - env.now))
            seq += 1
            port(
                SdkCall(
                    now,
                    1,
                    seq,
                    "track",
                    "d1-0",
                    "p1-0",
                    "a",
                    None,
                    None,
                    "product_viewed",
                    properties,
                )
            )

    for number in range(processes):
        env.process(shopper(env, Stream(np.random.SeedSequence([1, number]))))
    started = time.process_time()
    for _ in range(steps):
        env.step()
    return time.process_time() - started


def memory_per_shopper(installs_per_day: int) -> list[tuple[float, int, int, int]]:
    """Return (day, traced bytes, groups, installed apps) at simulated days 1 and 7."""
    days = 7
    scenario = scenario_for(installs_per_day * days, days)
    gc.collect()
    tracemalloc.start()
    env = simpy.Environment()
    recorder = PlanRecorder()
    world = World(scenario, env, sdk=recorder, cloud=recorder)
    world.start()
    gc.collect()
    # What the world holds before any group arrives: schedule, catalogue, local clock.
    baseline, _ = tracemalloc.get_traced_memory()
    rows = []
    for day in (1, 7):
        env.run(until=min(day * DAY, world.horizon - 1.0))
        gc.collect()
        current, _ = tracemalloc.get_traced_memory()
        installed = sum(d.installed for g in world.groups.values() for d in g.devices)
        rows.append((day, current - baseline, len(world.groups), installed))
    tracemalloc.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--installs", type=int, default=20000, help="installs in the speed run")
    parser.add_argument("--days", type=float, default=2.0, help="simulated days of the speed run")
    parser.add_argument(
        "--memory-installs-per-day",
        type=int,
        default=1500,
        help="installs per simulated day in the memory run",
    )
    args = parser.parse_args()

    steps, model_seconds, calls = step_model(args.installs, args.days)
    _, counting_seconds, _ = step_model(args.installs, args.days, counting=True)
    bare_seconds = step_bare(steps)
    floor_seconds = step_floor(steps)
    model_rate = steps / model_seconds
    counting_rate = steps / counting_seconds
    bare_rate = steps / bare_seconds
    print(f"speed run: {args.installs} installs over {args.days:g} simulated days")
    print(
        f"  model, plan recorder  {steps:>9} steps in {model_seconds:6.2f} s = "
        f"{model_rate:>9,.0f}/s"
    )
    print(
        f"  model, counting port  {steps:>9} steps in {counting_seconds:6.2f} s = "
        f"{counting_rate:>9,.0f}/s"
    )
    print(
        f"  bare timeouts         {steps:>9} steps in {bare_seconds:6.2f} s = {bare_rate:>9,.0f}/s"
    )
    print(
        f"  one gap and one SdkCall per step: {steps / floor_seconds:,.0f}/s, ratio "
        f"{bare_seconds / floor_seconds:.2f} to bare"
    )
    print(
        f"  ratio model/bare {model_rate / bare_rate:.2f} with the plan recorder, "
        f"{counting_rate / bare_rate:.2f} with the counting port (target >= 0.4)"
    )
    print(f"  SDK calls {calls} = {calls / model_seconds:,.0f}/s with the plan recorder")

    rows = memory_per_shopper(args.memory_installs_per_day)
    print(f"memory run: {args.memory_installs_per_day} installs per day over 7 days (tracemalloc)")
    print("  traced bytes exclude what the world holds before the first group arrives")
    per_group = []
    for day, traced, groups, installed in rows:
        per_group.append(traced / groups)
        print(
            f"  day {day}: {traced / 1e6:7.1f} MB, {groups} groups, {installed} installed apps, "
            f"{traced / groups:,.0f} B per group, {traced / max(installed, 1):,.0f} B per "
            "installed app"
        )
    print(f"  per-group memory day 7 / day 1: {per_group[1] / per_group[0]:.2f} (target <= 1.3)")


if __name__ == "__main__":
    main()
