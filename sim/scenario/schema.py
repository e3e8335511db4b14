"""The scenario format: one dataclass per section, each field with its default and meaning.

These classes are the single definition of the format. The validator walks their type hints, and
the reference in docs/scenario-reference.md is generated from the same hints and docstrings.
Every section is optional. Durations are simulated time unless a field is marked wall time.
"""

from __future__ import annotations

import copy
import datetime
from dataclasses import dataclass, field
from typing import Any, Literal

from sim.scenario.types import (
    Amount,
    Count,
    DateTime,
    Duration,
    NonNegative,
    Positive,
    Probability,
    TimeOfDay,
    WallDuration,
)


def setting(default: Any, doc: str, *, unit: str = "") -> Any:
    """Declare a scenario field with its default, its one-line meaning and its unit."""
    metadata = {"doc": doc, "unit": unit}
    if isinstance(default, list | dict) or hasattr(default, "__dataclass_fields__"):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return field(default=default, metadata=metadata)


PLATFORMS = ("ios", "android")

# Retail visits by local hour: rising from 09:00, highest 20:00-22:00, lowest 03:00-05:00.
DEFAULT_HOURLY = [
    0.9, 0.6, 0.4, 0.3, 0.3, 0.3, 0.5, 0.8, 1.0, 1.2, 1.3, 1.4,
    1.5, 1.5, 1.4, 1.4, 1.5, 1.6, 1.8, 2.0, 2.2, 2.2, 2.0, 1.4,
]  # fmt: skip
DEFAULT_WEEKDAY = [1.0, 1.0, 1.0, 1.0, 1.1, 1.2, 1.2]  # Monday first


@dataclass
class Clock:
    """Simulated start and length of the run, and how fast it runs against the wall clock."""

    start: DateTime = setting(
        datetime.datetime(2026, 11, 26, tzinfo=datetime.UTC), "simulated start of the run"
    )
    duration: Duration = setting(2 * 86400.0, "simulated length of the run")
    time_scale: Positive = setting(
        1440.0, "simulated seconds per wall second (1440 runs a day in a wall minute)"
    )
    drain: Duration = setting(
        2 * 3600.0,
        "grace after the end in which pushes may still arrive; triggers this close "
        "to the end (plus their delay) are left out of verdicts",
    )
    lag_budget: WallDuration = setting(
        1.0, "wall time an action may run late before it counts as dropped (never scaled)"
    )


@dataclass
class LogNormal:
    """A lognormal distribution given by its median and the sigma of its logarithm."""

    median: Duration = setting(3600.0, "median")
    sigma: NonNegative = setting(1.0, "standard deviation of the natural logarithm")


@dataclass
class Price:
    """A lognormal price given by its median and the sigma of its logarithm."""

    median: Amount = setting(35.0, "median price in the shop's currency")
    sigma: NonNegative = setting(0.7, "standard deviation of the natural logarithm")


@dataclass
class Spike:
    """A burst of installs, such as a launch at 09:00 local time."""

    at: DateTime = setting(
        datetime.datetime(2026, 11, 27, 9, tzinfo=datetime.UTC),
        "when the burst starts; the wall-clock reading is taken in each shopper's time zone",
    )
    duration: Duration = setting(3600.0, "how long the burst lasts")
    multiplier: Positive = setting(5.0, "install rate during the burst, as a multiple of normal")


@dataclass
class Arrival:
    """Shape of the install rate over local time."""

    hourly: list[NonNegative] = setting(
        DEFAULT_HOURLY, "24 relative weights for the local hour of day, 00:00 first"
    )
    weekday: list[NonNegative] = setting(
        DEFAULT_WEEKDAY, "7 relative weights for the local weekday, Monday first"
    )
    spikes: list[Spike] = setting([], "bursts of installs on top of the profile")


