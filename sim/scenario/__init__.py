"""Scenario loading: YAML with line numbers, ``--set`` overrides, validation and defaults.

Example::

    loaded = load_scenario("scenarios/cart_recovery.yaml", ["permission.opt_in.ios=0.45"])
    print(loaded.scenario.clock.time_scale)
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.resources
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, get_args, get_origin, get_type_hints

from sim.scenario import rules
from sim.scenario.overrides import OverrideError, apply_override, parse_override
from sim.scenario.schema import Scenario
from sim.scenario.source import Source, YamlSyntaxError, format_path, read_yaml
from sim.scenario.validate import ERROR, Collector, Problem, Walker

__all__ = [
    "LoadedScenario",
    "Scenario",
    "ScenarioError",
    "bundled_scenarios",
    "load_scenario",
    "resolve_path",
]


@dataclass(frozen=True)
class Finding:
    """A problem placed in its file: ``file:line: key.path: message``."""

    file: str
    line: int | None
    path: str
    message: str
    severity: str = ERROR

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        label = "" if self.severity == ERROR else f"{self.severity}: "
        return f"{where}: {label}{self.path}: {self.message}"


class ScenarioError(Exception):
    """A scenario that cannot run; ``findings`` lists every problem at once."""

    def __init__(self, findings: list[Finding]):
        self.findings = findings
        errors = [f for f in findings if f.severity == ERROR]
        lines = "\n".join(f"  {finding}" for finding in findings)
        super().__init__(f"{len(errors)} problem(s) in the scenario:\n{lines}")


@dataclass
class LoadedScenario:
    """A valid scenario, where it came from, and the warnings it raised."""

    scenario: Scenario
    path: Path | None
    warnings: list[Finding] = field(default_factory=list)


def bundled_scenarios() -> dict[str, Path]:
    """Return the scenarios shipped with pushsim, by file stem."""
    try:
        root = importlib.resources.files("pushsim_scenarios")
    except ModuleNotFoundError:
        # A source tree that was never installed keeps them beside the sim package.
        root = Path(__file__).resolve().parents[2] / "scenarios"
    found = {}
    for entry in root.iterdir():
        if entry.name.endswith(".yaml"):
            found[entry.name.removesuffix(".yaml")] = Path(str(entry))
    return dict(sorted(found.items()))


def resolve_path(name: str | Path) -> Path:
    """Find a scenario file by path, or by the name of a bundled scenario."""
    path = Path(name)
    if path.is_dir():
        raise FileNotFoundError(
            f"scenario {str(name)!r} is a directory: give a scenario YAML file, or one of the "
            f"bundled scenarios ({', '.join(bundled_scenarios()) or 'none'})"
        )
    if path.exists():
        return path
    bundled = bundled_scenarios()
    stem = path.name.removesuffix(".yaml")
    if stem in bundled and (path.parent == Path(".") or path.parent.name == "scenarios"):
        return bundled[stem]
    raise FileNotFoundError(
        f"scenario {str(name)!r} not found: give a path to a YAML file or one of the bundled "
        f"scenarios ({', '.join(bundled) or 'none'})"
    )


def _place(problem: Problem, source: Source) -> Finding:
    file, line = source.locate(problem.path)
    return Finding(file, line, format_path(problem.path), problem.message, problem.severity)


def _seed_defaults(data: dict, key_path: tuple) -> None:
    """Copy the default list or table that ``--set`` reaches into, when ``data`` lacks it.

    A list (the journeys) or a table keyed by free names (the funnel transitions) given in a
    file replaces the default whole. ``--set`` means to change one value, so before it writes
    ``journeys[0].delay`` or ``funnel.transitions.added_to_cart.checkout_started`` into a file
    that never gave them, the default list or table is copied in, and the rest of it stays.
    """
    from sim.scenario.dump import scenario_to_plain

    node: Any = data
    default: Any = scenario_to_plain(Scenario())
    section: Any = Scenario
    for part in key_path[:-1]:
        # Only a section's own field is seeded: below a list or table that the file gave, the
        # file's value is the whole value.
        if not dataclasses.is_dataclass(section) or not isinstance(node, dict):
            return
        hint = get_type_hints(section, include_extras=True).get(part)
        if hint is None or not isinstance(default, dict):
            return
        while get_origin(hint) is Annotated:
            hint = get_args(hint)[0]

        if node.get(part) is None:
            if dataclasses.is_dataclass(hint):
                node[part] = {}
            elif isinstance(default.get(part), list | dict):
                node[part] = copy.deepcopy(default[part])
                return
            else:
                return
        node, default, section = node[part], default.get(part), hint


def load_scenario(
    path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    text: str | None = None,
) -> LoadedScenario:
    """Read, override and validate a scenario, raising ScenarioError with every problem.

    With ``path=None`` and no ``text`` the defaults alone make the scenario.
    """
    name = str(path) if path is not None else "<defaults>"
    if text is not None:
        file_path = Path(path) if path is not None else None
    else:
        file_path = resolve_path(path) if path is not None else None
        text = file_path.read_text(encoding="utf-8") if file_path else ""

    try:
        data, source = read_yaml(text, name)
    except YamlSyntaxError as error:
        raise ScenarioError([Finding(name, error.line, "(file)", str(error))]) from None

    findings: list[Finding] = []
    if not isinstance(data, dict):
        raise ScenarioError(
            [Finding(name, 1, "(top level)", "expected a mapping of sections, such as clock:")]
        )
    for key_path, line in source.duplicate_keys:
        findings.append(Finding(name, line, format_path(key_path), "duplicate key"))

    for override in overrides:
        try:
            key_path, value = parse_override(override)
            _seed_defaults(data, key_path)
            apply_override(data, key_path, value, override)
        except OverrideError as error:
            findings.append(Finding("--set", None, override.partition("=")[0], str(error)))
            continue
        source.overridden.add(key_path)

    collector = Collector()
    scenario = Walker(collector).build(Scenario, data, (), Scenario())
    # Values that failed to build fell back to their defaults, so the cross-field rules can
    # still run and every problem is listed in one go.
    rules.check(scenario, collector)
    findings += [_place(problem, source) for problem in collector.problems]
    # Findings follow the file, and the --set overrides, which have no line, come last. The
    # sort is stable, so findings on one line keep the order the checks found them.
    findings = sorted(findings, key=lambda f: (f.line is None, f.line or 0))

    if not scenario.name:
        scenario = dataclasses.replace(scenario, name=Path(name).stem if file_path else "defaults")
    if any(f.severity == ERROR for f in findings):
        raise ScenarioError(findings)
    return LoadedScenario(scenario, file_path, [f for f in findings if f.severity != ERROR])
