"""``pushsim validate``: check scenarios before anything starts."""

from __future__ import annotations

import argparse
import sys

from sim.commands.common import EXIT_USAGE, add_set_option
from sim.scenario import ScenarioError, load_scenario
from sim.scenario.dump import dump_scenario


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "validate",
        help="check scenario files and list every problem with its line and key path",
        description="Check each scenario and list every problem at once, with its file, line "
        "and key path. Exits 0 when all are valid and 2 otherwise.",
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="scenario YAML files")
    add_set_option(parser)
    parser.add_argument(
        "--print",
        dest="print_resolved",
        action="store_true",
        help="print each resolved scenario (defaults and overrides applied) as YAML",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    status = 0
    for path in args.files:
        try:
            loaded = load_scenario(path, args.overrides)
        except (FileNotFoundError, ScenarioError) as error:
            print(f"{path}: invalid\n{error}" if isinstance(error, ScenarioError) else
                  f"pushsim: {error}", file=sys.stderr)  # fmt: skip
            status = EXIT_USAGE
            continue
        for warning in loaded.warnings:
            print(f"  {warning}", file=sys.stderr)
        # With --print, stdout carries only YAML, so it can be redirected to a file.
        status_stream = sys.stderr if args.print_resolved else sys.stdout
        note = f" ({len(loaded.warnings)} warning(s))" if loaded.warnings else ""
        print(f"{path}: ok{note}", file=status_stream)
        if args.print_resolved:
            print(dump_scenario(loaded.scenario))
    return status
