"""Rules for journeys' deep links, which tie each push back to the trigger that caused it.

The report attributes a push to a trigger by the values its deep link carries, so a link must
name a property the trigger event carries, and no two journeys may send links that fit each
other's template. Broadcasts with the same link are separated by their start times instead.
"""

from __future__ import annotations

import itertools
import re

from sim import catalogue
from sim.formats.payload import fill_link, link_pattern
from sim.scenario.schema import Journey, Scenario
from sim.scenario.source import Path
from sim.scenario.validate import Collector

LINK_FIELDS = ("cart_id", "sku", "order_id", "person_id", "product_id")
# Journey kinds that start from a tracked trigger event and wait out a delay.
TRIGGERED_KINDS = ("event", "repeated_event", "delay_range")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
# Filled into every placeholder to make a sample link of a template.
_SAMPLE_VALUE = "x1"


def check_link(journey: Journey, path: Path, collector: Collector) -> None:
    """Record the problems of one journey's link template."""
    placeholders = _PLACEHOLDER.findall(journey.link)
    unknown = [name for name in placeholders if name not in LINK_FIELDS]
    for name in unknown:
        collector.error(
            (*path, "link"),
            f"unknown placeholder {{{name}}} in the link; use {', '.join(LINK_FIELDS)}",
        )
    if unknown:
        return

    from_trigger = _trigger_placeholders(journey.link)
    if journey.kind in TRIGGERED_KINDS:
        _check_trigger_fields(journey, from_trigger, path, collector)
    elif from_trigger:
        collector.error(
            (*path, "link"),
            f"a {journey.kind} journey has no trigger event to fill "
            f"{{{from_trigger[0]}}} in its link {journey.link!r}, so every push would carry an "
            "empty value: give it a link of its own, such as shop://deals",
        )


def _check_trigger_fields(
    journey: Journey, from_trigger: list[str], path: Path, collector: Collector
) -> None:
    event = journey.trigger.event
    spec = catalogue.BY_NAME.get(event)
    if spec is None:
        # An unknown trigger event has its own error.
        return
    if not from_trigger:
        carried = ", ".join(f"{{{name}}}" for name in spec.required if name in LINK_FIELDS)
        fix = (
            f"add one, such as {carried}"
            if carried
            else "trigger the journey on an event with a cart_id, sku or order_id"
        )
        collector.error(
            (*path, "link"),
            f"the link {journey.link!r} names no property of the trigger event {event}, so the "
            f"report cannot tie a push to its trigger: {fix}",
        )
        return
    for name in from_trigger:
        if name not in spec.required:
            carried = ", ".join(spec.required) or "no properties"
            collector.error(
                (*path, "link"),
                f"placeholder {{{name}}} is not carried by the trigger event {event} (it carries "
                f"{carried}), so every push would carry an empty value: use one it carries",
            )


def check_overlaps(scenario: Scenario, collector: Collector) -> None:
    """Record an error for each pair of journeys whose links fit each other's template."""
    # A link with an unknown placeholder, or a broadcast link with a trigger's placeholder,
    # already has its own error.
    journeys = [
        (index, journey)
        for index, journey in enumerate(scenario.journeys)
        if journey is not None
        and not _PLACEHOLDER.search(_without_known(journey.link))
        and (journey.kind in TRIGGERED_KINDS or not _trigger_placeholders(journey.link))
    ]
    for (_, first), (index, second) in itertools.combinations(journeys, 2):
        if first.kind == "broadcast" and second.kind == "broadcast":
            continue
        if _fits(first.link, second.link) or _fits(second.link, first.link):
            collector.error(
                ("journeys", index, "link"),
                f"journeys {first.name!r} and {second.name!r} send links that fit both "
                f"templates ({first.link!r} and {second.link!r}), so the report cannot tell "
                "their pushes apart and credits each journey with the other's: give each "
                f"its own link, such as {second.link}?journey={second.name}",
            )


def _trigger_placeholders(template: str) -> list[str]:
    """Return the placeholders a trigger event must fill: all but the customer id."""
    return [name for name in _PLACEHOLDER.findall(template) if name != "person_id"]


def _without_known(template: str) -> str:
    """Return the template with its known placeholders removed, to find unknown ones."""
    return _PLACEHOLDER.sub(lambda m: "" if m.group(1) in LINK_FIELDS else m.group(0), template)


def _fits(template: str, other: str) -> bool:
    """Tell whether a link made from ``template`` matches the template ``other``."""
    sample = fill_link(template, dict.fromkeys(LINK_FIELDS, _SAMPLE_VALUE))
    return link_pattern(other).match(sample) is not None