@dataclass
class Population:
    """Installs: their volume, timing and devices."""

    installs: Count = setting(3000, "installs expected over the run's duration")
    arrival: Arrival = setting(Arrival(), "shape of the install rate")
    timezones: dict[str, Probability] = setting(
        {
            "America/New_York": 0.35,
            "America/Chicago": 0.15,
            "America/Los_Angeles": 0.2,
            "Europe/London": 0.15,
            "Europe/Berlin": 0.15,
        },
        "share of shoppers per IANA time zone; shares sum to 1",
    )
    platforms: dict[Literal["ios", "android"], Probability] = setting(
        {"ios": 0.5, "android": 0.5}, "share of devices per platform; shares sum to 1"
    )
    android_13_plus: Probability = setting(
        0.75, "share of Android devices on Android 13 or later, which must prompt for push"
    )
    ios_development_builds: Probability = setting(
        0.0,
        "share of iOS devices running a development-signed build, such as a QA team's phones; "
        "their device tokens work only with the APNs sandbox",
    )
    multi_device: Probability = setting(0.1, "share of people who use the app on two devices")
    shared_device: Probability = setting(0.05, "share of devices shared by two people")
    second_device_delay: LogNormal = setting(
        LogNormal(median=3 * 86400.0, sigma=1.0),
        "time from a multi-device person's first install to the install on their second device",
    )


@dataclass
class Permission:
    """The push permission prompt. Permission belongs to a device, not to a person."""

    prompt: Literal["first_open", "value_moment"] = setting(
        "first_open", "when the app asks: at first open, or at the value moment event"
    )
    value_moment: str = setting(
        "added_to_cart", "catalogue event after which the prompt appears with value_moment"
    )
    opt_in: dict[Literal["ios", "android"], Probability] = setting(
        {"ios": 0.56, "android": 0.60},
        "share of prompted devices that grant permission (Android below 13 is never prompted "
        "and always granted)",
    )
    not_determined: dict[Literal["ios", "android"], Probability] = setting(
        {"ios": 0.1, "android": 0.1},
        "share of prompts dismissed without an answer; the rest are denied",
    )


@dataclass
class Rotation:
    """Causes of device-token rotation, each per device per 30 simulated days."""

    fcm_refresh: NonNegative = setting(0.03, "FCM registration-token refreshes (Android only)")
    os_update: NonNegative = setting(0.02, "OS updates that issue a new token")
    restore: NonNegative = setting(0.005, "restores of a backup to a new phone")


@dataclass
class Tokens:
    """Device-token rotation, and the time a dead token keeps looking alive."""

    rotation: Rotation = setting(Rotation(), "rotation causes and rates")
    reinstall_keeps_token: dict[Literal["ios", "android"], Probability] = setting(
        {"ios": 0.3, "android": 0.0},
        "share of reinstalls on the same phone that get the old token back",
    )
    unregistered_delay: LogNormal = setting(
        LogNormal(median=6 * 3600.0, sigma=0.5),
        "time a dead token keeps answering 200 before the service reports it gone",
    )


@dataclass
class Sessions:
    """How often shoppers open the app and how fast they act inside a session."""

    per_day: Positive = setting(1.0, "mean sessions per shopper per simulated day")
    shape: Positive = setting(
        0.8, "gamma shape of the per-shopper session rate; lower means more spread"
    )
    min_gap: Duration = setting(1800.0, "shortest time between two sessions of one shopper")
    event_gap: LogNormal = setting(
        LogNormal(median=20.0, sigma=0.8), "time between two events in one session"
    )


@dataclass
class Reorder:
    """Replenishment: a shopper buys the same product again after a gamma-distributed interval."""

    probability: Probability = setting(0.3, "share of ordered products that are bought again")
    mean_interval: Duration = setting(28 * 86400.0, "mean interval before the reorder")
    shape: Positive = setting(4.0, "gamma shape of the interval")


@dataclass
class Products:
    """The shop's catalogue as the model draws from it."""

    count: Count = setting(200, "number of products (SKUs)")
    categories: Count = setting(10, "number of product categories")
    price: Price = setting(Price(), "lognormal product price in the shop's currency")


