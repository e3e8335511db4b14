"""Expected audience of each journey, by truth: who a correct backend would push to.

- event and delay_range: the first trigger event per person and matched value (a cart_id for
  cart recovery) is a trigger, as the oracle counts them. Later events of the same cart join it.
  After the journey's delay it counts as exited when its exit event (matched on the same
  property) came in between, else as unreachable or as audience. A trigger whose push is due
  within ``clock.drain`` of the run's end is left out, as the oracle leaves it out.
- repeated_event: a device triggers at the ``count``-th trigger event within ``window``, with
  the ``same`` property equal across them, and the count starts over. After the delay it counts
  as exited when the exit or absence event, matched on the ``same`` value, came in between.
- inactivity: a device triggers when its last app open is ``inactivity`` old.
- broadcast: every device of the segment at the broadcast time.

Unreachable means the app is removed or has no current token (no device), or push permission
is missing (no permission). Frequency caps and quiet hours are ignored.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from sim.catalogue import canonical_name
from sim.scenario.schema import Journey

if TYPE_CHECKING:
    from sim.model.app import Device
    from sim.model.world import World


def reachability(device: Device) -> str:
    """Return no_device, no_permission or audience for a push to ``device`` now."""
    if not device.installed or device.token is None:
        return "no_device"
    if not device.push_enabled:
        return "no_permission"
    return "audience"


def audience_for(world: World, journey: Journey) -> Audience:
    """Return the audience counter that fits the journey's kind."""
    if journey.kind == "inactivity":
        return InactivityAudience(world, journey)
    if journey.kind == "broadcast":
        return BroadcastAudience(world, journey)
    if journey.kind == "repeated_event":
        return RepeatedEventAudience(world, journey)
    return JourneyAudience(world, journey)


# Counts every audience reports: where a trigger's push could go, and the outcomes of journeys
# that wait a delay after their trigger.
REACHABILITY = ("no_device", "no_permission", "audience")
DELAYED_OUTCOMES = ("triggers", "excluded_near_end", "exited_before_delay", *REACHABILITY)


def _summary(journey: Journey, counts: Counter[str], keys: tuple[str, ...]) -> dict[str, Any]:
    """Return a journey's name and kind with the named counts, in the order given."""
    result: dict[str, Any] = {"name": journey.name, "kind": journey.kind}
    result.update({key: counts[key] for key in keys})
    return result


class JourneyAudience:
    """Triggers of an event or delay_range journey, counted by outcome after the delay."""

    def __init__(self, world: World, journey: Journey):
        self.world = world
        self.journey = journey
        self.trigger = canonical_name(journey.trigger.event)
        self.exit_event = canonical_name(journey.exit.event) if journey.exit.event else None
        self.match = journey.exit.match
        due_after = journey.delay
        if journey.kind == "delay_range":
            due_after = max(journey.delay, journey.delay_max)
        # The latest trigger the oracle judges, in simulated seconds: its push falls due at least
        # clock.drain before the run's end.
        self._last_trigger = world.horizon - world.scenario.clock.drain - due_after
        # (person, matched value) pairs that already triggered.
        self._seen: set[tuple[str, Any]] = set()
        self.counts: Counter[str] = Counter()
        # Exit times per matched value, kept only while a trigger with that value waits.
        self._waiting: Counter[Any] = Counter()
        self._exits: dict[Any, float] = {}

    def watched(self) -> tuple[str, ...]:
        """Return the event names this audience needs to see."""
        return tuple(name for name in (self.trigger, self.exit_event) if name)

    def start(self) -> None:
        """Start any process the estimate needs; event journeys need none."""

    def observe(self, device: Device, at: float, name: str, properties: dict | None) -> None:
        value = (properties or {}).get(self.match) if self.match else None
        if name == self.exit_event and value in self._waiting:
            self._exits[value] = at
        if name != self.trigger:
            return
        if self.match:
            key = (device.user.person_id, value)
            if key in self._seen:
                return
            self._seen.add(key)

        self.counts["triggers"] += 1
        if at > self._last_trigger:
            self.counts["excluded_near_end"] += 1
            return
        self._waiting[value] += 1
        check = self.world.env.timeout(self.journey.delay)
        check.callbacks.append(lambda _event: self._check(device, at, value))

    def _check(self, device: Device, triggered_at: float, value: Any) -> None:
        exited_at = self._exits.get(value, -1.0)
        self._waiting[value] -= 1
        if self._waiting[value] <= 0:
            del self._waiting[value]
            self._exits.pop(value, None)

        if exited_at >= triggered_at:
            self.counts["exited_before_delay"] += 1
            return
        outcome = reachability(device)
        self.counts[outcome] += 1
        if outcome == "audience" and device.identified is None:
            # Reachable by truth, but only through an anonymous profile.
            self.counts["audience_anonymous"] += 1

    def summary(self) -> dict[str, Any]:
        return _summary(self.journey, self.counts, (*DELAYED_OUTCOMES, "audience_anonymous"))


