"""Push reactions: what the phone and its owner do with a push the push service delivers.

A push reaches the phone that owns the token at that moment. It is displayed only if the app
is installed, the token is the phone's current one and permission is granted. The person at the
phone may open it after a lognormal delay, and the deep link may be broken. An open with a
working link to that person's abandoned cart may end in an order. A working link to anything
else, such as a broadcast's deals page, opens a push visit: the shopper browses on through the
funnel chain, and an order in that visit is the push's conversion.

All draws come from the group's reactions substream, so a push never shifts the organic
behaviour that follows it. For the same reason a push visit keeps its own state: it leaves who
is logged in and the permission alone, numbers its carts apart, and its abandoned carts get no
latent purchase.
"""

from __future__ import annotations

import re
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from sim.formats.shards import shard_of
from sim.formats.tokens import parse_token
from sim.model.carts import (
    ABANDONED,
    PUSH_VISIT,
    Cart,
    abandon,
    open_cart,
    order_properties,
    place_order,
)
from sim.model.funnel import START
from sim.model.ports import Delivery
from sim.model.sessions import NEEDS_CART

if TYPE_CHECKING:
    from sim.model.app import Device
    from sim.model.group import ShopperGroup
    from sim.model.products import Product
    from sim.model.streams import Stream
    from sim.model.world import World

_CART_LINK = re.compile(r"://cart/([^/?#\s]+)")


def cart_in_payload(payload: Any) -> str | None:
    """Return the cart id of the first ``scheme://cart/<cart_id>`` link in the payload."""
    if isinstance(payload, str):
        match = _CART_LINK.search(payload)
        return match.group(1) if match else None
    if isinstance(payload, dict):
        payload = list(payload.values())
    if isinstance(payload, list):
        for value in payload:
            found = cart_in_payload(value)
            if found:
                return found
    return None


def deliver(world: World, delivery: Delivery) -> str:
    """Hand a delivered push to its phone now and return what happened first.

    Returns ``unknown_token`` for a token this run never issued, ``other_shard`` for a token
    of a group that another shard simulates, ``suppressed`` when nothing is displayed, and
    ``displayed`` otherwise.
    """
    info = parse_token(world.run_key, delivery.token)
    if info is None:
        world.stats.reactions["unknown_token"] += 1
        return "unknown_token"
    group = world.groups.get(info.group_id)
    if group is None:
        index, count = world.shard
        # A group of this shard that has not arrived yet has issued no token.
        outcome = "other_shard" if shard_of(info.group_id, count) != index else "unknown_token"
        world.stats.reactions[outcome] += 1
        return outcome

    at = world.env.now
    device = group.device_with_token(delivery.token)
    reason = _hidden_because(device)
    _note(group, device, delivery, at, "received", None)
    if reason is not None:
        world.stats.reactions[f"suppressed_{reason}"] += 1
        _note(group, device, delivery, at, "suppressed", reason)
        return "suppressed"

    world.stats.reactions["displayed"] += 1
    _note(group, device, delivery, at, "displayed", None)
    world.env.process(_react(device, delivery, at))
    return "displayed"


def _hidden_because(device: Device | None) -> str | None:
    if device is None:
        return "token_not_current"
    if not device.installed:
        return "not_installed"
    if not device.push_enabled:
        return "no_permission"
    return None


def _note(
    group: ShopperGroup,
    device: Device | None,
    delivery: Delivery,
    at: float,
    step: str,
    detail: str | None,
) -> None:
    group.record(
        at,
        "reaction",
        delivery_id=delivery.delivery_id,
        token=delivery.token,
        device=device.device_id if device else None,
        person=device.user.person_id if device else None,
        step=step,
        detail=detail,
    )


def _metric(device: Device, at: float, metric: str, delivery: Delivery) -> None:
    device.send(
        at,
        "push_metric",
        event=metric,
        token=delivery.token,
        properties={"delivery_id": delivery.delivery_id},
    )


