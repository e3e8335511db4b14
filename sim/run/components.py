"""Child processes of a run: start each on loopback, wait until healthy, and stop them all.

Each component runs in its own process group with its output in its own log file, so a crash
names the component and the log to read, and stopping the run leaves nothing behind.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

# How long a component may take to report healthy, in wall seconds.
DEFAULT_START_TIMEOUT = 60.0
# How long a component gets to exit after SIGTERM before it is killed, in wall seconds.
STOP_GRACE = 10.0


class ComponentError(RuntimeError):
    """A component failed to start or died; the message names it and its log."""


@dataclass
class Component:
    """One child process of the run."""

    name: str
    command: list[str]
    log_path: Path
    health_url: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log_file = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it until exit
        environment = {**os.environ, **self.env}
        self.process = subprocess.Popen(
            self.command,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=environment,
            start_new_session=True,
        )
        log_file.close()
        log.info("started %s (pid %d), log %s", self.name, self.process.pid, self.log_path)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def exit_code(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log written)"
        return "\n".join(text.splitlines()[-lines:])

    def wait_healthy(self, timeout: float = DEFAULT_START_TIMEOUT) -> None:
        """Poll the health URL until it returns 200, raising ComponentError on exit or timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise ComponentError(
                    f"{self.name} exited with status {self.exit_code()} while starting; "
                    f"see {self.log_path}:\n{self.log_tail()}"
                )
            if self.health_url is None or answers_ok(self.health_url):
                return
            time.sleep(0.1)
        raise ComponentError(
            f"{self.name} did not become healthy at {self.health_url} within {timeout:g} s; "
            f"see {self.log_path}:\n{self.log_tail()}"
        )

    def stop(self, grace: float = STOP_GRACE, sig: int = signal.SIGTERM) -> int | None:
        """Signal the component's process group and wait; kill it when it outlives ``grace``."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            _signal_group(self.process.pid, sig)
            try:
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %g s; killing it", self.name, grace)
                _signal_group(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
        # Children of the component (Locust's worker processes, say) share its group. SIGKILL
        # takes effect asynchronously, so wait until the group is really gone.
        _signal_group(self.process.pid, signal.SIGKILL)
        _wait_group_gone(self.process.pid, timeout=5.0)
        return self.process.returncode


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _group_members(group_id: int) -> list[int]:
    """Return the live processes of a process group, read from /proc (Linux); zombies excluded."""
    members = []
    proc = Path("/proc")
    if not proc.is_dir():
        return members
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # After the command name come the state, the parent id and the process group id.
        state, group = fields[0], int(fields[2])
        if group == group_id and state != "Z":
            members.append(int(entry.name))
    return members


def _wait_group_gone(group_id: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while _group_members(group_id) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = _group_members(group_id)
    if left:
        log.warning("processes %s of group %d outlived SIGKILL", left, group_id)


def answers_ok(url: str) -> bool:
    """Tell whether a GET of ``url`` returns 200 within one wall second."""
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:  # noqa: S310 - loopback only
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


class ComponentGroup:
    """The run's components, stopped in reverse start order however the run ends."""

    def __init__(self) -> None:
        self.components: list[Component] = []

    def start(self, component: Component, timeout: float = DEFAULT_START_TIMEOUT) -> Component:
        self.components.append(component)
        component.start()
        component.wait_healthy(timeout)
        return component

    def crashed(self) -> list[Component]:
        """Return the components that exited on their own."""
        return [c for c in self.components if c.process is not None and not c.alive()]

    def stop_all(self) -> dict[str, int | None]:
        codes = {}
        for component in reversed(self.components):
            codes[component.name] = component.stop()
        return codes

    def __enter__(self) -> ComponentGroup:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop_all()
