"""The install schedule: its size, its local-hour shape, spikes, and its indifference to shards."""

from __future__ import annotations

import math

import numpy as np
from model_support import scenario_from

from sim.model.arrivals import LocalClock, expected_groups, schedule

ONE_ZONE = """
seed: 4
clock: {{duration: 14d}}
population:
  installs: {installs}
  multi_device: 0.0
  timezones: {{America/New_York: 1.0}}
  arrival:
    spikes: {spikes}
"""


def test_schedule_size_matches_expectation():
    scenario = scenario_from(ONE_ZONE.format(installs=40000, spikes="[]"))
    arrivals = schedule(scenario)
    expected = expected_groups(scenario)

    assert abs(len(arrivals) - expected) <= 4 * math.sqrt(expected)


def test_installs_follow_local_hour_weights():
    scenario = scenario_from(ONE_ZONE.format(installs=40000, spikes="[]"))
    clock = LocalClock(scenario)
    arrivals = schedule(scenario, clock)
    local = clock.local_seconds(0, arrivals.times)
    hours = ((local // 3600) % 24).astype(int)
    counts = np.bincount(hours, minlength=24)
    weights = np.asarray(scenario.population.arrival.hourly)
    expected = len(arrivals) * weights / weights.sum()

    # Weekday weights differ a little across the 14 days, so allow 5% on top of the noise.
    for hour in range(24):
        allowed = 4 * math.sqrt(expected[hour]) + 0.05 * expected[hour]
        assert abs(counts[hour] - expected[hour]) <= allowed, (hour, counts[hour], expected[hour])


def test_spike_raises_local_rate():
    spike = "[{at: 2026-11-28T09:00:00Z, duration: 2h, multiplier: 5}]"
    scenario = scenario_from(ONE_ZONE.format(installs=40000, spikes=spike))
    clock = LocalClock(scenario)
    times = schedule(scenario, clock).times
    local = clock.local_seconds(0, times)
    start = clock.local_seconds(0, np.array([0.0]))[0]
    day = ((local - start) // 86400).astype(int)
    hour = ((local // 3600) % 24).astype(int)
    in_spike = np.sum((day == 2) & ((hour == 9) | (hour == 10)))
    other_days = [np.sum((day == d) & ((hour == 9) | (hour == 10))) for d in (1, 3, 8, 9, 10)]

    assert in_spike > 3.5 * np.mean(other_days)


def test_schedule_is_the_same_in_every_shard():
    scenario = scenario_from(ONE_ZONE.format(installs=3000, spikes="[]"))
    whole = schedule(scenario)
    ids = sorted(a.group_id for i in range(3) for a in whole.arrivals(i, 3))

    assert ids == list(range(1, len(whole) + 1))
