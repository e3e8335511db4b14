"""``pushsim run --target --gateways-config``: two runs on gateways and a backend started once."""

from __future__ import annotations

import json
import urllib.request

import pytest

from tests.e2e.run_helpers import (
    epoch_of,
    pushsim_run,
    query,
    start_pushsim,
    stop,
    truth,
    wait_for_json,
)

pytestmark = pytest.mark.slow

# Four simulated hours are 10 wall seconds at the default time scale of 1440.
SHORT = ("--set", "clock.duration=4h", "--set", "population.installs=500")


@pytest.fixture
def external_backend(tmp_path, running_gateways):
    config_path, _, _ = running_gateways
    ready = tmp_path / "backend.json"
    log_path = tmp_path / "backend.log"
    process = start_pushsim(
        ["backend", "--scenario", "minimal", *SHORT, "--gateways-config", str(config_path),
         "--epoch-from-gateways", "--db", str(tmp_path / "backend.sqlite"),
         "--ready-file", str(ready)],
        log_path,
    )  # fmt: skip
    try:
        yield wait_for_json(ready, process, log_path)["url"]
    finally:
        stop(process)


def issued_tokens(run_dir) -> set[str]:
    return {record["token"] for record in truth(run_dir) if record["kind"] == "token_issued"}


def test_two_runs_on_running_gateways(tmp_path, running_gateways, external_backend):
    config_path, config, gateways = running_gateways
    assert config["pid"] == gateways.pid
    runs = [tmp_path / "first", tmp_path / "second"]
    results = [
        pushsim_run(
            run_dir,
            "minimal",
            "--target",
            external_backend,
            "--gateways-config",
            str(config_path),
            "--set",
            f"seed={seed}",
            *SHORT,
            timeout=150,
        )  # fmt: skip
        for run_dir, seed in zip(runs, (11, 12), strict=True)
    ]
    ledger = config["ledger"]
    with urllib.request.urlopen(f"{config['control_url']}/healthz", timeout=5) as response:
        health = json.loads(response.read())

    for run_dir, result in zip(runs, results, strict=True):
        output = result.stdout[-3000:] + result.stderr[-3000:]
        assert result.returncode == 0, output
        assert f"gateways: the running gateways of {config_path}" in result.stdout
        assert "last served a run with seed" not in result.stderr
        assert "/control/run" in result.stdout
        assert json.loads((run_dir / "gateways.json").read_text()) == config
        assert (run_dir / "report" / "report.html").exists()
        assert not (run_dir / "gateways").exists()

    first_rows, second_rows = (
        query(run_dir / "deliveries.sqlite", "SELECT seq, wall_time, token, status FROM deliveries")
        for run_dir in runs
    )
    first_tokens, second_tokens = (issued_tokens(run_dir) for run_dir in runs)
    all_seqs = {row[0] for row in query(ledger, "SELECT seq FROM deliveries")}
    accepted = [row for row in second_rows if row[3] == 200]

    assert health["run_configured"] is True
    assert first_rows
    assert accepted
    assert not first_tokens & second_tokens
    assert {row[0] for row in first_rows} | {row[0] for row in second_rows} <= all_seqs
    assert not {row[0] for row in first_rows} & {row[0] for row in second_rows}
    for run_dir, rows, tokens in zip(
        runs, (first_rows, second_rows), (first_tokens, second_tokens), strict=True
    ):
        wall_t0 = epoch_of(run_dir).wall_t0
        assert all(row[1] >= wall_t0 for row in rows)
        assert {row[2] for row in rows if row[3] == 200} <= tokens
        summary = json.loads((run_dir / "report" / "summary.json").read_text())
        assert summary["partial"] is False
        assert summary["push_requests"] == len(rows)
        assert summary["unattributed_pushes"] == 0
