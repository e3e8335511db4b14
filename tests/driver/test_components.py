"""Run components: health waiting, clear errors naming the log, and nothing left running."""

from __future__ import annotations

import signal
import sys
import textwrap
import time

import pytest

from sim.run.components import Component, ComponentError, ComponentGroup

SERVER = textwrap.dedent(
    """
    import http.server, sys, signal, subprocess
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    print("child", child.pid, flush=True)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

    server = http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    print("listening", flush=True)
    server.serve_forever()
    """
)


def process_running(pid: int) -> bool:
    """Tell whether ``pid`` runs; a zombie waiting for its parent to reap it does not."""
    try:
        status = open(f"/proc/{pid}/status").read()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_component_healthy_then_stopped_with_children(tmp_path):
    port = free_port()
    script = tmp_path / "server.py"
    script.write_text(SERVER)
    component = Component(
        "demo",
        [sys.executable, str(script), str(port)],
        tmp_path / "demo.log",
        health_url=f"http://127.0.0.1:{port}/healthz",
    )
    with ComponentGroup() as group:
        group.start(component, timeout=20)
        assert component.alive()
    assert not component.alive()

    child_pid = int(component.log_path.read_text().split()[1])
    assert not process_running(child_pid)


def test_component_crash_names_log(tmp_path):
    component = Component(
        "backend",
        [sys.executable, "-c", "import sys; print('bad config'); sys.exit(3)"],
        tmp_path / "backend.log",
        health_url="http://127.0.0.1:9/healthz",
    )
    with ComponentGroup() as group, pytest.raises(ComponentError) as raised:
        group.start(component, timeout=10)
    message = str(raised.value)
    assert "backend exited with status 3" in message
    assert str(tmp_path / "backend.log") in message
    assert "bad config" in message


def test_component_health_timeout(tmp_path):
    component = Component(
        "gateways",
        [sys.executable, "-c", "import time; time.sleep(30)"],
        tmp_path / "gateways.log",
        health_url=f"http://127.0.0.1:{free_port()}/healthz",
    )
    with ComponentGroup() as group, pytest.raises(ComponentError) as raised:
        group.start(component, timeout=0.5)
    assert "did not become healthy" in str(raised.value)
    assert not component.alive()


def test_stubborn_component_is_killed(tmp_path):
    script = (
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ready', flush=True)\ntime.sleep(30)\n"
    )
    component = Component("stubborn", [sys.executable, "-c", script], tmp_path / "s.log")
    component.start()
    for _ in range(100):
        if "ready" in component.log_tail():
            break
        time.sleep(0.05)
    code = component.stop(grace=0.5)
    assert code == -signal.SIGKILL
