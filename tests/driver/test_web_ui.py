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
