"""Expected audience of each journey: triggers that are still due, and reachable, after the delay.

For an event journey, each trigger event waits the journey's delay. It then counts as
exited when its exit event (matched on the journey's property) came in between, else as
unreachable (app removed, no current token, no permission) or as audience. Triggers whose
delay runs past the end of the run are left out, as the oracle leaves them out.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from sim.catalogue import canonical_name
from sim.scenario.schema import Journey

if TYPE_CHECKING:
    from sim.model.app import Device
    from sim.model.world import World

# NOTE: repeated_event, inactivity and broadcast journeys are not estimated; the plan prints
# "not estimated by plan" for them.
ESTIMATED_KINDS = ("event", "delay_range")


class JourneyAudience:
    """Counts of one journey's triggers by the outcome that decides whether a push is due."""

    def __init__(self, world: World, journey: Journey):
        self.world = world
        self.journey = journey
        self.estimated = journey.kind in ESTIMATED_KINDS
        self.trigger = canonical_name(journey.trigger.event)
        self.exit_event = canonical_name(journey.exit.event) if journey.exit.event else None
        self.match = journey.exit.match
        self.counts: Counter[str] = Counter()
        # Exit times per matched value, kept only while a trigger with that value waits.
        self._waiting: Counter[Any] = Counter()
        self._exits: dict[Any, float] = {}

    def watched(self) -> tuple[str, ...]:
        """Return the event names this audience needs to see."""
        if not self.estimated:
            return ()
        return tuple(name for name in (self.trigger, self.exit_event) if name)

    def observe(self, device: Device, at: float, name: str, properties: dict | None) -> None:
        value = (properties or {}).get(self.match) if self.match else None
        if name == self.exit_event and value in self._waiting:
            self._exits[value] = at
        if name != self.trigger:
            return

        self.counts["triggers"] += 1
        delay = self.journey.delay
        if at + delay >= self.world.horizon:
            self.counts["excluded_near_end"] += 1
            return
        self._waiting[value] += 1
        check = self.world.env.timeout(delay)
        check.callbacks.append(lambda _event: self._check(device, at, value))

    def _check(self, device: Device, triggered_at: float, value: Any) -> None:
        exited_at = self._exits.get(value, -1.0)
        self._waiting[value] -= 1
        if self._waiting[value] <= 0:
            del self._waiting[value]
            self._exits.pop(value, None)

        if exited_at >= triggered_at:
            self.counts["exited_before_delay"] += 1
        elif not device.installed or device.token is None:
            self.counts["no_device"] += 1
        elif not device.push_enabled:
            self.counts["no_permission"] += 1
        else:
            self.counts["audience"] += 1
            if device.identified is None:
                # Reachable by truth, but only through an anonymous profile.
                self.counts["audience_anonymous"] += 1

    def summary(self) -> dict[str, Any]:
        result: dict[str, Any] = {"name": self.journey.name, "kind": self.journey.kind}
        if not self.estimated:
            result["estimated"] = False
            return result
        keys = (
            "triggers",
            "excluded_near_end",
            "exited_before_delay",
            "no_device",
            "no_permission",
            "audience",
            "audience_anonymous",
        )
        result.update({key: self.counts[key] for key in keys})
        return result
