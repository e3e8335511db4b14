"""Device lanes: per-device order, no head-of-line blocking across devices, and drops."""

from __future__ import annotations

import time

import gevent

from sim.driver.lanes import BACKLOG_DEVICES, Action, DeviceLanes
from sim.driver.timing import SCHEDULE_LAG, TimingTable


def run_lanes(lanes: DeviceLanes, count: int, seconds: float) -> None:
    stop_at = time.time() + seconds
    workers = [gevent.spawn(lanes.serve, None, lambda: time.time() > stop_at) for _ in range(count)]
    gevent.joinall(workers, timeout=seconds + 2)


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
    run_lanes(lanes, count=8, seconds=0.5)
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
    run_lanes(lanes, count=4, seconds=0.6)
    assert len(finished) == 21
    assert max(t for k, t in finished.items() if k != "slow") < finished["slow"]


def test_late_action_is_dropped():
    timing = TimingTable()
    lanes = DeviceLanes(lag_budget=0.5, timing=timing)
    sent, dropped = [], []
    now = time.time()
    lanes.submit(Action("d", now - 2.0, lambda c: sent.append("late"), dropped.append))
    lanes.submit(Action("d", now, lambda c: sent.append("on time"), dropped.append))
    run_lanes(lanes, count=1, seconds=0.2)
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
    run_lanes(lanes, count=1, seconds=0.2)
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
    run_lanes(lanes, count=4, seconds=0.3)
    assert not lanes.backlogged()
    assert lanes.sent == BACKLOG_DEVICES + 2
