"""Run ``pushsim run`` in a subprocess and read what it left in its run directory."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from sim.formats.epoch import Epoch


def pushsim_run(
    run_dir: Path, scenario: str, *options: str, timeout: float = 300
) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "sim.cli", "run", scenario, "--out", str(run_dir), *options]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def _default_sigint() -> None:
    # A shell without job control starts a background job with SIGINT ignored, and the child
    # inherits that, so Python would install no KeyboardInterrupt handler.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_pushsim_run(run_dir: Path, scenario: str, *options: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "sim.cli", "run", scenario, "--out", str(run_dir), *options]
    return subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=_default_sigint,
    )


def interrupt(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGINT)


def truth(run_dir: Path) -> list[dict]:
    records = []
    for path in sorted(run_dir.glob("truth-*.jsonl")):
        with open(path, encoding="utf-8") as handle:
            records += [json.loads(line) for line in handle if line.strip()]
    return records


def epoch_of(run_dir: Path) -> Epoch:
    return Epoch.from_mapping(json.loads((run_dir / "epoch.json").read_text())["epoch"])


def query(database: Path, sql: str, *parameters) -> list[tuple]:
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        return connection.execute(sql, parameters).fetchall()
    finally:
        connection.close()


def process_running(pid: int) -> bool:
    """Tell whether ``pid`` runs; a zombie waiting for its parent to reap it does not."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def processes_mentioning(text: str) -> list[int]:
    """Return the pids whose command line contains ``text``, other than this process."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="ignore")
        except OSError:
            continue
        if text in command and process_running(int(entry.name)):
            found.append(int(entry.name))
    return found


def wait_for_line(process: subprocess.Popen, needle: str, timeout: float) -> list[str]:
    """Read the process's output until a line contains ``needle``; return the lines read."""
    lines = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if needle in line:
            return lines
    raise AssertionError(f"{needle!r} not printed within {timeout} s; output: {''.join(lines)}")


def start_pushsim(command: list[str], log_path: Path) -> subprocess.Popen:
    """Start ``pushsim COMMAND...``, such as gateways or backend, logging to ``log_path``."""
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "sim.cli", *command],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


def wait_for_json(path: Path, process: subprocess.Popen, log_path, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, log_path.read_text()
        if path.exists():
            try:
                return json.loads(path.read_text())
            except json.JSONDecodeError:
                pass  # still being written
        time.sleep(0.1)
    raise AssertionError(f"{path} not written within {timeout} s: {log_path.read_text()}")


def stop(process: subprocess.Popen) -> None:
    """Stop a component with Ctrl-C, as a user would, and kill it when that does not work."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
