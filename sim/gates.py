"""Gate metrics: the names a scenario's ``gates`` may check, and how a gate is parsed and judged.

A gate reads ``metric op value``, such as ``delivery_rate >= 0.9``. The report computes each
metric into ``summary.json``; validation checks gate names against this list before a run.
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class GateMetric:
    """A metric a gate may check: its meaning and its unit."""

    name: str
    description: str
    unit: str


GATE_METRICS: dict[str, GateMetric] = {
    metric.name: metric
    for metric in (
        GateMetric(
            "delivery_rate",
            "share of triggers that expected a push whose push reached the phone that owns "
            "the token",
            "ratio 0..1",
        ),
        GateMetric(
            "wrong_person_pushes",
            "pushes about one person displayed to another person",
            "count",
        ),
        GateMetric(
            "pushes_after_conversion",
            "pushes sent after the conversion that should have exited their journey",
            "count",
        ),
        GateMetric(
            "trigger_lateness_p99",
            "99th percentile of push arrival after trigger plus delay, in simulated time "
            "(broadcasts left out)",
            "seconds",
        ),
        GateMetric(
            "generator_drops",
            "share of scheduled SDK actions the load generator dropped past its lag budget",
            "ratio 0..1",
        ),
        GateMetric(
            "sdk_error_rate",
            "share of SDK calls sent that the backend did not accept: no 2xx response, "
            "429 included, or no response at all",
            "ratio 0..1",
        ),
        GateMetric(
            "conversion_rate",
            "share of triggers that expected a push whose push led to an order",
            "ratio 0..1",
        ),
        GateMetric(
            "incremental_conversions",
            "conversions after a push whose cart the model would not have bought anyway",
            "count",
        ),
        GateMetric(
            "failure_rate",
            "share of triggers that expected a push and ended in a failure outcome",
            "ratio 0..1",
        ),
        GateMetric(
            "stranded_anonymous",
            "triggers whose shopper's device token stayed on an anonymous profile",
            "count",
        ),
        GateMetric(
            "duplicate_deliveries",
            "pushes delivered again for a trigger that already had one, APNs retries aside",
            "count",
        ),
        GateMetric(
            "pushes_without_permission",
            "pushes accepted for a live device token whose installed app had no push permission",
            "count",
        ),
        GateMetric(
            "sends_after_unregistered",
            "push requests to a device token after the push service said it is unregistered",
            "count",
        ),
        GateMetric(
            "retries_without_backoff",
            "retries sent less than 0.2 wall seconds after a 429 or 503",
            "count",
        ),
        GateMetric(
            "retries_before_retry_after",
            "retries sent before the Retry-After of the 429 or 503 they follow",
            "count",
        ),
        GateMetric(
            "trigger_lateness_p99_wall_ms",
            "99th percentile of push arrival after trigger plus delay, in wall time (broadcasts "
            "left out)",
            "milliseconds",
        ),
        GateMetric(
            "reachable_share_min",
            "lowest share of opted-in shoppers reachable on the right profile, over the samples "
            "with at least 30 opted-in shoppers (in a smaller run, the samples with the most)",
            "ratio 0..1",
        ),
        GateMetric(
            "device_tokens_lost",
            "device tokens the app registered and never deleted that the backend deleted or "
            "never stored (needs the embedded backend's store)",
            "count",
        ),
        GateMetric(
            "unsent_after_identify",
            "triggers made anonymously whose shopper identified before the push was due, that "
            "got no push: the usual sign of a backend that does not merge anonymous activity",
            "count",
        ),
        GateMetric(
            "wrong_environment_pushes",
            "APNs pushes rejected with BadDeviceToken because they went to the environment "
            "(production or sandbox) their device token is not for",
            "count",
        ),
    )
}

OPERATORS = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
    "==": operator.eq,
    "!=": operator.ne,
}
_GATE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.]*)\s*(>=|<=|==|!=|>|<)\s*(\S+)\s*$")


@dataclass(frozen=True)
class Gate:
    """A parsed gate."""

    metric: str
    op: str
    threshold: float

    def passes(self, value: float) -> bool:
        return OPERATORS[self.op](value, self.threshold)

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.threshold:g}"


def parse_gate(text: str) -> Gate:
    """Parse ``metric op value``, raising ValueError that names the problem and the fix."""
    match = _GATE.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(
            f"invalid gate {text!r}: write 'metric op value', such as 'delivery_rate >= 0.9', "
            f"with op one of {', '.join(OPERATORS)}"
        )
    metric, op, value = match.groups()
    if metric not in GATE_METRICS:
        raise ValueError(f"unknown gate metric {metric!r}")
    try:
        threshold = float(value)
    except ValueError:
        raise ValueError(f"invalid gate {text!r}: threshold {value!r} is not a number") from None
    return Gate(metric, op, threshold)
