"""Build a Scenario from plain values, collecting every problem instead of stopping at the first.

The walker follows the dataclasses' type hints; the cross-field rules run after it, on the built
values. Each problem carries the path and so the file and line it came from.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin, get_type_hints

from sim.scenario.source import Path
from sim.scenario.types import (
    Bounds,
    DateTimeMarker,
    DurationMarker,
    LegacySecondsMarker,
    TimeOfDayMarker,
    parse_datetime,
    parse_duration,
    parse_legacy_seconds,
    parse_time_of_day,
)

ERROR = "error"
WARNING = "warning"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a scenario, at a key path."""

    path: Path
    message: str
    severity: str = ERROR


class Collector:
    """Gathers problems while a scenario is built."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def error(self, path: Path, message: str) -> None:
        self.problems.append(Problem(path, message, ERROR))

    def warning(self, path: Path, message: str) -> None:
        self.problems.append(Problem(path, message, WARNING))

    def failed(self, path: Path) -> bool:
        """Return True when a value at ``path`` or below it was rejected and fell back."""
        return any(p.severity == ERROR and p.path[: len(path)] == path for p in self.problems)


def suggest(word: str, choices: typing.Iterable[str]) -> str:
    """Return "; did you mean 'x'?" for the closest choice, or a full stop when none is close.

    Case is ignored, so that ``iOS`` finds ``ios``.
    """
    by_folded = {str(choice).casefold(): str(choice) for choice in choices}
    close = difflib.get_close_matches(str(word).casefold(), list(by_folded), n=1, cutoff=0.6)
    return f"; did you mean {by_folded[close[0]]!r}?" if close else "."


def _section_with(hints: dict[str, Any], key: str) -> str | None:
    """Return the field among ``hints`` whose own keys include ``key``, for a misplaced key."""
    for name, hint in hints.items():
        if typing.get_origin(hint) is typing.Annotated:
            hint = typing.get_args(hint)[0]
        if dataclasses.is_dataclass(hint) and key in {f.name for f in dataclasses.fields(hint)}:
            return name
    return None


def _allowed(choices: typing.Iterable[Any]) -> str:
    return ", ".join(repr(c) if isinstance(c, str) else str(c) for c in choices)


def _type_name(tp: Any) -> str:
    """Describe a field type for messages and the generated reference."""
    if get_origin(tp) is Annotated:
        base, *markers = get_args(tp)
        for marker in markers:
            if isinstance(marker, DurationMarker):
                return "wall duration" if marker.wall else "duration"
            if isinstance(marker, TimeOfDayMarker):
                return "time of day (HH:MM)"
            if isinstance(marker, DateTimeMarker):
                return "date and time (ISO 8601)"
        bounds = [m for m in markers if isinstance(m, Bounds)]
        if bounds and bounds[0] == Bounds(0.0, 1.0):
            return "probability (0..1)"
        name = _type_name(base)
        return f"{name} ({bounds[0].describe()})" if bounds else name
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + _allowed(get_args(tp))
    if origin in (Union, types.UnionType):
        options = [a for a in get_args(tp) if a is not type(None)]
        return " or ".join(_type_name(a) for a in options) + " or null"
    if origin is list:
        return f"list of {_type_name(get_args(tp)[0])}"
    if origin is dict:
        key, value = get_args(tp)
        return f"mapping of {_type_name(key)} to {_type_name(value)}"
    if dataclasses.is_dataclass(tp):
        return "mapping"
    return {bool: "boolean", int: "integer", float: "number", str: "string"}.get(tp, str(tp))


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {value}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


class Walker:
    """Turns plain values into typed scenario objects along the dataclasses' type hints."""

    def __init__(self, collector: Collector) -> None:
        self.collector = collector

    def build(self, tp: Any, value: Any, path: Path, default: Any = None) -> Any:
        """Return ``value`` converted to ``tp``, or ``default`` after recording a problem."""
        origin = get_origin(tp)

        if origin is Annotated:
            base, *markers = get_args(tp)
            return self._annotated(base, markers, value, path, default)

        if origin in (Union, types.UnionType):
            options = [a for a in get_args(tp) if a is not type(None)]
            if value is None:
                return None
            return self.build(options[0], value, path, default)

        if origin is Literal:
            allowed = get_args(tp)
            if value not in allowed:
                self.collector.error(
                    path,
                    f"invalid value {_describe(value)}{suggest(value, map(str, allowed))} "
                    f"Allowed: {_allowed(allowed)}",
                )
                return default
            return value

        if origin is list:
            return self._list(get_args(tp)[0], value, path, default)

        if origin is dict:
            key_type, value_type = get_args(tp)
            return self._dict(key_type, value_type, value, path, default)

        if dataclasses.is_dataclass(tp):
            return self._dataclass(tp, value, path, default)

        return self._plain(tp, value, path, default)

    def _plain(self, tp: type, value: Any, path: Path, default: Any) -> Any:
        if tp is bool:
            ok = isinstance(value, bool)
        elif tp is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif tp is float:
            ok = isinstance(value, int | float) and not isinstance(value, bool)
        elif tp is str:
            ok = isinstance(value, str)
        else:
            ok = isinstance(value, tp)
        if not ok:
            self.collector.error(path, f"expected {_type_name(tp)}, got {_describe(value)}")
            return default
        return float(value) if tp is float else value

    def _annotated(self, base: Any, markers: list, value: Any, path: Path, default: Any) -> Any:
        converted: Any
        marker_kinds = {type(m) for m in markers}
        try:
            if DurationMarker in marker_kinds:
                converted = parse_duration(value)
                self._check_unit(value, path)
            elif TimeOfDayMarker in marker_kinds:
                converted = parse_time_of_day(value)
            elif DateTimeMarker in marker_kinds:
                converted = parse_datetime(value)
            elif LegacySecondsMarker in marker_kinds:
                converted = parse_legacy_seconds(value)
            else:
                converted = None
        except ValueError as error:
            self.collector.error(path, str(error))
            return default
        if converted is None:
            before = len(self.collector.problems)
            converted = self.build(base, value, path, default)
            if len(self.collector.problems) > before:
                return default

        for bounds in (m for m in markers if isinstance(m, Bounds)):
            if bounds.admits(converted):
                continue
            shown = value if not isinstance(value, float) else f"{value:g}"
            if DurationMarker in marker_kinds and converted < 0:
                message = f"invalid duration {shown!r}: it must not be negative"
            elif bounds == Bounds(0.0, 1.0):
                message = f"invalid probability {shown}: it must be between 0 and 1"
            else:
                message = f"invalid value {shown}: it must be {bounds.describe()}"
            self.collector.error(path, message)
            return default
        return converted

    def _check_unit(self, value: Any, path: Path) -> None:
        """Warn about a duration written as a bare number, which reads as seconds."""
        if isinstance(value, bool) or not isinstance(value, int | float) or value == 0:
            return
        number = f"{value:g}"
        self.collector.warning(
            path,
            f"the duration {number} has no unit, so it reads as {number} seconds: write "
            f"{number}s to keep that, or give the unit you meant, such as {number}m",
        )

    def _list(self, item_type: Any, value: Any, path: Path, default: Any) -> Any:
        if not isinstance(value, list):
            self.collector.error(path, f"expected a list, got {_describe(value)}")
            return default
        return [self.build(item_type, item, (*path, i), None) for i, item in enumerate(value)]

    def _dict(self, key_type: Any, value_type: Any, value: Any, path: Path, default: Any) -> Any:
        if not isinstance(value, dict):
            self.collector.error(path, f"expected a mapping, got {_describe(value)}")
            return default
        # Partial mappings keep the defaults they do not mention, so that --set ios=... leaves
        # android alone. Free-form mappings (time zones) are replaced whole.
        fixed_keys = get_origin(key_type) is Literal
        result = dict(copy.deepcopy(default)) if fixed_keys and isinstance(default, dict) else {}
        for key, item in value.items():
            key_path = (*path, key)
            if fixed_keys and key not in get_args(key_type):
                allowed = get_args(key_type)
                self.collector.error(
                    key_path,
                    f"unknown key {key!r}{suggest(key, allowed)} Allowed keys: {_allowed(allowed)}",
                )
                continue
            if not isinstance(key, str):
                self.collector.error(key_path, f"expected a string key, got {_describe(key)}")
                continue
            item_default = result.get(key)
            if item_default is None and isinstance(default, dict):
                item_default = default.get(key)
            result[key] = self.build(value_type, item, key_path, item_default)
        return result

    def _dataclass(self, cls: type, value: Any, path: Path, default: Any) -> Any:
        instance = copy.deepcopy(default) if default is not None else cls()
        if value is None:
            return instance
        if not isinstance(value, dict):
            self.collector.error(path, f"expected a mapping of {cls.__name__} keys, got "
                                       f"{_describe(value)}")  # fmt: skip
            return instance

        hints = get_type_hints(cls, include_extras=True)
        names = [f.name for f in dataclasses.fields(cls)]
        for key, item in value.items():
            key_path = (*path, key)
            if key not in hints:
                section = _section_with(hints, key)
                hint = (
                    f"; it belongs in the {section} section, as {section}.{key}."
                    if section is not None
                    else suggest(key, names)
                )
                self.collector.error(
                    key_path, f"unknown key {key!r}{hint} Allowed keys: {', '.join(names)}"
                )
                continue
            setattr(instance, key, self.build(hints[key], item, key_path, getattr(instance, key)))
        return instance
