"""Put two runs' summaries side by side and flag the figures that got worse or better.

A figure is WORSE when it moved the wrong way by more than chance explains (``reports.noise``),
and BETTER when it moved the right way by as much. A smaller move is shown as "worse, within
noise" or "better, within noise" and not counted. A lateness p99 is tested with the confidence
intervals in both summaries. A move the wrong way that no noise test covers is shown as "worse,
no noise test" and named in the verdict, but not counted, since two runs of one scenario make
such moves by chance. That is the case of the lowest reachable share, the lowest of up to 49
shares of one population sampled over time, which are not independent samples, and of a
lateness p99 with too few samples to bound it.

A gate and the metric it reads count as one figure, so a backend whose SDK error rate rose past
its gate has one figure worse, not two. So do ``delivery_rate`` and ``failure_rate``, which add
up to 1 over the same triggers.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from reports.build import REPORT_DIR, build_report, describe_backend
from reports.noise import SIGNIFICANT_Z, PercentileInterval, count_z, percentile_z, share_z
from sim.gates import GATE_METRICS
from sim.oracle.outcomes import DELIVERED, FAILURES, LEGITIMATE
from sim.oracle.stats import fewest_samples_for_upper_bound
from sim.scenario import ScenarioError, load_scenario
from sim.scenario.dump import differing_settings, scenario_to_plain

# Gate metrics where a higher value is better; every other metric is better lower.
HIGHER_IS_BETTER = frozenset(
    {"delivery_rate", "conversion_rate", "incremental_conversions", "reachable_share_min"}
)


def load_summary(run_dir: str | Path) -> dict:
    """Return the run's summary.json, building the report first when it is missing."""
    path = Path(run_dir) / REPORT_DIR / "summary.json"
    if not path.exists():
        build_report(run_dir)
    return json.loads(path.read_text(encoding="utf-8"))


def moved(metric: str, before: float | None, after: float | None) -> str:
    """Return "worse" or "better" for the move from ``before`` to ``after``, or "" for none.

    A missing value on either side compares as neither better nor worse: a run with no pushes
    has no lateness, and a run against an own backend cannot count lost device tokens.
    """
    if before is None or after is None or after == before:
        return ""
    rose = after > before
    return "better" if rose == (metric in HIGHER_IS_BETTER) else "worse"


WORSE, BETTER = "WORSE", "BETTER"
WITHIN_NOISE = "worse, within noise"
BETTER_WITHIN_NOISE = "better, within noise"
# A legitimate outcome whose share moved beyond noise: shown, and not counted either way.
MOVED = "moved beyond noise"
UNTESTED = "worse, no noise test"
UNTESTED_BETTER = "better, no noise test"
# A lateness that fell while the backend left more triggers without a push: lateness counts only
# the pushes sent, so a backend that gives up on slow sends looks faster. Shown, not counted.
FEWER_SENT = "better, but fewer sent"
# Metrics that restate another: failure_rate is 1 - delivery_rate over the triggers that
# expected a push, so a move of one is a move of the other.
_SAME_FIGURE = {"failure_rate": "delivery_rate"}
# The check that fails a run with no push, shown among the gates.
PUSHED_CHECK = "a push reached the gateways"

# Differing scenario keys named in the note before "and N more".
SHOWN_KEYS = 6

# Outcomes counted in the part of each share metric whose whole is the triggers that expected
# a push, as sim.oracle.gating computes them.
_TRIGGER_SHARES = {
    "delivery_rate": DELIVERED,
    "conversion_rate": ("converted",),
    "failure_rate": FAILURES,
}


# Percentile metrics, each with its samples' key under summary.json's trigger_lateness and the
# percentile, whose confidence interval sits beside it as p{percentile}_interval.
_PERCENTILES = {
    "trigger_lateness_p99": ("sim_s", 99),
    "trigger_lateness_p99_wall_ms": ("wall_ms", 99),
}


