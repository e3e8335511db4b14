"""Gate metric values from an oracle result, and each scenario gate judged against them."""

from __future__ import annotations

from sim.gates import GATE_METRICS, parse_gate
from sim.oracle.outcomes import DELIVERED, FAILURES, LEGITIMATE
from sim.oracle.result import GateResult, OracleResult


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


# The gate metric that counts each kind of problem push.
PROBLEM_GATE_METRICS = {
    "wrong_person": "wrong_person_pushes",
    "push_after_conversion": "pushes_after_conversion",
    "duplicate_delivery": "duplicate_deliveries",
    "push_without_permission": "pushes_without_permission",
}


def gate_metrics(result: OracleResult) -> dict[str, float | None]:
    """Return every metric in ``sim.gates.GATE_METRICS``; None means the run gives no value."""
    judged = [journey for journey in result.journeys if journey.judged]
    eligible = sum(journey.eligible for journey in judged)
    legitimate = sum(journey.outcomes[o] for journey in judged for o in LEGITIMATE)
    expected = eligible - legitimate
    reached = sum(journey.outcomes[o] for journey in judged for o in DELIVERED)
    failures = sum(journey.outcomes[o] for journey in judged for o in FAILURES)
    converted = sum(journey.outcomes["converted"] for journey in judged)
    incremental = sum(journey.conversions.get("incremental", 0) for journey in judged)
    stranded = sum(journey.outcomes["stranded_anonymous"] for journey in judged)
    conduct = result.conduct

    problems = {
        metric: result.problems[kind].count for kind, metric in PROBLEM_GATE_METRICS.items()
    }

    metrics: dict[str, float | None] = {
        "delivery_rate": _share(reached, expected),
        "wrong_person_pushes": problems["wrong_person_pushes"],
        "pushes_after_conversion": problems["pushes_after_conversion"],
        "trigger_lateness_p99": result.lateness_s.get("p99"),
        "generator_drops": result.generator.drop_share,
        "sdk_error_rate": result.sdk_errors.error_rate,
        "conversion_rate": _share(converted, expected),
        "incremental_conversions": incremental,
        "failure_rate": _share(failures, expected),
        "stranded_anonymous": stranded,
        "duplicate_deliveries": problems["duplicate_deliveries"],
        "pushes_without_permission": problems["pushes_without_permission"],
        "sends_after_unregistered": conduct.sends_after_unregistered,
        "retries_without_backoff": conduct.retries_without_backoff,
        "retries_before_retry_after": conduct.retries_before_retry_after,
        "device_tokens_lost": conduct.device_tokens_lost,
        "unsent_after_identify": result.unsent_after_identify,
        "wrong_environment_pushes": sum(result.wrong_environment.values()),
        "trigger_lateness_p99_wall_ms": result.lateness_wall_ms.get("p99"),
        "reachable_share_min": result.reach.lowest_share(),
    }
    missing = set(GATE_METRICS) - set(metrics)
    if missing:
        raise RuntimeError(f"gate metrics without a value: {sorted(missing)}")
    return metrics


def evaluate_gates(gates: list[str], metrics: dict[str, float | None]) -> list[GateResult]:
    """Judge each gate; a metric without a value fails its gate, since nothing proves it."""
    results = []
    for text in gates:
        gate = parse_gate(text)
        value = metrics.get(gate.metric)
        if value is None:
            results.append(
                GateResult(
                    str(gate),
                    gate.metric,
                    gate.op,
                    gate.threshold,
                    None,
                    False,
                    "no value: the run gave nothing to measure",
                )  # fmt: skip
            )
            continue
        results.append(
            GateResult(str(gate), gate.metric, gate.op, gate.threshold, value, gate.passes(value))
        )
    return results
