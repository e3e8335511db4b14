"""The oracle's result as plain dataclasses, and its stable ``summary.json`` form.

The keys of ``to_summary`` are documented in docs/report-format.md; add keys, never rename them.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sim.oracle.conduct import Conduct
from sim.oracle.generator import GeneratorHealth
from sim.oracle.outcomes import DELIVERED, FAILURES, LEGITIMATE, OUTCOMES, TriggerRow
from sim.oracle.pacing import Pacing
from sim.oracle.problems import Problem
from sim.oracle.reach import ReachSeries
from sim.oracle.sdk_errors import SdkErrors

SUMMARY_VERSION = 1

# Gate metrics that count pushes or backend actions that a sound pipeline never makes.
PROBLEM_METRICS = (
    "wrong_person_pushes",
    "pushes_after_conversion",
    "duplicate_deliveries",
    "pushes_without_permission",
    "sends_after_unregistered",
    "retries_without_backoff",
    "retries_before_retry_after",
    "device_tokens_lost",
    "unsent_after_identify",
    "wrong_environment_pushes",
    "stranded_anonymous",
)


@dataclass
class JourneyResult:
    """One journey's trigger counts, outcome counts and waterfall."""

    name: str
    kind: str
    judged: bool
    note: str
    match_field: str
    trigger_events_dropped: int
    triggers: int
    excluded: int
    outcomes: dict[str, int]
    conversions: dict[str, int]
    pacing: Pacing | None = None  # a broadcast's send rate in wall time

    @property
    def eligible(self) -> int:
        return self.triggers - self.excluded

    def exclusion_warning(self, partial: bool = False) -> str | None:
        """Return a warning when most of the journey's triggers were excluded near the end.

        ``partial`` is True for a run that ended early, whose end is where it stopped.
        """
        if not self.judged or self.excluded <= self.eligible:
            return None
        fix = "a longer clock.duration judges more of them"
        if partial:
            fix = "the run ended early, and a whole run judges them"
        elif self.kind == "broadcast":
            # A broadcast's triggers all share its start and its send window, pushes over
            # send_rate, so they are all judged or all excluded.
            fix = (
                "a broadcast is judged when its start plus its send window (its pushes over "
                "send_rate) plus clock.drain fits in clock.duration: lengthen clock.duration, "
                "raise send_rate or move at earlier"
            )
        return (
            f"journey {self.name}: {self.excluded} of {self.triggers} triggers were due within "
            f"clock.drain of the end and were not judged; {fix}"
        )

    def waterfall(self) -> list[tuple[str, int]]:
        """Return the funnel steps from eligible to converted, each with its trigger count."""
        expected = self.eligible - sum(self.outcomes[o] for o in LEGITIMATE)
        reached = sum(self.outcomes[o] for o in DELIVERED)
        displayed = reached - self.outcomes["delivered"]
        opened = displayed - self.outcomes["displayed"]
        return [
            ("eligible", self.eligible),
            ("push expected", expected),
            ("delivered", reached),
            ("displayed", displayed),
            ("opened", opened),
            ("converted", self.outcomes["converted"]),
        ]


@dataclass
class GateResult:
    """One gate judged: its text, the metric's value, and whether it passed."""

    gate: str
    metric: str
    op: str
    threshold: float
    value: float | None
    passed: bool
    note: str = ""