# Tuned so that, solved as an absorbing Markov chain, 70.0% of carts end their session without
# an order, close to the average of about 70% that the Baymard Institute compiles from about 50
# studies. Sessions average about 6.8 events, against a median of 6 in the training sessions of
# the OTTO recsys dataset (github.com/otto-de/recsys-dataset).
DEFAULT_TRANSITIONS: dict[str, dict[str, float]] = {
    "session_start": {"product_viewed": 0.9},
    "product_viewed": {"product_viewed": 0.8, "added_to_cart": 0.08},
    "added_to_cart": {"product_viewed": 0.45, "added_to_cart": 0.1, "checkout_started": 0.35},
    "checkout_started": {"order_completed": 0.6, "product_viewed": 0.15},
    "order_completed": {"product_viewed": 0.2},
}
FUNNEL_STATES = ("session_start", "product_viewed", "added_to_cart", "checkout_started",
                 "order_completed")  # fmt: skip


@dataclass
class Funnel:
    """The in-session path through the retention events."""

    transitions: dict[str, dict[str, Probability]] = setting(
        DEFAULT_TRANSITIONS,
        "probability of each next event after each state; what a row leaves over ends the "
        "session, so a row sums to at most 1",
    )
    reorder: Reorder = setting(Reorder(), "replenishment reorders")
    products: Products = setting(Products(), "the catalogue")


@dataclass
class Uninstall:
    """When the app is removed, and whether it comes back."""

    weibull_shape: Positive = setting(
        0.26, "Weibull shape of the time to uninstall; below 1 the hazard is highest at first"
    )
    weibull_scale: Duration = setting(140 * 86400.0, "Weibull scale of the time to uninstall")
    reinstall: Probability = setting(0.1, "share of uninstalls followed by a reinstall")
    reinstall_delay: LogNormal = setting(
        LogNormal(median=2 * 86400.0, sigma=1.0), "time from uninstall to reinstall"
    )


@dataclass
class BuyAnyway:
    """Latent draw per abandoned cart: would the shopper come back and buy without a push."""

    probability: Probability = setting(0.15, "share of abandoned carts bought later anyway")
    delay: LogNormal = setting(
        LogNormal(median=86400.0, sigma=1.0), "time from abandonment to that purchase"
    )


@dataclass
class Reactions:
    """Reactions of a phone and its owner to a push."""

    open: dict[Literal["ios", "android"], Probability] = setting(
        {"ios": 0.12, "android": 0.16}, "share of displayed pushes that are opened"
    )
    time_to_open: dict[Literal["ios", "android"], LogNormal] = setting(
        {"ios": LogNormal(420.0, 1.5), "android": LogNormal(2880.0, 1.5)},
        "time from display to open",
    )
    broken_link: Probability = setting(
        0.02, "share of opens whose deep link lands on the home screen instead"
    )
    convert_after_open: Probability = setting(
        0.2,
        "share of opens with a working link to the opener's abandoned cart that end in an order; "
        "a link that names no cart opens a push visit, which orders as an organic session does",
    )
    buy_anyway: BuyAnyway = setting(BuyAnyway(), "latent purchase without a push")


@dataclass
class Identity:
    """Identity: signups, logins, logouts and shared devices."""

    signup: Probability = setting(0.05, "per session of an anonymous shopper: signs up")
    login: Probability = setting(0.3, "per session of a known shopper who is logged out: logs in")
    guest_email_at_checkout: Probability = setting(
        0.5, "per checkout of an anonymous shopper: leaves an email, which identifies them"
    )
    logout: Probability = setting(0.03, "per session of a logged-in shopper: logs out at the end")
    switch_account: Probability = setting(
        0.3, "per session on a shared device: the other person is the one using it"
    )


