"""Device-token lifetimes: issue, rotation, death, and the late report of a dead token.

Tokens are self-describing (``sim.formats.tokens``): each carries its group and a sequence
number, so a token parses back to its group without a lookup table.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sim.formats.tokens import issue_token
from sim.model.ports import TokenInvalidation

if TYPE_CHECKING:
    from sim.model.app import Device

# Rotation rates in the scenario are per device per 30 simulated days.
ROTATION_PERIOD = 30 * 86400.0
ROTATION_CAUSES = ("fcm_refresh", "os_update", "restore")
# Invalidation reasons as the push services group them: refreshes and OS updates are rotations.
REASONS = {"fcm_refresh": "rotation", "os_update": "rotation"}


def rotation_rates(device: Device) -> list[float]:
    """Return the rate per simulated second of each rotation cause on ``device``."""
    rotation = device.group.world.scenario.tokens.rotation
    fcm = rotation.fcm_refresh if device.platform == "android" else 0.0
    return [
        fcm / ROTATION_PERIOD,
        rotation.os_update / ROTATION_PERIOD,
        rotation.restore / ROTATION_PERIOD,
    ]


def issue(device: Device, at: float, reason: str) -> str:
    """Give ``device`` a new token, the next in its group's sequence."""
    group = device.group
    world = group.world
    group.token_seq += 1
    environment = device.apns_environment
    token = issue_token(
        world.run_key, device.platform, group.group_id, group.token_seq, environment
    )
    device.token = token
    device.token_stuck = False
    world.stats.tokens_issued[reason] += 1
    # Only APNs has environments, so only an iOS token's record names one.
    environment_field = {"environment": environment} if device.platform == "ios" else {}
    group.record(
        at,
        "token_issued",
        device=device.device_id,
        token=token,
        platform=device.platform,
        reason=reason,
        **environment_field,
    )
    return token


def kill(device: Device, at: float, cause: str) -> None:
    """End the device's current token and report it through the device-cloud port.

    The push service keeps returning 200 for a lognormal delay before it reports the token gone.
    """
    token = device.token
    if token is None:
        return
    group = device.group
    world = group.world
    delay = world.scenario.tokens.unregistered_delay
    reported_at = at + group.streams.organic.lognormal(delay.median, delay.sigma)
    device.token = None
    reason = REASONS.get(cause, cause)
    world.stats.tokens_died[cause] += 1
    group.record(
        at,
        "token_died",
        device=device.device_id,
        token=token,
        reason=reason,
        cause=cause,
        reported_at=reported_at,
    )
    world.cloud.invalidate(
        TokenInvalidation(token, device.platform, group.group_id, reason, at, reported_at, cause)
    )


def rotate(device: Device, at: float, cause: str) -> None:
    """Replace the device's token for ``cause`` and register the new one as the SDK would.

    An FCM refresh reaches a running app in the background, and a correct SDK registers the
    new token at once from its callback. With the late_background_rotation fault it waits for
    the next session start. After an OS update or a restore, the app reads its new token at
    its next launch, so registration waits for the next session start in any case.
    """
    kill(device, at, cause)
    issue(device, at, cause)
    if not device.installed:
        return
    if cause != "fcm_refresh":
        device.sync_deferred = True
        return
    world = device.group.world
    if world.faults.roll("late_background_rotation", device.group.streams):
        device.sync_deferred = True
        device.late_rotation = True
        return
    device.sync_token(at)
