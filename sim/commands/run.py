"""``pushsim run``: the whole rehearsal in one command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from urllib.parse import urlsplit

from sim.commands.common import EXIT_USAGE, add_set_option, load_or_exit


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run a whole rehearsal: gateways, backend, Locust, verdicts and report",
        description="Start the mock gateways and the reference backend (or use --target), run "
        "the scenario's shoppers through Locust in scaled time, drain, judge the result "
        "against the model's truth and write the report. Exits 0 when every gate passes, 1 "
        "when a gate fails, 2 on a bad scenario and 3 when the run is partial.",
    )
    parser.add_argument("scenario", help="scenario YAML file or bundled scenario name")
    parser.add_argument(
        "--target",
        metavar="URL",
        help="base URL of an external backend under test instead of the reference backend",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="Locust worker processes, one shard of shoppers each (default 1)",
    )
    parser.add_argument(
        "--users",
        type=int,
        default=0,
        help="Locust users, which are device lanes: SDK requests in flight at once "
        "(default 0, which means 32 per process)",
    )
    parser.add_argument("--out", metavar="DIR", help="run directory (default runs/NAME-TIME)")
    parser.add_argument(
        "--naive",
        action="append",
        default=[],
        metavar="SWITCH",
        help="turn on one of the reference backend's naive switches, such as no_exit_check; "
        "repeatable",
    )
    parser.add_argument("--quiet", action="store_true", help="print only the final summary")
    add_set_option(parser)
    parser.set_defaults(handler=run)


def check_options(args: argparse.Namespace) -> list[str]:
    """Return every problem with the run's options, each naming the value and the fix."""
    from sim.commands.backend import SWITCHES

    problems = []
    if args.processes < 1:
        problems.append(f"invalid --processes {args.processes}: use 1 or more")
    if args.users < 0:
        problems.append(f"invalid --users {args.users}: use 1 or more, or 0 for 32 per process")
    switches = [field for _, field, _ in SWITCHES]
    for switch in args.naive:
        if switch not in switches:
            problems.append(f"unknown --naive switch {switch!r}: use one of {', '.join(switches)}")
    if args.target is not None:
        parts = urlsplit(args.target)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            problems.append(
                f"invalid --target {args.target!r}: give the backend's base URL, such as "
                "http://127.0.0.1:8080"
            )
        if args.naive:
            problems.append("--naive switches belong to the reference backend: drop --target")
    if args.out and Path(args.out).exists() and not Path(args.out).is_dir():
        problems.append(f"--out {args.out} is a file: give a directory for the run")
    return problems


def run(args: argparse.Namespace) -> int:
    from sim.run.orchestrator import Rehearsal, RunOptions, default_run_dir

    problems = check_options(args)
    if problems:
        for problem in problems:
            print(f"pushsim: {problem}", file=sys.stderr)
        return EXIT_USAGE
    loaded = load_or_exit(args.scenario, args.overrides)
    out = Path(args.out) if args.out else default_run_dir(loaded.scenario.name)
    options = RunOptions(
        out=out,
        target=args.target,
        processes=args.processes,
        users=args.users,
        backend_naive=args.naive,
        quiet=args.quiet,
    )
    return Rehearsal(loaded, options).execute()
