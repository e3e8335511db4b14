"""The install schedule: when each shopper group arrives, and in which time zone.

Arrivals form a non-homogeneous Poisson process per time zone, drawn by thinning: candidates
come at the peak rate and each is kept with the ratio of the local rate to the peak. The local
rate is the hour-of-day weight times the weekday weight, times a spike's multiplier while a
spike runs in that zone's local time. One seeded stream draws the whole schedule, and group ids
are the arrivals' ranks, so every shard computes the same schedule.
"""

from __future__ import annotations

import datetime
import zoneinfo
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np

from sim.formats.shards import shard_of
from sim.scenario.schema import Scenario

# Spawn key of the schedule's stream. Group streams use the entropy [seed, group_id] instead,
# so the two never share a state.
_SCHEDULE_KEY = 0x5C4ED
# Resolution of the numeric integral of the rate, in simulated seconds.
_GRID = 60.0
# Arrivals converted from the schedule's arrays at a time.
_CHUNK = 4096


class Arrival(NamedTuple):
    """One shopper group's first install: its group id, time and time zone index."""

    group_id: int
    at: float
    timezone: int


class LocalClock:
    """Local hour and weekday weights of each time zone, by UTC hour since the run's start."""

    def __init__(self, scenario: Scenario):
        clock = scenario.clock
        self.start = clock.start.astimezone(datetime.UTC)
        self.zones = [zoneinfo.ZoneInfo(name) for name in scenario.population.timezones]
        self.hours = int(clock.duration // 3600) + 2
        arrival = scenario.population.arrival

        # Offsets in seconds per zone and UTC hour, read at the middle of each hour.
        self.offsets = np.zeros((len(self.zones), self.hours))
        for z, zone in enumerate(self.zones):
            for h in range(self.hours):
                moment = self.start + datetime.timedelta(hours=h, minutes=30)
                self.offsets[z, h] = moment.astimezone(zone).utcoffset().total_seconds()

        self.hourly = np.asarray(arrival.hourly, dtype=float)
        self.weekday = np.asarray(arrival.weekday, dtype=float)
        start_unix = self.start.timestamp()
        self._start_unix = start_unix

        # Mean-one weight per zone and UTC hour, used for session pacing.
        self.session_weights: list[list[float]] = []
        for z in range(len(self.zones)):
            hours = np.arange(self.hours) * 3600.0 + 1800.0
            weights = self.weight(z, hours)
            mean = float(weights.mean()) or 1.0
            self.session_weights.append((weights / mean).tolist())
        self.session_peak = [max(row) for row in self.session_weights]

    def local_seconds(self, zone: int, at: np.ndarray) -> np.ndarray:
        """Return local Unix seconds in ``zone`` at simulated times ``at``."""
        index = np.clip((at // 3600).astype(int), 0, self.hours - 1)
        return self._start_unix + at + self.offsets[zone, index]

    def weight(self, zone: int, at: np.ndarray) -> np.ndarray:
        """Return the hour-of-day times weekday weight in ``zone`` at simulated times ``at``."""
        local = self.local_seconds(zone, at)
        hour = ((local // 3600) % 24).astype(int)
        # 1970-01-01 was a Thursday, weekday 3 counting Monday as 0.
        weekday = ((local // 86400 + 3) % 7).astype(int)
        return self.hourly[hour] * self.weekday[weekday]

    def session_weight(self, zone: int, at: float) -> float:
        """Return the mean-one activity weight of ``zone`` at simulated time ``at``."""
        row = self.session_weights[zone]
        index = int(at // 3600)
        return row[index] if index < len(row) else row[-1]


def _spike_windows(scenario: Scenario, clock: LocalClock, zone: int) -> list[tuple]:
    """Return (start, end, multiplier) in simulated seconds for each spike in ``zone``."""
    windows = []
    for spike in scenario.population.arrival.spikes:
        # The spike's wall-clock reading is taken in this zone: 09:00 means 09:00 local.
        local = spike.at.replace(tzinfo=clock.zones[zone])
        start = (local - clock.start).total_seconds()
        windows.append((start, start + spike.duration, spike.multiplier))
    return windows


def install_rate(scenario: Scenario, clock: LocalClock, zone: int, at: np.ndarray) -> np.ndarray:
    """Return the relative install weight in ``zone`` at times ``at``, spikes included."""
    weights = clock.weight(zone, at)
    for start, end, multiplier in _spike_windows(scenario, clock, zone):
        weights = np.where((at >= start) & (at < end), weights * multiplier, weights)
    return weights


def expected_groups(scenario: Scenario) -> float:
    """Return the expected number of group arrivals over the run.

    ``population.installs`` counts installs, and a share ``multi_device`` of people install on
    a second device, so groups arrive at installs / (1 + multi_device).
    """
    population = scenario.population
    return population.installs / (1.0 + population.multi_device)


def schedule(scenario: Scenario, clock: LocalClock | None = None) -> Schedule:
    """Draw every group arrival of the run, in time order, with group ids from 1."""
    clock = clock or LocalClock(scenario)
    duration = scenario.clock.duration
    rng = np.random.Generator(
        np.random.PCG64(np.random.SeedSequence([scenario.seed], spawn_key=(_SCHEDULE_KEY,)))
    )
    groups = expected_groups(scenario)
    grid = np.arange(0.0, duration, _GRID) + _GRID / 2

    times: list[np.ndarray] = []
    zones: list[np.ndarray] = []
    for zone, share in enumerate(scenario.population.timezones.values()):
        weights = install_rate(scenario, clock, zone, grid)
        integral = float(weights.sum()) * _GRID
        peak = float(weights.max())
        if integral <= 0 or peak <= 0 or share <= 0:
            continue

        # Candidates at the peak rate, each kept with the local rate over the peak.
        peak_rate = groups * share * peak / integral
        count = int(rng.poisson(peak_rate * duration))
        candidates = np.sort(rng.uniform(0.0, duration, count))
        keep = rng.uniform(0.0, 1.0, count) * peak < install_rate(scenario, clock, zone, candidates)
        times.append(candidates[keep])
        zones.append(np.full(int(keep.sum()), zone))

    if not times:
        return Schedule(np.zeros(0), np.zeros(0, dtype=int))
    all_times = np.concatenate(times)
    all_zones = np.concatenate(zones)
    order = np.lexsort((all_zones, all_times))
    return Schedule(all_times[order], all_zones[order])


class Schedule:
    """Every group arrival of a run, in time order; group ``i + 1`` is the arrival at rank i."""

    def __init__(self, times: np.ndarray, zones: np.ndarray):
        self.times = times
        self.zones = zones

    def __len__(self) -> int:
        return len(self.times)

    def arrivals(self, shard_index: int = 0, shard_count: int = 1) -> Iterator[Arrival]:
        """Yield the arrivals of the groups that shard ``shard_index`` of ``shard_count`` owns."""
        # Arrays are read in chunks of Python numbers: indexing a numpy array one element at a
        # time costs more than the rest of an arrival together.
        for first in range(0, len(self.times), _CHUNK):
            times = self.times[first : first + _CHUNK].tolist()
            zones = self.zones[first : first + _CHUNK].tolist()
            for offset, (at, zone) in enumerate(zip(times, zones, strict=True)):
                group_id = first + offset + 1
                if shard_count > 1 and shard_of(group_id, shard_count) != shard_index:
                    continue
                yield Arrival(group_id, at, zone)
