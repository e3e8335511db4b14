"""A backend that stalls for some customers: only their devices fall behind schedule."""

from __future__ import annotations

from collections import defaultdict

from tests.driver.conftest import is_slow
from tests.driver.locust_harness import run_locust, truth_records


def test_slow_customers_lag_alone(stalling_backend, tmp_path):
    result = run_locust(
        tmp_path / "run",
        stalling_backend,
        overrides=(
            "clock.duration=4h",
            "clock.time_scale=720",
            "clock.drain=10m",
            "clock.lag_budget=1s",
            "population.installs=400",
        ),
        users=60,
    )
    assert result.returncode == 0, result.stderr[-3000:]

    calls = [
        record
        for record in truth_records(tmp_path / "run")
        if record.get("kind") == "sdk_call" and record.get("status") in ("sent", "dropped")
    ]
    # A device is slow when any of its calls went out under a stalled identity: its later
    # calls wait behind that one in the device's own queue, as an SDK's would.
    slow_devices = {
        record["device"]
        for record in calls
        if is_slow(record.get("user_id") or record.get("anonymous_id") or "")
    }
    lags: dict[bool, list[float]] = defaultdict(list)
    drops: dict[bool, int] = defaultdict(int)
    for record in calls:
        slow = record["device"] in slow_devices
        if record["status"] == "dropped":
            drops[slow] += 1
        lags[slow].append(record.get("lag_ms", 0.0))

    def p99(values):
        ordered = sorted(values)
        return ordered[int(0.99 * (len(ordered) - 1))]

    assert len(lags[False]) > 500
    assert len(lags[True]) > 20
    # Devices of stalled customers queue behind their own slow calls.
    assert p99(lags[True]) > 250
    # Everyone else keeps the schedule: p99 lag well inside the one-second budget.
    assert p99(lags[False]) < 1000
    assert drops[False] == 0


def test_plain_locust_warns_of_dropped_calls(stalling_backend, tmp_path):
    # With two lanes and stalled customers the lanes cannot keep the schedule. Locust's log
    # reports it while the run goes on, as pushsim run does from the ledgers.
    result = run_locust(
        tmp_path / "run",
        stalling_backend,
        overrides=("clock.duration=3h", "clock.drain=10m", "population.installs=600"),
        users=2,
    )
    assert result.returncode == 0, result.stderr[-3000:]

    warnings = [line for line in result.stderr.splitlines() if "pushsim: shard 0 dropped" in line]
    assert len(warnings) == 1, result.stderr[-3000:]
    assert "add Locust users (-u)" in warnings[0]