@dataclass
class SdkFaults:
    """Instrumentation mistakes to inject. Each is a rate over the denominator its line names."""

    token_before_identify: Probability = setting(
        0.0,
        "per identify after a token was registered anonymously: the token is never "
        "registered again, so it stays on the anonymous profile",
    )
    logout_keeps_device: Probability = setting(
        0.0, "per logout or account switch: the device is not deleted from the old profile"
    )
    handover_reinstall: Probability = setting(
        0.0,
        "per uninstall: without a logout, a new owner reinstalls on the same phone, keeps "
        "the token and logs in",
    )
    late_background_rotation: Probability = setting(
        0.0,
        "per token rotation in the background (an FCM refresh): the new token is registered "
        "only at the next foreground",
    )
    anonymous_track_after_identify: Probability = setting(
        0.0, "per identify: the next track still goes out as anonymous"
    )
    duplicate_app_opened: Probability = setting(
        0.0, "per cold start: Application Opened is sent twice"
    )
    event_name_drift: Probability = setting(
        0.0, "per added_to_cart sent by an iOS app: sent as add_to_cart instead"
    )
    sku_as_object: Probability = setting(
        0.0, "per product event: sku is sent as an object instead of a string"
    )


@dataclass
class Trigger:
    """The event that starts a journey."""

    event: str = setting("", "catalogue event that triggers the journey")
    count: Count = setting(1, "how many such events trigger it (repeated_event)")
    window: Duration = setting(86400.0, "window in which count events must happen")
    same: str = setting("", "property that must be equal across the counted events, such as sku")


@dataclass
class Match:
    """An event matched to the trigger on a property."""

    event: str = setting("", "catalogue event")
    match: str = setting("", "property that must equal the trigger's, such as cart_id")


@dataclass
class Eligibility:
    """Eligibility rules for the journey's push."""

    push_permission: bool = setting(True, "the device must have push permission")
    device: bool = setting(True, "the person must have an active device")


@dataclass
class FrequencyCap:
    """At most count pushes of this journey per person in each period; count 0 means no cap."""

    count: Count = setting(1, "pushes allowed in the period")
    per: Duration = setting(86400.0, "length of the period")


@dataclass
class QuietHours:
    """Local hours in which no push is sent; a send due then waits for the end."""

    start: TimeOfDay = setting("22:00", "local time at which quiet hours start")
    end: TimeOfDay = setting("08:00", "local time at which they end")


@dataclass
class Journey:
    """A push the backend should send, and what the oracle expects of it."""

    name: str = setting("", "unique name, used in reports")
    kind: Literal["event", "repeated_event", "delay_range", "inactivity", "broadcast"] = setting(
        "event",
        "event: one trigger and a delay; repeated_event: count triggers in a window; "
        "delay_range: between delay and delay_max after the trigger; inactivity: no app open "
        "for the inactivity period; broadcast: everyone in the segment at a set time",
    )
    trigger: Trigger = setting(Trigger(), "the triggering event")
    delay: Duration = setting(1800.0, "wait after the trigger before the push")
    delay_max: Duration = setting(0.0, "upper end of the wait (delay_range)")
    exit: Match = setting(Match(), "event that ends the journey before the push")
    absence: Match = setting(
        Match(), "event that must not happen between trigger and push (repeated_event)"
    )
    inactivity: Duration = setting(14 * 86400.0, "time without an app open (inactivity)")
    at: DateTime | None = setting(None, "when the broadcast starts (broadcast)")
    segment: Literal["all", "known", "purchasers"] = setting(
        "all", "who the broadcast goes to: every profile, identified ones, or buyers"
    )
    send_rate: Positive = setting(
        200.0, "broadcast pushes per wall second; never scaled, because it sets the load"
    )
    eligibility: Eligibility = setting(Eligibility(), "who may receive it")
    frequency_cap: FrequencyCap = setting(FrequencyCap(), "how often one person may receive it")
    quiet_hours: QuietHours | None = setting(None, "local hours without pushes; none by default")
    title: str = setting("You left something behind", "push title")
    body: str = setting("Your cart is waiting for you.", "push body")
    link: str = setting(
        "shop://cart/{cart_id}",
        "deep-link template; {cart_id}, {sku} and {order_id} are filled in from the trigger "
        "event, which must carry them, and {person_id} with the customer id. A broadcast or "
        "inactivity journey needs a link of its own, and no two journeys may share one, "
        "since the report tells pushes apart by their links",
    )
    payload_path: str = setting(
        "",
        "where the oracle finds the link in the payload, such as CIO.push.link; empty "
        "means the protocol's usual place",
    )


