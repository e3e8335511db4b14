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
    assert "mode  registry (only device tokens that a posted run issued" in text
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

    launch, launch_judged, winback, winback_judged = journey_lines(scenario)

    # A broadcast waits no delay, so its line names its start and send rate instead.
    assert launch == (
        "  launch: broadcast to segment known at simulated 2026-11-26T16:00:00+00:00, "
        "at most 50 pushes per wall second"
    )
    assert winback.startswith("  winback: no app open for 120 wall s (172800 simulated s")
    # The second line of each names what the report judges beyond the start.
    assert launch_judged == "    at most 1 per person per 60 wall s; deep link shop://deals"
    assert winback_judged.endswith("on time up to 0.0417 wall s after due; deep link shop://home")


def test_journey_lines_name_exit_cap_and_link():
    text = target_instructions(
        load_scenario("minimal").scenario, GATEWAYS, TARGET, Path("gateways.json"), shared=True
    )

    assert (
        "    no push after order_completed with the same cart_id; at most 1 per person per 60 "
        "wall s; on time up to 0.125 wall s after due; deep link shop://cart/{cart_id}"
    ) in text
    assert "deep link in the payload at one of CIO.push.link, message.data.link" in text