def _react(device: Device, delivery: Delivery, at: float) -> Generator[Any, Any, None]:
    """Report delivery, then maybe open the push and follow its link to an order."""
    group = device.group
    world = group.world
    settings = world.scenario.reactions
    stream = group.streams.reactions
    platform = device.platform
    _metric(device, at, "delivered", delivery)

    # Every draw is made up front, so each delivery uses the same number of draws.
    opens = stream.chance(settings.open.get(platform, 0.0))
    timing = settings.time_to_open[platform]
    delay = stream.lognormal(timing.median, timing.sigma)
    broken = stream.chance(settings.broken_link)
    converts = stream.chance(settings.convert_after_open)
    if not opens:
        return

    now = at + delay
    yield world.env.timeout(delay)
    if not device.installed or device.token != delivery.token:
        _note(group, device, delivery, now, "suppressed", "gone_before_open")
        return
    world.stats.reactions["opened"] += 1
    _note(group, device, delivery, now, "opened", None)
    _metric(device, now, "opened", delivery)
    device.track(now, "Application Opened")
    if broken:
        _note(group, device, delivery, now, "opened", "broken_link")
        return

    cart_id = cart_in_payload(delivery.payload)
    if cart_id is None:
        yield from _visit(device, delivery, now)
        return
    cart = group.abandoned.get(cart_id)
    if not converts or cart is None or cart.state != ABANDONED or cart.person is not device.user:
        return
    device.track(now, "checkout_started", {"cart_id": cart.cart_id, "cart_value": cart.value})
    order_id = place_order(cart, now, "push")
    device.track(now, "order_completed", order_properties(cart, order_id))
    _converted(device, delivery, now, cart)


def _converted(device: Device, delivery: Delivery, at: float, cart: Cart) -> None:
    _metric(device, at, "converted", delivery)
    device.group.world.stats.reactions["converted"] += 1
    _note(device.group, device, delivery, at, "converted", cart.cart_id)


class _VisitStreams:
    """The stream owner of a push visit's fault dice: the group's reactions substream."""

    __slots__ = ("faults",)

    def __init__(self, stream: Stream):
        self.faults = stream


def _visit(device: Device, delivery: Delivery, at: float) -> Generator[Any, Any, None]:
    """Browse from the push's link through the funnel chain, as an organic session would.

    The visit starts where the open left the app, so it sends no second Application Opened. A
    checkout by an anonymous shopper leaves no guest email, so that the visit identifies no one.
    """
    group = device.group
    world = group.world
    env = world.env
    stream = group.streams.reactions
    dice_owner = _VisitStreams(stream)
    gap = world.scenario.sessions.event_gap
    catalogue = world.catalogue
    world.stats.reactions["visits"] += 1

    now = at
    state = START
    cart: Cart | None = None
    product: Product | None = None
    while True:
        name = world.chain.next_event(state, stream.uniform())
        if name is None or (name in NEEDS_CART and cart is None):
            break
        now += stream.lognormal(gap.median, gap.sigma)
        yield env.timeout(max(0.0, now - env.now))
        if not device.installed:
            break  # uninstalled during the visit: nothing more is sent

        if name == "product_viewed":
            product = catalogue[stream.below(len(catalogue))]
            device.track(now, name, product.view_properties, stream_owner=dice_owner)
        elif name == "added_to_cart":
            product = product or catalogue[stream.below(len(catalogue))]
            if cart is None:
                cart = open_cart(device, now, PUSH_VISIT)
            cart.items.append(product)
            properties = {"sku": product.sku, "qty": 1, "cart_id": cart.cart_id}
            device.track(now, name, properties, stream_owner=dice_owner)
        elif name == "checkout_started" and cart is not None:
            device.track(now, name, {"cart_id": cart.cart_id, "cart_value": cart.value})
        elif name == "order_completed" and cart is not None:
            order_id = place_order(cart, now, "push")
            device.track(now, name, order_properties(cart, order_id))
            _converted(device, delivery, now, cart)
            cart = None
        state = name

    if cart is not None:
        abandon(cart, now)
    if device.installed:
        device.track(now, "Application Backgrounded")
