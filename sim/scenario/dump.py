"""Render a resolved scenario back to YAML, in the units users write."""

from __future__ import annotations

import dataclasses
import datetime
from typing import Annotated, Any, get_args, get_origin, get_type_hints

import yaml

from sim.scenario.schema import Journey, Scenario
from sim.scenario.types import DurationMarker, format_duration


def _plain(tp: Any, value: Any) -> Any:
    if value is None:
        return None
    if get_origin(tp) is Annotated:
        base, *markers = get_args(tp)
        if any(isinstance(m, DurationMarker) for m in markers):
            return format_duration(value)
        return _plain(base, value)
    if isinstance(value, datetime.datetime):
        return value.isoformat().replace("+00:00", "Z")
    if dataclasses.is_dataclass(value):
        hints = get_type_hints(type(value), include_extras=True)
        return {f.name: _plain(hints[f.name], getattr(value, f.name))
                for f in dataclasses.fields(value)}  # fmt: skip
    args = get_args(tp)
    if isinstance(value, list):
        item_type = next((a for a in args if a is not type(None)), Any)
        if get_origin(tp) is not list:
            item_type = Any
        return [_plain(item_type, item) for item in value]
    if isinstance(value, dict):
        value_type = args[1] if get_origin(tp) is dict else Any
        return {key: _plain(value_type, item) for key, item in value.items()}
    if get_origin(tp) is not None and dataclasses.is_dataclass(value):
        return _plain(type(value), value)
    return value


def scenario_to_plain(scenario: Scenario) -> dict:
    """Return the scenario as plain YAML-ready values, durations written as ``30m``."""
    return _plain(Scenario, scenario)


def journey_to_plain(journey: Journey) -> dict:
    """Return one journey as plain JSON-ready values, durations written as ``30m``."""
    return _plain(Journey, journey)


def differing_settings(a: Any, b: Any, path: str = "") -> list[str]:
    """Return the key paths, as ``--set`` writes them, where two plain values differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        keys = list(dict.fromkeys([*a, *b]))
        return [
            found
            for key in keys
            for found in differing_settings(
                a.get(key), b.get(key), f"{path}.{key}" if path else key
            )
        ]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [
            found
            for index, (item_a, item_b) in enumerate(zip(a, b, strict=True))
            for found in differing_settings(item_a, item_b, f"{path}[{index}]")
        ]
    return [] if a == b else [path or "(whole file)"]


class _Dumper(yaml.SafeDumper):
    """Writes short lists of numbers on one line, as a person would."""


def _represent_list(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    flow = all(isinstance(item, int | float | str) for item in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _represent_list)


def dump_scenario(scenario: Scenario) -> str:
    """Return the resolved scenario as YAML that loads back to the same scenario."""
    plain = scenario_to_plain(scenario)
    return yaml.dump(plain, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)
