"""Scenario loading: YAML with line numbers, ``--set`` overrides, validation and defaults.

Example::

    loaded = load_scenario("scenarios/cart_recovery.yaml", ["permission.opt_in.ios=0.45"])
    print(loaded.scenario.clock.time_scale)
"""

from __future__ import annotations

import dataclasses
import importlib.resources
from dataclasses import dataclass, field
from pathlib import Path

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


def _seed_default_list(data: dict, key_path: tuple) -> None:
    """Copy a default list, such as the default journeys, into ``data`` before ``--set`` indexes
    into it, so ``journeys[0].delay=45m`` works on a file that never lists journeys."""
    from sim.scenario.dump import scenario_to_plain

    if len(key_path) < 2 or not isinstance(key_path[1], int) or key_path[0] in data:
        return
    defaults = scenario_to_plain(Scenario())
    if isinstance(defaults.get(key_path[0]), list):
        data[key_path[0]] = defaults[key_path[0]]


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
            _seed_default_list(data, key_path)
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

    if not scenario.name:
        scenario = dataclasses.replace(scenario, name=Path(name).stem if file_path else "defaults")
    if any(f.severity == ERROR for f in findings):
        raise ScenarioError(findings)
    return LoadedScenario(scenario, file_path, [f for f in findings if f.severity != ERROR])
