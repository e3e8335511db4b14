"""The bundled scenarios, the resolved-scenario dump and the generated reference."""

from __future__ import annotations

import pytest

from sim.scenario import bundled_scenarios, load_scenario
from sim.scenario.dump import dump_scenario
from sim.scenario.reference import REFERENCE_PATH, render
from sim.scenario.types import format_duration, parse_duration


@pytest.mark.parametrize("name", sorted(bundled_scenarios()))
def test_bundled_scenario_is_valid(name):
    loaded = load_scenario(name)
    assert loaded.warnings == []


@pytest.mark.parametrize("name", sorted(bundled_scenarios()))
def test_bundled_scenario_starts_with_comment(name):
    first = bundled_scenarios()[name].read_text().splitlines()[0]
    assert first.startswith("# Rehearses")


def test_minimal_scenario_is_short():
    lines = bundled_scenarios()["minimal"].read_text().splitlines()
    assert len(lines) < 10


def test_default_scenario_is_cart_recovery():
    scenario = load_scenario("cart_recovery").scenario
    assert [j.name for j in scenario.journeys] == ["cart_recovery"]
    wall_seconds = scenario.clock.duration / scenario.clock.time_scale
    assert 60 <= wall_seconds <= 180


@pytest.mark.parametrize("name", sorted(bundled_scenarios()))
def test_dump_round_trips(name, tmp_path):
    scenario = load_scenario(name).scenario
    resolved = tmp_path / "resolved.yaml"
    resolved.write_text(dump_scenario(scenario))
    assert load_scenario(resolved).scenario == scenario


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("45s", 45), ("30m", 1800), ("6h", 21600), ("2d", 172800),
     ("1w", 604800), (90, 90), ("1.5h", 5400)],
)  # fmt: skip
def test_duration_units(text, seconds):
    assert parse_duration(text) == seconds


def test_duration_format_round_trips():
    for seconds in (0.5, 45, 1800, 21600, 172800, 5400):
        assert parse_duration(format_duration(seconds)) == seconds


def test_reference_is_current():
    assert REFERENCE_PATH.read_text(encoding="utf-8") == render(), (
        "docs/scenario-reference.md is stale: run python -m sim.scenario.reference --write"
    )


def test_reference_shows_nested_defaults():
    # A section's defaults come from its parent where the parent sets them, so a lognormal
    # setting shows its own median and sigma, not those of a bare LogNormal.
    rows = {line.split("|")[1].strip(" `"): line.split("|")[3].strip(" `")
            for line in render().splitlines() if line.startswith("| `")}  # fmt: skip
    assert rows["tokens.unregistered_delay.median"] == "6h"
    assert rows["tokens.unregistered_delay.sigma"] == "0.5"
    assert rows["sessions.event_gap.median"] == "20s"
    assert rows["funnel.products.price.median"] == "35.0"


def test_price_reads_the_legacy_seconds_form():
    # Run directories written before the price had its own type hold its median as "35s".
    legacy = load_scenario(text="funnel: {products: {price: {median: 35s, sigma: 0.7}}}")
    current = load_scenario(text="funnel: {products: {price: {median: 35, sigma: 0.7}}}")

    assert legacy.scenario.funnel.products.price == current.scenario.funnel.products.price
    assert legacy.scenario.funnel.products.price.median == 35.0
    assert "median: 35.0\n" in dump_scenario(current.scenario)
