"""``pushsim compare``: put two runs' summaries side by side and flag what got worse or better."""

from __future__ import annotations

import argparse
import sys

from sim.commands.common import EXIT_GATES_FAILED, EXIT_USAGE, run_dir_problem
from sim.scenario import ScenarioError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compare",
        help="compare two runs' metrics, gates and outcomes, marking what got worse or better in B",
        description="Print the gate metrics, gates and outcome shares of RUN_A and RUN_B side "
        "by side and mark each figure that is worse or better in RUN_B. A run without "
        "report/summary.json is judged first. Exits 0, 1 when a gate that passes in RUN_A "
        "fails in RUN_B (or, with --fail-on-worse, when any figure is WORSE), or 2 when a run "
        "cannot be read.",
    )
    parser.add_argument("run_a", metavar="RUN_A", help="the baseline run directory")
    parser.add_argument("run_b", metavar="RUN_B", help="the run directory to compare with it")
    parser.add_argument(
        "--fail-on-worse",
        action="store_true",
        help="also exit 1 when a figure is WORSE beyond noise, gated or not, so that a CI job "
        "catches a regression the scenario has no gate for",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from reports.compare import compare_runs

    for run_dir in (args.run_a, args.run_b):
        problem = run_dir_problem(run_dir)
        if problem is not None:
            print(f"pushsim: cannot compare {run_dir}: {problem}", file=sys.stderr)
            return EXIT_USAGE
    try:
        comparison = compare_runs(args.run_a, args.run_b)
    except (FileNotFoundError, ScenarioError, ValueError) as error:
        print(f"pushsim: cannot compare: {error}", file=sys.stderr)
        return EXIT_USAGE
    print(comparison.text)
    if comparison.failed_gates:
        return EXIT_GATES_FAILED
    if args.fail_on_worse and comparison.worse_figures:
        print(
            f"pushsim: {comparison.worse_figures} figure(s) worse in B (--fail-on-worse)",
            file=sys.stderr,
        )
        return EXIT_GATES_FAILED
    return 0
