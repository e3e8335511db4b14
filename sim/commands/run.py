"""``pushsim run``: the whole rehearsal in one command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from urllib.parse import urlsplit

from sim.commands.common import EXIT_USAGE, add_set_option, load_or_exit


def register(subparsers: argparse._SubParsersAction) -> None:
    from sim.commands.backend import SWITCHES

    parser = subparsers.add_parser(
        "run",
        help="run a whole rehearsal: gateways, backend, Locust, verdicts and report",
        description="Start the mock gateways (or use running ones with --gateways-config) and "
        "the reference backend (or use --target), run the scenario's shoppers through Locust in "
        "scaled time, drain, judge the result against the model's truth and write the report. "
        "Exits 0 when every gate passes, 1 when a gate fails, 2 on a bad scenario or option "
        "(an unreachable --target or gateways that do not answer included) and 3 when the run "
        "is partial.",
    )
    parser.add_argument("scenario", help="scenario YAML file or bundled scenario name")
    parser.add_argument(
        "--target",
        metavar="URL",
        help="base URL of an external backend under test instead of the reference backend; "
        "it must accept TCP connections before the run starts",
    )
    parser.add_argument(
        "--gateways-config",
        metavar="FILE",
        help="config file of gateways started with `pushsim gateways --config-out FILE`: use "
        "them instead of starting new ones, so a backend configured from FILE stays valid "
        "across runs",
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
        help="turn on one of the reference backend's naive switches: "
        f"{', '.join(field for _, field, _ in SWITCHES)}; repeatable",
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
    if args.gateways_config is not None:
        config = Path(args.gateways_config)
        if config.is_dir():
            problems.append(
                f"--gateways-config {config} is a directory: give the file that `pushsim "
                "gateways --config-out FILE` wrote"
            )
        elif not config.is_file():
            problems.append(
                f"--gateways-config {config} not found: start `pushsim gateways "
                f"--config-out {config}` first"
            )
    if args.out:
        out = Path(args.out)
        if out.exists() and not out.is_dir():
            problems.append(f"--out {out} is a file: give a directory for the run")
        elif out.is_dir() and any(out.iterdir()):
            # A run writes its ledgers, config and report under fixed names, so a second run
            # in the same directory would mix its files with the first one's.
            problems.append(
                f"--out {out} is not empty: give a new directory for the run, or remove this one"
            )
    return problems


def check_services(args: argparse.Namespace) -> list[str]:
    """Return a problem for a --target that refuses connections or gateways that fail health.

    Only the URL of --target and the gateways of --gateways-config are contacted.
    """
    from sim.run.preflight import read_running_gateways, target_unreachable

    problems = []
    if args.target is not None:
        problem = target_unreachable(args.target)
        if problem is not None:
            problems.append(problem)
    if args.gateways_config is not None:
        _, problem = read_running_gateways(args.gateways_config)
        if problem is not None:
            problems.append(problem)
    return problems


def run(args: argparse.Namespace) -> int:
    from sim.run.orchestrator import Rehearsal, RunOptions, default_run_dir

    problems = check_options(args)
    if problems:
        for problem in problems:
            print(f"pushsim: {problem}", file=sys.stderr)
        return EXIT_USAGE
    loaded = load_or_exit(args.scenario, args.overrides)
    problems = check_services(args)
    if problems:
        for problem in problems:
            print(f"pushsim: {problem}", file=sys.stderr)
        return EXIT_USAGE
    out = Path(args.out) if args.out else default_run_dir(loaded.scenario.name)
    options = RunOptions(
        out=out,
        target=args.target,
        gateways_config=Path(args.gateways_config) if args.gateways_config else None,
        processes=args.processes,
        users=args.users,
        backend_naive=args.naive,
        quiet=args.quiet,
    )
    return Rehearsal(loaded, options).execute()