def _percentile_interval(summary: dict, metric: str) -> PercentileInterval | None:
    """Return the confidence interval of a percentile metric, or None when the summary has none.

    Summaries written before the intervals have the percentile alone.
    """
    samples, percentile = _PERCENTILES[metric]
    statistics = (summary.get("trigger_lateness") or {}).get(samples) or {}
    interval = statistics.get(f"p{percentile}_interval")
    if interval is None:
        return None
    return PercentileInterval(interval["lower"], interval["upper"], interval["z"])


def _share_counts(summary: dict, metric: str) -> tuple[int, int] | None:
    """Return the (part, whole) counts behind a share metric, or None for other metrics."""
    if metric in _TRIGGER_SHARES:
        return _trigger_counts(summary, _TRIGGER_SHARES[metric])
    if metric == "sdk_error_rate" and "sdk_errors" in summary:
        errors = summary["sdk_errors"]
        return errors["failed"], errors["sent"]
    if metric == "generator_drops" and "generator" in summary:
        generator = summary["generator"]
        offered = sum(
            count for status, count in generator["calls_by_status"].items() if status != "local"
        )
        return generator["dropped"], offered
    return None


def _metric_z(metric: str, a: dict, b: dict) -> float | None:
    """Return the z statistic of the metric's change from A to B, or None without an estimate."""
    if metric in _PERCENTILES:
        return percentile_z(
            a["metrics"][metric],
            _percentile_interval(a, metric),
            b["metrics"][metric],
            _percentile_interval(b, metric),
        )
    counts_a, counts_b = _share_counts(a, metric), _share_counts(b, metric)
    if counts_a is not None and counts_b is not None:
        return share_z(*counts_a, *counts_b)
    if GATE_METRICS[metric].unit == "count":
        return count_z(a["metrics"][metric], b["metrics"][metric])
    return None


def _trigger_counts(summary: dict, counted: tuple[str, ...]) -> tuple[int, int]:
    """Return the judged triggers with an outcome in ``counted``, and those that expected a push."""
    part = whole = 0
    for journey in summary["journeys"]:
        if not journey.get("judged", True):
            continue
        outcomes = journey["outcomes"]
        part += sum(outcomes.get(outcome, 0) for outcome in counted)
        whole += journey["eligible"] - sum(outcomes.get(o, 0) for o in LEGITIMATE)
    return part, whole


def _not_sent_share(summary: dict) -> float:
    """Return the share of the triggers that expected a push which got the outcome not_sent."""
    part, whole = _trigger_counts(summary, ("not_sent",))
    return part / whole if whole else 0.0


def _flag(metric: str, a: dict, b: dict) -> str:
    before, after = a["metrics"].get(metric), b["metrics"].get(metric)
    way = moved(metric, before, after)
    if way == "better" and metric in _PERCENTILES and _not_sent_share(b) > _not_sent_share(a):
        return FEWER_SENT
    if way:
        z = _metric_z(metric, a, b) if metric in GATE_METRICS else None
        if z is None:
            return f"{way}, no noise test"
        if abs(z) >= SIGNIFICANT_Z:
            return way.upper()
        return f"{way}, within noise"
    if (before is None) != (after is None):
        return "not comparable"
    return ""


def _format(value: object) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


@dataclass(frozen=True)
class Comparison:
    """Two runs side by side: the text table and what got worse or better in B."""

    text: str
    worse_figures: int  # gate metrics, gates and failure outcomes worse in B
    better_figures: int  # the same, better in B
    failed_gates: tuple[str, ...]  # gates that pass in A and fail in B
    same_scenario: bool


def _scenario_settings(run_dir: str | Path) -> object:
    """Return the run's scenario as resolved settings, or None when its file is missing.

    The settings come from loading the file, so two runs whose files spell one value in two
    ways (a price of ``"35s"`` from older runs and ``35.0``) count as one scenario. A file that
    no longer loads is compared as written.
    """
    path = Path(run_dir) / "scenario.yaml"
    if not path.exists():
        return None
    try:
        return scenario_to_plain(load_scenario(path).scenario)
    except ScenarioError:
        pass
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError:
        return path.read_text(encoding="utf-8", errors="replace")


