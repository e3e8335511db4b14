"""``--set key.path=value`` overrides, applied to the raw scenario before validation."""

from __future__ import annotations

import re
from typing import Any

import yaml

from sim.scenario.source import Path

_PART = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)((?:\[\d+\])*)")


class OverrideError(ValueError):
    """An override that cannot be applied; ``path`` is the key path as written."""

    def __init__(self, text: str, message: str):
        super().__init__(message)
        self.text = text


def parse_override(text: str) -> tuple[Path, Any]:
    """Split ``journeys[0].delay=45m`` into its path and its YAML-parsed value."""
    key, equals, raw_value = text.partition("=")
    if not equals or not key.strip():
        raise OverrideError(text, "write it as key.path=value, such as permission.opt_in.ios=0.45")

    path: list[str | int] = []
    for segment in key.strip().split("."):
        match = _PART.fullmatch(segment)
        if match is None:
            raise OverrideError(
                text,
                f"invalid key path segment {segment!r}: use names and [index], "
                "such as journeys[0].delay",
            )
        path.append(match.group(1))
        path.extend(int(index) for index in re.findall(r"\[(\d+)\]", match.group(2)))

    try:
        value = yaml.safe_load(raw_value) if raw_value.strip() else ""
    except yaml.YAMLError:
        value = raw_value
    return tuple(path), value


def apply_override(data: dict, path: Path, value: Any, text: str) -> None:
    """Set ``value`` at ``path`` in ``data``, creating missing mappings on the way."""
    node: Any = data
    for depth, part in enumerate(path[:-1]):
        following = path[depth + 1]
        if isinstance(part, int):
            if not isinstance(node, list) or part >= len(node):
                size = len(node) if isinstance(node, list) else 0
                raise OverrideError(
                    text, f"index [{part}] is out of range: the list has {size} items"
                )
            node = node[part]
            continue
        if not isinstance(node, dict):
            raise OverrideError(
                text, f"{part!r} cannot be set inside a value that is not a mapping"
            )
        if part not in node or node[part] is None:
            node[part] = [] if isinstance(following, int) else {}
        node = node[part]

    last = path[-1]
    if isinstance(last, int):
        if not isinstance(node, list) or last >= len(node):
            raise OverrideError(text, f"index [{last}] is out of range")
        node[last] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise OverrideError(text, f"{last!r} cannot be set inside a value that is not a mapping")
