"""The objects every handler shares, and the run's clock."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from aiohttp import web

from sim.backend.config import BackendConfig
from sim.backend.limits import RateLimiter
from sim.backend.metrics import Metrics
from sim.backend.store import Store
from sim.formats.epoch import Epoch

# The identity epoch: simulated time equals wall time, which is how the backend runs until a run
# posts its epoch.
WALL_EPOCH = Epoch(wall_t0=0.0, sim_t0=0.0, time_scale=1.0)


@dataclass(frozen=True)
class RunClock:
    """The run's epoch with the run key and shard count posted alongside it."""

    epoch: Epoch = WALL_EPOCH
    run_key: str | None = None
    shard_count: int | None = None

    @staticmethod
    def wall_now() -> float:
        """Return the wall Unix time in seconds."""
        return time.time()

    def sim_now(self) -> float:
        """Return the simulated Unix time in seconds under the current epoch."""
        return self.epoch.sim_at(time.time())


@dataclass
class Services:
    """Configuration, store, counters, rate limiter and clock of one running app."""

    config: BackendConfig
    store: Store
    metrics: Metrics
    limiter: RateLimiter
    clock: RunClock
    # Track API Authorization headers already checked against the credentials, with the site
    # id each authenticates.
    accepted_track_headers: dict[str, str] = field(default_factory=dict)


SERVICES = web.AppKey("services", Services)
