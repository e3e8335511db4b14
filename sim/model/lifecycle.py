"""The device process: install, sessions, token rotations, uninstall and reinstall of one phone.

One SimPy process per device walks its own agenda (next session, next rotation, the uninstall,
return visits and reorders), which costs far fewer events than a process per concern. Times are
kept as absolute simulated seconds and never read back from ``env.now``, so a group's records
are the same whatever else the environment runs.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from sim.formats.tokens import SANDBOX
from sim.model import permission, tokens
from sim.model.app import UNASKED, Device
from sim.model.people import Person
from sim.model.sessions import next_session_at, return_visit, session

if TYPE_CHECKING:
    from sim.model.group import ShopperGroup

_SESSION, _ROTATION, _UNINSTALL, _AGENDA = range(4)


def install(device: Device, at: float, reinstall: bool) -> None:
    """Install the app: a new anonymous id, a token if the phone has none, and permission."""
    group = device.group
    world = group.world
    device.installed = True
    device.installed_at = at
    device.fresh = True
    device.anonymous_id = group.streams.organic.hex_id()
    world.stats.install(device.platform, at, reinstall)
    group.record(
        at,
        "install",
        device=device.device_id,
        platform=device.platform,
        anonymous_id=device.anonymous_id,
        reinstall=reinstall,
        # The zone in which the report reads the journeys' quiet hours for this phone.
        timezone=group.timezone,
    )

    if device.token is None:
        tokens.issue(device, at, "reinstall" if reinstall else "install")
    device.permission = UNASKED
    if not device.prompts_for_push:
        permission.grant_without_prompt(device, at)


def uninstall(device: Device, at: float) -> float:
    """Remove the app and return when it comes back on this phone, or inf for never."""
    group = device.group
    world = group.world
    settings = world.scenario.uninstall
    stream = group.streams.organic
    world.stats.uninstall(device.platform, device.installed_at, at)
    group.record(
        at,
        "uninstall",
        device=device.device_id,
        platform=device.platform,
        anonymous_id=device.anonymous_id,
    )

    # Organic draws first, so the fault's draw below never shifts them.
    again = stream.chance(settings.reinstall)
    keeps_token = stream.chance(world.scenario.tokens.reinstall_keeps_token.get(device.platform, 0))
    delay = stream.lognormal(settings.reinstall_delay.median, settings.reinstall_delay.sigma)

    if world.faults.roll("handover_reinstall", group.streams):
        # The phone changes hands without a logout: the next owner reinstalls, the token
        # survives, and the old owner's profile still lists the device.
        newcomer = group.add_person()
        device.users = [newcomer]
        device.handover = True
        again, keeps_token = True, True
    elif not again:
        keeps_token = False

    if not keeps_token:
        tokens.kill(device, at, "reinstall" if again else "uninstall")

    # The SDK's state goes with the app.
    device.installed = False
    device.identified = None
    device.registered = None
    device.token_stuck = False
    device.sync_deferred = False
    device.late_rotation = False
    device.next_track_anonymous = False
    device.permission = UNASKED
    device.permission_at = None
    device.agenda.clear()
    if device.handover:
        device.set_user(at, device.users[0])
    return at + delay if again else math.inf


def run_device(device: Device, at: float) -> Generator[Any, Any, None]:
    """Live the phone's life from its first install at ``at`` until the end of the run."""
    group = device.group
    world = group.world
    env = world.env
    horizon = world.horizon
    stream = group.streams.organic
    weibull = world.scenario.uninstall
    min_gap = world.scenario.sessions.min_gap

    now = at
    if now > env.now:
        yield env.timeout(now - env.now)
    reinstall = False
    while True:
        install(device, now, reinstall)
        uninstall_at = now + stream.weibull(weibull.weibull_shape, weibull.weibull_scale)
        rates = tokens.rotation_rates(device)
        total_rate = sum(rates)
        next_rotation = now + stream.exponential(1.0 / total_rate) if total_rate > 0 else math.inf
        next_session = now  # the first open follows the install at once

        while True:
            agenda_at = device.agenda[0][0] if device.agenda else math.inf
            due = min(next_session, next_rotation, uninstall_at, agenda_at)
            if due >= horizon:
                return
            if due > now:
                yield env.timeout(max(0.0, due - env.now))
                now = due
            # A rotation or agenda item that fell inside a session is handled at its end.

            if due == uninstall_at:
                break
            if due == next_rotation:
                cause = tokens.ROTATION_CAUSES[stream.pick([r / total_rate for r in rates])]
                tokens.rotate(device, now, cause)
                next_rotation = now + stream.exponential(1.0 / total_rate)
            elif due == next_session:
                now = yield from session(device, now)
                next_session = next_session_at(device, now + min_gap)
            else:
                _, _, kind, payload = heapq.heappop(device.agenda)
                if kind == "return":
                    now = yield from return_visit(device, now, payload)
                else:
                    now = yield from session(device, now, reorder=payload)
                # Keep the minimum gap after this visit too.
                next_session = max(next_session, now + min_gap)

        back_at = uninstall(device, now)
        if back_at >= horizon:
            return
        yield env.timeout(max(0.0, back_at - env.now))
        now = back_at
        reinstall = True


def new_device(group: ShopperGroup, index: int, user: Person, session_rate: float) -> Device:
    """Draw a phone for ``user``: platform, OS and app version, and whether it must prompt."""
    world = group.world
    population = world.scenario.population
    stream = group.streams.organic
    platforms = list(population.platforms)
    platform = platforms[stream.pick([population.platforms[p] for p in platforms])]
    device = Device(group, index, platform, user)
    device.session_rate = session_rate

    modern = stream.chance(population.android_13_plus)
    if platform == "android":
        device.os_version = (
            ("13", "14", "15")[stream.below(3)] if modern else (("10", "11", "12")[stream.below(3)])
        )
        device.prompts_for_push = modern
    else:
        device.os_version = ("17.6", "18.1", "18.2")[stream.below(3)]
        # Drawn only for a share above 0, so that a scenario without development builds
        # draws the same numbers whether or not it names the setting.
        if population.ios_development_builds > 0.0 and stream.chance(
            population.ios_development_builds
        ):
            device.apns_environment = SANDBOX
            world.stats.development_builds += 1
    device.app_version = ("5.11.0", "5.12.0", "5.12.1")[stream.below(3)]
    world.stats.devices[platform] += 1
    return device