@dataclass
class OracleResult:
    """Everything the oracle computed for one run."""

    scenario: str
    duration: float
    drain: float
    time_scale: float
    origin: float
    journeys: list[JourneyResult]
    rows: list[TriggerRow]
    problems: dict[str, Problem]
    lateness_s: dict[str, Any]
    lateness_wall_ms: dict[str, Any]
    conduct: Conduct
    generator: GeneratorHealth
    sdk_errors: SdkErrors
    reach: ReachSeries
    series: dict[str, Any]
    unattributed_pushes: int
    push_requests: int
    # Push requests to device tokens that no shopper of this run ever held.
    unknown_token_pushes: int = 0
    # Triggers made anonymously and identified well before their due time that got no push.
    unsent_after_identify: int = 0
    # Failed triggers whose own call carried an injected SDK fault, by fault.
    failures_by_fault: dict[str, int] = field(default_factory=dict)
    # APNs pushes to the environment their token is not for, by the token's environment.
    wrong_environment: dict[str, int] = field(default_factory=dict)
    # Simulated seconds the models of a partial run reached, or None for a whole run.
    reached: float | None = None
    metrics: dict[str, float | None] = field(default_factory=dict)
    gates: list[GateResult] = field(default_factory=list)
    # The scenario's target.protocol, which explains the commonest stitching failure.
    protocol: str = ""

    def no_push_warning(self) -> str | None:
        """Return a warning when triggers expected pushes and none reached the gateways."""
        expected = sum(
            dict(journey.waterfall())["push expected"]
            for journey in self.journeys
            if journey.judged
        )
        if not expected or self.push_requests:
            return None
        if self.sdk_errors.over_limit:
            return (
                f"no push request reached the gateways, although {expected} triggers expected "
                f"a push, and {self.sdk_errors.error_rate:.0%} of the SDK calls failed: the "
                "backend missed that activity, so fix the failed calls first (see SDK calls)"
            )
        return (
            f"no push request reached the gateways, although {expected} triggers expected a "
            "push: check that the backend sends to the gateways of this run's gateways.json, "
            "and that it does not remember these shoppers from an earlier run with the same "
            "seed (give each run a new one with --set seed=N)"
        )

    def unknown_token_note(self) -> str | None:
        """Return why some pushes went to device tokens this run never issued, or None."""
        if not self.unknown_token_pushes:
            return None
        return (
            f"{self.unknown_token_pushes:,} of {self.push_requests:,} push requests went to "
            "device tokens that no shopper of this run ever held. A backend that kept an "
            "earlier run's profiles in its store sends to them, and so does one that makes "
            "tokens up. They count as tied to no trigger; start the backend with an empty store "
            "for each run to judge it alone"
        )

    def fault_note(self) -> str | None:
        """Return how many failed triggers had an injected SDK fault on their own call, or None."""
        if not self.failures_by_fault:
            return None
        counts = ", ".join(f"{name} {count:,}" for name, count in self.failures_by_fault.items())
        return (
            f"failed triggers whose own call carried an injected SDK fault: {counts}. Their "
            "details say what each fault did; a backend that maps drifted event names or "
            "merges anonymous calls recovers some of them"
        )

    def wrong_environment_note(self) -> str | None:
        """Return why some APNs pushes got BadDeviceToken for tokens of this run, or None."""
        production = self.wrong_environment.get("production", 0)
        sandbox = self.wrong_environment.get("sandbox", 0)
        if not production and not sandbox:
            return None
        parts = []
        if production:
            parts.append(
                f"{production:,} push(es) took store builds' tokens to the sandbox host; "
                "send them to api.push.apple.com"
            )
        if sandbox:
            parts.append(
                f"{sandbox:,} push(es) took development builds' tokens (registered with the "
                "attribute apns_environment: sandbox) to the production host; send them to "
                "api.sandbox.push.apple.com"
            )
        return (
            "APNs rejected pushes with 400 BadDeviceToken because each went to the environment "
            f"its device token is not for: {'. '.join(parts)}. A backend that prunes on "
            "BadDeviceToken deletes these devices' tokens"
        )

    def ungated_problems_warning(self) -> str | None:
        """Return the counts of bad pushes and backend conduct that no gate checks, or None.

        A scenario without a gate on them passes however many there are, so the console
        names them rather than leave them to the report's top problems.
        """
        gated = {gate.metric for gate in self.gates}
        found = [
            f"{metric} {self.metrics[metric]:,.0f}"
            for metric in PROBLEM_METRICS
            if metric not in gated and self.metrics.get(metric)
        ]
        if not found:
            return None
        return (
            f"no gate checks these, and none is zero: {', '.join(found)}. A gate such as "
            f"'{found[0].split()[0]} == 0' in the scenario makes them fail the run"
        )

    def stitching_hint(self) -> str | None:
        """Return why events_without_device leads the failures under the Track API, or None.

        Track API v1 has no anonymous devices: the app registers a token once the shopper
        identifies, so a trigger of a shopper who browses anonymously reaches a profile without
        one.
        That is the integration's finding, not a fault of the backend or of pushsim.
        """
        # When the backend rejected the SDK calls, the missing devices follow from that instead.
        if self.protocol != "track_v1" or self.sdk_errors.over_limit:
            return None
        failures = Counter(row.outcome for row in self.rows if row.outcome in FAILURES)
        if not failures or failures.most_common(1)[0][0] != "events_without_device":
            return None
        stitching, failed = failures["events_without_device"], sum(failures.values())
        return (
            f"events_without_device is the commonest failure ({stitching:,} of {failed:,} failed "
            "triggers): the Track API registers a device only once the shopper identifies, so "
            "a shopper who browses anonymously has no device on the profile a journey reaches. "
            "Rerun with "
            "--set target.protocol=cdp_batch to compare a CDP integration, which registers "
            "anonymous devices"
        )

    @property
    def gates_passed(self) -> bool:
        return all(gate.passed for gate in self.gates)

    @property
    def passed(self) -> bool:
        """True when every gate passed and, if triggers expected pushes, some push was sent.

        Gates on counts of bad pushes pass trivially when the backend sent nothing.
        """
        return self.gates_passed and self.no_push_warning() is None