def _scenario_fingerprint(run_dir: str | Path) -> str | None:
    """Return a hash of the run's resolved scenario and seed, or None when they are missing."""
    settings = _scenario_settings(run_dir)
    if settings is None:
        return None
    text = json.dumps(settings, sort_keys=True, default=str)
    digest = hashlib.sha256(text.encode())
    digest.update(str(_seed(run_dir)).encode())
    return digest.hexdigest()


def _seed(run_dir: str | Path) -> object:
    epoch = Path(run_dir) / "epoch.json"
    if not epoch.exists():
        return None
    return json.loads(epoch.read_text(encoding="utf-8")).get("seed")


def _scenario_note(run_a: str | Path, run_b: str | Path) -> str:
    """Say how the two runs' scenarios and seeds differ, naming the keys where it can."""
    settings = [_scenario_settings(run) for run in (run_a, run_b)]
    keys = differing_settings(*settings) if None not in settings else []

    parts = []
    seeds = (_seed(run_a), _seed(run_b))
    if seeds[0] != seeds[1]:
        # The seed's own part names both values, so the key list leaves it out.
        keys = [key for key in keys if key != "seed"]
    if keys:
        listed = ", ".join(keys[:SHOWN_KEYS])
        more = f" and {len(keys) - SHOWN_KEYS} more" if len(keys) > SHOWN_KEYS else ""
        parts.append(f"the scenarios differ in {listed}{more}")
    if seeds[0] != seeds[1]:
        parts.append(f"the seeds differ (A {seeds[0]}, B {seeds[1]})")
    if not parts:
        parts.append("the runs used different scenario files or seeds")
    return (
        f"note: {'; '.join(parts)}, so a difference below may come from the scenario rather "
        "than from the backend"
    )


def _judged_notes(journeys_a: list[dict], journeys_b: list[dict]) -> list[str]:
    """Note each journey that one run judged for fewer than half of its triggers."""
    notes = []
    for label, journeys in (("A", journeys_a), ("B", journeys_b)):
        for journey in journeys:
            eligible, excluded = journey["eligible"], journey["excluded_near_end"]
            if journey.get("judged", True) and excluded > eligible:
                notes.append(
                    f"note: run {label} judged {eligible} of {journey['triggers']} triggers of "
                    f"journey {journey['name']} (the rest were due within clock.drain of the "
                    "end), so its shares rest on few or no triggers"
                )
    return notes


def _percentile_notes(a: dict, b: dict, run_a: str | Path, run_b: str | Path) -> list[str]:
    """Note what the noise test of each percentile that moved lacked, run by run.

    A summary from before the intervals leaves the test to the other run's interval, or to no
    test when the other run has no bound that faces this one either.
    """
    summaries, runs = {"A": a, "B": b}, {"A": run_a, "B": run_b}
    changed = [
        metric
        for metric in _PERCENTILES
        if moved(metric, a["metrics"].get(metric), b["metrics"].get(metric))
    ]
    notes = []
    for label, other in (("A", "B"), ("B", "A")):
        predating = [m for m in changed if _percentile_interval(summaries[label], m) is None]
        if not predating:
            continue
        # The other run's interval alone tests a metric unless its facing bound is unset too.
        tested = [m for m in predating if _metric_z(m, a, b) is not None]
        untested = [m for m in predating if m not in tested]
        tests = []
        if tested:
            tests.append(
                f"the noise test of {' and '.join(tested)} used run {other}'s interval alone, "
                "which flags smaller moves than both intervals would"
            )
        if untested:
            tests.append(f"{' and '.join(untested)} got no noise test")
        notes.append(
            f"note: run {label}'s summary.json predates the percentile confidence intervals, "
            f"so {', and '.join(tests)}; `pushsim report {runs[label]}` adds them"
        )
    return notes + _unbounded_notes(changed, a, b)


