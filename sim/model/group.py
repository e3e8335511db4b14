"""A shopper group: the people who share a phone, their phones, and the group's own streams.

Groups never touch one another. Everything a group draws comes from its own seeded streams and
every id it makes carries its group id, so a group's records are the same in any shard.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sim.model.lifecycle import new_device, run_device
from sim.model.people import Person
from sim.model.streams import GroupStreams

if TYPE_CHECKING:
    from sim.model.app import Device
    from sim.model.arrivals import Arrival
    from sim.model.carts import Cart
    from sim.model.world import World


class ShopperGroup:
    """People who share a phone, with their phones; ``seq`` orders the group's records."""

    __slots__ = (
        "world",
        "group_id",
        "zone",
        "timezone",
        "streams",
        "people",
        "devices",
        "seq",
        "token_seq",
        "cart_seq",
        "push_cart_seq",
        "order_seq",
        "push_order_seq",
        "anyway_order_seq",
        "tiebreak",
        "abandoned",
    )

    def __init__(self, world: World, arrival: Arrival):
        self.world = world
        self.group_id = arrival.group_id
        self.zone = arrival.timezone
        self.timezone = world.timezone_names[arrival.timezone]
        self.streams = GroupStreams(world.scenario.seed, arrival.group_id)
        self.people: list[Person] = []
        self.devices: list[Device] = []
        self.seq = 0
        self.token_seq = 0
        self.cart_seq = 0
        self.push_cart_seq = 0
        self.order_seq = 0
        self.push_order_seq = 0
        self.anyway_order_seq = 0
        self.tiebreak = 0
        self.abandoned: dict[str, Cart] = {}

    def record(self, at: float, kind: str, **fields) -> None:
        """Write a truth record stamped with the group's next sequence number."""
        self.seq += 1
        if self.world.keep_truth:
            self.world.truth.write(
                {"v": 1, "kind": kind, "at": at, "group": self.group_id, "seq": self.seq, **fields}
            )

    def next_tiebreak(self) -> int:
        self.tiebreak += 1
        return self.tiebreak

    def add_person(self) -> Person:
        """Add a person to the group and return them."""
        person = Person(self.group_id, len(self.people), self.world.scenario.seed, self.timezone)
        self.people.append(person)
        self.world.stats.people += 1
        return person

    def device_with_token(self, token: str) -> Device | None:
        """Return the group's phone whose current token is ``token``, or None."""
        for device in self.devices:
            if device.token == token:
                return device
        return None

    def start(self, at: float) -> None:
        """Draw who the group is and start the process of each of its phones."""
        world = self.world
        population = world.scenario.population
        sessions = world.scenario.sessions
        stream = self.streams.organic
        world.stats.groups += 1

        shared = stream.chance(population.shared_device)
        multi = stream.chance(population.multi_device)
        second_delay = population.second_device_delay
        delay = stream.lognormal(second_delay.median, second_delay.sigma)
        rate = stream.gamma(sessions.per_day / 86400.0, sessions.shape)

        owner = self.add_person()
        first = new_device(self, 0, owner, rate)
        self.devices.append(first)
        if shared:
            first.users.append(self.add_person())
            world.stats.shared_devices += 1
        world.env.process(run_device(first, at))
        self.record(at, "device_user", device=first.device_id, person=owner.person_id)

        # A second install that would fall after the run does not happen, and its person is
        # not counted as multi-device.
        if multi and at + delay < world.horizon:
            world.stats.multi_device_people += 1
            second = new_device(self, 1, owner, rate)
            self.devices.append(second)
            self.record(at + delay, "device_user", device=second.device_id, person=owner.person_id)
            world.env.process(run_device(second, at + delay))
