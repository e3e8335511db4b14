"""A SimPy environment that follows a scaled wall clock without starving gevent.

``simpy.rt.RealtimeEnvironment`` does not fit inside Locust: with ``strict=True`` it raises as
soon as it falls behind, with ``strict=False`` it steps without yielding while behind and blocks
every other greenlet, and it binds ``time.sleep`` at import, before gevent patches it. This
environment steps in bursts of at most ``burst`` wall seconds and then yields to gevent, so the
SDK lanes and the inbox poller keep running while the model catches up.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import gevent
import simpy

from sim.formats.epoch import Epoch

# How long one burst of model steps may hold the gevent hub, in wall seconds. A 10 ms ticker
# kept its p99 gap near 10 ms at 3,000 actions/s with bursts of this size.
DEFAULT_BURST = 0.004
# The pause between bursts while behind, in wall seconds: long enough for the hub to run a loop
# iteration with timers and I/O, short enough to cost little.
YIELD_SLEEP = 0.0001
# The maximum single sleep while ahead of schedule, so a stop request is seen promptly.
MAX_SLEEP = 0.05
# The pause while the consumers of the model's output are backlogged, in wall seconds.
HOLD_SLEEP = 0.001


class ScaledEnvironment(simpy.Environment):
    """A SimPy environment whose ``now`` is simulated seconds since the run's start.

    ``run_scaled`` processes each event no earlier than the wall moment the epoch gives for it.
    ``lag`` is how far behind the wall clock the last processed event was, in wall seconds.
    While ``backlogged()`` is true, due events wait, so that the model never runs further ahead
    of what its output's consumers can take.
    """

    def __init__(
        self,
        epoch: Epoch,
        *,
        run_start: float,
        burst: float = DEFAULT_BURST,
        wall_clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = gevent.sleep,
        backlogged: Callable[[], bool] | None = None,
    ) -> None:
        super().__init__(initial_time=0.0)
        self.epoch = epoch
        self.run_start = run_start
        self.burst = burst
        self.lag = 0.0
        self.max_lag = 0.0
        self.steps = 0
        self._wall_clock = wall_clock
        self._sleep = sleep
        self._backlogged = backlogged
        self._stopped = False

    def wall_at(self, sim_offset: float) -> float:
        """Return the wall Unix time at which simulated offset ``sim_offset`` is due."""
        return self.epoch.wall_at(self.run_start + sim_offset)

    def sim_offset_at(self, wall: float) -> float:
        """Return the simulated offset since the run's start at wall Unix time ``wall``."""
        return self.epoch.sim_at(wall) - self.run_start

    def stop(self) -> None:
        """Ask ``run_scaled`` to return at its next check, within ``MAX_SLEEP`` wall seconds."""
        self._stopped = True

    def run_scaled(self, until: float) -> None:
        """Process events up to simulated offset ``until`` in step with the wall clock."""
        while not self._stopped:
            due = self.peek()
            if due > until:
                break

            wait = self.wall_at(due) - self._wall_clock()
            if wait > 0:
                self._sleep(min(wait, MAX_SLEEP))
                continue

            if self._backlogged is not None and self._backlogged():
                # The lanes cannot send what is already due, and stepping on would only queue
                # more calls and take CPU from the lanes. Each call's lag is measured from its
                # due time, so holding the model back hides no lateness.
                self._sleep(HOLD_SLEEP)
                continue

            self._step_burst(until)
            # Yield even when still behind, so other greenlets run between bursts. A zero sleep
            # is not enough: measured with gevent 26.9 on epoll, it ran only other callbacks and
            # a greenlet in gevent.sleep(0.01) stayed asleep until the model caught up. A short
            # real sleep makes the hub poll its timers and sockets.
            self._sleep(YIELD_SLEEP)

        if not self._stopped and self.now < until:
            # Nothing left to do before the end: wait for the wall clock to reach it, so the
            # run's end is the same moment on every worker.
            remaining = self.wall_at(until) - self._wall_clock()
            while remaining > 0 and not self._stopped:
                self._sleep(min(remaining, MAX_SLEEP))
                remaining = self.wall_at(until) - self._wall_clock()

    def _step_burst(self, until: float) -> None:
        burst_start = self._wall_clock()
        while True:
            due = self.peek()
            if due > until:
                return
            now = self._wall_clock()
            lag = now - self.wall_at(due)
            if lag < 0:
                return
            self.lag = lag
            self.max_lag = max(self.max_lag, lag)
            self.step()
            self.steps += 1
            if now - burst_start >= self.burst:
                return
