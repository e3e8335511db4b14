"""Sessions: when a shopper opens the app, and the events of one visit.

Session starts form a Poisson process at the shopper's own rate, shaped by the local hour and
weekday through thinning, with at least ``sessions.min_gap`` between the end of one session and
the start of the next. Inside a session the funnel chain picks each next event, and lognormal
gaps separate them.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from sim.model import identity, permission
from sim.model.carts import ABANDONED, OPEN, Cart, abandon, open_cart, order_properties, place_order
from sim.model.funnel import START

if TYPE_CHECKING:
    from sim.model.app import Device
    from sim.model.products import Product

# Cap on thinning rounds for one session start; far above what any valid weight profile needs.
_MAX_CANDIDATES = 10_000
NEEDS_CART = frozenset({"checkout_started", "order_completed"})


def next_session_at(device: Device, after: float) -> float:
    """Return the start of the device's next session after ``after``, or inf past the run."""
    group = device.group
    world = group.world
    rate = device.session_rate
    if rate <= 0.0:
        return math.inf
    clock = world.local_clock
    peak = clock.session_peak[group.zone]
    stream = group.streams.organic
    mean_gap = 1.0 / (rate * peak)

    at = after
    for _ in range(_MAX_CANDIDATES):
        at += stream.exponential(mean_gap)
        if at >= world.horizon:
            return math.inf
        if stream.uniform() * peak < clock.session_weight(group.zone, at):
            return at
    return math.inf


def _start(device: Device, at: float, change_user: bool) -> None:
    """Send what a cold start sends, prompt if due, and settle who is logged in."""
    world = device.group.world
    if device.fresh:
        device.fresh = False
        device.track(at, "Application Installed")
    device.track(at, "Application Opened")
    if world.faults.roll("duplicate_app_opened", device.group.streams):
        device.send(
            at,
            "track" if device.identified else "anonymous_track",
            event="Application Opened",
            fault="duplicate_app_opened",
        )

    # A token rotated in the background is registered at the latest now.
    device.sync_deferred = False
    if world.scenario.permission.prompt == "first_open" and permission.may_prompt(device):
        permission.prompt(device, at)

    if device.handover:
        # The phone's new owner logs in to their own account at their first open.
        device.handover = False
        identity.identify(device, at, device.user, "handover")
    elif change_user:
        identity.begin_session(device, at)
    device.sync_token(at)


def _emit(
    device: Device, at: float, name: str, cart: Cart | None, product_hint: Product | None
) -> Cart | None:
    """Track one funnel event at ``at`` and return the cart that is open after it."""
    group = device.group
    world = group.world
    stream = group.streams.organic

    if name == "product_viewed":
        product = product_hint or world.catalogue[stream.below(len(world.catalogue))]
        device.last_product = product
        device.track(at, name, product.view_properties)
    elif name == "added_to_cart":
        product = device.last_product or world.catalogue[stream.below(len(world.catalogue))]
        if cart is None:
            cart = open_cart(device, at, device.session_origin)
        cart.items.append(product)
        device.track(at, name, {"sku": product.sku, "qty": 1, "cart_id": cart.cart_id})
    elif name == "checkout_started" and cart is not None:
        device.track(at, name, {"cart_id": cart.cart_id, "cart_value": cart.value})
        leaves_email = stream.chance(world.scenario.identity.guest_email_at_checkout)
        if device.identified is None and leaves_email:
            identity.identify(device, at, device.user, "guest_email")
    elif name == "order_completed" and cart is not None:
        order_id = place_order(cart, at, "organic")
        device.track(at, name, order_properties(cart, order_id))
        _schedule_reorders(device, at, cart)
        cart = None

    if name == world.value_moment and permission.may_prompt(device):
        permission.prompt(device, at)
    return cart


def _schedule_reorders(device: Device, at: float, cart: Cart) -> None:
    """Put a reorder on the agenda for each ordered product the shopper will buy again."""
    settings = device.group.world.scenario.funnel.reorder
    stream = device.group.streams.organic
    for product in cart.items:
        again = stream.chance(settings.probability)
        interval = stream.gamma(settings.mean_interval, settings.shape) if again else 0.0
        if again and at + interval < device.group.world.horizon:
            device.schedule(at + interval, "reorder", product)


def session(
    device: Device, at: float, reorder: Product | None = None
) -> Generator[Any, Any, float]:
    """Run one session from ``at``; with ``reorder`` it opens on that product. Returns its end."""
    group = device.group
    world = group.world
    env = world.env
    stream = group.streams.organic
    gap = world.scenario.sessions.event_gap
    rows = world.chain.rows
    world.stats.sessions += 1

    now = at
    _start(device, now, change_user=True)
    device.last_product = None
    device.session_origin = "reorder" if reorder is not None else "organic"
    cart: Cart | None = None
    state = START
    if reorder is not None:
        for name in ("product_viewed", "added_to_cart"):
            now += stream.lognormal(gap.median, gap.sigma)
            yield env.timeout(max(0.0, now - env.now))
            cart = _emit(device, now, name, cart, reorder)
        state = "added_to_cart"
        # Later carts of the visit get their own origin. They are neither the reorder's cart nor
        # carts of organic sessions, whose abandonment follows the funnel chain from its start.
        device.session_origin = "reorder_visit"

    # The funnel walk: each step draws the next event, and what a row leaves over ends it. The
    # row is read here rather than through FunnelChain.next_event, and the gap drawn as
    # Stream.lognormal draws it, because this loop runs once per event of every session.
    median, sigma = gap.median, gap.sigma
    uniform, normal = stream.uniform, stream.normal
    while True:
        u = uniform()
        name = None
        for bound, event in rows[state]:
            if u < bound:
                name = event
                break
        if name is None or (name in NEEDS_CART and cart is None):
            break
        now += median * math.exp(sigma * normal())
        yield env.timeout(max(0.0, now - env.now))
        cart = _emit(device, now, name, cart, None)
        state = name

    return _end(device, now, cart)


def _end(device: Device, at: float, cart: Cart | None) -> float:
    """Close the session: abandon an open cart, background the app, maybe log out."""
    group = device.group
    if cart is not None and cart.state == OPEN:
        abandon(cart, at)
    device.track(at, "Application Backgrounded")
    if device.identified is not None and group.streams.organic.chance(
        group.world.scenario.identity.logout
    ):
        identity.logout(device, at, "logout")
    return at


def return_visit(device: Device, at: float, cart: Cart) -> Generator[Any, Any, float]:
    """Come back to an abandoned cart and buy it at its latent time; returns the end."""
    group = device.group
    world = group.world
    env = world.env
    stream = group.streams.organic
    gap = world.scenario.sessions.event_gap
    # Both gaps are drawn first, so a push that already converted the cart leaves the organic
    # stream where it would have been.
    gaps = [stream.lognormal(gap.median, gap.sigma) for _ in range(2)]
    if cart.state != ABANDONED or not device.installed:
        return at

    world.stats.sessions += 1
    now = at
    if device.user is not cart.person:
        device.set_user(now, cart.person)
    _start(device, now, change_user=False)
    for name, step in zip(("checkout_started", "order_completed"), gaps, strict=True):
        now += step
        yield env.timeout(max(0.0, now - env.now))
        if name == "checkout_started":
            device.track(now, name, {"cart_id": cart.cart_id, "cart_value": cart.value})
        elif cart.state == ABANDONED:
            order_id = place_order(cart, now, "buy_anyway")
            device.track(now, name, order_properties(cart, order_id))
    return _end(device, now, None)
