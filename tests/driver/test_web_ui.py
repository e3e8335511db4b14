"""The pushsim tab in Locust's web UI: its table rides on the stats poll, with a CSV download."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import httpx
import pytest

from tests.driver.locust_harness import LOCUSTFILE


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_web_ui_shows_pushsim_table(stalling_backend, tmp_path):
    port = free_port()
    command = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--host", stalling_backend,
        "--web-host", "127.0.0.1", "--web-port", str(port), "--autostart", "-u", "10",
        "-r", "10", "--run-time", "20s", "--scenario", "minimal", "--run-dir", str(tmp_path),
        "--set", "clock.duration=2h", "--set", "population.installs=100",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        rows = []
        deadline = time.monotonic() + 30
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            while time.monotonic() < deadline and not rows:
                time.sleep(1)
                try:
                    stats = client.get("/stats/requests").json()
                except (httpx.HTTPError, ValueError):
                    continue
                for table in stats.get("extended_stats", []):
                    if table["key"] == "pushsim":
                        rows = [row for row in table["data"] if row["name"] == "schedule_lag"]
            page = client.get("/").text
            csv_text = client.get("/pushsim/timing.csv").text
    finally:
        process.terminate()
        process.wait(timeout=30)

    assert rows, "no schedule_lag row in the pushsim tab"
    assert rows[0]["count"] > 0
    assert "extended_tabs" in page or "extendedTabs" in page
    assert csv_text.splitlines()[0].startswith("Name,Count,Dropped")


@pytest.mark.slow
def test_web_ui_second_start_refused(stalling_backend, tmp_path):
    # One rehearsal a process: a second start would overwrite the first run's records.
    port = free_port()
    run_dir = tmp_path / "run"
    command = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--host", stalling_backend,
        "--web-host", "127.0.0.1", "--web-port", str(port), "--autostart", "-u", "4",
        "-r", "4", "--scenario", "minimal", "--run-dir", str(run_dir),
        "--set", "clock.duration=1h", "--set", "clock.drain=10m",
        "--set", "population.installs=20",
    ]  # fmt: skip
    rejection = f"this Locust process already ran the rehearsal in {run_dir}"
    log_path = tmp_path / "locust.log"
    log_file = log_path.open("w")
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log_file)
    try:
        # At time scale 1440 the run takes about 3 wall seconds, then the web UI stays up.
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            deadline = time.monotonic() + 60
            state = ""
            while time.monotonic() < deadline and state != "stopped":
                time.sleep(1)
                try:
                    state = client.get("/stats/requests").json().get("state", "")
                except (httpx.HTTPError, ValueError):
                    continue
            assert state == "stopped", "the first run did not finish"
            epoch = (run_dir / "epoch.json").read_text()
            response = client.post("/swarm", data={"user_count": "4", "spawn_rate": "4"})
            time.sleep(1)
            state = client.get("/stats/requests").json().get("state", "")
    finally:
        process.terminate()
        process.wait(timeout=30)
        log_file.close()

    # Locust's start form shows the message of a start that failed.
    assert response.json()["success"] is False
    assert response.json()["message"].startswith(rejection)
    assert state == "stopped"
    assert (run_dir / "epoch.json").read_text() == epoch
    # The stopped run is finished only when Locust quits, and the log states it.
    assert (
        f"the run is stopped; quit Locust (Ctrl-C) to finish {run_dir}, then judge it with "
        f"pushsim report {run_dir}"
    ) in log_path.read_text()