def _unbounded_notes(metrics: list[str], a: dict, b: dict) -> list[str]:
    """Note the runs whose samples were too few to set the bound that faces the other run.

    Which run lacks the bound depends on the way each metric moved, so metrics that moved
    opposite ways name different runs. One note per percentile and side names them all.
    """
    # Per percentile, side and the samples that side needs: the runs short of them with their
    # sample counts, and the metrics left without a test.
    grouped: dict[tuple[int, str, int], tuple[dict[str, int], list[str]]] = {}
    for metric in metrics:
        samples, percentile = _PERCENTILES[metric]
        rising = b["metrics"][metric] > a["metrics"][metric]
        for label, summary, above in (("A", a, rising), ("B", b, not rising)):
            interval = _percentile_interval(summary, metric)
            if interval is None or (interval.upper if above else interval.lower) is not None:
                continue
            # A bound below the p-th percentile needs as many samples as one above the
            # (100 - p)-th.
            side_percentile = percentile if above else 100 - percentile
            needed = fewest_samples_for_upper_bound(side_percentile, interval.z)
            side = "above" if above else "below"
            runs, names = grouped.setdefault((percentile, side, needed), ({}, []))
            runs[label] = summary["trigger_lateness"][samples]["count"]
            if metric not in names:
                names.append(metric)

    notes = []
    for (percentile, side, needed), (runs, names) in grouped.items():
        counts = " and ".join(f"run {label} {count}" for label, count in sorted(runs.items()))
        notes.append(
            f"note: too few lateness samples ({counts}) to bound the p{percentile} from {side} "
            f"({needed} are needed), so {' and '.join(names)} got no noise test"
        )
    return notes


