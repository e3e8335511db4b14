"""The settings ``pushsim run --target`` prints for configuring the backend under test."""

from __future__ import annotations

from pathlib import Path

from sim.formats.gateway_config import GatewayConfig
from sim.run.instructions import journey_lines, target_instructions
from sim.scenario import load_scenario

TARGET = "http://127.0.0.1:8080"
GATEWAYS = GatewayConfig(control_url="http://127.0.0.1:9000", control_token="token")


def test_own_gateways_point_to_gateways_config():
    scenario = load_scenario("minimal").scenario

    text = target_instructions(
        scenario, GATEWAYS, TARGET, Path("runs/one/gateways.json"), shared=False
    )

    assert "pushsim gateways are running" in text
    assert f"backend under test: {TARGET}" in text
    assert "started for this run only" in text
    assert "pass --gateways-config FILE to pushsim run" in text
    assert "cart_recovery: trigger added_to_cart, delay 1.25 wall s" in text
    assert "GET http://127.0.0.1:9000/control/run" in text
    assert "control token in runs/one/gateways.json" in text


def test_shared_gateways_name_config_file():
    scenario = load_scenario("minimal").scenario

    text = target_instructions(scenario, GATEWAYS, TARGET, Path("gateways.json"), shared=True)

    assert "must send to the gateways of gateways.json" in text
    assert "started for this run only" not in text
    assert "pushsim gateways are running" not in text
    assert "cart_recovery: trigger added_to_cart" in text
    assert "control token in gateways.json" in text


def test_journey_lines_by_kind():
    text = """
journeys:
  - {name: launch, kind: broadcast, at: 2026-11-26T16:00:00Z, segment: known, send_rate: 50,
     link: shop://deals}
  - {name: winback, kind: inactivity, inactivity: 2d, link: shop://home}
"""
    scenario = load_scenario(text=text).scenario

    launch, winback = journey_lines(scenario)

    # A broadcast waits no delay, so its line names its start and send rate instead.
    assert launch == (
        "  launch: broadcast to segment known at simulated 2026-11-26T16:00:00+00:00, "
        "at most 50 pushes per wall second"
    )
    assert winback.startswith("  winback: no app open for 120 wall s (172800 simulated s")
