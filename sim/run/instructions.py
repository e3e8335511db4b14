"""Instructions for the backend under test of ``pushsim run --target``: gateways, journeys and
the epoch."""

from __future__ import annotations

from pathlib import Path

from sim.formats.gateway_config import GatewayConfig
from sim.scenario.schema import Scenario


def journey_lines(scenario: Scenario) -> list[str]:
    """Return one line per journey with its trigger and its delay in wall seconds."""
    scale = scenario.clock.time_scale
    return [
        f"  {journey.name}: trigger {journey.trigger.event or journey.kind}, delay "
        f"{journey.delay / scale:.3g} wall s ({journey.delay:g} simulated s at time "
        f"scale {scale:g}); a backend that cannot scale its delays needs time_scale 1"
        for journey in scenario.journeys
    ]


def target_instructions(
    scenario: Scenario, gateways: GatewayConfig, target: str, config_path: Path, shared: bool
) -> str:
    """Return the instructions for the backend at ``target``.

    ``config_path`` is the gateways' config file. ``shared`` is True for gateways that outlive
    the run (``--gateways-config``) and False for the run's own, which a backend cannot be
    configured for in time.
    """
    from sim.commands.gateways import describe

    lines = []
    if not shared:
        lines += [
            describe(gateways),
            f"\nbackend under test: {target}",
            "these gateways were started for this run only, on new ports with new credentials: "
            "to configure a backend before a run, start `pushsim gateways --dir DIR "
            "--config-out FILE` once, configure the backend from FILE and pass "
            "--gateways-config FILE to pushsim run",
            "configure it with the gateways above, and these journeys at wall time:",
        ]
    else:
        lines += [
            f"backend under test: {target}",
            f"the backend must send to the gateways of {config_path} and run these journeys at "
            "wall time:",
        ]
    lines += journey_lines(scenario)
    lines.append(
        f"the run's epoch (wall_t0, sim_t0, time_scale) is at GET {gateways.control_url}"
        f"/control/run with the control token in {config_path}, from a few seconds before the "
        "first action"
    )
    return "\n".join(lines)
