"""``--set`` overrides: applied, validated like the file, and reported with their key path."""

from __future__ import annotations

import pytest

from sim.scenario import ScenarioError, load_scenario


def test_override_sets_nested_value():
    loaded = load_scenario("cart_recovery", ["permission.opt_in.ios=0.45"])
    assert loaded.scenario.permission.opt_in["ios"] == 0.45


def test_override_keeps_sibling_defaults():
    loaded = load_scenario("cart_recovery", ["permission.opt_in.ios=0.45"])
    assert loaded.scenario.permission.opt_in["android"] == 0.60


def test_override_parses_durations_and_indexes():
    loaded = load_scenario("cart_recovery", ["journeys[0].delay=45m", "clock.duration=6h"])
    assert loaded.scenario.journeys[0].delay == 2700.0
    assert loaded.scenario.clock.duration == 6 * 3600.0


@pytest.mark.parametrize(
    ("override", "path", "phrase"),
    [
        ("permission.opt_in.ios=1.5", "permission.opt_in.ios", "between 0 and 1"),
        ("permission.optin.ios=0.5", "permission.optin", "did you mean 'opt_in'"),
        ("population.platforms.iOS=0.5", "population.platforms.iOS", "did you mean 'ios'"),
        ("clock.duration=-3h", "clock.duration", "must not be negative"),
        ("journeys[5].delay=1h", "journeys[5].delay", "out of range"),
        ("no-equals-sign", "no-equals-sign", "key.path=value"),
        ("a..b=1", "a..b", "invalid key path segment"),
    ],
)
def test_bad_override_reported_with_path(override, path, phrase):
    with pytest.raises(ScenarioError) as raised:
        load_scenario("cart_recovery", [override])
    (finding,) = raised.value.findings
    assert finding.file == "--set"
    assert finding.path == path
    assert phrase in finding.message


def test_override_indexes_default_list():
    loaded = load_scenario("minimal", ["journeys[0].delay=45m"])
    assert loaded.scenario.journeys[0].name == "cart_recovery"
    assert loaded.scenario.journeys[0].delay == 2700.0


def test_override_changes_one_transition():
    loaded = load_scenario("minimal", ["funnel.transitions.added_to_cart.checkout_started=0.4"])
    transitions = loaded.scenario.funnel.transitions
    defaults = load_scenario("minimal").scenario.funnel.transitions

    assert transitions["added_to_cart"] == {**defaults["added_to_cart"], "checkout_started": 0.4}
    assert {row: transitions[row] for row in defaults if row != "added_to_cart"} == {
        row: value for row, value in defaults.items() if row != "added_to_cart"
    }


def test_override_inside_file_table_keeps_file_table():
    text = "funnel:\n  transitions:\n    session_start: {product_viewed: 0.5}\n"
    loaded = load_scenario("case.yaml", ["funnel.transitions.product_viewed.added_to_cart=0.2"],
                           text=text)  # fmt: skip
    assert loaded.scenario.funnel.transitions == {
        "session_start": {"product_viewed": 0.5},
        "product_viewed": {"added_to_cart": 0.2},
    }


def test_directory_is_not_a_scenario(tmp_path):
    with pytest.raises(FileNotFoundError, match="is a directory"):
        load_scenario(tmp_path)
