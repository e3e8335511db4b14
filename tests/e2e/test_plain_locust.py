"""A plain Locust run, as the README's recipe starts it, leaves a run that pushsim report judges."""

from __future__ import annotations

import json
import stat
import subprocess
import sys

import pytest

from tests.driver.locust_harness import run_locust
from tests.e2e.run_helpers import query, start_pushsim, stop, wait_for_json

pytestmark = pytest.mark.slow

# Four simulated hours are 10 wall seconds at the time scale of 1440.
SHORT = ("clock.duration=4h", "clock.time_scale=1440", "population.installs=500")


@pytest.fixture
def reference_backend(tmp_path, running_gateways):
    """`pushsim backend` with one naive switch, on the running gateways: backend.json's content."""
    config_path, _, _ = running_gateways
    ready = tmp_path / "backend.json"
    log_path = tmp_path / "backend.log"
    overrides = [part for override in SHORT for part in ("--set", override)]
    process = start_pushsim(
        ["backend", "--scenario", "minimal", *overrides, "--gateways-config", str(config_path),
         "--db", str(tmp_path / "backend.sqlite"), "--ready-file", str(ready),
         "--no-exit-check"],
        log_path,
    )  # fmt: skip
    try:
        yield wait_for_json(ready, process, log_path)
    finally:
        stop(process)


def locust_options(config_path, backend: dict) -> tuple[str, ...]:
    return (
        "--gateways-config", str(config_path),
        "--backend-control", backend["url"],
        "--backend-control-token", backend["control_token"],
    )  # fmt: skip


def pushsim_report(run_dir) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sim.cli", "report", str(run_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_locust_run_is_judged(tmp_path, running_gateways, reference_backend):
    config_path, config, _ = running_gateways
    run_dir = tmp_path / "run"

    result = run_locust(
        run_dir,
        reference_backend["url"],
        overrides=SHORT,
        users=20,
        extra=locust_options(config_path, reference_backend),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"judge the run with: pushsim report {run_dir}" in result.stderr
    # The backend runs the scenario's own journeys.
    assert "differs from the scenario's" not in result.stderr

    # The records pushsim run would write, read back as the report reads them.
    scenario = run_dir / "scenario.yaml"
    assert stat.S_IMODE(scenario.stat().st_mode) == 0o600
    assert "duration: 4h" in scenario.read_text()
    epoch = json.loads((run_dir / "epoch.json").read_text())
    assert epoch["shard_count"] == 1
    assert epoch["epoch"]["time_scale"] == 1440
    status = json.loads((run_dir / "run-status.json").read_text())
    assert status == {
        "partial": False,
        "reason": None,
        "backend": "reference",
        "naive": ["no_exit_check"],
        "final": True,
    }
    # Only this run's rows of the gateways' ledger, which outlives it.
    rows = query(run_dir / "deliveries.sqlite", "SELECT wall_time FROM deliveries")
    assert rows
    assert min(row[0] for row in rows) >= epoch["epoch"]["wall_t0"]

    report = pushsim_report(run_dir)
    assert report.returncode in (0, 1), report.stderr[-3000:]
    summary = json.loads((run_dir / "report" / "summary.json").read_text())
    assert summary["partial"] is False
    assert summary["push_requests"] == len(rows)
    assert summary["backend"] == {"backend": "reference", "naive": ["no_exit_check"]}
    assert summary["backend_load"], "Locust's statistics from --csv RUN_DIR/locust"
    html = (run_dir / "report" / "report.html").read_text(encoding="utf-8")
    assert "the reference backend with naive switch no_exit_check" in html


def test_stopped_locust_run_is_partial(tmp_path, running_gateways, reference_backend):
    config_path, _, _ = running_gateways
    run_dir = tmp_path / "run"
    overrides = ("clock.duration=12h", "clock.time_scale=1440", "population.installs=200")

    # Locust's own time limit ends the run after 6 wall seconds of a 35-second scenario.
    result = run_locust(
        run_dir,
        reference_backend["url"],
        overrides=overrides,
        users=8,
        extra=(*locust_options(config_path, reference_backend), "--run-time", "6s"),
    )
    # A partial run exits 3, as pushsim run does.
    assert result.returncode == 3, result.stderr[-3000:]
    assert "the backend warns" not in result.stderr

    status = json.loads((run_dir / "run-status.json").read_text())
    assert status["partial"] is True
    assert status["reason"].startswith("Locust stopped before the scenario's end, at simulated ")
    assert status["reason"].endswith(" of 12 (plus 2 h of drain)")
    # The last line Locust shows reports it too.
    assert result.stderr.rstrip().endswith(
        f"contains a partial run ({status['reason']}); judge what it has with: "
        f"pushsim report {run_dir}"
    )

    report = pushsim_report(run_dir)
    assert report.returncode == 3, report.stderr[-3000:]
    summary = json.loads((run_dir / "report" / "summary.json").read_text())
    assert summary["partial"] is True
    assert summary["partial_reason"] == status["reason"]
    # Triggers whose drain runs past where the model stopped are excluded, not failures.
    [journey] = summary["journeys"]
    assert journey["excluded_near_end"] > 0
    assert journey["outcomes"]["not_sent"] == 0

    # The same directory again would mix two runs' ledgers, so Locust refuses it while it
    # parses its options, before its --csv files inside the directory are opened and emptied.
    stats = (run_dir / "locust_stats.csv").read_text()
    again = run_locust(
        run_dir,
        reference_backend["url"],
        overrides=overrides,
        users=8,
        extra=(*locust_options(config_path, reference_backend), "--run-time", "4s"),
        timeout=60,
    )
    assert again.returncode == 2
    assert f"the run directory {run_dir} already contains a run (run-status.json, " in again.stderr
    assert (run_dir / "locust_stats.csv").read_text() == stats

    # A new directory with the same seed replays the same shoppers to a backend that kept them.
    repeated = run_locust(
        tmp_path / "repeated",
        reference_backend["url"],
        overrides=overrides,
        users=8,
        extra=(*locust_options(config_path, reference_backend), "--run-time", "4s"),
    )
    assert repeated.returncode == 3, repeated.stderr[-3000:]
    assert "these gateways last served a run with seed 7, the seed of this run" in repeated.stderr
    # The backend that kept its store names what the first run left there.
    assert "pushsim: the backend warns: the store already holds " in repeated.stderr
    assert "active device tokens from 1 earlier run(s)" in repeated.stderr
