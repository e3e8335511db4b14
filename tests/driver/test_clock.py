"""The scaled SimPy clock: it keeps to the wall clock and never starves other greenlets."""

from __future__ import annotations

import time

import gevent

from sim.driver.clock import ScaledEnvironment
from sim.formats.epoch import Epoch


def make_env(time_scale: float, **kwargs) -> ScaledEnvironment:
    epoch = Epoch(wall_t0=time.time(), sim_t0=1_000_000.0, time_scale=time_scale)
    return ScaledEnvironment(epoch, run_start=1_000_000.0, **kwargs)


def test_events_never_run_early():
    env = make_env(time_scale=100.0)
    early = []

    def ticker():
        for _ in range(20):
            yield env.timeout(1.0)  # 10 ms of wall time at scale 100
            early.append(env.wall_at(env.now) - time.time())

    env.process(ticker())
    env.run_scaled(until=20.0)
    assert len(early) == 20
    assert max(early) <= 0.001


def test_run_ends_at_wall_end():
    env = make_env(time_scale=50.0)
    started = time.time()
    env.run_scaled(until=10.0)  # nothing scheduled: waits for 0.2 wall seconds
    assert time.time() - started >= 0.19


def test_behind_schedule_still_yields():
    env = make_env(time_scale=1000.0)
    ticks = []

    def heavy():
        # Each event burns 2 ms of CPU while due every 1 ms of wall time, so the model falls
        # behind and keeps falling behind.
        while True:
            yield env.timeout(1.0)
            spin_until = time.perf_counter() + 0.002
            while time.perf_counter() < spin_until:
                pass

    def ticker():
        for _ in range(10):
            gevent.sleep(0.01)
            # CPU time of this process, not wall time: a machine loaded by other jobs can stall
            # the whole process, which stretches wall gaps but is not starvation.
            ticks.append(time.process_time())

    env.process(heavy())
    other = gevent.spawn(ticker)
    env.run_scaled(until=300.0)  # 0.3 wall seconds of schedule
    other.join(timeout=30)
    assert env.max_lag > 0.05
    assert len(ticks) == 10
    gaps = [b - a for a, b in zip(ticks, ticks[1:], strict=False)]
    # A starved ticker would see one gap as long as the model's whole run, which burns at least
    # 0.3 s of CPU. A ticker that gets its turn sees gaps of about 10 ms of CPU.
    assert max(gaps) < 0.15


def test_stop_returns_promptly():
    env = make_env(time_scale=1.0)

    def stopper():
        gevent.sleep(0.05)
        env.stop()

    gevent.spawn(stopper)
    started = time.time()
    env.run_scaled(until=3600.0)
    assert time.time() - started < 1.0


def test_backlog_holds_due_events():
    held_until = time.time() + 0.1
    env = make_env(time_scale=100.0, backlogged=lambda: time.time() < held_until)
    ran = []

    def caller():
        for _ in range(3):
            yield env.timeout(1.0)  # 10 ms of wall time at scale 100
            ran.append(time.time())

    env.process(caller())
    env.run_scaled(until=30.0)
    assert len(ran) == 3
    # Every event was due within the hold and waited for its end, then ran in one go.
    assert min(ran) >= held_until
    assert max(ran) - min(ran) < 0.01
