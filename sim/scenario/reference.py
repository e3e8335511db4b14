"""Generate docs/scenario-reference.md from the scenario dataclasses.

The same type hints drive validation, so the reference cannot drift from what the validator
accepts. ``python -m sim.scenario.reference --write`` rewrites the file; a test fails when the
committed file is stale.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import sys
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin, get_type_hints

from sim import catalogue
from sim.gates import GATE_METRICS, OPERATORS
from sim.scenario.dump import _plain
from sim.scenario.schema import Scenario
from sim.scenario.validate import _type_name

REFERENCE_PATH = Path(__file__).resolve().parents[2] / "docs" / "scenario-reference.md"

HEADER = """\
# Scenario reference

Generated from `sim/scenario/schema.py` by `python -m sim.scenario.reference --write`; do not edit
by hand. A scenario is one YAML file. Every section and key is optional, and a key left out takes
the default shown here.

Units:
- **duration**: simulated time, written `500ms`, `45s`, `30m`, `6h`, `2d` or `1w`. A bare number
  other than 0 is seconds, with a warning to write the unit. It is scaled to wall time by
  `clock.time_scale`.
- **wall duration**: wall-clock time, never scaled.
- **probability**: a number from 0 to 1.

A mapping keyed by platform (`ios`, `android`) keeps the default of a platform it leaves out. A
list (the journeys, spikes and faults) and a table keyed by free names (`population.timezones`,
`funnel.transitions`) replace the default whole, so a transitions table in a file gives every row
the funnel should have.

Override any key from the command line with `--set key.path=value`, for example
`--set permission.opt_in.ios=0.45` or `--set journeys[0].delay=45m`. An override changes that one
value: `--set funnel.transitions.added_to_cart.checkout_started=0.4` keeps the rest of the
transitions table, default or from the file. Overrides are validated like the file. `pushsim
validate FILE --print` shows the resolved scenario.
"""


def _dataclass_of(tp: Any) -> type | None:
    """Return the section class of a field, held directly, in a list, in a mapping or optionally."""
    if get_origin(tp) is Annotated:
        return _dataclass_of(get_args(tp)[0])
    if dataclasses.is_dataclass(tp):
        return tp
    origin = get_origin(tp)
    if origin in (list, dict, Union) or str(origin) == "<class 'types.UnionType'>":
        for arg in get_args(tp):
            found = _dataclass_of(arg)
            if found is not None:
                return found
    return None


def _default_text(tp: Any, value: Any) -> str:
    if dataclasses.is_dataclass(value):
        return "see below"
    if isinstance(value, list) and value and dataclasses.is_dataclass(value[0]):
        names = ", ".join(str(getattr(item, "name", "?")) for item in value)
        return f"{len(value)} item(s): {names}"
    plain = _plain(tp, value)
    if plain in ("", [], {}):
        return "empty" if plain == "" else f"`{plain}`"
    if plain is None:
        return "null"
    text = str(plain).replace("'", "")
    return f"`{text}`" if len(text) < 90 else f"`{text[:86]} …`"


def _section(
    cls: type, prefix: str, out: list[str], seen: set[tuple[type, str]], instance: Any = None
) -> None:
    """Append the table of section ``cls`` at ``prefix`` and then the tables of its sections.

    ``instance`` is the section's default where its parent sets one, such as the 6h median of
    ``tokens.unregistered_delay``. Otherwise the class's own defaults apply, as for a new item
    of a list.
    """
    if (cls, prefix) in seen:
        return
    seen.add((cls, prefix))
    hints = get_type_hints(cls, include_extras=True)
    if instance is None:
        instance = cls()
    title = prefix or "top level"
    out.append(f"## `{title}`\n")
    out.append(inspect.getdoc(cls).splitlines()[0] + "\n")
    out.append("| key | type | default | meaning |")
    out.append("|---|---|---|---|")
    nested: list[tuple[type, str, Any]] = []
    for field in dataclasses.fields(cls):
        tp = hints[field.name]
        doc = field.metadata.get("doc", "")
        key = f"{prefix}.{field.name}" if prefix else field.name
        section = _dataclass_of(tp)
        type_text = _type_name(tp).replace("|", "\\|")
        value = getattr(instance, field.name)
        default = _default_text(tp, value)
        out.append(f"| `{key}` | {type_text} | {default} | {doc} |")
        if section is not None:
            origin = get_origin(tp)
            suffix = ""
            if origin is list:
                suffix = "[]"
            elif origin is dict:
                suffix = ".<key>"
            section_default = value if dataclasses.is_dataclass(value) else None
            nested.append((section, key + suffix, section_default))
    out.append("")
    for section, key, section_default in nested:
        _section(section, key, out, seen, section_default)


def render() -> str:
    """Return the whole reference as Markdown."""
    out = [HEADER]
    _section(Scenario, "", out, set())

    out.append("## Events\n")
    out.append("Journeys name these catalogue events. Aliases are drifted names an SDK fault "
               "sends; validation rejects them in journeys.\n")  # fmt: skip
    out.append("| event | kind | required properties | aliases |")
    out.append("|---|---|---|---|")
    for spec in catalogue.EVENTS:
        required = ", ".join(spec.required) or "none"
        aliases = ", ".join(spec.aliases) or "none"
        out.append(f"| `{spec.name}` | {spec.kind} | {required} | {aliases} |")
    out.append("")

    out.append("## Gate metrics\n")
    out.append(f"A gate reads `metric op value` with op one of {', '.join(OPERATORS)}.\n")
    out.append("| metric | unit | meaning |")
    out.append("|---|---|---|")
    for metric in GATE_METRICS.values():
        out.append(f"| `{metric.name}` | {metric.unit} | {metric.description} |")
    out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print or write the scenario reference.")
    parser.add_argument("--write", action="store_true", help=f"write {REFERENCE_PATH}")
    args = parser.parse_args(argv)
    text = render()
    if args.write:
        REFERENCE_PATH.write_text(text, encoding="utf-8")
        print(f"wrote {REFERENCE_PATH}")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
