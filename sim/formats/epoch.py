"""The run's epoch: the one conversion between wall time and simulated time.

Every component of a run receives the same epoch before the first action and converts with it.
No component keeps its own notion of simulated time.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Epoch:
    """Anchor of a run's scaled clock.

    ``wall_t0`` is a Unix time in seconds, ``sim_t0`` the simulated Unix time in seconds at that
    instant, and ``time_scale`` the simulated seconds that pass in one wall second.
    """

    wall_t0: float
    sim_t0: float
    time_scale: float = 1.0

    def __post_init__(self) -> None:
        if not self.time_scale > 0:
            raise ValueError(f"invalid time_scale {self.time_scale!r}: it must be greater than 0")

    def sim_at(self, wall: float) -> float:
        """Return the simulated Unix time at wall Unix time ``wall``."""
        return self.sim_t0 + (wall - self.wall_t0) * self.time_scale

    def wall_at(self, sim: float) -> float:
        """Return the wall Unix time at which simulated Unix time ``sim`` happens."""
        return self.wall_t0 + (sim - self.sim_t0) / self.time_scale

    def wall_duration(self, sim_seconds: float) -> float:
        """Convert a simulated duration in seconds to wall seconds."""
        return sim_seconds / self.time_scale

    def sim_duration(self, wall_seconds: float) -> float:
        """Convert a wall duration in seconds to simulated seconds."""
        return wall_seconds * self.time_scale

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_mapping(cls, data: dict) -> Epoch:
        """Build an epoch from a decoded JSON object, raising ValueError on a missing key."""
        try:
            return cls(
                wall_t0=float(data["wall_t0"]),
                sim_t0=float(data["sim_t0"]),
                time_scale=float(data.get("time_scale", 1.0)),
            )
        except KeyError as missing:
            raise ValueError(f"invalid epoch: missing key {missing.args[0]!r}") from None
        except (TypeError, ValueError) as error:
            raise ValueError(f"invalid epoch {data!r}: {error}") from None
