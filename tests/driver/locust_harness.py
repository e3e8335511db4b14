"""Run Locust with pushsim's locustfile in a subprocess, as a performance engineer would."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

LOCUSTFILE = Path(__file__).resolve().parents[2] / "locustfile.py"


def run_locust(
    run_dir: Path,
    host: str,
    *,
    scenario: str = "minimal",
    overrides: tuple[str, ...] = (),
    users: int = 40,
    processes: int = 1,
    extra: tuple[str, ...] = (),
    timeout: float = 180,
) -> subprocess.CompletedProcess:
    command = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
        "-u", str(users), "-r", str(users), "--host", host,
        "--scenario", scenario, "--run-dir", str(run_dir),
        "--csv", str(run_dir / "locust"), "--only-summary",
    ]  # fmt: skip
    for override in overrides:
        command += ["--set", override]
    if processes > 1:
        command += ["--processes", str(processes)]
    command += list(extra)
    run_dir.mkdir(parents=True, exist_ok=True)
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def truth_records(run_dir: Path) -> list[dict]:
    records = []
    for path in sorted(run_dir.glob("truth-*.jsonl")):
        with open(path, encoding="utf-8") as handle:
            records += [json.loads(line) for line in handle if line.strip()]
    return records
