"""Read scenario YAML into plain values while keeping the line of every key and item.

PyYAML's composer keeps each node's position, so values are built from the node tree rather than
from ``safe_load``. Paths are tuples of keys and list indexes, such as ``("journeys", 0, "exit")``.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any

import yaml

Path = tuple[str | int, ...]


def format_path(path: Path) -> str:
    """Render a path as users write it: ``journeys[0].exit.match``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "(top level)"


@dataclass
class Source:
    """Where scenario values came from: a file name and the line of each path."""

    name: str
    lines: dict[Path, int] = field(default_factory=dict)
    overridden: set[Path] = field(default_factory=set)
    duplicate_keys: list[tuple[Path, int]] = field(default_factory=list)

    def locate(self, path: Path) -> tuple[str, int | None]:
        """Return the file (or ``--set``) and the line that best explain ``path``."""
        for overridden in self.overridden:
            shorter = min(len(overridden), len(path))
            if overridden[:shorter] == path[:shorter]:
                return "--set", None
        for end in range(len(path), -1, -1):
            prefix = path[:end]
            if prefix in self.lines:
                return self.name, self.lines[prefix]
        return self.name, None


class YamlSyntaxError(ValueError):
    """The text is not valid YAML; ``line`` is 1-based when known."""

    def __init__(self, message: str, line: int | None):
        super().__init__(message)
        self.line = line


_CONSTRUCTOR = yaml.constructor.SafeConstructor()


def _scalar(node: yaml.ScalarNode) -> Any:
    value = _CONSTRUCTOR.construct_object(node, deep=True)
    # Dates stay as the text the user wrote, so that the scenario types parse them the same
    # way whether they came from the file or from --set.
    if isinstance(value, datetime.date | datetime.datetime):
        return node.value
    return value


def _build(node: yaml.Node, path: Path, source: Source) -> Any:
    source.lines.setdefault(path, node.start_mark.line + 1)

    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _scalar(key_node) if isinstance(key_node, yaml.ScalarNode) else str(key_node)
            key_path = (*path, key)
            if key in result:
                source.duplicate_keys.append((key_path, key_node.start_mark.line + 1))
            source.lines[key_path] = key_node.start_mark.line + 1
            result[key] = _build(value_node, key_path, source)
        return result

    if isinstance(node, yaml.SequenceNode):
        return [_build(item, (*path, index), source) for index, item in enumerate(node.value)]

    return _scalar(node)


def read_yaml(text: str, name: str) -> tuple[Any, Source]:
    """Parse YAML text into plain values and a Source that maps paths to lines."""
    source = Source(name)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(error, "problem", None) or str(error)
        raise YamlSyntaxError(f"invalid YAML: {problem}", line) from None
    if node is None:
        return {}, source
    return _build(node, (), source), source
