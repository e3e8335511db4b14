"""The ``pushsim`` command as a user runs it, in a real subprocess."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from sim import __version__

THREE_MISTAKES = textwrap.dedent(
    """\
    seed: 3
    permision:
      prompt: first_open
    reactions:
      broken_link: 1.4
    journeys:
      - name: cart
        trigger:
          event: add_to_crt
    """
)


def pushsim(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sim.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )


def test_validate_bundled_scenarios():
    result = pushsim("validate", "scenarios/cart_recovery.yaml", "scenarios/minimal.yaml")
    assert result.returncode == 0, result.stderr
    assert "scenarios/cart_recovery.yaml: ok" in result.stdout
    assert "scenarios/minimal.yaml: ok" in result.stdout


def test_validate_lists_three_mistakes(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text(THREE_MISTAKES)
    result = pushsim("validate", str(path))
    assert result.returncode == 2
    assert f"{path}:2: permision: unknown key 'permision'" in result.stderr
    assert f"{path}:5: reactions.broken_link: invalid probability 1.4" in result.stderr
    assert f"{path}:9: journeys[0].trigger.event: unknown event 'add_to_crt'" in result.stderr
    assert "3 problem(s)" in result.stderr


def test_validate_reports_bad_set():
    result = pushsim("validate", "scenarios/minimal.yaml", "--set", "permission.opt_in.ios=1.5")
    assert result.returncode == 2
    assert "--set: permission.opt_in.ios: invalid probability 1.5" in result.stderr


def test_validate_prints_resolved_scenario():
    result = pushsim(
        "validate", "scenarios/minimal.yaml", "--print", "--set", "permission.opt_in.ios=0.45"
    )
    assert result.returncode == 0, result.stderr
    assert "ios: 0.45" in result.stdout
    assert "duration: 12h" in result.stdout


def test_validate_missing_file():
    result = pushsim("validate", "no/such/scenario.yaml")
    assert result.returncode == 2
    assert "not found" in result.stderr


def test_scenarios_lists_bundled():
    result = pushsim("scenarios")
    assert result.returncode == 0
    names = [line.split()[0] for line in result.stdout.splitlines()]
    assert "cart_recovery" in names
    assert "minimal" in names


def test_version():
    result = pushsim("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"pushsim {__version__}"


def test_no_command_prints_help():
    result = pushsim()
    assert result.returncode == 2
    assert "validate" in result.stderr


def test_run_rejects_bad_options(tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    result = pushsim(
        "run", "minimal", "--naive", "nope", "--target", "notaurl", "--processes", "0",
        "--out", str(a_file),
    )  # fmt: skip
    assert result.returncode == 2
    assert "unknown --naive switch 'nope': use one of no_exit_check" in result.stderr
    assert "invalid --target 'notaurl'" in result.stderr
    assert "invalid --processes 0" in result.stderr
    assert "is a file: give a directory" in result.stderr
    assert "Traceback" not in result.stderr


def test_run_rejects_used_out_directory(tmp_path):
    used = tmp_path / "run"
    used.mkdir()
    (used / "scenario.yaml").write_text("name: earlier\n")

    result = pushsim("run", "minimal", "--out", str(used))

    assert result.returncode == 2
    assert f"--out {used} is not empty: give a new directory" in result.stderr
    assert (used / "scenario.yaml").read_text() == "name: earlier\n"
    assert sorted(path.name for path in used.iterdir()) == ["scenario.yaml"]


def test_run_rejects_gateways_config_directory(tmp_path):
    result = pushsim("run", "minimal", "--gateways-config", str(tmp_path))

    assert result.returncode == 2
    assert f"--gateways-config {tmp_path} is a directory" in result.stderr
    assert "--config-out FILE" in result.stderr
