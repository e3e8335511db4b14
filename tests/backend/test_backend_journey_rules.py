"""The journey engine's pure rules: quiet hours, permission values, match keys and links."""

from __future__ import annotations

import datetime
import zoneinfo

import pytest

from sim.backend.journey_rules import (
    has_permission,
    journey_link,
    match_value,
    parse_push_enabled,
    quiet_hours_end,
    timezone_of,
)
from sim.scenario.schema import Journey, Match, QuietHours, Trigger

BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")


def at(hour: int, minute: int, day: int = 27, zone: datetime.tzinfo = BERLIN) -> float:
    return datetime.datetime(2026, 11, day, hour, minute, tzinfo=zone).timestamp()


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (at(21, 59), None),
        (at(22, 0), at(8, 0, day=28)),
        (at(23, 30), at(8, 0, day=28)),
        (at(3, 0), at(8, 0)),
        (at(7, 59), at(8, 0)),
        (at(8, 0), None),
        (at(12, 0), None),
    ],
)
def test_quiet_hours_across_midnight(now, expected):
    assert quiet_hours_end(QuietHours("22:00", "08:00"), now, BERLIN) == expected


def test_quiet_hours_within_one_day():
    quiet = QuietHours("13:00", "14:00")
    assert quiet_hours_end(quiet, at(13, 30), BERLIN) == at(14, 0)
    assert quiet_hours_end(quiet, at(14, 0), BERLIN) is None
    assert quiet_hours_end(quiet, at(12, 59), BERLIN) is None


def test_quiet_hours_none_or_empty():
    assert quiet_hours_end(None, at(23, 0), BERLIN) is None
    assert quiet_hours_end(QuietHours("22:00", "22:00"), at(22, 0), BERLIN) is None


def test_quiet_hours_use_local_time():
    # 22:30 in Berlin is 21:30 UTC, outside quiet hours that start at 22:00 UTC.
    quiet = QuietHours("22:00", "08:00")
    assert quiet_hours_end(quiet, at(22, 30), datetime.UTC) is None
    assert quiet_hours_end(quiet, at(22, 30), BERLIN) == at(8, 0, day=28)


def test_timezone_attribute_or_utc():
    assert timezone_of({"timezone": "Europe/Berlin"}) == BERLIN
    assert timezone_of({}) is datetime.UTC
    assert timezone_of({"timezone": "Mars/Olympus"}) is datetime.UTC
    assert timezone_of({"timezone": 5}) is datetime.UTC


def test_timezone_falls_back_to_device_attribute():
    devices = [{"attributes": {}}, {"attributes": {"timezone": "Europe/Berlin"}}]

    assert timezone_of({}, devices) == BERLIN
    assert timezone_of({"timezone": "UTC"}, devices) == zoneinfo.ZoneInfo("UTC")
    assert timezone_of({}, [{"attributes": None}]) is datetime.UTC


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, True),
        (False, False),
        (1, True),
        (0, False),
        ("true", True),
        ("false", False),
        (" TRUE ", True),
        ("yes", None),
        (None, None),
        (2, None),
    ],
)
def test_push_enabled_values(value, expected):
    assert parse_push_enabled(value) is expected


def test_permission_from_column_then_attributes():
    assert has_permission({"push_enabled": 1, "attributes": {}})
    assert not has_permission({"push_enabled": 0, "attributes": {"push_enabled": "true"}})
    assert has_permission({"push_enabled": None, "attributes": {"push_enabled": "true"}})
    assert not has_permission({"push_enabled": None, "attributes": {}})


def test_match_value_by_kind():
    cart = Journey(trigger=Trigger(event="added_to_cart"), exit=Match("order_completed", "cart_id"))
    browse = Journey(kind="repeated_event", trigger=Trigger(event="product_viewed", same="sku"))
    assert match_value(cart, {"cart_id": "c1", "sku": "s"}) == "c1"
    assert match_value(cart, {"sku": "s"}) is None
    assert match_value(browse, {"cart_id": "c1", "sku": 42}) == "42"


def test_link_from_trigger_and_person():
    journey = Journey(link="shop://cart/{cart_id}?for={person_id}")
    assert journey_link(journey, {"cart_id": "c1"}, "ann") == "shop://cart/c1?for=ann"
    assert journey_link(journey, {}, None) == "shop://cart/?for="
