"""Reachable shoppers over simulated time, and live versus dead registered device tokens.

An opted-in shopper uses an installed app with push permission. They are reachable when one
such device has a token that is alive by truth and is registered, by the SDK calls sent, on
the right profile: their own once they have identified anywhere, else the install's anonymous
profile.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sim.oracle.ledger import TruthIndex

# Number of sample points on the simulated-time grid.
GRID_POINTS = 49

# Opted-in shoppers a sample needs before its share counts towards the lowest share. With
# fewer, one shopper moves the share by several points, so the first samples of a run, which
# hold a handful of shoppers, would set the lowest share by chance. At 30 the binomial
# standard error of a share near 0.9 is about 0.05.
MIN_OPTED_IN = 30


@dataclass
class ReachSeries:
    """Samples on a grid of simulated seconds since the run's start."""

    at: list[float] = field(default_factory=list)
    opted_in: list[int] = field(default_factory=list)
    reachable: list[int] = field(default_factory=list)
    live_tokens: list[int] = field(default_factory=list)
    dead_registered_tokens: list[int] = field(default_factory=list)

    def share(self, position: int) -> float | None:
        opted = self.opted_in[position]
        return self.reachable[position] / opted if opted else None

    def lowest_share(self, min_opted_in: int = MIN_OPTED_IN) -> float | None:
        """Return the lowest share over the samples with at least ``min_opted_in`` shoppers.

        A run that never has that many takes its lowest share over the samples with the most
        opted-in shoppers, the best it can measure. None when no shopper ever opted in.
        """
        largest = max(self.opted_in, default=0)
        if largest == 0:
            return None
        floor = min(min_opted_in, largest)
        return min(
            self.reachable[i] / opted for i, opted in enumerate(self.opted_in) if opted >= floor
        )


def sample_times(duration: float, points: int = GRID_POINTS) -> list[float]:
    """Return ``points`` evenly spaced times from 0 to ``duration`` inclusive."""
    if points < 2 or duration <= 0:
        return [0.0]
    return [duration * i / (points - 1) for i in range(points)]


def reach_over_time(index: TruthIndex, duration: float) -> ReachSeries:
    """Sample opted-in and reachable shoppers and registered token states over the run."""
    series = ReachSeries()
    view = index.view
    for at in sample_times(duration):
        opted, reachable = set(), set()
        for device in index.device_tokens:
            person = view.person_using(device, at)
            if person is None or not view.installed(device, at):
                continue
            if not view.permission_granted(device, at):
                continue
            opted.add(person)
            token = index.live_token(device, at)
            if token is None:
                continue
            if index.token_profile(token, at) == _right_profile(index, device, person, at):
                reachable.add(person)

        live = dead = 0
        for token, registrations in index.registrations.items():
            if registrations.profile_at(at) is None:
                continue
            if index.token_alive(token, at):
                live += 1
            else:
                dead += 1
        series.at.append(at)
        series.opted_in.append(len(opted))
        series.reachable.append(len(reachable))
        series.live_tokens.append(live)
        series.dead_registered_tokens.append(dead)
    return series


def _right_profile(index: TruthIndex, device: str, person: str, at: float) -> str:
    identified = index.identified_at.get(person)
    if identified is not None and identified <= at:
        return f"user:{person}"
    return f"anonymous:{index.anonymous_id(device, at)}"
