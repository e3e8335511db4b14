"""Options and helpers that several subcommands share."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sim.scenario import LoadedScenario, ScenarioError, load_scenario

# Exit status for a scenario or usage problem, as argparse uses for bad arguments.
EXIT_USAGE = 2
# Exit status when a run fails a gate, or fails one that the baseline passed.
EXIT_GATES_FAILED = 1
# Exit status for a run that ended before the scenario's end, even when its gates pass.
EXIT_PARTIAL = 3


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


# Run directories named when a directory given as a run turns out to contain several.
SHOWN_RUNS = 5


def run_dir_problem(run_dir: str) -> str | None:
    """Return why ``run_dir`` is not a run directory that pushsim run wrote, or None.

    Only what a user commonly gets wrong is checked here. A missing ledger or scenario inside
    the directory is reported by the oracle when it reads the run.
    """
    path = Path(run_dir)
    hint = "give the directory that pushsim run wrote (runs/NAME-TIME)"
    if not path.exists():
        return f"no such run directory; {hint}"
    if path.is_file():
        return f"it is a file; {hint}"
    if (path / "scenario.yaml").exists():
        return None
    if (path.parent / "scenario.yaml").exists():
        return f"it has no scenario.yaml, but its parent has: give {path.parent} instead"
    # A directory of runs, such as runs/: name the newest, which are the likeliest meant.
    runs = sorted(
        (child for child in path.iterdir() if (child / "scenario.yaml").exists()),
        key=lambda child: child.stat().st_mtime,
        reverse=True,
    )
    if runs:
        names = ", ".join(str(child) for child in runs[:SHOWN_RUNS])
        more = f" and {len(runs) - SHOWN_RUNS} more" if len(runs) > SHOWN_RUNS else ""
        return f"it contains runs rather than being one: give one of {names}{more}"
    return None
