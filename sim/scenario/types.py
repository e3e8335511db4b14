"""Value types of the scenario format: durations, probabilities and bounded numbers.

A field's type is a plain Python type wrapped in ``typing.Annotated`` with one marker from this
module, so the same annotation drives parsing, validation and the generated reference.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from typing import Annotated

_DURATION = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_TIME_OF_DAY = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


@dataclass(frozen=True)
class Bounds:
    """Inclusive numeric range; ``None`` leaves a side open."""

    low: float | None = None
    high: float | None = None
    above_low: bool = False  # the value must be strictly greater than low

    def describe(self) -> str:
        if self.low is not None and self.high is not None:
            return f"{self.low:g}..{self.high:g}"
        if self.low is not None:
            return f"> {self.low:g}" if self.above_low else f">= {self.low:g}"
        return f"<= {self.high:g}"

    def admits(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.above_low else value < self.low):
            return False
        return self.high is None or value <= self.high


@dataclass(frozen=True)
class DurationMarker:
    """A duration written as ``30m``, ``6h`` or ``2d``, stored in seconds."""

    wall: bool = False


@dataclass(frozen=True)
class LegacySecondsMarker:
    """A plain number that also reads ``35s``, as scenario files once wrote some amounts."""


@dataclass(frozen=True)
class TimeOfDayMarker:
    """A local time of day written as ``HH:MM``."""


@dataclass(frozen=True)
class DateTimeMarker:
    """An ISO 8601 date and time, such as ``2026-11-27T09:00:00Z``."""


Probability = Annotated[float, Bounds(0.0, 1.0)]
NonNegative = Annotated[float, Bounds(0.0, None)]
Positive = Annotated[float, Bounds(0.0, None, above_low=True)]
Count = Annotated[int, Bounds(0, None)]
# Simulated time, scaled to wall time by the run's time_scale.
Duration = Annotated[float, DurationMarker(), Bounds(0.0, None)]
# Wall time, never scaled.
WallDuration = Annotated[float, DurationMarker(wall=True), Bounds(0.0, None)]
# An amount such as a price. Scenario files written before it had its own type hold "35s".
Amount = Annotated[float, LegacySecondsMarker(), Bounds(0.0, None, above_low=True)]
TimeOfDay = Annotated[str, TimeOfDayMarker()]
DateTime = Annotated[datetime.datetime, DateTimeMarker()]


def parse_legacy_seconds(value: object) -> float:
    """Parse a number, or a number followed by ``s`` as older scenario files wrote it."""
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and value.strip().endswith("s"):
        try:
            return float(value.strip()[:-1])
        except ValueError:
            pass
    raise ValueError(f"expected a number, got {value!r}")


def parse_duration(value: object) -> float:
    """Parse ``30m``, ``6h``, ``2d``, ``500ms`` or a bare number of seconds into seconds.

    Raises ValueError naming the value and the accepted forms.
    """
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}: write a number with a unit, such as 30m")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return float(match.group(1)) * _SECONDS[match.group(2) or "s"]
    raise ValueError(
        f"invalid duration {value!r}: write a number with a unit (ms, s, m, h, d, w), such as 30m"
    )


def format_duration(seconds: float) -> str:
    """Format seconds in the largest unit that divides them exactly, for the resolved scenario."""
    if seconds == 0:
        return "0s"
    for unit in ("w", "d", "h", "m", "s"):
        size = _SECONDS[unit]
        if seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    if (seconds * 1000) == int(seconds * 1000):
        return f"{int(seconds * 1000)}ms"
    return f"{seconds:g}s"


def parse_time_of_day(value: object) -> str:
    """Check a ``HH:MM`` local time and return it unchanged."""
    if isinstance(value, str) and _TIME_OF_DAY.match(value):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 24 * 60:
        # YAML 1.1 reads an unquoted 22:00 as the base-60 number 1320.
        hours, minutes = divmod(value, 60)
        raise ValueError(
            f"invalid time of day {value!r}: YAML reads an unquoted {hours}:{minutes:02d} as "
            f"the number {value}, so quote it: '{hours:02d}:{minutes:02d}'"
        )
    raise ValueError(
        f"invalid time of day {value!r}: write it as HH:MM in quotes, with hours 00 to 23, such "
        "as '22:00'; midnight is '00:00'"
    )


def minutes_of_day(value: str) -> int:
    """Return the minutes since midnight of a checked ``HH:MM`` string."""
    hours, minutes = value.split(":")
    return int(hours) * 60 + int(minutes)


def parse_datetime(value: object) -> datetime.datetime:
    """Parse an ISO 8601 date and time; a value without an offset is taken as UTC."""
    if isinstance(value, datetime.datetime):
        parsed = value
    elif isinstance(value, datetime.date):
        parsed = datetime.datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        try:
            parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            parsed = None
        if parsed is None:
            raise ValueError(
                f"invalid date and time {value!r}: write ISO 8601, such as 2026-11-27T09:00:00Z"
            )
    else:
        raise ValueError(
            f"invalid date and time {value!r}: write ISO 8601, such as 2026-11-27T09:00:00Z"
        )
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.UTC)
    return parsed
