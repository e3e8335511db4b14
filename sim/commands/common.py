"""Options and helpers that several subcommands share."""

from __future__ import annotations

import argparse
import sys

from sim.scenario import LoadedScenario, ScenarioError, load_scenario

# Exit status for a scenario or usage problem, as argparse uses for bad arguments.
EXIT_USAGE = 2
# Exit status when a run fails a gate, or fails one that the baseline passed.
EXIT_GATES_FAILED = 1


def add_set_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="override one scenario value, validated like the file; repeatable "
        "(for example --set permission.opt_in.ios=0.45 --set clock.duration=6h)",
    )


def load_or_exit(path: str | None, overrides: list[str]) -> LoadedScenario:
    """Load a scenario, or print every problem to stderr and exit with status 2."""
    try:
        loaded = load_scenario(path, overrides)
    except FileNotFoundError as error:
        print(f"pushsim: {error}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None
    except ScenarioError as error:
        print(f"pushsim: {error}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None
    for warning in loaded.warnings:
        print(f"pushsim: {warning}", file=sys.stderr)
    return loaded
