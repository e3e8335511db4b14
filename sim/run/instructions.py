"""Instructions for the backend under test of ``pushsim run --target``: gateways, journeys and
the epoch."""

from __future__ import annotations

from pathlib import Path

from sim.formats.gateway_config import GatewayConfig
from sim.scenario.schema import Scenario


def journey_lines(scenario: Scenario) -> list[str]:
    """Return one line per journey with what starts it and its waits in wall seconds."""
    scale = scenario.clock.time_scale

    def wall(simulated: float) -> str:
        return f"{simulated / scale:.3g} wall s ({simulated:g} simulated s at time scale {scale:g})"

    lines = []
    for journey in scenario.journeys:
        if journey.kind == "broadcast":
            # A broadcast waits no delay: it starts at its simulated time, which the epoch maps.
            start = journey.at.isoformat() if journey.at is not None else "the run's start"
            lines.append(
                f"  {journey.name}: broadcast to segment {journey.segment} at simulated "
                f"{start}, at most {journey.send_rate:g} pushes per wall second"
            )
            continue
        if journey.kind == "inactivity":
            lines.append(
                f"  {journey.name}: no app open for {wall(journey.inactivity)}; a backend that "
                "cannot scale its waits needs time_scale 1"
            )
            continue
        lines.append(
            f"  {journey.name}: trigger {journey.trigger.event or journey.kind}, delay "
            f"{wall(journey.delay)}; a backend that cannot scale its delays needs time_scale 1"
        )
    return lines


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