def compare_runs(run_a: str | Path, run_b: str | Path) -> Comparison:
    """Return both runs' metrics, gates and outcomes side by side, marking what moved in B."""
    a, b = load_summary(run_a), load_summary(run_b)
    lines = [f"A: {run_a} ({a['scenario']})", f"B: {run_b} ({b['scenario']})"]
    fingerprints = (_scenario_fingerprint(run_a), _scenario_fingerprint(run_b))
    same_scenario = fingerprints[0] == fingerprints[1]
    if not same_scenario:
        lines.append(_scenario_note(run_a, run_b))
    lines += _judged_notes(a["journeys"], b["journeys"])
    backends = [describe_backend(summary.get("backend")) for summary in (a, b)]
    if backends[0] != backends[1]:
        lines.append(
            f"note: the backends under test differ: A ran {backends[0] or 'an unrecorded backend'}"
            f", B ran {backends[1] or 'an unrecorded backend'}"
        )
    for label, summary in (("A", a), ("B", b)):
        generator = summary.get("generator") or {}
        if generator.get("fell_behind"):
            lines.append(
                f"note: run {label}'s driver dropped {generator['dropped']:,} SDK calls "
                f"({generator['drop_share']:.1%}), so its backend saw less load than the scenario "
                "describes, and a difference below may come from the driver rather than from the "
                "backend"
            )
        if summary.get("partial"):
            lines.append(
                f"note: run {label} is partial ({summary.get('partial_reason') or 'no reason'}), "
                "so its figures cover only what it collected before it ended"
            )
    lines += _percentile_notes(a, b, run_a, run_b)
    lines.append("")
    width = max(len(name) for name in a["metrics"] | b["metrics"]) + 2
    lines.append(f"{'metric':<{width}}{'A':>14}{'B':>14}  ")
    # Figures by flag and metric name: a gate counts under the metric it reads, so that a gate
    # and its metric make one figure, and a metric that restates another counts under it.
    flagged: dict[str, set[str]] = {
        flag: set() for flag in (WORSE, BETTER, WITHIN_NOISE, BETTER_WITHIN_NOISE)
    }
    untested: list[str] = []
    fewer_sent: list[str] = []
    untested_better: list[str] = []
    for metric in sorted(a["metrics"] | b["metrics"]):
        before, after = a["metrics"].get(metric), b["metrics"].get(metric)
        flag = _flag(metric, a, b)
        if flag in flagged:
            flagged[flag].add(_SAME_FIGURE.get(metric, metric))
        if flag == UNTESTED:
            untested.append(metric)
        if flag == FEWER_SENT:
            fewer_sent.append(metric)
        if flag == UNTESTED_BETTER:
            untested_better.append(metric)
        lines.append(f"{metric:<{width}}{_format(before):>14}{_format(after):>14}  {flag}")

    gates_a = {gate["gate"]: gate["passed"] for gate in a["gates"]}
    gates_b = {gate["gate"]: gate["passed"] for gate in b["gates"]}
    gate_metrics = {gate["gate"]: gate.get("metric") for gate in [*a["gates"], *b["gates"]]}
    # A run with no push although triggers expected some fails even when its gates pass, so the
    # check counts as a gate of its own. Older summaries lack it.
    if "no_push_warning" in a and "no_push_warning" in b:
        gates_a[PUSHED_CHECK] = a["no_push_warning"] is None
        gates_b[PUSHED_CHECK] = b["no_push_warning"] is None
    failed_gates = []
    if gates_a or gates_b:
        lines += ["", "gates"]
        for gate in sorted(gates_a | gates_b):
            before, after = gates_a.get(gate), gates_b.get(gate)
            flag = ""
            if before and after is False:
                flag = WORSE
                failed_gates.append(gate)
            elif before is False and after:
                flag = BETTER
            if flag:
                flagged[flag].add(gate_metrics.get(gate) or gate)
            label = {True: "pass", False: "FAIL", None: "-"}
            lines.append(f"  {gate:<{width + 10}}{label[before]:>6}{label[after]:>6}  {flag}")

    lines += _conduct_lines(a, b, width)

    lines += [
        "",
        "outcomes (share of eligible triggers and count; a failure outcome that grew beyond "
        "noise is WORSE, one that shrank beyond noise is BETTER, and a legitimate one that "
        "moved beyond noise is marked but not counted)",
    ]
    outcome_lines, outcome_flags = _outcome_lines(a["journeys"], b["journeys"])
    lines += outcome_lines
    counts = {flag: len(figures) + outcome_flags.count(flag) for flag, figures in flagged.items()}
    regressions, improvements = counts[WORSE], counts[BETTER]
    verdict = f"{regressions} figure(s) worse in B" if regressions else "nothing worse in B"
    if counts[WITHIN_NOISE]:
        verdict += f" ({counts[WITHIN_NOISE]} more worse within noise, not counted)"
    if improvements or counts[BETTER_WITHIN_NOISE]:
        verdict += f"; {improvements} figure(s) better in B" if improvements else "; none better"
    if counts[BETTER_WITHIN_NOISE]:
        verdict += f" ({counts[BETTER_WITHIN_NOISE]} more better within noise, not counted)"
    lines += ["", verdict]
    if fewer_sent:
        lines.append(
            f"better in B but not counted: {', '.join(fewer_sent)}, because B left a larger share "
            f"of the triggers that expected a push not_sent ({_not_sent_share(a):.1%} against "
            f"{_not_sent_share(b):.1%}) "
            "and lateness counts only the pushes sent"
        )
    if untested:
        lines.append(
            f"moved the wrong way with no noise test, not counted: {', '.join(untested)} "
            "(runs with more shoppers, or several seeds of each, tell chance from a change)"
        )
    if untested_better:
        lines.append(
            f"moved the right way with no noise test, not counted: {', '.join(untested_better)}"
        )
    if failed_gates:
        lines.append(f"gates that pass in A and fail in B: {', '.join(failed_gates)}")
    return Comparison(
        "\n".join(lines), regressions, improvements, tuple(failed_gates), same_scenario
    )


# Backend conduct counts shown side by side for context; the gate metrics above flag the
# faults among them.
CONDUCT_FIGURES = (
    "retryable_errors",
    "retries",
    "errors_never_retried",
    "unregistered_responses",
    "prunes_after_unregistered",
    "prunes_against_timestamp",
    "requests_per_connection",
)


