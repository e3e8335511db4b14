"""The push permission prompt and its answer; permission is an attribute of the device."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sim.model.app import DENIED, GRANTED, NOT_DETERMINED, UNASKED

if TYPE_CHECKING:
    from sim.model.app import Device


def set_permission(device: Device, at: float, state: str, prompted: bool) -> None:
    """Change the device's permission and record it in the truth ledger."""
    device.permission = state
    device.permission_at = at if state == GRANTED else None
    device.group.record(at, "permission", device=device.device_id, state=state, prompted=prompted)


def may_prompt(device: Device) -> bool:
    """Tell whether the app would show the prompt now: never answered, or dismissed."""
    return device.prompts_for_push and device.permission in (UNASKED, NOT_DETERMINED)


def prompt(device: Device, at: float) -> str:
    """Show the prompt, draw the answer with the platform's rates, and report it."""
    world = device.group.world
    settings = world.scenario.permission
    platform = device.platform
    granted = settings.opt_in.get(platform, 0.0)
    undecided = settings.not_determined.get(platform, 0.0)

    u = device.group.streams.organic.uniform()
    if u < granted:
        answer = GRANTED
    elif u < granted + undecided:
        answer = NOT_DETERMINED
    else:
        answer = DENIED
    world.stats.prompts[platform] += 1
    world.stats.answers[(platform, answer)] += 1

    set_permission(device, at, answer, prompted=True)
    device.sync_token(at)
    return answer


def grant_without_prompt(device: Device, at: float) -> None:
    """Grant permission at install, as Android below 13 does."""
    device.group.world.stats.granted_without_prompt[device.platform] += 1
    set_permission(device, at, GRANTED, prompted=False)
