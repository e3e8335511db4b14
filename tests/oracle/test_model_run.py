"""The oracle on a truth ledger from the real model, against a perfect backend built in the test.

The expected waterfall comes from ``expected_outcomes``, which reads only the truth records and
the test backend's own send log.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from sim.formats.truth import read_records
from sim.oracle.judge import judge_run
from sim.oracle.ledger import TruthIndex
from sim.oracle.outcomes import OUTCOMES
from tests.oracle.modelled import run_model


def expected_outcomes(truth_path: Path, sent: dict[str, str], scenario) -> Counter:
    """Count outcomes by replaying the truth records alone, with the backend's send log."""
    records = sorted(read_records(truth_path), key=lambda r: (r["at"], r["group"], r["seq"]))
    delay = scenario.journeys[0].delay
    end = scenario.clock.duration - scenario.clock.drain

    triggers: dict[str, dict] = {}
    orders: dict[str, float] = {}
    steps: dict[str, set[str]] = {}
    for record in records:
        if record["kind"] == "sdk_call" and record.get("event") == "added_to_cart":
            triggers.setdefault(record["properties"]["cart_id"], record)
        elif record["kind"] == "order":
            orders.setdefault(record["cart_id"], record["at"])
        elif record["kind"] == "reaction":
            steps.setdefault(record["delivery_id"], set()).add(record["step"])

    counts: Counter = Counter()
    for cart_id, call in triggers.items():
        due = call["at"] + delay
        if due > end:
            counts["excluded"] += 1
        elif cart_id in orders and orders[cart_id] <= due:
            counts["converted_before_delay"] += 1
        elif cart_id in sent:
            seen = steps.get(sent[cart_id], set())
            for step in ("converted", "opened", "displayed"):
                if step in seen:
                    counts[step] += 1
                    break
            else:
                counts["delivered"] += 1
        else:
            counts[_unreachable(records, call["device"], due)] += 1
    return counts


def _unreachable(records: list[dict], device: str, at: float) -> str:
    """Return why the cart's phone got no push, from the device's records up to ``at``."""
    installed, token, permission = False, None, None
    for record in records:
        if record["at"] > at:
            break
        if record.get("device") != device:
            continue
        kind = record["kind"]
        if kind == "install":
            installed = True
        elif kind == "uninstall":
            installed, permission = False, None
        elif kind == "token_issued":
            token = record["token"]
        elif kind == "token_died" and record["token"] == token:
            token = None
        elif kind == "permission":
            permission = record["state"]
    if not installed or token is None:
        return "no_device"
    # The perfect backend skips only devices that cannot show the push.
    return "no_permission" if permission != "granted" else "not_sent"


def test_perfect_backend_waterfall(tmp_path):
    inputs, backend = run_model(tmp_path)
    result = judge_run(inputs)
    expected = expected_outcomes(inputs.truth_paths[0], backend.sent, inputs.scenario)
    journey = result.journeys[0]

    assert journey.excluded == expected["excluded"]
    for outcome in OUTCOMES:
        assert journey.outcomes[outcome] == expected[outcome], outcome
    assert sum(journey.outcomes.values()) == journey.eligible
    # The run must exercise the funnel, or the comparison proves little.
    assert expected["displayed"] + expected["opened"] > 10
    assert expected["converted"] > 0
    assert expected["no_permission"] > 0


def test_perfect_backend_has_no_problems(tmp_path):
    inputs, _ = run_model(tmp_path)
    result = judge_run(inputs)
    for kind, problem in result.problems.items():
        assert problem.count == 0, (kind, problem.examples)
    assert result.metrics["delivery_rate"] == 1.0
    assert abs(result.lateness_s["max"]) < 1e-3
    assert abs(result.lateness_wall_ms["max"]) < 1e-3
    assert result.unattributed_pushes == 0


def test_conversions_split_by_latent_draw(tmp_path):
    inputs, _ = run_model(tmp_path)
    result = judge_run(inputs)
    latent = {
        r["cart_id"]: r["buy_anyway_at"]
        for r in read_records(inputs.truth_paths[0])
        if r["kind"] == "latent"
    }
    converted = [row for row in result.rows if row.outcome == "converted"]
    pulled = sum(1 for row in converted if latent.get(row.value) is not None)
    journey = result.journeys[0]
    assert journey.conversions["pulled_forward"] == pulled
    assert journey.conversions["incremental"] == len(converted) - pulled


def test_filtered_index_same_verdicts(tmp_path):
    inputs, _ = run_model(tmp_path)
    filtered = judge_run(inputs)
    whole = judge_run(inputs, TruthIndex.load(inputs.truth_paths))
    assert [(r.trigger_id, r.outcome) for r in filtered.rows] == [
        (r.trigger_id, r.outcome) for r in whole.rows
    ]
    assert filtered.generator.calls_by_status == whole.generator.calls_by_status
    assert filtered.reach == whole.reach
