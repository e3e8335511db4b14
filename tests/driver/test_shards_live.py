"""Live runs with two worker processes schedule the same calls as one process and as the plan."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sim.model.plan import run_plan
from sim.scenario import load_scenario
from tests.driver.locust_harness import LOCUSTFILE, run_locust, truth_records

OVERRIDES = (
    "clock.duration=3h",
    "clock.time_scale=1440",
    "clock.drain=10m",
    "population.installs=150",
)
WALL_FIELDS = {"status", "http_status", "lag_ms", "sent_wall", "v"}


def scheduled_calls(records: list[dict]) -> list[tuple]:
    """Return the SDK calls as comparable tuples in canonical order, without wall-time fields."""
    calls = [
        tuple(sorted((k, repr(v)) for k, v in record.items() if k not in WALL_FIELDS))
        for record in records
        if record.get("kind") == "sdk_call"
    ]
    return sorted(calls)


@pytest.mark.slow
def test_two_processes_match_one(stalling_backend, tmp_path):
    single = run_locust(tmp_path / "one", stalling_backend, overrides=OVERRIDES, users=20)
    assert single.returncode == 0, single.stderr[-3000:]
    double = run_locust(
        tmp_path / "two", stalling_backend, overrides=OVERRIDES, users=20, processes=2
    )
    assert double.returncode == 0, double.stderr[-3000:]

    assert len(list((tmp_path / "two").glob("truth-*.jsonl"))) == 2
    one = scheduled_calls(truth_records(tmp_path / "one"))
    two = scheduled_calls(truth_records(tmp_path / "two"))
    assert len(one) > 300
    assert one == two

    # The same calls the virtual clock plans, so plan and live run share one model.
    scenario = load_scenario("minimal", list(OVERRIDES)).scenario
    planned_path = tmp_path / "plan-truth.jsonl"
    run_plan(scenario, truth_path=planned_path)
    planned = [r for r in truth_records_file(planned_path) if r.get("kind") == "sdk_call"]
    # The plan stops at the scenario's end; the live run goes on through the drain.
    horizon = scenario.clock.duration
    live = [r for r in truth_records(tmp_path / "one") if r.get("at", 0) < horizon]
    assert scheduled_calls(planned) == scheduled_calls(live)


def truth_records_file(path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize(
    "worker_options",
    [(), ("--scenario", "cart_recovery", "--set", "population.installs=5000")],
    ids=["none", "own"],
)
def test_worker_takes_master_options(stalling_backend, tmp_path, worker_options):
    single = run_locust(tmp_path / "one", stalling_backend, overrides=OVERRIDES, users=20)
    assert single.returncode == 0, single.stderr[-3000:]

    # The worker runs from another directory, so its own defaults or options (cart_recovery,
    # runs/locust-<time>) would show if it ignored the master's.
    port = str(free_port())
    worker_dir = tmp_path / "worker-cwd"
    worker_dir.mkdir()
    worker = subprocess.Popen(
        [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--worker",
         "--master-host", "127.0.0.1", "--master-port", port, *worker_options],
        cwd=worker_dir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        master = run_locust(
            tmp_path / "master", stalling_backend, overrides=OVERRIDES, users=20,
            extra=("--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", port,
                   "--expect-workers", "1"),
        )  # fmt: skip
        worker_errors = worker.communicate(timeout=60)[1]
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()

    assert master.returncode == 0, master.stderr[-3000:]
    assert worker.returncode == 0, worker_errors[-3000:]
    replaced = "this worker runs the master's scenario minimal; its own options, which differ in "
    # Only a worker given options of its own is warned that the master's replace them.
    assert (replaced in worker_errors) == bool(worker_options)
    assert ("are not used" in worker_errors) == bool(worker_options)
    assert not (worker_dir / "runs").exists()
    assert len(list((tmp_path / "master").glob("truth-*.jsonl"))) == 1
    single_calls = scheduled_calls(truth_records(tmp_path / "one"))
    assert scheduled_calls(truth_records(tmp_path / "master")) == single_calls


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        (("--scenario", "no_such_scenario"), "no_such_scenario"),
        (("--gateways-config", "CONFIG"), "a JSON list, not an object"),
    ],
)
def test_bad_pushsim_option_stops_locust(stalling_backend, tmp_path, option, expected):
    config = tmp_path / "gateways.json"
    config.write_text("[1, 2]")
    option = tuple(str(config) if value == "CONFIG" else value for value in option)

    # run_locust passes --scenario minimal first; a later --scenario replaces it.
    result = run_locust(tmp_path / "run", stalling_backend, users=2, extra=option, timeout=60)

    assert result.returncode == 1
    assert "pushsim cannot start: " in result.stderr
    assert expected in result.stderr
    assert not list((tmp_path / "run").glob("truth-*.jsonl"))


@pytest.fixture
def reference_backend(tmp_path):
    """The reference backend with its default journeys, started as `pushsim backend` is."""
    ready = tmp_path / "backend.json"
    process = subprocess.Popen(
        [sys.executable, "-m", "sim.cli", "backend", "--db", str(tmp_path / "backend.db"),
         "--ready-file", str(ready)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(300):
            if ready.exists() and ready.read_text().strip():
                break
            assert process.poll() is None, "pushsim backend exited while starting"
            time.sleep(0.1)
        yield json.loads(ready.read_text())
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def start_worker(port: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--worker",
         "--master-host", "127.0.0.1", "--master-port", port],
        cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def start_master(run_dir: Path, port: str, host: str, expect_workers: int) -> subprocess.Popen:
    """Start a headless master that waits for ``expect_workers`` workers on ``port``."""
    run_dir.mkdir()
    # Twelve simulated hours at 1440: 30 wall seconds if the run went on.
    overrides = ("clock.duration=12h", "clock.time_scale=1440", "population.installs=100")
    command = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "-u", "8",
        "-r", "8", "--host", host, "--scenario", "minimal", "--run-dir", str(run_dir),
        "--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", port,
        "--expect-workers", str(expect_workers), "--only-summary",
    ]  # fmt: skip
    for override in overrides:
        command += ["--set", override]
    return subprocess.Popen(command, stderr=subprocess.PIPE, text=True)


def wait_for_shards(run_dir: Path, count: int) -> None:
    """Wait up to 60 s until ``count`` shards have started their truth ledgers."""
    deadline = time.monotonic() + 60
    while len(list(run_dir.glob("truth-*.jsonl"))) < count and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(list(run_dir.glob("truth-*.jsonl"))) == count, "the run did not start"


def test_late_worker_stops_the_run(stalling_backend, tmp_path):
    port = str(free_port())
    run_dir = tmp_path / "run"
    master = start_master(run_dir, port, stalling_backend, expect_workers=1)
    workers = [start_worker(port, tmp_path)]
    try:
        wait_for_shards(run_dir, 1)
        started = time.monotonic()
        workers.append(start_worker(port, tmp_path))
        errors = master.communicate(timeout=60)[1]
        stopped_after = time.monotonic() - started
    finally:
        for process in [master, *workers]:
            if process.poll() is None:
                process.kill()
                process.wait()

    assert master.returncode == 1, errors[-3000:]
    assert "connected after the shards were assigned" in errors
    assert stopped_after < 20, f"the run went on for {stopped_after:.0f} s"


def test_fewer_users_than_workers_refused(stalling_backend, tmp_path):
    run_dir = tmp_path / "run"

    result = run_locust(
        run_dir, stalling_backend, overrides=OVERRIDES, users=1, processes=2, timeout=120
    )

    # Locust would give one worker no user, and its shoppers would send nothing.
    assert result.returncode == 1, result.stderr[-3000:]
    assert "-u 1 is fewer users than the 2 workers" in result.stderr
    assert "start the run with -u 2 or more" in result.stderr
    assert not list(run_dir.glob("truth-*.jsonl"))


def test_lost_worker_ends_the_run_as_partial(stalling_backend, tmp_path):
    port = str(free_port())
    run_dir = tmp_path / "run"
    master = start_master(run_dir, port, stalling_backend, expect_workers=2)
    workers = [start_worker(port, tmp_path), start_worker(port, tmp_path)]
    try:
        wait_for_shards(run_dir, 2)
        started = time.monotonic()
        workers[1].kill()
        errors = master.communicate(timeout=90)[1]
        stopped_after = time.monotonic() - started
    finally:
        for process in [master, *workers]:
            if process.poll() is None:
                process.kill()
                process.wait()

    assert master.returncode == 1, errors[-3000:]
    assert "stopped sending heartbeats before its shard's end" in errors
    # Locust marks a worker missing after about three missed heartbeats of a second each.
    assert stopped_after < 25, f"the run went on for {stopped_after:.0f} s"
    status = json.loads((run_dir / "run-status.json").read_text())
    assert status["partial"] is True
    assert "stopped sending heartbeats" in status["reason"]


@pytest.mark.parametrize(
    ("scenario", "override", "expected"),
    [
        (
            "launch_broadcast",
            "population.installs=20",
            "the backend runs the journeys cart_recovery, but the scenario launch_broadcast has "
            "launch, launch_reminder",
        ),
        (
            # The backend runs cart_recovery with its 30-minute delay; this one waits 2 hours.
            "cart_recovery",
            "journeys[0].delay=2h",
            "the backend's journey cart_recovery differs from the scenario's in delay (backend "
            "'30m', scenario '2h')",
        ),
    ],
    ids=["other names", "other settings"],
)
def test_backend_with_other_journeys_warns(
    reference_backend, tmp_path, scenario, override, expected
):
    # backend.json's control_url, route included, works as --backend-control too.
    result = run_locust(
        tmp_path / "run", reference_backend["url"], scenario=scenario,
        overrides=("clock.duration=1h", "clock.time_scale=3600", "population.installs=20",
                   override),
        users=4,
        extra=("--backend-control", reference_backend["control_url"],
               "--backend-control-token", reference_backend["control_token"]),
    )  # fmt: skip

    assert result.returncode == 0, result.stderr[-3000:]
    assert expected in result.stderr


def test_wrong_control_token_names_the_option(reference_backend, tmp_path):
    result = run_locust(
        tmp_path / "run", reference_backend["url"],
        overrides=("clock.duration=1h", "population.installs=20"), users=2,
        extra=("--backend-control", reference_backend["url"],
               "--backend-control-token", "not-the-token"),
        timeout=60,
    )  # fmt: skip

    assert result.returncode == 1, result.stderr[-3000:]
    assert "/control/epoch answered 401" in result.stderr
    assert "pass --backend-control-token with the control_token that pushsim backend" in (
        result.stderr
    )


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1:9", "invalid backend URL '127.0.0.1:9': expected http://HOST[:PORT]"),
        ("CLOSED", "is not reachable: connecting to 127.0.0.1:"),
    ],
    ids=["no scheme", "nothing listening"],
)
def test_bad_host_stops_before_the_epoch(tmp_path, host, expected):
    run_dir = tmp_path / "run"
    host = f"http://127.0.0.1:{free_port()}" if host == "CLOSED" else host

    result = run_locust(run_dir, host, users=2, timeout=60)

    assert result.returncode == 1, result.stderr[-3000:]
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    # The run directory is not used up: no epoch was announced.
    assert not (run_dir / "epoch.json").exists()


def test_control_of_another_server_is_not_the_backend(
    reference_backend, stalling_backend, tmp_path
):
    # The epoch goes to the reference backend, while the SDK calls go to another server.
    run_dir = tmp_path / "run"
    result = run_locust(
        run_dir, stalling_backend,
        overrides=("clock.duration=1h", "clock.time_scale=3600", "population.installs=20"),
        users=4,
        extra=("--backend-control", reference_backend["url"],
               "--backend-control-token", reference_backend["control_token"]),
    )  # fmt: skip

    assert result.returncode == 0, result.stderr[-3000:]
    assert "are different servers, so the SDK calls do not go to the backend" in result.stderr
    status = json.loads((run_dir / "run-status.json").read_text())
    assert status["backend"] == stalling_backend
