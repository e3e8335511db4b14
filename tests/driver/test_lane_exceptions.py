"""An exception raised in a Locust user exits non-zero even when failed requests exit 0."""

from __future__ import annotations

import socket
import subprocess
import sys

LOCUSTFILE = """
from locust import User, task

import sim.driver.plugin  # registers pushsim's event handlers


class Raising(User):
    @task
    def fail(self):
        raise RuntimeError("lane bug")
"""


def test_exception_exits_one(tmp_path):
    locustfile = tmp_path / "raising.py"
    locustfile.write_text(LOCUSTFILE)
    # A socket that takes connections, since the plugin checks that --host does.
    with socket.create_server(("127.0.0.1", 0)) as listener:
        host = f"http://127.0.0.1:{listener.getsockname()[1]}"
        command = [
            sys.executable, "-m", "locust", "-f", str(locustfile), "--headless", "-u", "1",
            "-r", "1", "-t", "2s", "--only-summary", "--scenario", "minimal",
            "--run-dir", str(tmp_path / "run"), "--host", host, "--exit-code-on-error", "0",
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=tmp_path)

    assert result.returncode == 1, result.stderr[-3000:]
    assert "pushsim: the lanes raised" in result.stderr
