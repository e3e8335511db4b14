"""Pure rules of the journey engine: match keys, delays, quiet hours, permission and deep links.

Times here are simulated Unix seconds unless a name says wall. Nothing in this module touches
the store, so each rule can be tested on its own.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import zoneinfo
from collections.abc import Iterable

from sim.formats.payload import fill_link
from sim.scenario.schema import Journey, QuietHours
from sim.scenario.types import minutes_of_day

log = logging.getLogger(__name__)

# The lifecycle event whose absence an inactivity journey waits for, unless its trigger names one.
APP_OPENED = "Application Opened"

# The profile attribute that contains a shopper's IANA time zone.
TIMEZONE_ATTRIBUTE = "timezone"

_warned_timezones: set[str] = set()


def match_property(journey: Journey) -> str:
    """Return the property that keys a journey's runs: ``trigger.same``, else the exit's match."""
    if journey.kind == "repeated_event":
        return journey.trigger.same
    return journey.exit.match


def match_value(journey: Journey, data: dict) -> str | None:
    """Return the trigger's value of the journey's match property as text, or None if absent."""
    name = match_property(journey)
    if not name or data.get(name) is None:
        return None
    value = data[name]
    return value if isinstance(value, str) else str(value)


def activity_event(journey: Journey) -> str:
    """Return the event that counts as activity for an inactivity journey."""
    return journey.trigger.event or APP_OPENED


def draw_delay(journey: Journey, trigger_event_id: int | None) -> float:
    """Return a journey's delay in simulated seconds for one trigger.

    A delay_range journey draws uniformly between ``delay`` and ``delay_max``. The draw is
    seeded by the journey name and trigger event id, so a restart or a rerun gives the same wait.
    """
    if journey.kind != "delay_range" or journey.delay_max <= journey.delay:
        return journey.delay
    seed = f"{journey.name}/{trigger_event_id}".encode()
    digest = hashlib.blake2b(seed, digest_size=8).digest()
    fraction = int.from_bytes(digest, "big") / 2**64
    return journey.delay + fraction * (journey.delay_max - journey.delay)


def timezone_of(
    attributes: dict, devices: Iterable[dict] = ()
) -> zoneinfo.ZoneInfo | datetime.timezone:
    """Return the profile's time zone from its ``timezone`` attribute; UTC without a valid one.

    Without the profile attribute, the ``timezone`` device attribute of the first of
    ``devices`` that has one is used, since mobile SDKs report the phone's time zone.
    """
    name = attributes.get(TIMEZONE_ATTRIBUTE)
    if not isinstance(name, str) or not name:
        name = next(
            (
                device["attributes"].get(TIMEZONE_ATTRIBUTE)
                for device in devices
                if isinstance(device.get("attributes"), dict)
                and device["attributes"].get(TIMEZONE_ATTRIBUTE)
            ),
            None,
        )
    if not isinstance(name, str) or not name:
        return datetime.UTC
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        if name not in _warned_timezones:
            _warned_timezones.add(name)
            log.warning("unknown time zone %r in a profile: quiet hours use UTC for it", name[:60])
        return datetime.UTC


def quiet_hours_end(
    quiet_hours: QuietHours | None, sim_time: float, zone: datetime.tzinfo
) -> float | None:
    """Return the simulated time at which the quiet hours around ``sim_time`` end.

    Returns None when ``sim_time`` is outside quiet hours, or when the journey has none. Start
    and end are local times in ``zone``, and a start later than the end spans midnight.
    """
    if quiet_hours is None:
        return None
    start = minutes_of_day(quiet_hours.start)
    end = minutes_of_day(quiet_hours.end)
    if start == end:
        return None

    local = datetime.datetime.fromtimestamp(sim_time, zone)
    minute = local.hour * 60 + local.minute + local.second / 60
    if start < end:
        quiet = start <= minute < end
        end_day = local.date()
    else:
        quiet = minute >= start or minute < end
        end_day = local.date() if minute < end else local.date() + datetime.timedelta(days=1)
    if not quiet:
        return None

    end_time = datetime.time(end // 60, end % 60)
    return datetime.datetime.combine(end_day, end_time, tzinfo=zone).timestamp()


def parse_push_enabled(value: object) -> bool | None:
    """Read a push_enabled value sent as a bool, 0/1, or the text "true"/"false"."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return None


def has_permission(device: dict) -> bool:
    """Return True when a device row reports push permission.

    A device that never reported ``push_enabled`` counts as without permission, because the
    backend cannot know how the prompt was answered.
    """
    permitted = parse_push_enabled(device.get("push_enabled"))
    if permitted is None:
        permitted = parse_push_enabled((device.get("attributes") or {}).get("push_enabled"))
    return bool(permitted)


def journey_link(journey: Journey, trigger_data: dict, person_id: str | None) -> str:
    """Fill the journey's link template from the trigger's properties and the person's id."""
    values = dict(trigger_data)
    if person_id is not None:
        values.setdefault("person_id", person_id)
    return fill_link(journey.link, values)
