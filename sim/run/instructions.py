"""Instructions for the backend under test of ``pushsim run --target``: gateways, journeys and
the epoch."""

from __future__ import annotations

from pathlib import Path

from sim.formats.gateway_config import GatewayConfig
from sim.formats.payload import DEFAULT_LINK_PATHS
from sim.oracle.outcomes import late_tolerance
from sim.scenario.schema import Journey, Scenario


def journey_lines(scenario: Scenario) -> list[str]:
    """Return the lines that describe each journey to the backend under test.

    Each journey gets a line with what starts it and its waits in wall seconds. An indented
    line follows with the rest of what the report judges: exit, cap, quiet hours, how late a
    push may be and the deep link.
    """
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
        elif journey.kind == "inactivity":
            lines.append(
                f"  {journey.name}: no app open for {wall(journey.inactivity)}; a backend that "
                "cannot scale its waits needs time_scale 1"
            )
        else:
            lines.append(
                f"  {journey.name}: trigger {journey.trigger.event or journey.kind}, delay "
                f"{wall(journey.delay)}; a backend that cannot scale its delays needs time_scale 1"
            )
        lines.append(f"    {'; '.join(_judged_settings(journey, scale))}")
    return lines


def _judged_settings(journey: Journey, scale: float) -> list[str]:
    """Return the journey's settings, other than its start, that the report judges pushes by."""
    settings = []
    if journey.exit.event:
        matched = f" with the same {journey.exit.match}" if journey.exit.match else ""
        settings.append(f"no push after {journey.exit.event}{matched}")
    cap = journey.frequency_cap
    if cap.count > 0:
        settings.append(f"at most {cap.count} per person per {cap.per / scale:.3g} wall s")
    if journey.quiet_hours is not None:
        settings.append(f"none in {journey.quiet_hours.start}-{journey.quiet_hours.end} local time")
    if journey.kind != "broadcast":
        tolerance = late_tolerance(journey) / scale
        settings.append(f"on time up to {tolerance:.3g} wall s after due")
    settings.append(f"deep link {journey.link}")
    return settings


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
    paths = ", ".join(DEFAULT_LINK_PATHS)
    lines.append(
        f"each push carries its deep link in the payload at one of {paths} (or the journey's "
        "payload_path): the report ties a push to its trigger by that link"
    )
    lines.append(
        f"the run's epoch (wall_t0, sim_t0, time_scale) is at GET {gateways.control_url}"
        f"/control/run with the control token in {config_path}, from a few seconds before the "
        "first action"
    )
    return "\n".join(lines)
