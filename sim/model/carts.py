"""Carts and orders: a cart opens at its first add, and closes ordered or abandoned."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sim.model.app import Device
    from sim.model.people import Person
    from sim.model.products import Product

OPEN, ORDERED, ABANDONED = "open", "ordered", "abandoned"
# The origin of carts opened in a visit that a push opened.
PUSH_VISIT = "push_visit"

# Abandoned carts a group keeps for push conversions and return visits; older ones are
# forgotten so a long run's memory stays flat.
KEEP_ABANDONED = 4


class Cart:
    """One cart: its id, owner, products and state."""

    __slots__ = ("cart_id", "device", "person", "items", "state", "origin", "created_at")

    def __init__(self, cart_id: str, device: Device, person: Person, origin: str, at: float):
        self.cart_id = cart_id
        self.device = device
        self.person = person
        self.items: list[Product] = []
        self.state = OPEN
        self.origin = origin
        self.created_at = at

    @property
    def value(self) -> float:
        return round(sum(product.price for product in self.items), 2)


def open_cart(device: Device, at: float, origin: str) -> Cart:
    """Open a new cart for the person at the phone."""
    group = device.group
    if origin == PUSH_VISIT:
        # Carts of visits that a push opened get their own numbering, so they never shift the
        # ids of organic carts.
        group.push_cart_seq += 1
        cart_id = f"c{group.group_id}-p{group.push_cart_seq}"
    else:
        group.cart_seq += 1
        cart_id = f"c{group.group_id}-{group.cart_seq}"
    cart = Cart(cart_id, device, device.user, origin, at)
    group.world.stats.carts[origin] += 1
    group.record(
        at,
        "cart",
        cart_id=cart.cart_id,
        device=device.device_id,
        person=device.user.person_id,
        origin=origin,
    )
    return cart


def abandon(cart: Cart, at: float) -> None:
    """Close a cart that its session left without an order, and draw its latent purchase.

    A cart of a push visit gets no latent purchase: its shopper is not modelled to come back
    for it unprompted, because a return visit would take the organic stream's draws.
    """
    device = cart.device
    group = device.group
    world = group.world
    cart.state = ABANDONED
    world.stats.carts_abandoned[cart.origin] += 1
    group.record(at, "cart_closed", cart_id=cart.cart_id, outcome=ABANDONED)

    # The latent draw: would this shopper come back and buy without any push, and when.
    buy_at = None
    if cart.origin != PUSH_VISIT:
        settings = world.scenario.reactions.buy_anyway
        stream = group.streams.organic
        would_buy = stream.chance(settings.probability)
        delay = stream.lognormal(settings.delay.median, settings.delay.sigma)
        buy_at = at + delay if would_buy else None
    group.record(at, "latent", cart_id=cart.cart_id, buy_anyway_at=buy_at)
    if buy_at is not None:
        world.stats.would_buy_anyway += 1

    group.abandoned[cart.cart_id] = cart
    if len(group.abandoned) > KEEP_ABANDONED:
        del group.abandoned[next(iter(group.abandoned))]
    if buy_at is not None and buy_at < world.horizon:
        device.schedule(buy_at, "return", cart)


def place_order(cart: Cart, at: float, via: str) -> str:
    """Close ``cart`` with an order and return the order id; ``via`` names the cause."""
    device = cart.device
    group = device.group
    if via == "organic":
        group.order_seq += 1
        order_id = f"o{group.group_id}-{group.order_seq}"
    elif via == "push":
        # Orders that pushes bring get their own numbering, so they never shift the ids of
        # the orders the shopper would place anyway.
        group.push_order_seq += 1
        order_id = f"o{group.group_id}-p{group.push_order_seq}"
    else:
        group.anyway_order_seq += 1
        order_id = f"o{group.group_id}-{via[0]}{group.anyway_order_seq}"
    cart.state = ORDERED
    cart.person.has_ordered = True
    group.world.stats.orders[via] += 1
    group.abandoned.pop(cart.cart_id, None)
    group.record(at, "cart_closed", cart_id=cart.cart_id, outcome=ORDERED)
    group.record(at, "order", order_id=order_id, cart_id=cart.cart_id, value=cart.value, via=via)
    return order_id


def order_properties(cart: Cart, order_id: str) -> dict:
    """Return the properties of order_completed for ``cart``."""
    return {
        "order_id": order_id,
        "cart_id": cart.cart_id,
        "order_value": cart.value,
        "items": len(cart.items),
    }
