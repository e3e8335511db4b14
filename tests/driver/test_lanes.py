"""Device lanes: per-device order, no head-of-line blocking across devices, and drops."""

from __future__ import annotations

import time

import gevent

from sim.driver.lanes import BACKLOG_DEVICES, Action, DeviceLanes
from sim.driver.timing import SCHEDULE_LAG, TimingTable

# Wall seconds the lanes get to serve a test's actions and end. The actions take well under a
# second; the margin is for a CI machine loaded by other tests, and only a hang exceeds it.
END_TIMEOUT = 30.0


def run_lanes(lanes: DeviceLanes, count: int) -> None:
    """Serve every queued action with ``count`` lanes, which must all end."""
    lanes.finish()
    workers = [gevent.spawn(lanes.serve, None) for _ in range(count)]
    gevent.joinall(workers, timeout=END_TIMEOUT)
    assert all(worker.dead for worker in workers)


def test_device_calls_keep_their_order():
    lanes = DeviceLanes(lag_budget=5.0, timing=TimingTable())
    sent: list[tuple[str, int]] = []
    now = time.time()
    for i in range(30):
        for device in ("a", "b", "c"):

            def send(client, device=device, i=i):
                gevent.sleep(0.001)
                sent.append((device, i))

            lanes.submit(Action(device, now, send, lambda lag: None))
    run_lanes(lanes, count=8)
    for device in ("a", "b", "c"):
        order = [i for d, i in sent if d == device]
        assert order == list(range(30))


def test_stalled_device_does_not_block_others():
    timing = TimingTable()
    lanes = DeviceLanes(lag_budget=5.0, timing=timing)
    finished: dict[str, float] = {}
    now = time.time()

    def slow(client):
        gevent.sleep(0.3)
        finished["slow"] = time.time()

    lanes.submit(Action("slow", now, slow, lambda lag: None))
    for i in range(20):

        def fast(client, i=i):
            finished[f"fast{i}"] = time.time()

        lanes.submit(Action(f"fast{i}", now, fast, lambda lag: None))
    run_lanes(lanes, count=4)
    assert len(finished) == 21
    assert max(t for k, t in finished.items() if k != "slow") < finished["slow"]


def test_late_action_is_dropped():
    timing = TimingTable()
    lanes = DeviceLanes(lag_budget=0.5, timing=timing)
    sent, dropped = [], []
    now = time.time()
    lanes.submit(Action("d", now - 2.0, lambda c: sent.append("late"), dropped.append))
    lanes.submit(Action("d", now, lambda c: sent.append("on time"), dropped.append))
    run_lanes(lanes, count=1)
    assert sent == ["on time"]
    assert len(dropped) == 1
    assert dropped[0] > 1.9
    series = timing.get(SCHEDULE_LAG)
    assert series.count == 2
    assert series.drops == 1
    assert lanes.dropped == 1


def test_failing_send_keeps_lane_alive():
    lanes = DeviceLanes(lag_budget=5.0, timing=TimingTable())
    sent = []
    now = time.time()

    def broken(client):
        raise RuntimeError("connection reset")

    lanes.submit(Action("d", now, broken, lambda lag: None))
    lanes.submit(Action("d", now, lambda c: sent.append(1), lambda lag: None))
    run_lanes(lanes, count=1)
    assert sent == [1]


def test_backlog_counts_waiting_devices():
    lanes = DeviceLanes(lag_budget=5.0, timing=TimingTable())
    now = time.time()
    for i in range(BACKLOG_DEVICES):
        lanes.submit(Action(f"d{i}", now, lambda c: None, lambda lag: None))
    # A second call of a device already waiting adds no waiting device.
    lanes.submit(Action("d0", now, lambda c: None, lambda lag: None))
    assert not lanes.backlogged()
    lanes.submit(Action("one more", now, lambda c: None, lambda lag: None))
    assert lanes.backlogged()
    run_lanes(lanes, count=4)
    assert not lanes.backlogged()
    assert lanes.sent == BACKLOG_DEVICES + 2


def test_idle_lanes_end_at_finish():
    lanes = DeviceLanes(lag_budget=5.0, timing=TimingTable())
    workers = [gevent.spawn(lanes.serve, None) for _ in range(4)]
    gevent.sleep(0.05)
    assert not any(worker.dead for worker in workers)

    # Actions queued while the lanes wait are sent before the lanes end.
    sent = []
    now = time.time()

    def send(client):
        gevent.sleep(0.05)
        sent.append(client)

    lanes.submit(Action("d", now, send, lambda lag: None))
    lanes.submit(Action("d", now, send, lambda lag: None))
    lanes.finish()
    gevent.joinall(workers, timeout=2.0)
    assert all(worker.dead for worker in workers)
    assert len(sent) == 2
    assert lanes.pending == 0


def test_abandon_keeps_calls_not_yet_late_apart():
    timing = TimingTable()
    lanes = DeviceLanes(lag_budget=1.0, timing=timing)
    outcomes: list[tuple[str, str]] = []
    now = time.time()
    # Due 3 s ago (past the 1 s budget), 0.5 s ago (within it) and in 10 s (not yet due).
    for name, due in (("late", now - 3.0), ("recent", now - 0.5), ("ahead", now + 10.0)):
        lanes.submit(
            Action(
                name,
                due,
                lambda client: None,
                lambda lag, name=name: outcomes.append((name, "dropped")),
                lambda lag, name=name: outcomes.append((name, "unsent")),
            )
        )

    abandoned = lanes.abandon()

    assert abandoned == (1, 2)
    assert sorted(outcomes) == [("ahead", "unsent"), ("late", "dropped"), ("recent", "unsent")]
    assert lanes.dropped == 1
    assert timing.get(SCHEDULE_LAG).drops == 1
    assert lanes.pending == 0


def test_abandon_drops_calls_no_lane_sent():
    timing = TimingTable()
    lanes = DeviceLanes(lag_budget=5.0, timing=timing)
    dropped: list[tuple[str, float]] = []
    sent: list[str] = []
    now = time.time()
    for device in ("a", "b"):
        for _ in range(3):
            lanes.submit(
                Action(
                    device,
                    now - 2.0,
                    lambda client, device=device: sent.append(device),
                    lambda lag, device=device: dropped.append((device, lag)),
                )
            )

    # A shard that Locust gave no lane: nothing served the queue before the run ended.
    abandoned = lanes.abandon()

    assert abandoned == (6, 0)
    assert [device for device, _ in dropped] == ["a"] * 3 + ["b"] * 3
    assert all(lag >= 2.0 for _, lag in dropped)
    assert lanes.dropped == 6
    assert lanes.pending == 0
    assert timing.get(SCHEDULE_LAG).drops == 6
    # A lane started afterwards ends at once and sends nothing.
    run_lanes(lanes, count=2)
    assert sent == []
