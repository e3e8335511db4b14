"""Identity on a device: anonymous until signup, login or a guest email; logout; account switch."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sim.model.app import Device
    from sim.model.people import Person


def identify(device: Device, at: float, person: Person, how: str) -> None:
    """Identify ``person`` on ``device`` and move the device token to their profile."""
    group = device.group
    world = group.world
    first_time = not person.has_account
    person.has_account = True
    world.stats.identifies[how] += 1

    attributes = {"email": person.traits()["email"]} if how == "guest_email" else person.traits()
    if first_time:
        attributes = {**attributes, "created_at": at}
    was_anonymous_token = device.registered is not None and device.registered[1] is None
    device.identified = person.person_id

    # The fault dice are rolled before the call goes out, so that the identify carries the
    # labels of the faults that change what follows it.
    if world.faults.roll("anonymous_track_after_identify", group.streams):
        device.next_track_anonymous = True
    # A token registered while anonymous must be registered again to reach the profile.
    stuck = was_anonymous_token and world.faults.roll("token_before_identify", group.streams)
    faults = []
    if how == "handover":
        faults.append("handover_reinstall")
    if stuck:
        faults.append("token_before_identify")
    device.send(at, "identify", attributes=attributes, fault=",".join(faults) or None)

    if stuck:
        device.token_stuck = True
        return
    device.sync_token(at)


def logout(device: Device, at: float, cause: str) -> None:
    """Log the identified person out: delete the device from their profile, then clear identity."""
    world = device.group.world
    if cause == "logout":
        world.stats.logouts += 1
    # A pending anonymous track belongs to the identify that this logout ends.
    device.next_track_anonymous = False

    # Only a registered token is a device on the profile that a logout should delete.
    keeps_device = False
    if device.token is not None and device.registered is not None:
        keeps_device = world.faults.roll("logout_keeps_device", device.group.streams)
        if not keeps_device:
            device.send(at, "delete_token", token=device.token)

    device.send(at, "clear_identity", fault="logout_keeps_device" if keeps_device else None)
    device.identified = None
    device.registered = None


def begin_session(device: Device, at: float) -> None:
    """Decide who uses the phone this session and whether they log in or sign up."""
    group = device.group
    stream = group.streams.organic
    settings = group.world.scenario.identity

    if len(device.users) > 1 and stream.chance(settings.switch_account):
        # The other person on a shared phone takes it and logs in to their own account.
        other = device.users[1] if device.user is device.users[0] else device.users[0]
        group.world.stats.account_switches += 1
        if device.identified is not None:
            logout(device, at, "switch_account")
        device.set_user(at, other)
        identify(device, at, other, "switch_account")
        return

    if device.identified is not None:
        return
    if device.user.has_account:
        if stream.chance(settings.login):
            identify(device, at, device.user, "login")
    elif stream.chance(settings.signup):
        identify(device, at, device.user, "signup")
