"""The event catalogue: every event a simulated app can send, with its required properties.

Journeys, validation, the model and the backend all name events through this catalogue, so a
misspelt trigger is caught before a run starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class EventSpec:
    """One event: its wire name, its kind, the properties it must carry and its drifted aliases."""

    name: str
    kind: str
    required: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    description: str = ""
    property_types: dict[str, str] = field(default_factory=dict)


RETENTION = "retention"
LIFECYCLE = "lifecycle"
PUSH_METRIC = "push_metric"

EVENTS: tuple[EventSpec, ...] = (
    EventSpec(
        "product_viewed",
        RETENTION,
        ("sku", "category", "price"),
        description="A product page was shown.",
        property_types={"sku": "string", "category": "string", "price": "number"},
    ),
    EventSpec(
        "added_to_cart",
        RETENTION,
        ("sku", "qty", "cart_id"),
        # The iOS app of a team with drifted instrumentation sends the verb form.
        aliases=("add_to_cart",),
        description="A product was added to the cart.",
        property_types={"sku": "string", "qty": "integer", "cart_id": "string"},
    ),
    EventSpec(
        "checkout_started",
        RETENTION,
        ("cart_id", "cart_value"),
        description="The shopper opened checkout for a cart.",
        property_types={"cart_id": "string", "cart_value": "number"},
    ),
    EventSpec(
        "order_completed",
        RETENTION,
        ("order_id", "cart_id", "order_value", "items"),
        description="An order was placed; it closes its cart.",
        property_types={
            "order_id": "string",
            "cart_id": "string",
            "order_value": "number",
            "items": "integer",
        },
    ),
    EventSpec("Application Installed", LIFECYCLE, description="First launch after an install."),
    EventSpec("Application Opened", LIFECYCLE, description="The app came to the foreground."),
    EventSpec("Application Backgrounded", LIFECYCLE, description="The app left the foreground."),
    EventSpec(
        "delivered",
        PUSH_METRIC,
        ("delivery_id",),
        description="The phone received a push (reported per delivery).",
    ),
    EventSpec("opened", PUSH_METRIC, ("delivery_id",), description="The shopper opened a push."),
    EventSpec(
        "converted",
        PUSH_METRIC,
        ("delivery_id",),
        description="An order followed the push that was opened.",
    ),
)

BY_NAME: dict[str, EventSpec] = {spec.name: spec for spec in EVENTS}
BY_ALIAS: dict[str, EventSpec] = {alias: spec for spec in EVENTS for alias in spec.aliases}
RETENTION_EVENTS: tuple[str, ...] = tuple(s.name for s in EVENTS if s.kind == RETENTION)
PUSH_METRICS: tuple[str, ...] = tuple(s.name for s in EVENTS if s.kind == PUSH_METRIC)
# Journeys trigger and exit on what the app tracks, never on the push metrics it reports.
TRACKABLE_EVENTS: tuple[str, ...] = tuple(s.name for s in EVENTS if s.kind != PUSH_METRIC)


def canonical_name(name: str) -> str | None:
    """Return the catalogue name for ``name`` or one of its aliases, or None if it is unknown."""
    if name in BY_NAME:
        return name
    spec = BY_ALIAS.get(name)
    return spec.name if spec else None


def missing_properties(name: str, properties: dict) -> list[str]:
    """Return the required properties of event ``name`` that ``properties`` lacks."""
    spec = BY_NAME.get(canonical_name(name) or "")
    if spec is None:
        return []
    return [key for key in spec.required if key not in properties]
