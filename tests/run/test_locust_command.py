"""The Locust command line that ``pushsim run`` starts."""

from __future__ import annotations

from sim.run.orchestrator import Rehearsal, RunOptions
from sim.run.run_dir import read_status
from sim.scenario import load_scenario


def test_failed_requests_leave_exit_code_zero(tmp_path):
    options = RunOptions(out=tmp_path / "run", target="http://127.0.0.1:8080")
    command = Rehearsal(load_scenario("minimal"), options).locust_command()

    # Failed SDK requests are judged by the sdk_error_rate gate, not by Locust's exit code.
    option = command.index("--exit-code-on-error")
    assert command[option + 1] == "0"
    assert command[command.index("--host") + 1] == "http://127.0.0.1:8080"


def test_run_scenario_file_is_private(tmp_path):
    options = RunOptions(out=tmp_path / "run", target="http://127.0.0.1:8080")
    loaded = load_scenario("minimal", ["population.installs=20", "clock.duration=1h"])
    rehearsal = Rehearsal(loaded, options)
    rehearsal.prepare()

    # The copy contains target.api_key and target.write_key.
    path = tmp_path / "run" / "scenario.yaml"
    assert "api_key" in path.read_text()
    assert path.stat().st_mode & 0o777 == 0o600


def test_prepared_run_reads_as_partial_until_it_finishes(tmp_path):
    options = RunOptions(out=tmp_path / "run", target="http://127.0.0.1:8080")
    loaded = load_scenario("minimal", ["population.installs=20", "clock.duration=1h"])
    Rehearsal(loaded, options).prepare()

    # A pushsim run killed after this point leaves a run that reports as partial.
    status = read_status(tmp_path / "run")
    assert status["partial"] is True
    assert "no final status: pushsim run is still running or was killed" in status["reason"]
    assert status["backend"] == "http://127.0.0.1:8080"
