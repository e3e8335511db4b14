"""Fixtures of the end-to-end tests: components started as a user starts them."""

from __future__ import annotations

import pytest

from tests.e2e.run_helpers import start_pushsim, stop, wait_for_json


@pytest.fixture
def running_gateways(tmp_path):
    """Gateways started once with `pushsim gateways`: (config path, config, process)."""
    config_path = tmp_path / "gateways.json"
    log_path = tmp_path / "gateways.log"
    process = start_pushsim(
        ["gateways", "--dir", str(tmp_path / "gateways"), "--config-out", str(config_path)],
        log_path,
    )
    try:
        config = wait_for_json(config_path, process, log_path)
        yield config_path, config, process
    finally:
        stop(process)
