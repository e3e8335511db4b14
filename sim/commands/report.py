"""``pushsim report``: judge a finished run and write its report folder."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from sim.commands.common import EXIT_GATES_FAILED, EXIT_PARTIAL, EXIT_USAGE, run_dir_problem
from sim.scenario import ScenarioError

if TYPE_CHECKING:
    from reports.locust import EndpointLoad


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report",
        help="judge a run directory and write report.html, summary.json, CSV and PNG files",
        description="Judge the run in RUN_DIR against its truth ledgers and write "
        "RUN_DIR/report/ (report.html, summary.json, one CSV per table, every figure as PNG). "
        "Exits 0 when every gate passes, 1 when any fails or when no push reached the gateways "
        "although triggers expected some, 2 when the run cannot be read, and 3 for a partial "
        "run (one that ended before the scenario's end).",
    )
    parser.add_argument(
        "run_dir",
        metavar="RUN_DIR",
        help="run directory written by pushsim run or by a plain Locust run",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    # Imported here so that other commands do not pay for matplotlib.
    from reports.build import backend_load, partial_reason, write_report
    from sim.oracle import judge_run, load_run

    problem = run_dir_problem(args.run_dir)
    if problem is not None:
        print(f"pushsim: cannot judge {args.run_dir}: {problem}", file=sys.stderr)
        return EXIT_USAGE
    try:
        result = judge_run(load_run(args.run_dir))
    except (FileNotFoundError, ScenarioError, ValueError) as error:
        print(f"pushsim: cannot judge {args.run_dir}: {error}", file=sys.stderr)
        return EXIT_USAGE
    path = write_report(result, args.run_dir)
    print(f"wrote {path}")
    partial = partial_reason(Path(args.run_dir))
    status = print_verdict(result, backend_load(Path(args.run_dir)), partial=partial is not None)
    if partial is not None:
        # As pushsim run does: gates that pass on part of a run do not pass the run.
        reached = ""
        if result.reached is not None:
            reached = f" (the model reached {result.reached / 3600:.1f} simulated hours)"
        print(f"pushsim: the run is partial: {partial}{reached}", file=sys.stderr)
        return EXIT_PARTIAL
    return status


def print_verdict(result, load: list[EndpointLoad] | None = None, *, partial: bool = False) -> int:
    """Print the SDK calls' fate, the backend's load, each journey's outcomes, any warning and
    every gate. ``load`` is Locust's rows from ``reports.build.backend_load``, and ``partial``
    is True for a run that ended early.

    Everything goes to stdout, warnings included, so that "see above" stays true in a log
    that captures both streams. Returns 0 when every gate passes, else 1.
    """
    if result.generator.fell_behind:
        print(f"warning: {result.generator.message}")
    sdk_line = sdk_errors_line(result.sdk_errors)
    if sdk_line:
        print(sdk_line)
        local = result.generator.calls_by_status.get("local", 0)
        if local:
            # These are in the plan's count of SDK calls, so the two counts differ by them.
            print(
                f"  ({local:,} more SDK calls made no request: a logout, or a device token the "
                "app holds until the shopper identifies)"
            )
    total = next((row for row in load or [] if row.name == "Aggregated"), None)
    if total is None:
        # Locust writes the statistics this line reads only when given --csv.
        print(
            "backend load: not recorded, because the run directory has no locust_stats.csv; "
            "run Locust with --csv RUN_DIR/locust to record it"
        )
    else:
        print(load_line(total))
        if partial:
            # Locust writes its statistics every second, so the last second's requests of an
            # interrupted run may be missing while its truth ledger counts their calls.
            print("  (the run ended early: Locust's figures stop at its last statistics write)")

    for journey in result.journeys:
        if not journey.judged:
            print(f"journey {journey.name}: not judged ({journey.note})")
            continue
        outcomes = ", ".join(f"{name} {count}" for name, count in journey.outcomes.items() if count)
        eligible = journey.triggers - journey.excluded
        print(
            f"journey {journey.name}: {journey.triggers} triggers, {journey.excluded} excluded "
            f"near the end, {eligible} eligible. Final outcomes: {outcomes or 'none'}"
        )
        if journey.pacing is not None:
            print(f"  broadcast {journey.name} pacing: {journey.pacing.describe()}")
        warning = journey.exclusion_warning(partial)
        if warning is not None:
            print(f"warning: {warning}")

    explanations = (
        ("note", result.stitching_hint()),
        ("note", result.unknown_token_note()),
        ("note", result.fault_note()),
        ("warning", result.wrong_environment_note()),
    )
    for label, text in explanations:
        if text is not None:
            print(f"{label}: {text}")

    ungated = result.ungated_problems_warning()
    if ungated is not None:
        print(f"warning: {ungated}")

    no_push = result.no_push_warning()
    if no_push is not None:
        print(f"warning: {no_push}")

    failed = [gate for gate in result.gates if not gate.passed]
    if not result.gates:
        print("no gates in the scenario")
    for gate in result.gates:
        value = "no value" if gate.value is None else f"{gate.value:g}"
        status = "pass" if gate.passed else "FAIL"
        print(f"{status}  {gate.gate}  (value {value}, threshold {gate.threshold:g})")
    if failed:
        print(f"{len(failed)} of {len(result.gates)} gate(s) failed")
        return EXIT_GATES_FAILED
    if no_push is not None:
        # Gates on counts of bad pushes pass trivially when no push was sent at all, and a push
        # rehearsal whose backend sent nothing has not shown that the pipeline works.
        print(
            f"the run fails: no push request reached the gateways (see above), so the "
            f"{len(result.gates)} gate(s) had no push to judge"
        )
        return EXIT_GATES_FAILED
    if result.gates:
        unjudged = [j.name for j in result.journeys if j.exclusion_warning(partial) is not None]
        caveat = ""
        if partial:
            caveat = ", but on a partial run (see below)"
        elif unjudged:
            # The gates saw few or none of these journeys' triggers, so a pass means little.
            caveat = f", but journey(s) {', '.join(unjudged)} were mostly not judged (see above)"
        elif ungated is not None:
            caveat = ", but the warning above names problems that no gate checks"
        print(f"all {len(result.gates)} gate(s) passed{caveat}")
    return 0


def load_line(total: EndpointLoad) -> str:
    """Return the backend's whole-run load from Locust's Aggregated row, latencies in wall ms."""

    def milliseconds(value: float | None) -> str:
        return "n/a" if value is None else f"{value:,.0f} ms"

    return (
        f"backend load: {total.requests:,} requests for the SDK calls, counting retries, "
        f"batches and device tokens held until identify, at {total.requests_per_s:,.1f} req/s, "
        f"{total.failures:,} failed; response time p50 {milliseconds(total.p50_ms)}, "
        f"p95 {milliseconds(total.p95_ms)}, p99 {milliseconds(total.p99_ms)}"
    )


def sdk_errors_line(errors) -> str:
    """Return the line that counts the SDK calls sent and failed, or "" when none was sent."""
    if not errors.sent:
        return ""
    if not errors.failed:
        return f"SDK calls: {errors.sent:,} sent, none failed"
    line = (
        f"SDK calls: {errors.sent:,} sent, {errors.failed:,} failed ({errors.error_rate:.1%}) "
        f"by response: {errors.describe_failures()}"
    )
    fix = errors.likely_fix() if errors.over_limit else ""
    return f"{line}; {fix}" if fix else line
