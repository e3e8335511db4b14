"""``pushsim backend`` as a child process: ready file, journeys, gateways and a clean Ctrl-C."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from journey_gateways import GatewayLoop
from journey_harness import TIME_SCALE, wait_until
from sender_support import android_token

from sim.commands.backend import SWITCHES, build_config
from sim.scenario import load_scenario

REPOSITORY = Path(__file__).resolve().parents[2]
SIM_START = datetime.datetime(2026, 11, 27, 12, 0, tzinfo=datetime.UTC).timestamp()

SCENARIO = """\
# Cart recovery with a 30-minute delay, for the backend command tests.
journeys:
  - name: cart_recovery
    kind: event
    trigger:
      event: added_to_cart
    delay: 30m
    exit:
      event: order_completed
      match: cart_id
    link: shop://cart/{cart_id}
target:
  site_id: site-cmd
  api_key: key-cmd
  write_key: write-cmd
"""


def start_backend(tmp_path: Path, *options: str) -> subprocess.Popen:
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(SCENARIO, encoding="utf-8")
    command = [
        sys.executable, "-m", "sim.cli", "backend",
        "--scenario", str(scenario),
        "--db", str(tmp_path / "backend.db"),
        "--ready-file", str(tmp_path / "ready.json"),
        *options,
    ]  # fmt: skip
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith("PUSHSIM_")
    }
    return subprocess.Popen(
        command,
        cwd=REPOSITORY,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def read_ready(tmp_path: Path, process: subprocess.Popen) -> dict:
    ready = tmp_path / "ready.json"

    def exists() -> bool:
        assert process.poll() is None, f"backend exited early: {process.stdout.read()}"
        return ready.exists()

    wait_until(exists, timeout=30)
    return json.loads(ready.read_text(encoding="utf-8"))


def post_epoch(ready: dict) -> None:
    epoch = {"wall_t0": time.time(), "sim_t0": SIM_START, "time_scale": TIME_SCALE}
    headers = {"Authorization": f"Bearer {ready['control_token']}"}
    response = httpx.post(ready["control_url"], json=epoch, headers=headers, timeout=10)
    assert response.status_code == 200, response.text


def stop(process: subprocess.Popen) -> str:
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=30)
    return output


@pytest.fixture
def gateways(credentials):
    running = GatewayLoop(credentials)
    yield running
    running.close()


def test_command_sends_cart_push_to_fcm(tmp_path, gateways, credentials):
    config_path = gateways.write_config(credentials, tmp_path / "gateways.json")
    process = start_backend(tmp_path, "--gateways-config", str(config_path))
    try:
        ready = read_ready(tmp_path, process)
        assert ready["url"].startswith("http://127.0.0.1:")
        assert ready["track"] == {"site_id": "site-cmd", "api_key": "key-cmd"}
        assert ready["cdp"] == {"write_key": "write-cmd"}
        assert ready["pid"] == process.pid
        assert (tmp_path / "ready.json").stat().st_mode & 0o777 == 0o600

        token = android_token(7)
        auth = (ready["track"]["site_id"], ready["track"]["api_key"])
        post_epoch(ready)
        with httpx.Client(base_url=ready["url"], auth=auth, timeout=10) as client:
            device = {"id": token, "platform": "android", "attributes": {"push_enabled": "true"}}
            client.put("/api/v1/customers/ann/devices", json={"device": device})
            event = {"name": "added_to_cart", "data": {"sku": "s", "qty": 1, "cart_id": "c7"}}
            client.post("/api/v1/customers/ann/events", json=event)

            [(request, _)] = wait_until(gateways.fcm.sink.accepted)
            assert json.loads(request.payload)["message"]["data"]["link"] == "shop://cart/c7"
            wait_until(lambda: 'stage="sent"} 1' in client.get("/metrics").text)
            assert "pushsim_sender_sends_total{" in client.get("/metrics").text
    finally:
        output = stop(process)

    assert process.returncode == 0, output
    assert f"listening on {ready['url']}" in output
    assert "key-cmd" in output
    assert "stopped" in output
    assert not (tmp_path / "ready.json").exists()


def test_command_rejects_missing_gateways_config(tmp_path):
    process = start_backend(tmp_path, "--gateways-config", str(tmp_path / "absent.json"))
    output, _ = process.communicate(timeout=30)
    assert process.returncode == 2
    assert "absent.json not found" in output


def test_command_without_gateways_records_failures(tmp_path):
    process = start_backend(tmp_path)
    try:
        ready = read_ready(tmp_path, process)
        auth = (ready["track"]["site_id"], ready["track"]["api_key"])
        post_epoch(ready)
        with httpx.Client(base_url=ready["url"], auth=auth, timeout=10) as client:
            device = {"id": "tok-1", "platform": "ios", "attributes": {"push_enabled": True}}
            client.put("/api/v1/customers/ann/devices", json={"device": device})
            event = {"name": "added_to_cart", "data": {"sku": "s", "qty": 1, "cart_id": "c1"}}
            client.post("/api/v1/customers/ann/events", json=event)
            wait_until(lambda: 'stage="failed"} 1' in client.get("/metrics").text)
    finally:
        output = stop(process)
    assert process.returncode == 0, output


def test_generated_control_token_is_hex():
    # A command line passes the token as an option's value, so it must never start with "-".
    args = argparse.Namespace(db="backend.sqlite", rate_limit=None)
    vars(args).update({field: False for _, field, _ in SWITCHES})
    scenario = load_scenario("minimal").scenario

    tokens = [build_config(args, scenario, {}).control_token for _ in range(3)]

    assert all(re.fullmatch(r"[0-9a-f]{48}", token) for token in tokens)
    assert build_config(args, scenario, {"PUSHSIM_CONTROL_TOKEN": "-given"}).control_token == (
        "-given"
    )