class InactivityAudience:
    """Devices whose last app open becomes ``journey.inactivity`` old before the run ends."""

    def __init__(self, world: World, journey: Journey):
        self.world = world
        self.journey = journey
        self.counts: Counter[str] = Counter()
        # Last open per device id, so a later open cancels the pending check.
        self._last_open: dict[str, float] = {}

    def watched(self) -> tuple[str, ...]:
        return ("Application Opened",)

    def start(self) -> None:
        """Start nothing: checks are scheduled as apps open."""

    def observe(self, device: Device, at: float, name: str, properties: dict | None) -> None:
        self._last_open[device.device_id] = at
        if at + self.journey.inactivity >= self.world.horizon:
            return
        check = self.world.env.timeout(self.journey.inactivity)
        check.callbacks.append(lambda _event: self._check(device, at))

    def _check(self, device: Device, opened_at: float) -> None:
        if self._last_open.get(device.device_id) != opened_at:
            return
        self.counts["triggers"] += 1
        self.counts[reachability(device)] += 1

    def summary(self) -> dict[str, Any]:
        return _summary(self.journey, self.counts, ("triggers", *REACHABILITY))


class BroadcastAudience:
    """Devices of the journey's segment at the broadcast time, by reachability."""

    def __init__(self, world: World, journey: Journey):
        self.world = world
        self.journey = journey
        self.counts: Counter[str] = Counter()
        self.at: float | None = None
        if journey.at is not None:
            self.at = (journey.at - world.scenario.clock.start).total_seconds()

    def watched(self) -> tuple[str, ...]:
        return ()

    def start(self) -> None:
        """Schedule the count at the broadcast time, if it falls inside the run."""
        if self.at is None or not 0.0 <= self.at < self.world.horizon:
            return
        check = self.world.env.timeout(self.at - self.world.env.now)
        check.callbacks.append(lambda _event: self._count())

    def _count(self) -> None:
        segment = self.journey.segment
        for group in self.world.groups.values():
            for device in group.devices:
                person = device.user
                if segment == "known" and not person.has_account:
                    continue
                if segment == "purchasers" and not person.has_ordered:
                    continue
                self.counts["segment"] += 1
                self.counts[reachability(device)] += 1

    def summary(self) -> dict[str, Any]:
        if self.at is None or not 0.0 <= self.at < self.world.horizon:
            return {**_summary(self.journey, self.counts, ()), "estimated": False}
        return _summary(self.journey, self.counts, ("segment", *REACHABILITY))


class RepeatedEventAudience:
    """Triggers made of ``count`` equal events within a window, by outcome after the delay."""

    def __init__(self, world: World, journey: Journey):
        self.world = world
        self.journey = journey
        self.trigger = canonical_name(journey.trigger.event)
        self.same = journey.trigger.same
        self.stoppers = {
            canonical_name(match.event): match.match
            for match in (journey.exit, journey.absence)
            if match.event
        }
        self.counts: Counter[str] = Counter()
        # Recent trigger times per (device id, same value), pruned to the window.
        self._recent: dict[tuple[str, Any], list[float]] = {}
        # Stop-event times per (device id, matched value), kept while a trigger waits on it.
        self._waiting: Counter[tuple[str, Any]] = Counter()
        self._stopped: dict[tuple[str, Any], float] = {}

    def watched(self) -> tuple[str, ...]:
        return tuple(name for name in (self.trigger, *self.stoppers) if name)

    def start(self) -> None:
        """Start the sweep that forgets event runs older than the window."""
        self.world.env.process(self._sweep())

    def _sweep(self):
        window = max(self.journey.trigger.window, 60.0)
        while True:
            yield self.world.env.timeout(window)
            oldest = self.world.env.now - window
            for key in [key for key, times in self._recent.items() if times[-1] < oldest]:
                del self._recent[key]

    def observe(self, device: Device, at: float, name: str, properties: dict | None) -> None:
        properties = properties or {}
        if name in self.stoppers:
            key = (device.device_id, properties.get(self.stoppers[name] or self.same))
            if key in self._waiting:
                self._stopped[key] = at
        if name != self.trigger:
            return

        key = (device.device_id, properties.get(self.same) if self.same else None)
        window_start = at - self.journey.trigger.window
        times = [t for t in self._recent.get(key, ()) if t > window_start]
        times.append(at)
        if len(times) < self.journey.trigger.count:
            self._recent[key] = times
            return
        self._recent.pop(key, None)

        self.counts["triggers"] += 1
        if at + self.journey.delay >= self.world.horizon:
            self.counts["excluded_near_end"] += 1
            return
        self._waiting[key] += 1
        check = self.world.env.timeout(self.journey.delay)
        check.callbacks.append(lambda _event: self._check(device, at, key))

    def _check(self, device: Device, triggered_at: float, key: tuple[str, Any]) -> None:
        stopped_at = self._stopped.get(key, -1.0)
        self._waiting[key] -= 1
        if self._waiting[key] <= 0:
            del self._waiting[key]
            self._stopped.pop(key, None)
        if stopped_at >= triggered_at:
            self.counts["exited_before_delay"] += 1
            return
        self.counts[reachability(device)] += 1

    def summary(self) -> dict[str, Any]:
        return _summary(self.journey, self.counts, DELAYED_OUTCOMES)


Audience = JourneyAudience | InactivityAudience | BroadcastAudience | RepeatedEventAudience