def to_summary(result: OracleResult) -> dict[str, Any]:
    """Return the result as the JSON-ready ``summary.json`` object (rows go to CSV instead)."""
    journeys = []
    for journey in result.journeys:
        journeys.append(
            {
                "name": journey.name,
                "kind": journey.kind,
                "judged": journey.judged,
                "note": journey.note,
                "match_field": journey.match_field,
                "trigger_events_dropped": journey.trigger_events_dropped,
                "triggers": journey.triggers,
                "excluded_near_end": journey.excluded,
                "eligible": journey.eligible,
                "outcomes": {name: journey.outcomes.get(name, 0) for name in OUTCOMES},
                "conversions": journey.conversions,
                "waterfall": [{"step": s, "triggers": n} for s, n in journey.waterfall()],
                "pacing": dataclasses.asdict(journey.pacing) if journey.pacing else None,
            }
        )
    reach = dataclasses.asdict(result.reach)
    reach["reachable_share"] = [result.reach.share(i) for i in range(len(result.reach.at))]
    return {
        "summary_version": SUMMARY_VERSION,
        "scenario": result.scenario,
        "clock": {
            "duration_s": result.duration,
            "reached_s": result.reached,
            "drain_s": result.drain,
            "time_scale": result.time_scale,
            "origin_unix": result.origin,
        },
        "passed": result.passed,
        "gates_passed": result.gates_passed,
        "no_push_warning": result.no_push_warning(),
        "ungated_problems_warning": result.ungated_problems_warning(),
        "wrong_environment_warning": result.wrong_environment_note(),
        "failures_by_fault": result.failures_by_fault,
        "gates": [dataclasses.asdict(gate) for gate in result.gates],
        "metrics": result.metrics,
        "journeys": journeys,
        "problems": {
            kind: {"count": p.count, "examples": p.examples} for kind, p in result.problems.items()
        },
        "trigger_lateness": {"sim_s": result.lateness_s, "wall_ms": result.lateness_wall_ms},
        "backend_conduct": dataclasses.asdict(result.conduct),
        "generator": dataclasses.asdict(result.generator),
        "sdk_errors": dataclasses.asdict(result.sdk_errors),
        "reach": reach,
        "series": result.series,
        "push_requests": result.push_requests,
        "unattributed_pushes": result.unattributed_pushes,
        "unknown_token_pushes": result.unknown_token_pushes,
    }
