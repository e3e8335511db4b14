"""The command-line runner, as a separate process that stops on SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPOSITORY = Path(__file__).resolve().parents[2]
START_TIMEOUT_SECONDS = 10.0


def test_runner_serves_and_flushes_on_sigterm(tmp_path):
    db_path = tmp_path / "cli.db"
    environment = dict(
        os.environ,
        PUSHSIM_TRACK_CREDENTIALS="site-cli:key-cli",
        PUSHSIM_CDP_WRITE_KEYS="wk-cli",
        PUSHSIM_CONTROL_TOKEN="ctl-cli",
        PYTHONPATH=str(REPOSITORY),
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "sim.backend", "--db", str(db_path)],
        env=environment,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        port = None
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        log_lines = []
        while port is None and time.monotonic() < deadline:
            line = process.stderr.readline()
            if not line:
                break
            log_lines.append(line)
            match = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
            port = int(match.group(1)) if match else None
        assert port is not None, "".join(log_lines)

        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5.0) as client:
            response = client.put(
                "/api/v1/customers/u1", json={"plan": "gold"}, auth=("site-cli", "key-cli")
            )
        assert response.status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        remaining_log = process.communicate(timeout=START_TIMEOUT_SECONDS)[1]

    assert process.returncode == 0
    assert "stopped" in remaining_log
    assert "key-cli" not in "".join(log_lines) + remaining_log

    connection = sqlite3.connect(db_path)
    try:
        rows = connection.execute("SELECT customer_id FROM profiles").fetchall()
    finally:
        connection.close()
    assert rows == [("u1",)]


def test_runner_rejects_bad_credentials_variable(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "sim.backend", "--db", str(tmp_path / "x.db")],
        env=dict(os.environ, PUSHSIM_TRACK_CREDENTIALS="no-colon", PYTHONPATH=str(REPOSITORY)),
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_SECONDS,
    )
    assert result.returncode != 0
    assert "PUSHSIM_TRACK_CREDENTIALS: pair 1 is not site_id:api_key" in result.stderr
