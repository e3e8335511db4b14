"""Checks of ``pushsim run`` before it starts: the backend under test and running gateways."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from sim.formats.gateway_config import GatewayConfig
from sim.formats.tokens import derive_run_key, run_key_id
from sim.run.preflight import read_running_gateways, same_seed_as_last_run, target_unreachable


def closed_port() -> int:
    """Return a loopback port that nothing listens on: bound, then closed."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pushsim(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sim.cli", *args], capture_output=True, text=True, timeout=60
    )


def write_config(path, control_url: str, ledger: str) -> None:
    GatewayConfig(control_url=control_url, control_token="token", ledger=ledger).write(path)


def config_with_ledger(tmp_path, control_url: str):
    """Write a gateways config whose ledger file exists; return its path."""
    ledger = tmp_path / "deliveries.sqlite"
    ledger.write_bytes(b"")
    path = tmp_path / "gateways.json"
    write_config(path, control_url, str(ledger))
    return path


def test_target_listening_passes(http_server):
    _, url = http_server
    assert target_unreachable(url) is None


def test_run_unreachable_target_exits_2(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}"
    run_dir = tmp_path / "run"

    result = pushsim("run", "minimal", "--target", url, "--out", str(run_dir))

    assert result.returncode == 2
    assert f"--target {url} is not reachable" in result.stderr
    assert "refused" in result.stderr
    assert "start the backend under test or correct --target" in result.stderr
    assert "Traceback" not in result.stderr
    assert not run_dir.exists()


def test_run_missing_gateways_config_exits_2(tmp_path):
    missing = tmp_path / "gateways.json"

    result = pushsim("run", "minimal", "--gateways-config", str(missing))

    assert result.returncode == 2
    assert f"--gateways-config {missing} not found" in result.stderr
    assert f"pushsim gateways --config-out {missing}" in result.stderr


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("[1, 2]", "a JSON list, not an object"),
        ('{"version": "2"}', "invalid version '2': it must be an integer"),
        ('{"url": "http://127.0.0.1:1", "control_token": "t"}', "unknown key 'url'"),
        ('{"apns": {"hots": "127.0.0.1"}}', "unknown key 'apns.hots'"),
        ('{"fcm": []}', "'fcm' must be an object"),
    ],
)
def test_run_malformed_gateways_config_exits_2(tmp_path, content, expected):
    config = tmp_path / "gateways.json"
    config.write_text(content)

    result = pushsim("run", "minimal", "--gateways-config", str(config))

    assert result.returncode == 2
    assert expected in result.stderr
    assert f"give the file that `pushsim gateways --config-out {config}` wrote" in result.stderr
    assert "Traceback" not in result.stderr


def test_run_stopped_gateways_exits_2(tmp_path):
    config = config_with_ledger(tmp_path, f"http://127.0.0.1:{closed_port()}")
    run_dir = tmp_path / "run"

    result = pushsim("run", "minimal", "--gateways-config", str(config), "--out", str(run_dir))

    assert result.returncode == 2
    assert f"the gateways of --gateways-config {config} do not answer" in result.stderr
    assert f"start them with `pushsim gateways --config-out {config}`" in result.stderr
    assert "Traceback" not in result.stderr
    assert not run_dir.exists()


def test_stopped_gateways_of_earlier_run(tmp_path):
    # The copy of the config that a run directory keeps must not be overwritten by new gateways.
    earlier = tmp_path / "runs" / "earlier"
    earlier.mkdir(parents=True)
    (earlier / "epoch.json").write_text("{}")
    config = config_with_ledger(earlier, f"http://127.0.0.1:{closed_port()}")

    _, problem = read_running_gateways(config)

    assert f"that file records the gateways of the run in {earlier}" in problem
    assert "start new ones with `pushsim gateways --config-out gateways.json`" in problem


def test_gateways_healthy_config_read(tmp_path, http_server):
    _, url = http_server
    path = config_with_ledger(tmp_path, url)

    config, problem = read_running_gateways(path)

    assert problem is None
    assert config.control_url == url


def test_gateways_unhealthy_rejected(tmp_path, http_server):
    server, url = http_server
    server.body = {"status": "stopping"}
    path = config_with_ledger(tmp_path, url)

    config, problem = read_running_gateways(path)

    assert config is None
    assert "report {'status': 'stopping'}" in problem
    assert "restart them" in problem


def test_gateways_config_without_ledger_rejected(tmp_path, http_server):
    _, url = http_server
    path = tmp_path / "gateways.json"
    write_config(path, url, "")

    config, problem = read_running_gateways(path)

    assert config is None
    assert "names no delivery ledger" in problem


def test_gateways_ledger_elsewhere_rejected(tmp_path, http_server):
    _, url = http_server
    path = tmp_path / "gateways.json"
    write_config(path, url, str(tmp_path / "absent.sqlite"))

    config, problem = read_running_gateways(path)

    assert config is None
    assert "is not on this machine" in problem


def test_backend_epoch_follow_needs_config():
    result = pushsim("backend", "--epoch-from-gateways")

    assert result.returncode == 2
    assert "add --gateways-config FILE" in result.stderr


def test_same_seed_as_last_run_warns(http_server):
    server, url = http_server
    server.body = {"run_key_id": run_key_id(derive_run_key(11)), "shard_count": 1}
    config = GatewayConfig(control_url=url, control_token="token")

    warning = same_seed_as_last_run(config, 11)

    assert warning is not None
    assert "last served a run with seed 11, the seed of this run" in warning
    assert "--set seed=N" in warning
    assert same_seed_as_last_run(config, 12) is None


def test_same_seed_without_earlier_run_is_silent():
    config = GatewayConfig(control_url=f"http://127.0.0.1:{closed_port()}", control_token="t")
    assert same_seed_as_last_run(config, 11) is None
