"""The scenario's faults as ``pushsim run`` posts them to gateways it did not start."""

from __future__ import annotations

from sim.gateways.world import GatewayWorld
from sim.run.run_dir import scenario_faults
from sim.scenario import load_scenario
from tests.gateways.worldkit import control_client, run, run_config


def post_faults(world: GatewayWorld, body: dict):
    async def scenario():
        async with control_client(world) as client:
            return await client.post("/control/faults", json=body)

    return run(scenario())


def test_brownout_faults_accepted(tmp_path):
    scenario = load_scenario("apns_brownout").scenario
    world = GatewayWorld(tmp_path / "ledger.sqlite").start()
    world.configure_run(run_config(time_scale=scenario.clock.time_scale))

    response = post_faults(world, scenario_faults(scenario))
    faults = list(world.timeline.faults)
    world.close()

    assert response.status_code == 200, response.text
    assert faults == scenario.gateways.faults


def test_no_faults_clear_timeline(tmp_path):
    brownout = load_scenario("apns_brownout").scenario
    world = GatewayWorld.from_scenario(brownout, tmp_path / "ledger.sqlite").start()
    world.configure_run(run_config(time_scale=1440.0))

    response = post_faults(world, scenario_faults(load_scenario("minimal").scenario))
    faults = list(world.timeline.faults)
    world.close()

    assert response.status_code == 200, response.text
    assert faults == []