@dataclass
class Target:
    """The push backend under test and how the simulated apps talk to it."""

    backend: Literal["embedded", "external"] = setting(
        "embedded", "embedded runs the reference backend; external uses url"
    )
    url: str = setting("", "base URL of an external backend, such as http://127.0.0.1:8080")
    protocol: Literal["track_v1", "cdp_batch"] = setting(
        "track_v1", "intake protocol: Customer.io Track API v1 or a Segment-compatible batch"
    )
    site_id: str = setting("pushsim-site", "Track API site id (Basic auth user)")
    api_key: str = setting("pushsim-key", "Track API key (Basic auth password); a secret")
    write_key: str = setting("pushsim-write-key", "CDP write key; a secret")


@dataclass
class Fault:
    """One fault on the gateways' timeline, from start for duration."""

    service: Literal["apns", "fcm", "both"] = setting("both", "which gateway it hits")
    kind: Literal["latency", "errors", "brownout", "quota", "goaway", "stream_limit"] = setting(
        "latency",
        "latency: added delay; errors: rejects at rate with reason; brownout: every "
        "push gets 503; quota: FCM 429s over a rolling minute; goaway: connections closed at "
        "rate per second; stream_limit: lower concurrent-stream limit",
    )
    start: Duration = setting(0.0, "offset from the run's start")
    duration: Duration = setting(3600.0, "how long it lasts")
    rate: Probability = setting(0.0, "share of pushes hit (errors), or GOAWAYs per connection "
                                "per wall second (goaway)")  # fmt: skip
    reason: str = setting("", "error reason or status to return (errors), such as "
                          "ServiceUnavailable or UNAVAILABLE")  # fmt: skip
    latency: LogNormal = setting(
        LogNormal(median=0.05, sigma=0.5),
        "added latency in wall time, never scaled (latency); the median is in wall seconds",
    )
    limit: Count = setting(0, "pushes per rolling minute (quota) or concurrent streams")


@dataclass
class Gateways:
    """Behaviour of the mock APNs and FCM gateways."""

    mode: Literal["registry", "open"] = setting(
        "registry",
        "registry answers from the run's issued tokens; open accepts any well-formed token",
    )
    faults: list[Fault] = setting([], "faults on the timeline")


DEFAULT_JOURNEYS = [
    Journey(
        name="cart_recovery",
        kind="event",
        trigger=Trigger(event="added_to_cart"),
        delay=1800.0,
        exit=Match(event="order_completed", match="cart_id"),
    )
]


@dataclass
class Scenario:
    """A whole rehearsal: population, behaviour, the backend under test and its journeys."""

    name: str = setting("", "short name shown in reports; the file name when empty")
    description: str = setting("", "what the scenario rehearses")
    seed: Count = setting(1, "seed of every random stream; the same seed gives the same run")
    clock: Clock = setting(Clock(), "the run's clock")
    population: Population = setting(Population(), "installs and devices")
    permission: Permission = setting(Permission(), "the push permission prompt")
    tokens: Tokens = setting(Tokens(), "device-token rotation and death")
    sessions: Sessions = setting(Sessions(), "session rate and pacing")
    funnel: Funnel = setting(Funnel(), "the retention funnel")
    uninstall: Uninstall = setting(Uninstall(), "uninstall hazard and reinstalls")
    reactions: Reactions = setting(Reactions(), "reactions to pushes")
    identity: Identity = setting(Identity(), "logins, signups, logouts and shared devices")
    sdk_faults: SdkFaults = setting(SdkFaults(), "instrumentation mistakes to inject")
    journeys: list[Journey] = setting(DEFAULT_JOURNEYS, "what the backend should send")
    target: Target = setting(Target(), "the backend under test")
    gateways: Gateways = setting(Gateways(), "the mock push services")
    gates: list[str] = setting(
        [], "pass/fail checks written as 'metric op value', such as 'delivery_rate >= 0.9'"
    )
