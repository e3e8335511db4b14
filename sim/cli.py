"""The ``pushsim`` command."""

from __future__ import annotations

import argparse
import logging
import sys

from sim import __version__
from sim.commands import backend, compare, gateways, plan, report, run, scenarios, validate

# Each module adds one subcommand; the order here is the order in --help.
COMMANDS = [run, report, compare, validate, plan, gateways, backend, scenarios]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pushsim",
        description="Rehearse push notifications: a simulated shopper population against a push "
        "backend and mock APNs and FCM gateways.",
    )
    parser.add_argument("--version", action="version", version=f"pushsim {__version__}")
    parser.add_argument(
        "--log-level",
        default="WARNING",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="level of log messages printed to stderr (default: WARNING)",
    )
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for command in COMMANDS:
        command.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    return handler(args)


if __name__ == "__main__":
    raise SystemExit(main())