def _conduct_lines(a: dict, b: dict, width: int) -> list[str]:
    """Return the push requests, backend conduct counts and broadcast pacing of A and B."""
    lines = ["", "backend conduct (for context, not flagged)"]
    rows = [
        (name, a.get(name), b.get(name))
        for name in ("push_requests", "unattributed_pushes", "unknown_token_pushes")
    ]
    conduct_a, conduct_b = a.get("backend_conduct") or {}, b.get("backend_conduct") or {}
    for name in CONDUCT_FIGURES:
        values = [conduct.get(name) for conduct in (conduct_a, conduct_b)]
        if name.startswith("prunes_"):
            # Without the embedded backend's store nothing checks pruning, and 0 would read
            # as a backend that never pruned.
            values = [
                value if conduct.get("pruning_checked") else None
                for value, conduct in zip(values, (conduct_a, conduct_b), strict=True)
            ]
        rows.append((name, *values))
    pacing_b = {journey["name"]: journey.get("pacing") for journey in b["journeys"]}
    for journey in a["journeys"]:
        paced = journey.get("pacing"), pacing_b.get(journey["name"])
        if any(paced):
            rows.append(
                (
                    f"{journey['name']} peak pushes per wall second",
                    *(pacing["peak_per_second"] if pacing else None for pacing in paced),
                )
            )
    label_width = max(width + 10, *(len(name) + 2 for name, *_ in rows))
    for name, before, after in rows:
        lines.append(f"  {name:<{label_width}}{_format(before):>12}{_format(after):>12}")
    return lines


def _outcome_lines(journeys_a: list[dict], journeys_b: list[dict]) -> tuple[list[str], list[str]]:
    """Return each journey's outcome shares in A and B, and the flag of each row.

    Failure outcomes are flagged WORSE when their share grew and BETTER when it shrank, and a
    legitimate outcome whose share moved beyond noise is marked, not counted.
    The delivered ones move between each other (a push shown in A may be opened in B) and add up
    to ``delivery_rate``, which is flagged above.
    """
    rows: list[tuple[str, str, str, str]] = []
    notes: list[str] = []
    by_name_b = {journey["name"]: journey for journey in journeys_b}
    names_a = {journey["name"] for journey in journeys_a}
    for journey in journeys_a:
        other = by_name_b.get(journey["name"])
        if other is None:
            notes.append(f"  {journey['name']}: only in A")
            continue
        for outcome in dict.fromkeys([*journey["outcomes"], *other["outcomes"]]):
            share_a = _outcome_share(journey, outcome)
            share_b = _outcome_share(other, outcome)
            if share_a or share_b:
                flag = ""
                z = share_z(
                    journey["outcomes"].get(outcome, 0),
                    journey["eligible"],
                    other["outcomes"].get(outcome, 0),
                    other["eligible"],
                )
                significant = z is None or abs(z) >= SIGNIFICANT_Z
                if outcome in FAILURES and share_b != share_a:
                    way = "worse" if share_b > share_a else "better"
                    flag = way.upper() if significant else f"{way}, within noise"
                elif outcome in LEGITIMATE and share_b != share_a and significant:
                    # Not a fault in itself, but worth a look: a backend that pushes after a
                    # conversion fills the frequency cap, and more triggers read capped.
                    flag = MOVED
                # The count beside the share shows a change that one decimal hides, such as 1
                # against 2 of 1,500 triggers.
                cells = [
                    f"{share:.1%} ({run['outcomes'].get(outcome, 0):,})"
                    for share, run in ((share_a, journey), (share_b, other))
                ]
                rows.append((f"{journey['name']}.{outcome}", *cells, flag))
    notes += [f"  {journey['name']}: only in B" for journey in journeys_b
              if journey["name"] not in names_a]  # fmt: skip

    width = max((len(label) for label, *_ in rows), default=0) + 2
    lines = [f"  {label:<{width}}{a:>16}{b:>16}  {flag}".rstrip() for label, a, b, flag in rows]
    return lines + notes, [flag for *_, flag in rows]


def _outcome_share(journey: dict, outcome: str) -> float:
    eligible = journey["eligible"]
    return journey["outcomes"].get(outcome, 0) / eligible if eligible else 0.0
