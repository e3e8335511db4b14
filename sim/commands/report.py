"""``pushsim report``: judge a finished run and write its report folder."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sim.commands.common import EXIT_GATES_FAILED, EXIT_USAGE
from sim.scenario import ScenarioError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report",
        help="judge a run directory and write report.html, summary.json, CSV and PNG files",
        description="Judge the run in RUN_DIR against its truth ledgers and write "
        "RUN_DIR/report/ (report.html, summary.json, one CSV per table, every figure as PNG). "
        "Exits 0 when every gate passes, 1 when any fails, and 2 when the run cannot be read.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="directory written by pushsim run")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    # Imported here so that other commands do not pay for matplotlib.
    from reports.build import partial_reason, write_report
    from sim.oracle import judge_run, load_run

    try:
        result = judge_run(load_run(args.run_dir))
    except (FileNotFoundError, ScenarioError, ValueError) as error:
        print(f"pushsim: cannot judge {args.run_dir}: {error}", file=sys.stderr)
        return EXIT_USAGE
    path = write_report(result, args.run_dir)
    print(f"wrote {path}")
    partial = partial_reason(Path(args.run_dir))
    if partial is not None:
        print(f"warning: the run is partial: {partial}", file=sys.stderr)
    return print_verdict(result)


def print_verdict(result) -> int:
    """Print each journey's waterfall and every gate; return 0 when all gates pass, else 1."""
    if result.generator.fell_behind:
        print(f"warning: {result.generator.message}", file=sys.stderr)
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

    failed = [gate for gate in result.gates if not gate.passed]
    if not result.gates:
        print("no gates in the scenario")
    for gate in result.gates:
        value = "no value" if gate.value is None else f"{gate.value:g}"
        status = "pass" if gate.passed else "FAIL"
        print(f"{status}  {gate.gate}  (value {value}, threshold {gate.threshold:g})")
    if failed:
        print(f"{len(failed)} of {len(result.gates)} gate(s) failed", file=sys.stderr)
        return EXIT_GATES_FAILED
    return 0
